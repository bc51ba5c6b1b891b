#!/usr/bin/env bash
# Install the Debian 12 packages pqlite needs to build, test and benchmark.
# As root: apt-get installs what is missing. Otherwise: prints the exact command and fails.
# Usage: scripts/deps.sh [build|test|bench]   (test also brings the clients and PostgreSQL 15;
# bench adds go-dqlite, whose dqlite-benchmark bench/run measures side by side)
set -euo pipefail

what=${1:-test}
pkgs=(gcc pkg-config meson ninja-build libsqlite3-dev libraft-dev libuv1-dev libssl-dev)
if [ "$what" = test ] || [ "$what" = bench ]; then
	pkgs+=(libcmocka-dev libpq-dev postgresql-client-15 postgresql-15 python3 python3-pytest
	       python3-psycopg2 iproute2 procps strace openjdk-17-jdk-headless libpostgresql-jdbc-java)
fi

[ "$what" = bench ] && pkgs+=(go-dqlite)

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
	echo "deps: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
else
	echo "deps: missing packages; run as root:" >&2
	echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
	exit 1
fi

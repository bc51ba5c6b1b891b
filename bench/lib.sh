# bench/lib.sh — helpers shared by bench/run and bench/failover (sourced, not run).
#
# A pqlite cluster of N nodes on 127.0.0.1 free ports, under a directory of the caller:
#   pq_cluster_up DIR N      start node 1 (bootstrap), nodes 2..N with --join <node 1 pg>,
#                            and wait until N voters show in pqlite_cluster. A node that is
#                            not a voter 3 s after it started is added by hand with
#                            pqlite_join() on the leader (idempotent), as long as the server
#                            does not join by itself. Returns non-zero after 60 s.
#   pq_start_node I          start node I with its (fixed) command line; also for restarts
#   pq_leader                print the leader's pg address ("" if none answers)
#   pq_index_of ADDR         print the node index whose pg address is ADDR
#   pq_wait_caught_up I S    wait ≤ S s until the leader lists node I as a voter with lag 0
#   pq_stop_all              SIGTERM every node still running (SIGKILL after 15 s), reap
# State: PQ_N, PQ_DIR, PQ_PG[i], PQ_RAFT[i], PQ_PID[i], PQ_LOG[i]; PQ_JOINED_BY_HAND counts
# the pqlite_join() calls the script had to make. Needs PQLITE_BIN; PQLITE_ARGS (word-split)
# adds server options to every node (e.g. "--election-timeout 1000").
# Every loop is bounded; processes are only ever signalled by the pid recorded here.

BENCH_PORTS_USED=" "
free_port() { # a free 127.0.0.1 TCP port from the OS, never one handed out before in this run
  local p
  for _ in $(seq 1 50); do
    p="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    case "$BENCH_PORTS_USED" in *" $p "*) continue ;; esac
    BENCH_PORTS_USED="$BENCH_PORTS_USED$p "
    echo "$p"; return 0
  done
  return 1
}

stop_pid() { # pid signal seconds: signal, wait, then SIGKILL
  local pid="$1" sig="$2" secs="$3"
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill "-$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((secs * 10))); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  sleep 0.2
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

blog() { echo "[bench $(date -u +%H:%M:%S)] $*" >&2; }

psql_at() { # H:P args...: psql -X -At against that node, bounded
  local a="$1"; shift
  PGCONNECT_TIMEOUT=3 timeout 10 psql -X -At -q -h "${a%:*}" -p "${a##*:}" -U postgres \
    -d postgres -v ON_ERROR_STOP=1 "$@"
}

PQ_N=0
PQ_DIR=""
PQ_JOINED_BY_HAND=0
declare -a PQ_PG PQ_RAFT PQ_PID PQ_LOG

pq_start_node() { # i
  local i="$1" join=()
  [ "$i" = 1 ] || join=(--join "${PQ_PG[1]}")
  # shellcheck disable=SC2086
  "$PQLITE_BIN" --data "$PQ_DIR/n$i" --listen "${PQ_PG[$i]}" --raft "${PQ_RAFT[$i]}" \
    "${join[@]}" ${PQLITE_ARGS:-} >>"${PQ_LOG[$i]}" 2>&1 </dev/null &
  PQ_PID[$i]=$!
}

pq_wait_port() { # i seconds: until the node's pg port accepts connections
  local i="$1" n=$(( $2 * 20 ))
  for _ in $(seq 1 "$n"); do
    kill -0 "${PQ_PID[$i]}" 2>/dev/null || { blog "pqlite node $i exited: $(tail -n 5 "${PQ_LOG[$i]}" | tr '\n' ' ')"; return 1; }
    port_open "${PQ_PG[$i]##*:}" && return 0
    sleep 0.05
  done
  blog "pqlite node $i: port ${PQ_PG[$i]} not open after $2 s"; return 1
}

pq_index_of() { # pg address -> index
  local i
  for i in $(seq 1 "$PQ_N"); do [ "${PQ_PG[$i]}" = "$1" ] && { echo "$i"; return 0; }; done
  return 1
}

pq_leader() { # the leader's pg address: the node that names itself as leader
  local i a hint=""
  for i in $(seq 1 "$PQ_N"); do
    [ -n "${PQ_PID[$i]}" ] && kill -0 "${PQ_PID[$i]}" 2>/dev/null || continue
    a="$(psql_at "${PQ_PG[$i]}" -c 'SELECT pg_address FROM pqlite_cluster WHERE is_leader' 2>/dev/null | head -n1 || true)"
    [ "$a" = "${PQ_PG[$i]}" ] && { echo "$a"; return 0; }
    [ -n "$a" ] && [ -z "$hint" ] && hint="$a"
  done
  echo "$hint"
}

pq_rows() { # leader-side rows: id|pg_address|role|lag
  local l="$1"
  [ -n "$l" ] || return 0
  psql_at "$l" -F '|' -c 'SELECT id, pg_address, role, lag FROM pqlite_cluster ORDER BY pg_address' 2>/dev/null || true
}

pq_voters() { # leader -> number of voters
  pq_rows "$1" | awk -F'|' '$3 == "voter"' | wc -l
}

pq_role_of() { # leader i -> role of node i ("" if absent)
  pq_rows "$1" | awk -F'|' -v a="${PQ_PG[$2]}" '$2 == a {print $3}'
}

pq_cluster_up() { # dir n
  PQ_DIR="$1"; PQ_N="$2"; PQ_JOINED_BY_HAND=0
  local i l t_start now role id
  mkdir -p "$PQ_DIR"
  for i in $(seq 1 "$PQ_N"); do
    PQ_PG[$i]="127.0.0.1:$(free_port)"; PQ_RAFT[$i]="127.0.0.1:$(free_port)"
    PQ_LOG[$i]="$PQ_DIR/node$i.log"; PQ_PID[$i]=""
  done
  pq_start_node 1
  pq_wait_port 1 15 || return 1
  for _ in $(seq 1 150); do
    [ "$(pq_leader)" = "${PQ_PG[1]}" ] && break
    sleep 0.1
  done
  for i in $(seq 2 "$PQ_N"); do pq_start_node "$i"; done
  for i in $(seq 2 "$PQ_N"); do pq_wait_port "$i" 15 || return 1; done
  t_start=$SECONDS
  for _ in $(seq 1 300); do   # ≤ 60 s (0.2 s sleeps + queries)
    l="$(pq_leader)"
    if [ -n "$l" ] && [ "$(pq_voters "$l")" = "$PQ_N" ]; then return 0; fi
    now=$SECONDS
    if [ -n "$l" ] && [ $((now - t_start)) -ge 3 ]; then
      for i in $(seq 2 "$PQ_N"); do
        role="$(pq_role_of "$l" "$i")"
        [ -z "$role" ] || continue   # spare: added, the leader promotes it when caught up
        [ -s "$PQ_DIR/n$i/node-id" ] || continue
        id="$(tr -d '[:space:]' <"$PQ_DIR/n$i/node-id")"
        if psql_at "$l" -c "SELECT pqlite_join($id, '${PQ_RAFT[$i]}', '${PQ_PG[$i]}')" >/dev/null 2>"$PQ_DIR/join.err"; then
          PQ_JOINED_BY_HAND=$((PQ_JOINED_BY_HAND + 1))
          blog "pqlite node $i was not a member after $((now - t_start)) s: added with pqlite_join() on $l"
        fi
      done
    fi
    [ $((SECONDS - t_start)) -ge 60 ] && break
    sleep 0.2
  done
  blog "pqlite cluster: not $PQ_N voters after 60 s: $(pq_rows "$(pq_leader)" | tr '\n' ' ')"
  return 1
}

pq_wait_caught_up() { # i seconds: the leader lists node i as voter with lag 0
  local i="$1" n=$(( $2 * 5 )) l
  for _ in $(seq 1 "$n"); do
    l="$(pq_leader)"
    if [ -n "$l" ] && pq_rows "$l" | awk -F'|' -v a="${PQ_PG[$i]}" '$2 == a && $3 == "voter" && $4 == "0" {f=1} END {exit !f}'; then
      return 0
    fi
    sleep 0.2
  done
  blog "pqlite node $i not caught up after $2 s: $(pq_rows "$(pq_leader)" | tr '\n' ' ')"
  return 1
}

pq_stop_all() {
  local i
  for i in $(seq 1 "$PQ_N"); do
    [ -n "${PQ_PID[$i]:-}" ] && kill -0 "${PQ_PID[$i]}" 2>/dev/null && kill -TERM "${PQ_PID[$i]}" 2>/dev/null
  done
  for i in $(seq 1 "$PQ_N"); do
    [ -n "${PQ_PID[$i]:-}" ] || continue
    stop_pid "${PQ_PID[$i]}" TERM 15
    wait "${PQ_PID[$i]}" 2>/dev/null || true
    PQ_PID[$i]=""
  done
}

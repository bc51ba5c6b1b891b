"""Shared by the pytest files of tests/chaos: the server binary to test, whether a
namespaced cluster can run here at all, and the `cluster` fixture (import it into the test
module). Not named conftest.py: tests/integration has one, imported by name."""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import netns  # noqa: E402
from nodes import Cluster, strace_probe  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_ARGS = ["--election-timeout", "1000", "--apply-timeout", "5000"]


def server_binary():
    return os.environ.get("PQLITE_BIN") or os.path.join(REPO, "build-asan", "server",
                                                        "pqlite")


def skip_unless_possible(need_strace=False):
    why = netns.probe()
    if why is not None:
        pytest.skip(why)
    if need_strace:
        why = strace_probe()
        if why is not None:
            pytest.skip(why)
    if not os.access(server_binary(), os.X_OK):
        pytest.skip("no server binary at %s" % server_binary())


@pytest.fixture
def cluster(request, tmp_path):
    """Three voters, proxy mode, each on a 64 MiB tmpfs. A test module may set
    SERVER_ARGS (extra server options) and NEEDS_STRACE."""
    skip_unless_possible(getattr(request.module, "NEEDS_STRACE", False))
    args = DEFAULT_ARGS + list(getattr(request.module, "SERVER_ARGS", []))
    topo = netns.Topology(3, str(tmp_path), tmpfs_mb=64)
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = "abort_on_error=1:detect_leaks=1:disable_coredump=1"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    cl = None
    try:
        topo.setup()
        cl = Cluster(topo, server_binary(), str(tmp_path), args, mode="proxy", env=env)
        cl.start(timeout=90)
        yield cl
    finally:
        if cl is not None:
            cl.stop_all(timeout=20)
        topo.teardown()

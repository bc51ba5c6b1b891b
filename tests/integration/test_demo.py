"""The crash demo (scripts/demo) in a shortened form: 20 s of SIGKILLs on a 3-node cluster,
then every acknowledged row must be on every node exactly once and all nodes identical."""
import os
import random
import re
import signal
import subprocess
import sys

import pytest

import cluster as cl
import conftest

DEMO = os.path.join(conftest.REPO, "scripts", "demo")
DURATION_S = int(os.environ.get("PQLITE_DEMO_DURATION_S", "20"))


def free_base_port(n_nodes=3, tries=50):
    """A base port in 58000-59999 whose node ports (base+4i-3, base+4i-1) are free."""
    rng = random.Random(os.getpid())
    for _ in range(tries):
        base = rng.randrange(58000, 60000 - 4 * n_nodes, 2)  # even: odd node ports
        ports = [base + 4 * i + d for i in range(1, n_nodes + 1) for d in (-3, -1)]
        if all(cl.port_is_free(p) for p in ports):
            return base
    pytest.skip("no free ports for the demo in 58000-59999")


@pytest.mark.deadline(DURATION_S + 150)
def test_demo_short_run():
    if conftest.EXTERNAL_PGPORT:
        pytest.skip("the demo starts its own pqlite processes")
    conftest._need_binary()
    base = free_base_port()
    argv = [sys.executable, DEMO, "--duration", str(DURATION_S), "--bin", conftest.pqlite_bin(),
            "--seed", "1", "--base-port", str(base)]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=DURATION_S + 120)
    except BaseException:
        # timeout or the test's deadline: SIGTERM makes the demo stop its nodes (by pid)
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate(timeout=10)
        print(out)
        raise
    print(out)
    assert proc.returncode == 0, "demo exited with %s\n%s" % (proc.returncode, out[-4000:])
    summary = [line for line in out.splitlines() if line.startswith("demo: ")]
    assert summary and re.match(r"demo: OK: \d+ acknowledged rows present exactly once on all "
                                r"3 nodes", summary[-1]), summary
    assert re.search(r"KILL  n\d", out), "no node was killed during the run"
    assert re.search(r"LEADER is now n\d", out)

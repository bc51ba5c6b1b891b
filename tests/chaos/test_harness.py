"""The chaos harness cleans up after itself: on Ctrl-C it tears everything down and keeps
the history, logs and seed; after a SIGKILL, `netns.py --cleanup-stale` removes what it
left. Runs tests/chaos/run as a real process against $PQLITE_BIN. Needs root."""
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import netns  # noqa: E402
from chaos_env import server_binary, skip_unless_possible  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
RUN = os.path.join(HERE, "run")


@pytest.fixture(autouse=True)
def _needs_root():
    skip_unless_possible()


def _start(out, nemesis):
    return subprocess.Popen([RUN, "--workload", "set", "--nemesis", nemesis, "--seed", "5",
                             "--time", "120", "--bin", server_binary(), "--out", str(out),
                             "--hold", "30,30"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _wait_log(out, text, proc, timeout=60.0):
    path = os.path.join(str(out), "run.log")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail("the run ended early (%s): %s" % (proc.returncode,
                                                          proc.stdout.read()[-2000:]))
        try:
            with open(path) as f:
                if text in f.read():
                    return
        except FileNotFoundError:
            pass
        time.sleep(0.2)
    proc.kill()
    pytest.fail("no %r in %s within %.0fs" % (text, path, timeout))


def _runid(out):
    """From run.log's "topology RUNID: ..." line (run.json has it only at the end)."""
    with open(os.path.join(str(out), "run.log")) as f:
        m = re.search(r"\] topology ([0-9a-f]{6}):", f.read())
    assert m, "no topology line in run.log"
    return m.group(1)


def _state(runid):
    with open(os.path.join(netns.STATE_DIR, "%s.json" % runid)) as f:
        return json.load(f)


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


@contextlib.contextmanager
def _running(out, nemesis, until):
    """A run started and followed until `until` shows in its log; yields (process, run id,
    its state file's contents); the process is killed on the way out if still running."""
    p = _start(out, nemesis)
    try:
        _wait_log(out, until, p)
        runid = _runid(out)
        yield p, runid, _state(runid)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def test_ctrl_c_tears_everything_down_and_keeps_the_evidence(tmp_path):
    out = tmp_path / "run"
    # the nemesis holds a partition for 30 s: interrupt while it is in force
    with _running(out, "partition-one", "nemesis start") as (p, runid, st):
        pids = st["created"]["pids"]
        assert st["created"]["netns"] and st["created"]["mounts"] and pids
        p.send_signal(signal.SIGINT)
        rc = p.wait(60)
    assert rc == 130
    assert netns.leftovers(runid, st["created"]["mounts"]) == []
    assert not os.path.exists(os.path.join(netns.STATE_DIR, "%s.json" % runid))
    assert [pid for pid in pids if _alive(pid)] == []
    # the evidence of an interrupted run stays: seed, history, logs
    info = json.load(open(os.path.join(str(out), "run.json")))
    assert info["seed"] == 5 and info["result"] == "FAIL"
    assert any("interrupted" in x for x in info["problems"])
    assert os.path.getsize(os.path.join(str(out), "history.jsonl")) > 0
    assert os.path.getsize(os.path.join(str(out), "n1", "pqlite.log")) > 0


def test_cleanup_stale_removes_what_a_killed_run_left(tmp_path):
    out = tmp_path / "run"
    with _running(out, "none", "cluster of 3 voters up") as (p, runid, st):
        p.kill()          # the harness itself, by pid: it cannot clean up
        p.wait(10)
        pids = st["created"]["pids"]
        assert netns.leftovers(runid, st["created"]["mounts"]) != []
        assert any(_alive(pid) for pid in pids)
        c = subprocess.run([sys.executable, os.path.join(HERE, "netns.py"),
                            "--cleanup-stale"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        assert c.returncode == 0, c.stdout
        assert "run %s: cleaned up" % runid in c.stdout
        assert netns.leftovers(runid, st["created"]["mounts"]) == []
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in pids if _alive(pid)] == []

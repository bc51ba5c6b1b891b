"""Shared driver of tests/chaos/short, matrix and mutants: runs tests/chaos/run once per
entry, each in its own process (own namespaces, own teardown), and tabulates run.json."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
RUN = os.path.join(HERE, "run")
SKIP = 77


def build(bdir, mutant=None):
    """Configure (once) and build an ASan+UBSan server in bdir; returns the binary."""
    bdir = os.path.join(REPO, bdir)
    if not os.path.exists(os.path.join(bdir, "build.ninja")):
        cmd = ["meson", "setup", bdir, "-Db_sanitize=address,undefined", "-Db_lundef=false"]
        if mutant:
            cmd.append("-Dmutant=" + mutant)
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    p = subprocess.run(["ninja", "-C", bdir], cwd=REPO, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        sys.stdout.write(p.stdout)
        raise SystemExit("build of %s failed" % bdir)
    return os.path.join(bdir, "server", "pqlite")


def run_one(entry, binary, outdir, timeout_extra=600, quiet=True):
    """entry: dict workload, nemesis, seed, time, nodes (+ optional extra args list).
    Returns (exit status, run.json dict or {})."""
    name = "%s-%s-n%d-s%d" % (entry["workload"], entry["nemesis"].replace("+", "_"),
                              entry.get("nodes", 3), entry["seed"])
    out = os.path.join(outdir, name)
    cmd = [RUN, "--workload", entry["workload"], "--nemesis", entry["nemesis"],
           "--seed", str(entry["seed"]), "--time", str(entry["time"]),
           "--nodes", str(entry.get("nodes", 3)), "--bin", binary, "--out", out]
    if quiet:
        cmd.append("--quiet")
    cmd += entry.get("args", [])
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, timeout=entry["time"] + timeout_extra)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    info = {}
    try:
        with open(os.path.join(out, "run.json")) as f:
            info = json.load(f)
    except (OSError, ValueError):
        pass
    info["_rc"] = rc
    info["_out"] = out
    info["_name"] = name
    info["_elapsed"] = round(time.monotonic() - t0, 1)
    return rc, info


def row(info):
    ops = info.get("ops", {})
    chk = info.get("checker") or {}
    return ("| %s | %s | %s | %s | %ss | %s | %s/%s/%s | %s | %s | %s | %s |" % (
        info.get("workload", "?"), info.get("nemesis", "?"), info.get("nodes", "?"),
        info.get("seed", "?"), info.get("time", "?"), ops.get("invoke", 0), ops.get("ok", 0),
        ops.get("fail", 0), ops.get("info", 0), info.get("snapshot_installs", "-"),
        info.get("disk_fail_stops", "-"),
        "valid" if chk and all(v["valid"] for v in chk.values()) else
        ("INVALID" if chk else "-"),
        info.get("result", "rc=%s" % info.get("_rc")) +
        ("" if not info.get("problem_kinds") else " (%s)" % ", ".join(info["problem_kinds"]))))


HEADER = ("| workload | nemesis | nodes | seed | time | ops | ok/fail/info | snapshots installed "
          "| fail-stops | checker | result |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")


def install_signals():
    """Ctrl-C reaches the child run too (same process group); we just stop afterwards."""
    state = {"stop": False}

    def h(sig, frame):
        state["stop"] = True
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, h)
    return state


def skipped_probe():
    sys.path.insert(0, HERE)
    import netns
    return netns.probe()


def cleanup_passed(info, keep):
    if not keep and info.get("result") == "PASS":
        shutil.rmtree(info["_out"], ignore_errors=True)

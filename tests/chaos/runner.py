"""One chaos run: topology, cluster, workload + nemesis, heal, final reads, checks.

Used by tests/chaos/run (see its --help). Exit status: 0 pass, 1 fail, 77 skipped (not
root, no network namespaces), 2 usage error.
"""
import argparse
import atexit
import glob
import json
import os
import random
import shutil
import signal
import sys
import tarfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import checkers  # noqa: E402
import nemesis as nemesis_mod  # noqa: E402
import netns  # noqa: E402
import nodes as nodes_mod  # noqa: E402
import suite  # noqa: E402
from nodes import Cluster, ClusterError, wait_for  # noqa: E402
from workloads import WORKLOADS, Client, History  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
SKIP = 77


class Interrupted(BaseException):
    pass


def build_asan(log):
    """The ASan+UBSan server in build-asan/ (configured like scripts/test does)."""
    log("building build-asan (ASan+UBSan)")
    return suite.build("build-asan")


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="tests/chaos/run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", "-w", required=True, choices=sorted(WORKLOADS))
    ap.add_argument("--nemesis", "-n", default="none",
                    help="none, kill, pause, partition, disk, member, a leaf such as "
                         "kill-leader or partition-ring, or a combination with '+' "
                         "(see nemesis.py)")
    ap.add_argument("--seed", "-s", type=int, default=None)
    ap.add_argument("--time", "-t", type=float, default=60.0,
                    help="seconds of workload + faults (default 60)")
    ap.add_argument("--nodes", type=int, default=3, choices=(3, 5))
    ap.add_argument("--bin", help="server binary (default: build and use build-asan/)")
    ap.add_argument("--out", help="directory for history, logs, seed and check results "
                                  "(default: a new directory under /tmp/pqlite-chaos, "
                                  "deleted after a pass unless --keep)")
    ap.add_argument("--keep", action="store_true", help="keep the output after a pass too")
    ap.add_argument("--rate", type=float, default=60.0, help="target ops/s, all clients")
    ap.add_argument("--clients", type=int, default=None, help="default: 2 per node")
    ap.add_argument("--follower-mode", choices=("proxy", "standby", "mixed"),
                    help="default: mixed (even nodes standby) for set and bank, proxy "
                         "for list-append and register")
    ap.add_argument("--tmpfs-mb", type=int, default=256)
    ap.add_argument("--snapshot-threshold", type=int, default=64)
    ap.add_argument("--election-timeout", type=int, default=1000)
    ap.add_argument("--hold", default="3,8", help="fault duration range, seconds")
    ap.add_argument("--calm", default="2,5", help="calm between faults, seconds")
    ap.add_argument("--quiet", "-q", action="store_true")
    return ap.parse_args(argv)


class Run:
    def __init__(self, args):
        self.args = args
        self.seed = args.seed if args.seed is not None else random.SystemRandom().randrange(
            1 << 31)
        self.t0 = time.monotonic()
        self.log_lock = threading.Lock()
        self.problems = []           # strings: reasons the run fails
        self.kinds = []              # their kinds (checker, divergence, exit, log...)
        self.notes = []
        self.exits = []
        self.topo = None
        self.cluster = None
        self.history = None
        self.nem = None
        self.clients = []
        self.result = None
        self.out = None
        self.own_out = False
        self.summary = {}

    def log(self, msg):
        if self.args.quiet and not msg.startswith("!"):
            with open(os.path.join(self.out, "run.log"), "a") as f:
                f.write("[%7.2fs] %s\n" % (time.monotonic() - self.t0, msg))
            return
        with self.log_lock:
            line = "[%7.2fs] %s\n" % (time.monotonic() - self.t0, msg)
            sys.stdout.write(line)
            sys.stdout.flush()
            if self.out:
                with open(os.path.join(self.out, "run.log"), "a") as f:
                    f.write(line)

    KINDS = (("checker", "checker"), ("divergence", "divergence"),
             ("unavailable", "unavailable"), ("nodes did not converge", "unavailable"),
             ("final read", "unavailable"), ("core dump", "core"), (" log:", "log"),
             ("exited by itself", "exit"), ("exit status", "exit"),
             ("teardown", "teardown"), ("interrupted", "interrupted"))

    def problem(self, msg):
        self.problems.append(msg)
        kind = next((k for pat, k in self.KINDS if pat in msg.splitlines()[0]), "harness")
        if kind not in self.kinds:
            self.kinds.append(kind)
        self.log("! PROBLEM: " + msg.splitlines()[0][:300])

    # -- setup -------------------------------------------------------------------------
    def prepare_out(self):
        a = self.args
        if a.out:
            self.out = os.path.abspath(a.out)
        else:
            base = "/tmp/pqlite-chaos"
            os.makedirs(base, exist_ok=True)
            self.out = os.path.join(base, "%s-%s-%s-s%d-%d" % (
                time.strftime("%Y%m%d-%H%M%S"), a.workload, a.nemesis.replace("+", "_"),
                self.seed, os.getpid()))
            self.own_out = True
        os.makedirs(self.out, exist_ok=True)
        for f in ("history.jsonl", "check.json", "run.json", "run.log"):
            if os.path.exists(os.path.join(self.out, f)):
                os.unlink(os.path.join(self.out, f))

    def server_args(self):
        a = self.args
        return ["--election-timeout", str(a.election_timeout),
                "--snapshot-threshold", str(a.snapshot_threshold),
                "--snapshot-trailing", str(a.snapshot_threshold),
                "--apply-timeout", "5000"]

    def env(self):
        e = dict(os.environ)
        e["ASAN_OPTIONS"] = "abort_on_error=1:detect_leaks=1:disable_coredump=1"
        e["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
        return e

    def on_exit(self, rec):
        self.exits.append(rec)
        if rec["expected"] is None:
            self.log("node %s (pid %d) exited by itself: status %s"
                     % (rec["node"], rec["pid"], rec["rc"]))
            if self.history:
                self.history.record({"process": "nemesis", "type": "info", "f": "node-exit",
                                     "value": {"node": rec["node"], "rc": rec["rc"]}})

    # -- the run -----------------------------------------------------------------------
    def execute(self):
        a = self.args
        wl_cls = WORKLOADS[a.workload]
        mode = a.follower_mode or wl_cls.default_follower_mode
        binary = os.path.abspath(a.bin) if a.bin else build_asan(self.log)
        if not os.access(binary, os.X_OK):
            raise SystemExit("no server binary at %s" % binary)
        hold = tuple(float(x) for x in a.hold.split(","))
        calm = tuple(float(x) for x in a.calm.split(","))
        nemesis_mod.parse(a.nemesis, a.nodes)  # usage errors before any setup
        self.summary.update(workload=a.workload, nemesis=a.nemesis, seed=self.seed,
                            nodes=a.nodes, time=a.time, binary=binary, follower_mode=mode)
        self.log("chaos run: workload %s, nemesis %s, seed %d, %d nodes, %gs, binary %s, "
                 "follower mode %s, output %s" % (a.workload, a.nemesis, self.seed, a.nodes,
                                                  a.time, binary, mode, self.out))
        self.write_runjson()

        self.topo = netns.Topology(a.nodes, self.out, tmpfs_mb=a.tmpfs_mb, log=self.log)
        atexit.register(self.topo.teardown)
        self.topo.setup()
        self.cluster = Cluster(self.topo, binary, self.out, self.server_args(), mode=mode,
                               env=self.env(), log=self.log)
        self.cluster.on_exit = self.on_exit
        self.cluster.start_monitor()
        self.cluster.start(timeout=90)
        self.log("cluster of %d voters up; leader %s" % (a.nodes, self.cluster.leader().name))

        rng = random.Random(self.seed)
        n_clients = a.clients or 2 * a.nodes
        wl = wl_cls(rng, n_clients)
        for sql in wl.setup_sql() + ["CREATE TABLE chaos_liveness (node TEXT, t INTEGER)"]:
            self.exec_retry(self.cluster.leader(), sql, 30)

        self.history = History(os.path.join(self.out, "history.jsonl"))
        stop = threading.Event()
        per_client = a.rate / n_clients
        for k in range(n_clients):
            node = self.cluster.nodes[k % a.nodes]
            self.clients.append(Client(k, n_clients, node, wl, self.history, stop, self.seed,
                                       per_client, stale=node.follower_mode == "standby"))
        self.nem = nemesis_mod.Nemesis(a.nemesis, self.cluster, self.topo, self.history,
                                       self.seed, self.log, hold=hold, calm=calm)
        t_start = time.monotonic()
        self.nem.deadline = t_start + a.time
        for c in self.clients:
            c.start()
        self.nem.start()
        next_report = t_start + 10
        while time.monotonic() < t_start + a.time:
            time.sleep(0.25)
            if time.monotonic() >= next_report:
                next_report += 10
                self.log("progress: %s" % self.history.counts)
        self.log("workload time over; stopping the nemesis and healing")
        self.nem.stop(timeout=90)
        stop.set()
        dl = time.monotonic() + 30
        for c in self.clients:
            c.join(max(0.1, dl - time.monotonic()))
            if c.is_alive():
                self.problem("client %d did not stop within 30 s" % c.k)
        self.log("clients stopped: %s" % self.history.counts)
        self.nem.heal_everything()
        self.final_phase(wl)
        self.history.close()
        self.check(wl)

    def exec_retry(self, node, sql, timeout):
        def go():
            try:
                node.query(sql, timeout=10)
                return True
            except Exception as e:  # noqa: BLE001
                if getattr(e, "pgcode", None) == "42P07":   # already exists: done before
                    return True
                raise
        return wait_for("%r on %s" % (sql[:40], node.name), go, timeout, interval=0.5)

    # -- end of run ----------------------------------------------------------------------
    def final_phase(self, wl):
        a = self.args
        cl = self.cluster
        self.log("healed; waiting for a leader and %d voters" % a.nodes)
        try:
            cl.wait_voters(a.nodes, timeout=60)
        except ClusterError as e:
            self.problem("unavailable after heal: %s" % e)
            for n in cl.nodes:
                self.log(n.log_tail(15))
            return
        # liveness: a write through every proxy node, a read on every standby node
        live = True
        for n in cl.nodes:
            try:
                if n.follower_mode == "proxy":
                    self.exec_retry(n, "INSERT INTO chaos_liveness VALUES ('%s', %d)"
                                    % (n.name, int(time.time())), 30)
                else:
                    wait_for("a read on %s" % n.name, lambda: n.query(
                        "SELECT count(*) FROM chaos_liveness", timeout=10, stale=True), 30,
                        interval=0.5)
            except Exception as e:  # noqa: BLE001
                self.problem("unavailable after heal: %s: %s" % (n.name, e))
                live = False
        if not live:
            for n in cl.nodes:
                self.log(n.log_tail(15))
            return
        # every node in standby mode, so that each one's own copy can be read
        for n in cl.nodes:
            if n.follower_mode == "standby":
                continue
            rc = n.stop(timeout=30)
            if rc not in (0, None):
                self.problem("%s: exit status %s after SIGTERM\n%s" % (n.name, rc,
                                                                        n.log_tail(20)))
            n.follower_mode = "standby"
            try:
                n.start(timeout=30)
                cl.wait_voters(a.nodes, timeout=60)
            except ClusterError as e:
                self.problem("unavailable after restarting %s in standby mode: %s"
                             % (n.name, e))
                return
        self.log("every node in standby mode; waiting for equal applied indexes")
        prev = [None]

        def same():
            idx = []
            for n in cl.nodes:
                own = n.own_view(timeout=3)
                if own is None:
                    return False
                idx.append(own["applied_index"])
            ok = len(set(idx)) == 1 and prev[0] == idx
            prev[0] = idx
            return idx[0] if ok else None
        try:
            idx = wait_for("equal applied indexes", same, 60, interval=0.3)
            self.log("applied index %s on every node" % idx)
        except ClusterError as e:
            self.problem("nodes did not converge: %s (last %s)" % (e, prev[0]))
            return
        # final reads on each node's own copy, recorded in the history
        reads = {}
        dumps = {}
        for n in cl.nodes:
            try:
                c = n.connect(timeout=10)
                try:
                    c.run("SET pqlite.read_consistency = stale", timeout=10)
                    reads[n.name] = [c.run(sql, timeout=30) for sql in wl.final_sql]
                    dumps[n.name] = [c.run(sql, timeout=30) for sql in wl.dump_sql()]
                finally:
                    c.close()
            except Exception as e:  # noqa: BLE001
                self.problem("final read on %s failed: %r" % (n.name, e))
        if not reads or len(dumps) < len(cl.nodes):
            return
        for k, (name, res) in enumerate(reads.items()):
            for f, inv, val in wl.final_reads({name: res}):
                p = 1000000 + k
                self.history.record({"process": p, "type": "invoke", "f": f, "value": inv,
                                     "node": name, "final": True})
                self.history.record({"process": p, "type": "ok", "f": f, "value": val,
                                     "node": name, "final": True})
        first = next(iter(dumps))
        for name, d in dumps.items():
            if d != dumps[first]:
                diff = []
                for t, (x, y) in enumerate(zip(dumps[first], d)):
                    sx, sy = set(map(tuple, x)), set(map(tuple, y))
                    diff.append({"table": wl.tables[t], "only_%s" % first: sorted(sx - sy)[:10],
                                 "only_%s" % name: sorted(sy - sx)[:10],
                                 "rows": (len(x), len(y))})
                self.problem("divergence: the tables on %s and %s differ: %s"
                             % (first, name, diff))
        self.summary["final_rows"] = {name: [len(x) for x in d] for name, d in dumps.items()}

    def check(self, wl):
        a = self.args
        events = checkers.load_history(self.history.path)
        opts = wl.check_options()
        results = {}
        if a.workload == "bank":
            results["bank"] = checkers.check("bank", events, realtime=False, **opts)
        elif a.workload == "register":
            results["register"] = checkers.check("register", events, realtime=True, **opts)
        else:
            results["serializable/final"] = checkers.check(a.workload, events,
                                                           realtime=False, **opts)
            strict = [e for e in events if not e.get("stale")]
            results["realtime"] = checkers.check(a.workload, strict, realtime=True, **opts)
        with open(os.path.join(self.out, "check.json"), "w") as f:
            json.dump(results, f, indent=1, sort_keys=True, default=str)
        for k, r in results.items():
            if not r["valid"]:
                self.problem("checker %s (%s): %s; first: %s" % (
                    a.workload, k, r["anomaly_counts"],
                    json.dumps(r["anomalies"][:2], default=str)[:1500]))
        self.summary["checker"] = {k: {"valid": r["valid"], "anomalies": r["anomaly_counts"]}
                                   for k, r in results.items()}

    def scan(self):
        """Node exits and logs."""
        windows = self.nem.disk_windows if self.nem else []
        expected_stops = 0
        for rec in self.exits:
            exp, rc = rec["expected"], rec["rc"]
            if exp == signal.SIGKILL and rc == -signal.SIGKILL:
                continue
            if exp == signal.SIGTERM and rc == 0:
                continue
            if exp is None and rc in (-signal.SIGABRT, 1) and any(
                    w["node"] == rec["node"] and w["t0"] <= rec["t"] and
                    (w["t1"] is None or rec["t"] <= w["t1"] + 1.0) for w in windows):
                expected_stops += 1
                continue
            why = self.start_errors(rec["node"], rec["start"])
            self.problem("%s (pid %d): %s%s" % (rec["node"], rec["pid"],
                         "exit status %s after %s" % (rc, signal.Signals(exp).name)
                         if exp else "exited by itself with status %s" % rc,
                         (": " + " | ".join(why)) if why else ""))
        self.summary["disk_fail_stops"] = expected_stops
        installs = 0
        for n in (self.cluster.nodes if self.cluster else []):
            text = n.log_text()
            for part in text.split("\n==== start #"):
                i = part.find("pgwire: listening")
                if i >= 0:
                    installs += part[i:].count("fsm: restored")
            pos = 0
            found = []
            for line in text.splitlines(keepends=True):
                start = pos
                pos += len(line.encode("utf-8", "replace"))
                if not nodes_mod.PROBLEM_RE.search(line):
                    continue
                if ("FAIL-STOP" in line or nodes_mod.DISK_FULL_RE.search(line)) and any(
                        w["node"] == n.name and w["log_start"] <= start and
                        (w["log_end"] is None or start <= w["log_end"]) for w in windows):
                    self.notes.append("%s: expected under a disk fault: %s" % (n.name,
                                                                           line.strip()))
                    continue
                found.append(line.rstrip())
            if found:
                self.problem("%s log: %d problem line(s), first: %s"
                             % (n.name, len(found), " | ".join(found[:5])))
            for core in glob.glob(os.path.join(n.dir, "core*")):
                self.problem("%s: core dump %s" % (n.name, core))
        self.summary["snapshot_installs"] = installs

    def start_errors(self, name, start):
        """Error lines of the log of process number `start` of node `name`."""
        text = self.cluster.by_name(name).log_text()
        parts = text.split("\n==== start #")
        if start < 1 or start >= len(parts):
            return []
        out = []
        for line in parts[start].splitlines():
            if ("error" in line or "cannot" in line or "FATAL" in line or
                    "SUMMARY" in line or "Assertion" in line) and len(out) < 3:
                out.append(line.strip()[:300])
        return out

    def write_runjson(self, extra=None):
        d = dict(self.summary)
        d.update(args=vars(self.args), seed=self.seed, out=self.out,
                 runid=self.topo.runid if self.topo else None)
        if extra:
            d.update(extra)
        with open(os.path.join(self.out, "run.json"), "w") as f:
            json.dump(d, f, indent=1, sort_keys=True, default=str)

    def archive_data(self):
        for n in self.cluster.nodes if self.cluster else []:
            if os.path.isdir(n.data):
                try:
                    with tarfile.open(os.path.join(n.dir, "data.tar.gz"), "w:gz") as t:
                        t.add(n.data, arcname="data")
                except Exception as e:  # noqa: BLE001
                    self.log("could not archive %s: %r" % (n.data, e))

    def teardown(self, failed):
        if self.cluster:
            try:
                rcs = self.cluster.stop_all(timeout=30)
                for name, rc in rcs.items():
                    if rc not in (0, None):
                        self.problem("%s: exit status %s at the final SIGTERM\n%s"
                                     % (name, rc, self.cluster.by_name(name).log_tail(15)))
            except Exception as e:  # noqa: BLE001
                self.problem("stopping the nodes: %r" % e)
            self.cluster.stop_monitor()
        if self.topo:
            if failed or self.problems:
                self.archive_data()
            left = self.topo.teardown()
            if left:
                self.problem("teardown left: %s" % ", ".join(left))


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    why = netns.probe()
    if why is not None:
        print("SKIPPED: chaos harness: %s" % why)
        return SKIP
    if "ioerr" in args.nemesis:
        why = nodes_mod.strace_probe()
        if why is not None:
            print("SKIPPED: chaos harness: the ioerr nemesis needs strace: %s" % why)
            return SKIP
    run = Run(args)
    run.prepare_out()
    state = {"signalled": False}

    def on_signal(sig, frame):
        if state["signalled"]:
            return
        state["signalled"] = True
        raise Interrupted(signal.Signals(sig).name)

    def on_alarm(sig, frame):
        raise Interrupted("time budget of the run exceeded")
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(args.time + 600))
    failed = False
    interrupted = None
    try:
        run.execute()
    except Interrupted as e:
        interrupted = str(e)
        run.problem("interrupted: %s" % e)
        failed = True
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001
        import traceback
        run.problem("harness error: %r\n%s" % (e, traceback.format_exc()))
        failed = True
    finally:
        signal.alarm(0)
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        if run.nem is not None and run.nem.is_alive():
            run.nem.stop_ev.set()
        try:
            run.teardown(failed)
        finally:
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(s, signal.SIG_DFL)
    run.scan()
    if run.nem is not None:
        for e in run.nem.errors:
            run.notes.append("nemesis: " + e)
        run.summary["nemesis_events"] = run.nem.counts
    h = run.history
    if h is not None:
        run.summary["ops"] = dict(h.counts)
        run.summary["errors"] = dict(sorted(h.errors.items(), key=lambda kv: -kv[1])[:12])
    run.summary["elapsed_s"] = round(time.monotonic() - run.t0, 1)
    ok = not run.problems
    run.summary["result"] = "PASS" if ok else "FAIL"
    run.summary["problems"] = run.problems
    run.summary["problem_kinds"] = run.kinds
    run.summary["notes"] = run.notes[:50]
    run.write_runjson()
    print_summary(run, ok)
    if ok and run.own_out and not args.keep:
        shutil.rmtree(run.out, ignore_errors=True)
    if interrupted and interrupted in ("SIGINT", "SIGTERM", "SIGHUP"):
        return 130 if interrupted == "SIGINT" else 1
    return 0 if ok else 1


def print_summary(run, ok):
    s = run.summary
    ops = s.get("ops", {})
    print("==== chaos %s: workload=%s nemesis=%s seed=%s nodes=%s time=%ss elapsed=%ss"
          % (s["result"], s.get("workload"), s.get("nemesis"), s.get("seed"), s.get("nodes"),
             s.get("time"), s.get("elapsed_s")))
    print("     ops: %d invoked, %d ok, %d fail, %d info; errors: %s"
          % (ops.get("invoke", 0), ops.get("ok", 0), ops.get("fail", 0), ops.get("info", 0),
             s.get("errors", {})))
    print("     nemesis: %s; disk fail-stops: %s; snapshots installed from a leader: %s"
          % (s.get("nemesis_events", {}), s.get("disk_fail_stops", 0),
             s.get("snapshot_installs", 0)))
    for k, v in (s.get("checker") or {}).items():
        print("     checker %s: %s %s" % (k, "valid" if v["valid"] else "INVALID",
                                          v["anomalies"] or ""))
    if run.kinds:
        print("     problem kinds: %s" % ", ".join(run.kinds))
    for n in run.notes[:10]:
        print("     note: %s" % n[:300])
    for p in run.problems:
        print("     PROBLEM: %s" % p[:2000])
    if not ok or not run.own_out or run.args.keep:
        print("     output (history, logs, seed, check.json): %s" % run.out)


if __name__ == "__main__":
    sys.exit(main())

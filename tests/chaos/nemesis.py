"""Nemeses: seeded, scheduled faults against a nodes.Cluster in a netns.Topology.

Names (combine with '+', e.g. "partition+kill": each cycle applies a random non-empty
subset of the parts at once):

  none
  kill            kill -9 then restart: one node, the leader or a majority (seeded choice)
  kill-one | kill-leader | kill-majority | kill-all
  pause           SIGSTOP for longer than the election timeout, then SIGCONT: one or leader
  pause-one | pause-leader
  partition       isolate one node, isolate the leader, majority/minority halves, and on 5
                  nodes majorities-ring; cuts are silent drops (blackhole routes), fast
                  rejects (prohibit routes) or a void next hop (seeded choice)
  partition-one | partition-leader | partition-halves | partition-ring
  disk            fill a node's tmpfs with a balloon file (the leader or another node); the
                  node must fail-stop (or refuse writes) and never diverge; heal: delete the
                  balloon, restart the node if it stopped
  disk-one | disk-leader
  ioerr           every disk write of a node (the leader or another) fails with EIO or
                  ENOSPC (seeded), injected at the syscall by strace; the node must
                  fail-stop at its next write and never diverge; heal: detach, restart it
  ioerr-one | ioerr-leader
  member          remove a node (pqlite remove; the leader is transferred away first),
                  stop it, empty its data directory, start it again with --join (a new
                  member with a new id) and wait until it is a voter, while clients write

Schedule: a quiet lead-in, then cycles of [fault held 3-8 s, heal, 2-5 s calm] until the
deadline. Every action is recorded in the history as process "nemesis" (type info, f
"start"/"stop"); the checkers skip those lines.
"""
import random
import signal
import subprocess
import threading
import time

from nodes import ClusterError, IoFault, wait_for

FAMILIES = {
    "kill": ("kill-one", "kill-leader", "kill-majority"),
    "pause": ("pause-one", "pause-leader"),
    "partition": ("partition-one", "partition-leader", "partition-halves", "partition-ring"),
    "disk": ("disk-one", "disk-leader"),
    "ioerr": ("ioerr-one", "ioerr-leader"),
    "member": ("member",),
}
LEAVES = {"kill-one", "kill-leader", "kill-majority", "kill-all", "pause-one", "pause-leader",
          "partition-one", "partition-leader", "partition-halves", "partition-ring",
          "disk-one", "disk-leader", "ioerr-one", "ioerr-leader", "member"}


def parse(spec, n_nodes):
    """A list of parts; each part is a tuple of leaf faults to choose from."""
    if spec in ("none", ""):
        return []
    parts = []
    for p in spec.split("+"):
        if p in FAMILIES:
            leaves = tuple(x for x in FAMILIES[p] if x != "partition-ring" or n_nodes >= 5)
        elif p in LEAVES:
            if p == "partition-ring" and n_nodes < 5:
                raise ValueError("partition-ring needs 5 nodes")
            leaves = (p,)
        else:
            raise ValueError("unknown nemesis %r (known: none, %s, %s)"
                             % (p, ", ".join(sorted(FAMILIES)), ", ".join(sorted(LEAVES))))
        parts.append(leaves)
    return parts


class Nemesis(threading.Thread):
    def __init__(self, spec, cluster, topo, history, seed, log, hold=(3.0, 8.0),
                 calm=(2.0, 5.0), lead_in=2.0, modes=None):
        super().__init__(name="nemesis", daemon=True)
        self.parts = parse(spec, len(cluster))
        self.spec = spec
        self.cluster = cluster
        self.topo = topo
        self.history = history
        self.rng = random.Random(seed)
        self.log = log
        self.hold = hold
        self.calm = calm
        self.lead_in = lead_in
        self.modes = modes or ("drop", "reject", "void")
        self.stop_ev = threading.Event()
        self.deadline = None
        self.active = []          # (leaf, state) of faults in force
        self.counts = {}
        self.errors = []
        self.disk_windows = []    # {"node", "log_start", "log_end", "t0", "t1"}
        self.lock = threading.RLock()
        self.removed = set()      # names of nodes removed and not yet back

    # -- recording --------------------------------------------------------------------------
    def _rec(self, f, value):
        self.history.record({"process": "nemesis", "type": "info", "f": f, "value": value})
        self.log("nemesis %s %s" % (f, value))

    # -- schedule ---------------------------------------------------------------------------
    def run(self):
        try:
            if not self.parts:
                return
            if self.stop_ev.wait(self.lead_in):
                return
            while not self.stop_ev.is_set() and time.monotonic() < self.deadline - 3:
                k = self.rng.randint(1, len(self.parts))
                chosen = [self.rng.choice(p) for p in self.rng.sample(self.parts, k)]
                for leaf in chosen:
                    try:
                        self.start_fault(leaf)
                    except Exception as e:  # noqa: BLE001
                        self.errors.append("%s: %r" % (leaf, e))
                        self.log("nemesis: %s failed to start: %r" % (leaf, e))
                hold = self.rng.uniform(*self.hold)
                self.stop_ev.wait(min(hold, max(0.5, self.deadline - time.monotonic())))
                self.heal()
                self.stop_ev.wait(self.rng.uniform(*self.calm))
        except Exception as e:  # noqa: BLE001
            self.errors.append("schedule: %r" % e)
            self.log("nemesis: schedule stopped: %r" % e)
        finally:
            self.heal()

    def stop(self, timeout=90.0):
        self.stop_ev.set()
        self.join(timeout)
        self.heal()

    # -- helpers ----------------------------------------------------------------------------
    def _leader(self):
        ld = self.cluster.leader_or_none(timeout=4.0)
        if ld is None:
            self.log("nemesis: no single leader found; choosing a node at random")
        return ld

    def _pick(self, leaf_kind, count=1):
        live = [n for n in self.cluster.nodes if n.alive() and n.name not in self.removed]
        if leaf_kind == "leader":
            ld = self._leader()
            if ld is not None and ld in live:
                return [ld]
        return self.rng.sample(live, min(count, len(live)))

    def _majority(self):
        return len(self.cluster) // 2 + 1

    # -- faults -----------------------------------------------------------------------------
    def start_fault(self, leaf):
        with self.lock:
            self.counts[leaf] = self.counts.get(leaf, 0) + 1
            kind, _, sub = leaf.partition("-")
            if kind == "kill":
                n = {"one": 1, "leader": 1, "majority": self._majority(),
                     "all": len(self.cluster)}[sub]
                targets = self._pick("leader" if sub == "leader" else "any", n)
                self._rec("start", {"fault": leaf, "nodes": [t.name for t in targets]})
                for t in targets:
                    t.kill()
                self.active.append((leaf, {"nodes": targets}))
            elif kind == "pause":
                targets = self._pick("leader" if sub == "leader" else "any", 1)
                self._rec("start", {"fault": leaf, "nodes": [t.name for t in targets]})
                for t in targets:
                    t.signal(signal.SIGSTOP)
                self.active.append((leaf, {"nodes": targets}))
            elif kind == "partition":
                self._partition(leaf, sub)
            elif kind == "disk":
                targets = self._pick("leader" if sub == "leader" else "any", 1)
                for t in targets:
                    w = {"node": t.name, "log_start": t.log_size(), "log_end": None,
                         "t0": time.monotonic(), "t1": None}
                    self.disk_windows.append(w)
                    size = self.topo.fill(t.i)
                    pump_stop = threading.Event()
                    pump = threading.Thread(target=self._pump, args=(t.i, pump_stop),
                                            name="balloon-%s" % t.name, daemon=True)
                    pump.start()
                    self._rec("start", {"fault": leaf, "nodes": [t.name], "balloon": size,
                                        "free": self.topo.disk_free(t.i)})
                    self.active.append((leaf, {"nodes": [t], "window": w,
                                               "pump": (pump, pump_stop)}))
            elif kind == "ioerr":
                targets = self._pick("leader" if sub == "leader" else "any", 1)
                for t in targets:
                    err = self.rng.choice(("EIO", "ENOSPC"))
                    w = {"node": t.name, "log_start": t.log_size(), "log_end": None,
                         "t0": time.monotonic(), "t1": None}
                    self.disk_windows.append(w)
                    fault = IoFault(t, err)
                    self._rec("start", {"fault": leaf, "nodes": [t.name], "error": err})
                    self.active.append((leaf, {"nodes": [t], "window": w, "fault": fault}))
                    fault.start()
            elif kind == "member":
                self._member_remove(leaf)
            else:
                raise ValueError(leaf)

    def _pump(self, i, stop):
        """Keep the tmpfs full: the server frees space now and then (an open segment is
        truncated when it is closed, a snapshot replaces an older one), and the balloon
        takes it back within 20 ms."""
        while not stop.wait(0.02):
            try:
                if self.topo.disk_free(i) > 0:
                    self.topo.fill(i)
            except OSError:
                pass

    def _partition(self, leaf, sub):
        nodes = [n.i for n in self.cluster.nodes]
        mode = self.rng.choice(self.modes)
        if sub in ("one", "leader"):
            t = self._pick("leader" if sub == "leader" else "any", 1)
            x = t[0].i if t else self.rng.choice(nodes)
            groups = [[x], [i for i in nodes if i != x]]
            cuts = self.topo.partition(groups, mode)
        elif sub == "halves":
            sh = nodes[:]
            self.rng.shuffle(sh)
            k = len(sh) // 2
            groups = [sorted(sh[:k]), sorted(sh[k:])]
            cuts = self.topo.partition(groups, mode)
        elif sub == "ring":
            ring = nodes[:]
            self.rng.shuffle(ring)
            n = len(ring)
            cuts = []
            for a in range(n):   # each node keeps its two ring neighbours: a majority of 5
                for d in range(2, n - 1):
                    i, j = ring[a], ring[(a + d) % n]
                    if (min(i, j), max(i, j)) not in cuts:
                        self.topo.cut(i, j, mode)
                        cuts.append((min(i, j), max(i, j)))
            groups = {"ring": ring}
        else:
            raise ValueError(leaf)
        self._rec("start", {"fault": leaf, "mode": mode, "groups": groups,
                            "cuts": sorted(cuts)})
        self.active.append((leaf, {"cuts": cuts}))

    def _member_remove(self, leaf):
        cands = [n for n in self.cluster.nodes if n.alive() and n.name not in self.removed]
        if len(cands) < len(self.cluster):
            self._rec("start", {"fault": leaf, "skipped": "a node is down or removed"})
            return
        t = self.rng.choice(cands)
        nid = t.node_id()
        other = self.rng.choice([n for n in cands if n is not t])
        self._rec("start", {"fault": leaf, "nodes": [t.name], "id": nid, "via": other.name})
        p = subprocess.run([self.cluster.binary, "remove", "--host", other.pg_address,
                            "--timeout", "20000", str(nid)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=40)
        self._rec("info", {"fault": leaf, "remove": p.returncode,
                           "output": p.stdout.strip()[-300:]})
        if p.returncode != 0:
            # not removed (membership change in progress, no leader...): nothing to heal
            # unless it was removed after all; check the configuration
            try:
                if t.pg_address in self.cluster.members(timeout=10):
                    return
            except ClusterError:
                return
        t.stop()
        self.topo.wipe_data(t.i)
        self.removed.add(t.name)
        self.active.append((leaf, {"nodes": [t]}))

    def _member_readd(self, t):
        """Start the wiped node t with --join to a live member. Never without --join: an
        empty data directory without it would bootstrap a second cluster."""
        def member():
            live = [n for n in self.cluster.nodes if n.alive() and not n.paused and
                    n is not t and n.name not in self.removed]
            return self.rng.choice(live) if live else None
        try:
            via = wait_for("a live member for %s to join" % t.name, member, 30, interval=0.5)
        except ClusterError as e:
            self.errors.append("member: %s not re-added: %s" % (t.name, e))
            self._rec("info", {"fault": "member", "nodes": [t.name],
                               "error": "no live member to join"})
            return
        t.join = via.pg_address
        t.start(timeout=30)
        try:
            wait_for("%s to be a voter again" % t.name,
                     lambda: self.cluster.members(timeout=5).get(t.pg_address, {}).get(
                         "role") == "voter", 45, interval=0.5)
            self.removed.discard(t.name)
            self._rec("stop", {"fault": "member", "nodes": [t.name], "id": t.node_id()})
        except ClusterError as e:
            self.errors.append("member: %s did not become a voter again: %s" % (t.name, e))
            self._rec("stop", {"fault": "member", "nodes": [t.name], "error": str(e)[:300]})

    # -- healing ----------------------------------------------------------------------------
    def heal(self):
        """Undo every fault in force (idempotent)."""
        with self.lock:
            # processes first (restarted nodes come back while the network is still cut,
            # as after a power cut in one rack), then the network, membership last: a
            # re-added node joins through members restarted first
            order = {"partition": 1, "member": 2}
            self.active.sort(key=lambda a: order.get(a[0].partition("-")[0], 0))
            while self.active:
                leaf, st = self.active.pop(0)
                try:
                    self._heal_one(leaf, st)
                except Exception as e:  # noqa: BLE001
                    self.errors.append("heal %s: %r" % (leaf, e))
                    self.log("nemesis: healing %s failed: %r" % (leaf, e))
            if self.topo.cuts:
                self.topo.heal_all()
            # nodes that stopped by themselves (a crash, a fail-stop) come back too, so
            # that the run goes on with every node (the exit is judged at the end)
            for n in self.cluster.nodes:
                if not n.alive() and n.proc is not None and n.name not in self.removed:
                    self._rec("info", {"restart-stopped-node": n.name,
                                       "status": n.proc.returncode})
                    self._restart(n)

    def _restart(self, t):
        if not t.alive():
            try:
                t.start(timeout=30)
            except ClusterError as e:
                self.errors.append("restart %s: %s" % (t.name, str(e)[:500]))
                self.log("nemesis: restart of %s failed: %s" % (t.name, e))

    def _heal_one(self, leaf, st):
        kind = leaf.partition("-")[0]
        if kind == "kill":
            for t in st["nodes"]:
                self._restart(t)
            self._rec("stop", {"fault": leaf, "nodes": [t.name for t in st["nodes"]]})
        elif kind == "pause":
            for t in st["nodes"]:
                t.signal(signal.SIGCONT)
            self._rec("stop", {"fault": leaf, "nodes": [t.name for t in st["nodes"]]})
        elif kind == "partition":
            self.topo.heal_all()
            self._rec("stop", {"fault": leaf})
        elif kind == "disk":
            pump, pump_stop = st["pump"]
            pump_stop.set()
            pump.join(5)
            self.topo.unfill(st["nodes"][0].i)
            self._end_disk_window(leaf, st)
        elif kind == "ioerr":
            st["fault"].stop()
            self._end_disk_window(leaf, st)
        elif kind == "member":
            self._member_readd(st["nodes"][0])

    def _end_disk_window(self, leaf, st):
        """The disk is good again: close the window in which a fail-stop of the node is
        expected, and restart the node if it stopped."""
        t = st["nodes"][0]
        died = not t.alive()
        if died:
            t.reap()
        w = st["window"]
        w["log_end"] = t.log_size()
        w["t1"] = time.monotonic()
        w["died"] = died
        self._rec("stop", {"fault": leaf, "nodes": [t.name], "node_stopped": died})
        if died:
            self._restart(t)

    def heal_everything(self):
        """End of run: heal, resume every paused node, remove balloons, restart every node
        that is down, bring removed nodes back."""
        self.heal()
        self.topo.heal_all()
        for n in self.cluster.nodes:
            if n.paused:
                n.signal(signal.SIGCONT)
            self.topo.unfill(n.i)
        for n in self.cluster.nodes:
            if n.name in self.removed:
                continue
            if not n.alive():
                self._restart(n)
        for name in list(self.removed):
            self._member_readd(self.cluster.by_name(name))

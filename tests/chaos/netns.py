"""Network and disk topology of a chaos run: one network namespace per node.

    root namespace (the harness and its clients)
        bridge pqcb<RUN>  10.213.X.1/24          X: a free third octet, chosen per run
          |-- veth pqc<RUN>h1 <-> eth0 in netns pqc-<RUN>-n1  10.213.X.11/24
          |-- veth pqc<RUN>h2 <-> eth0 in netns pqc-<RUN>-n2  10.213.X.12/24
          ...
    each node's data directory: its own size-limited tmpfs, <workdir>/n<i>/fs

Everything created here carries the run id <RUN> (6 hex digits) in its name and is listed in
a state file (/run/pqlite-chaos/<RUN>.json) while it exists, so teardown (and
`netns.py --cleanup-stale`, for a run that was SIGKILLed) removes exactly what this harness
made and nothing else. Nothing here uses iptables: partitions are routes inside the node
namespaces (see `cut`).

Root is required. `probe()` says why a run cannot happen (not root, no `ip netns`, no
tmpfs mount): the caller then exits 77 with a line saying SKIPPED.
"""
import errno
import fcntl
import ipaddress
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

STATE_DIR = "/run/pqlite-chaos"
LOCK_PATH = "/run/lock/pqlite-chaos-net.lock"
SUBNET_PREFIX = "10.213"
PG_PORT = 5433
RAFT_PORT = 7433

# Partition modes: how a cut between two nodes is made, in both node namespaces.
#   drop   - `ip route add blackhole PEER/32`: nothing reaches the peer; established
#            connections (Raft's) just stall until TCP gives up, new connects fail locally
#            with EINVAL; the peer sees nothing (silent drop)
#   reject - `ip route add prohibit PEER/32`: local senders get EACCES at once (fast reject)
#   void   - `ip route add PEER/32 via <an address nobody has>`: packets go to a neighbour
#            that never answers ARP: a black hole on the wire, no local error until the
#            neighbour resolution fails (about 3 s, then EHOSTUNREACH on connects)
CUT_MODES = ("drop", "reject", "void")


class TopologyError(Exception):
    pass


class Skip(Exception):
    """The environment cannot run the harness (not root, no netns...): exit 77."""


def _run(argv, check=True, timeout=20, input=None):
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout, input=input, text=True)
    except subprocess.TimeoutExpired:
        raise TopologyError("%s: timed out after %ss" % (" ".join(argv), timeout))
    if check and p.returncode != 0:
        raise TopologyError("%s: exit %d: %s" % (" ".join(argv), p.returncode,
                                                p.stderr.strip() or p.stdout.strip()))
    return p


def probe():
    """None if this machine can run the harness, else the reason (a string)."""
    if os.geteuid() != 0:
        return "not root (network namespaces and tmpfs mounts need root)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    name = "pqc-probe-%d" % os.getpid()
    try:
        p = _run(["ip", "netns", "add", name], check=False)
        if p.returncode != 0:
            return "ip netns add fails: %s" % (p.stderr.strip() or p.returncode)
        p = _run(["ip", "netns", "exec", name, "true"], check=False)
        if p.returncode != 0:
            return "ip netns exec fails: %s" % (p.stderr.strip() or p.returncode)
        p = _run(["ip", "link", "add", "pqcprobe%d" % (os.getpid() % 100000), "type",
                  "bridge"], check=False)
        if p.returncode != 0:
            return "cannot create a bridge: %s" % p.stderr.strip()
        _run(["ip", "link", "del", "pqcprobe%d" % (os.getpid() % 100000)], check=False)
    finally:
        _run(["ip", "netns", "del", name], check=False)
    return None


def _used_networks():
    """Every IPv4 network this (root) namespace has an address or a route for."""
    nets = []
    for argv in (["ip", "-4", "-o", "addr", "show"], ["ip", "-4", "route", "show", "table",
                                                        "all"]):
        out = _run(argv, check=False).stdout
        for line in out.splitlines():
            for tok in line.split():
                if tok[0].isdigit() and ("/" in tok or tok.count(".") == 3):
                    try:
                        nets.append(ipaddress.ip_network(tok, strict=False))
                    except ValueError:
                        pass
    return nets


class Topology:
    """Bridge, namespaces, veths and tmpfs mounts of one run. Use as a context manager
    or call setup()/teardown(); teardown is idempotent and safe after a partial setup."""

    def __init__(self, n_nodes, workdir, tmpfs_mb=256, runid=None, log=None, rng=None):
        self.n = n_nodes
        self.runid = runid or "%06x" % random.SystemRandom().randrange(1 << 24)
        self.workdir = os.path.abspath(workdir)
        self.tmpfs_mb = tmpfs_mb
        self.log = log or (lambda msg: None)
        self.bridge = "pqcb" + self.runid
        self.subnet = None
        self.client_addr = None
        self.created = {"netns": [], "links": [], "mounts": [], "pids": []}
        self.cuts = {}            # (i, j) -> mode, i != j, both directions installed
        self.procs = {}           # pid -> Popen of processes started in the namespaces
        self._torn_down = False
        self._state_path = os.path.join(STATE_DIR, self.runid + ".json")

    # -- names --------------------------------------------------------------------------
    def ns(self, i):
        return "pqc-%s-n%d" % (self.runid, i)

    def addr(self, i):
        return "%s.%d" % (self.subnet, 10 + i)

    def pg_address(self, i):
        return "%s:%d" % (self.addr(i), PG_PORT)

    def raft_address(self, i):
        return "%s:%d" % (self.addr(i), RAFT_PORT)

    def mountpoint(self, i):
        return os.path.join(self.workdir, "n%d" % i, "fs")

    def data_dir(self, i):
        return os.path.join(self.mountpoint(i), "data")

    def balloon_path(self, i):
        return os.path.join(self.mountpoint(i), "balloon")

    # -- state file (for --cleanup-stale after a SIGKILL) --------------------------------
    def _save_state(self):
        os.makedirs(STATE_DIR, exist_ok=True)
        st = {"runid": self.runid, "owner_pid": os.getpid(), "bridge": self.bridge,
              "created": self.created, "workdir": self.workdir}
        tmp = self._state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(st, f)
        os.replace(tmp, self._state_path)

    # -- setup --------------------------------------------------------------------------
    def setup(self):
        os.makedirs(os.path.dirname(LOCK_PATH), exist_ok=True)
        with open(LOCK_PATH, "a") as lk:
            fcntl.flock(lk, fcntl.LOCK_EX)
            try:
                self._choose_subnet()
                self._add_link(["ip", "link", "add", self.bridge, "type", "bridge"],
                               self.bridge)
                _run(["ip", "addr", "add", self.client_addr + "/24", "dev", self.bridge])
            finally:
                fcntl.flock(lk, fcntl.LOCK_UN)
        _run(["ip", "link", "set", self.bridge, "up"])
        for i in range(1, self.n + 1):
            self._setup_node(i)
        self.log("topology %s: bridge %s %s.0/24, client address %s, namespaces %s"
                 % (self.runid, self.bridge, self.subnet, self.client_addr,
                    " ".join(self.ns(i) for i in range(1, self.n + 1))))
        self._wait_reachable()
        return self

    def _choose_subnet(self):
        used = _used_networks()
        rng = random.SystemRandom()
        cands = list(range(1, 255))
        rng.shuffle(cands)
        for x in cands:
            net = ipaddress.ip_network("%s.%d.0/24" % (SUBNET_PREFIX, x))
            if any(net.overlaps(u) for u in used if u.prefixlen > 0):
                continue
            self.subnet = "%s.%d" % (SUBNET_PREFIX, x)
            self.client_addr = self.subnet + ".1"
            return
        raise TopologyError("no free %s.X.0/24 network" % SUBNET_PREFIX)

    def _add_link(self, argv, name):
        _run(argv)
        self.created["links"].append(name)
        self._save_state()

    def _setup_node(self, i):
        ns = self.ns(i)
        _run(["ip", "netns", "add", ns])
        self.created["netns"].append(ns)
        self._save_state()
        host, peer = "pqc%sh%d" % (self.runid, i), "pqc%sp%d" % (self.runid, i)
        self._add_link(["ip", "link", "add", host, "type", "veth", "peer", "name", peer], host)
        _run(["ip", "link", "set", peer, "netns", ns])
        _run(["ip", "-n", ns, "link", "set", peer, "name", "eth0"])
        _run(["ip", "link", "set", host, "master", self.bridge])
        _run(["ip", "link", "set", host, "up"])
        _run(["ip", "-n", ns, "addr", "add", self.addr(i) + "/24", "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        mp = self.mountpoint(i)
        os.makedirs(mp, exist_ok=True)
        _run(["mount", "-t", "tmpfs", "-o", "size=%dm,mode=0755" % self.tmpfs_mb,
              "pqc-%s-n%d" % (self.runid, i), mp])
        self.created["mounts"].append(mp)
        self._save_state()
        os.makedirs(self.data_dir(i), exist_ok=True)

    def _wait_reachable(self, timeout=10.0):
        """Until every node namespace answers a ping from the root namespace (the bridge
        port leaves the 'learning' state quickly; STP is off on a new bridge)."""
        deadline = time.monotonic() + timeout
        for i in range(1, self.n + 1):
            while True:
                p = _run(["ping", "-c", "1", "-W", "1", self.addr(i)], check=False) \
                    if shutil.which("ping") else None
                if p is None or p.returncode == 0:
                    break
                if time.monotonic() >= deadline:
                    raise TopologyError("%s (%s) not reachable from the root namespace"
                                        % (self.ns(i), self.addr(i)))
                time.sleep(0.2)

    # -- processes ----------------------------------------------------------------------
    def spawn(self, i, argv, log_path, env=None, cwd=None):
        """Start argv inside node i's namespace (ip netns exec execs it: the pid is the
        program's own). stdout and stderr append to log_path. Core dumps allowed."""
        def pre():
            os.setsid()
            try:
                import resource
                resource.setrlimit(resource.RLIMIT_CORE,
                                   (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            except (ValueError, OSError):
                pass
        with open(log_path, "ab") as log:
            p = subprocess.Popen(["ip", "netns", "exec", self.ns(i)] + list(argv),
                                 stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                 preexec_fn=pre)
        self.procs[p.pid] = p
        self.created["pids"].append(p.pid)
        self._save_state()
        return p

    def kill_all(self):
        """SIGKILL (after SIGCONT) every process started with spawn that still runs."""
        for pid, p in list(self.procs.items()):
            if p.poll() is None:
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass

    # -- partitions ---------------------------------------------------------------------
    def _route(self, verb, i, j, mode):
        ns, dst = self.ns(i), self.addr(j) + "/32"
        if mode == "drop":
            argv = ["ip", "-n", ns, "route", verb, "blackhole", dst]
        elif mode == "reject":
            argv = ["ip", "-n", ns, "route", verb, "prohibit", dst]
        elif mode == "void":
            argv = ["ip", "-n", ns, "route", verb, dst, "via", self.subnet + ".254", "dev",
                    "eth0"]
        else:
            raise ValueError("unknown cut mode %r" % mode)
        return _run(argv, check=(verb == "add"))

    def cut(self, i, j, mode):
        """Cut i <-> j (both directions: a route in each namespace). Clients in the root
        namespace still reach both."""
        if i == j:
            return
        key = (min(i, j), max(i, j))
        if key in self.cuts:
            return
        self._route("add", i, j, mode)
        try:
            self._route("add", j, i, mode)
        except Exception:
            self._route("del", i, j, mode)
            raise
        self.cuts[key] = mode

    def heal_cut(self, i, j):
        key = (min(i, j), max(i, j))
        mode = self.cuts.pop(key, None)
        if mode is not None:
            self._route("del", key[0], key[1], mode)
            self._route("del", key[1], key[0], mode)

    def heal_all(self):
        for key in list(self.cuts):
            self.heal_cut(*key)

    def partition(self, groups, mode):
        """Cut every pair of nodes that are in no common group (groups: lists of node
        numbers). Returns the cut pairs."""
        cut = []
        for i in range(1, self.n + 1):
            for j in range(i + 1, self.n + 1):
                if not any(i in g and j in g for g in groups):
                    self.cut(i, j, mode)
                    cut.append((i, j))
        return cut

    def routes(self, i):
        return _run(["ip", "-n", self.ns(i), "route", "show"], check=False).stdout

    # -- disk ---------------------------------------------------------------------------
    def fill(self, i, leave_bytes=0):
        """Fill node i's tmpfs with a balloon file until ENOSPC (or until leave_bytes are
        left). Returns the balloon's size."""
        path = self.balloon_path(i)
        st = os.statvfs(self.mountpoint(i))
        free = st.f_bavail * st.f_frsize - leave_bytes
        written = 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            if free > 0:
                try:
                    os.posix_fallocate(fd, os.fstat(fd).st_size, free)
                except OSError:
                    pass
            chunk = b"\0" * (1 << 20)
            while leave_bytes == 0:
                try:
                    n = os.write(fd, chunk)
                except OSError as e:
                    if e.errno == errno.ENOSPC:
                        break
                    raise
                written += n
                if n < len(chunk):
                    chunk = chunk[:max(1, len(chunk) // 2)]
        finally:
            os.close(fd)
        return os.path.getsize(path)

    def unfill(self, i):
        try:
            os.unlink(self.balloon_path(i))
            return True
        except FileNotFoundError:
            return False

    def disk_free(self, i):
        st = os.statvfs(self.mountpoint(i))
        return st.f_bavail * st.f_frsize

    def wipe_data(self, i):
        """Empty node i's data directory (the node must be stopped)."""
        d = self.data_dir(i)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d, exist_ok=True)

    # -- teardown -----------------------------------------------------------------------
    def teardown(self):
        """Kill our processes, unmount, delete namespaces (their veth ends go with them),
        links and the bridge. Returns a list of leftovers (empty = clean)."""
        if self._torn_down:
            return []
        self.kill_all()
        self.cuts.clear()
        for mp in reversed(self.created["mounts"]):
            for args in (["umount", mp], ["umount", "-l", mp]):
                if _run(args, check=False).returncode == 0:
                    break
        for ns in reversed(self.created["netns"]):
            _run(["ip", "netns", "del", ns], check=False)
        for link in reversed(self.created["links"]):
            if _link_exists(link):
                _run(["ip", "link", "del", link], check=False)
        left = leftovers(self.runid, self.created["mounts"])
        self._torn_down = True
        if not left:
            try:
                os.unlink(self._state_path)
            except FileNotFoundError:
                pass
        return left

    def __enter__(self):
        return self.setup()

    def __exit__(self, *exc):
        self.teardown()


def _link_exists(name):
    return _run(["ip", "link", "show", "dev", name], check=False).returncode == 0


def leftovers(runid, mounts=()):
    """What of run `runid` still exists: namespaces, links, mounts."""
    left = []
    for line in _run(["ip", "netns", "list"], check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith("pqc-%s-" % runid):
            left.append("netns " + name)
    for line in _run(["ip", "-o", "link", "show"], check=False).stdout.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            if name in ("pqcb" + runid,) or name.startswith("pqc%s" % runid):
                left.append("link " + name)
    with open("/proc/self/mounts") as f:
        mounted = {ln.split()[1] for ln in f}
    for mp in mounts:
        if mp in mounted:
            left.append("mount " + mp)
    return left


def cleanup_stale(log=print):
    """Tear down the leftovers of runs whose harness process is gone (SIGKILLed), as
    recorded in their state files. Only what a state file lists is touched."""
    if not os.path.isdir(STATE_DIR):
        return 0
    n = 0
    for name in sorted(os.listdir(STATE_DIR)):
        if not name.endswith(".json"):
            continue
        path = os.path.join(STATE_DIR, name)
        try:
            with open(path) as f:
                st = json.load(f)
        except (OSError, ValueError):
            continue
        owner = st.get("owner_pid")
        if owner and os.path.exists("/proc/%d" % owner):
            continue
        runid = st["runid"]
        cr = st.get("created", {})
        for pid in cr.get("pids", []):
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if b"pqlite" in cmd:  # still one of ours (pid not reused by something else)
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
        for mp in reversed(cr.get("mounts", [])):
            _run(["umount", "-l", mp], check=False)
        for ns in reversed(cr.get("netns", [])):
            _run(["ip", "netns", "del", ns], check=False)
        for link in reversed(cr.get("links", [])):
            if _link_exists(link):
                _run(["ip", "link", "del", link], check=False)
        left = leftovers(runid, cr.get("mounts", []))
        if left:
            log("run %s: still left: %s" % (runid, ", ".join(left)))
        else:
            os.unlink(path)
            log("run %s: cleaned up" % runid)
            n += 1
    return n


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] == "--cleanup-stale":
        cleanup_stale()
        sys.exit(0)
    if len(sys.argv) == 2 and sys.argv[1] == "--probe":
        why = probe()
        print("ok" if why is None else "SKIPPED: " + why)
        sys.exit(0 if why is None else 77)
    print("usage: netns.py --probe | --cleanup-stale", file=sys.stderr)
    sys.exit(2)

"""pqlite nodes inside the namespaces of a netns.Topology, and bounded PostgreSQL clients.

Every query the harness runs goes through `Conn` (psycopg2 in asynchronous mode): each call
has a hard deadline (QueryTimeout), so a paused or cut-off server never blocks a thread
past its bound. Only processes started here are ever signalled, always by pid.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import psycopg2

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
# The bounded asynchronous client pieces are the integration harness's (tests/integration/
# cluster.py): the same exceptions, poll loop and waiting.
import cluster as _icluster  # noqa: E402
from cluster import ClusterError, QueryTimeout, _wait_async  # noqa: E402,F401

REPO = os.path.dirname(os.path.dirname(HERE))

VIEW_SQL = ("SELECT id, raft_address, pg_address, role, is_leader, applied_index, lag "
            "FROM pqlite_cluster ORDER BY id")
VIEW_KEYS = ("id", "raft_address", "pg_address", "role", "is_leader", "applied_index", "lag")


def dsn(host, port, connect_timeout=3):
    # keepalives + tcp_user_timeout: a connection to a cut-off node dies in seconds
    return ("host=%s port=%d user=postgres dbname=postgres connect_timeout=%d keepalives=1 "
            "keepalives_idle=2 keepalives_interval=1 keepalives_count=3 "
            "tcp_user_timeout=6000" % (host, port, connect_timeout))


class Conn:
    """One asynchronous psycopg2 connection (autocommit): every call has a deadline."""

    def __init__(self, host, port, timeout=5.0):
        deadline = time.monotonic() + timeout
        self.conn = psycopg2.connect(dsn(host, port, max(1, int(timeout + 0.999))), async_=1)
        try:
            _wait_async(self.conn, deadline)
        except BaseException:
            self.close()
            raise
        self.last_status = None
        self.last_rowcount = None

    def run(self, sql, args=None, timeout=5.0):
        """Rows of the last statement of `sql`, or None when it returns none. The command
        tag and row count of that statement are kept in last_status / last_rowcount."""
        cur = self.conn.cursor()
        cur.execute(sql, args)
        _wait_async(self.conn, time.monotonic() + timeout)
        self.last_status = cur.statusmessage
        self.last_rowcount = cur.rowcount
        return cur.fetchall() if cur.description is not None else None

    def close(self):
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001
            pass


def query(host, port, sql, timeout=5.0, stale=False):
    t0 = time.monotonic()
    c = Conn(host, port, timeout)
    try:
        if stale:
            c.run("SET pqlite.read_consistency = stale", timeout=timeout)
        return c.run(sql, timeout=max(0.5, timeout - (time.monotonic() - t0)))
    finally:
        c.close()


def wait_for(what, fn, timeout, interval=0.2):
    """fn() until it returns a true value; ClusterError after `timeout`."""
    return _icluster.wait_for(what, fn, timeout, interval)


class Node:
    """One pqlite server in namespace topo.ns(i), with fixed addresses for its whole life."""

    def __init__(self, cluster, i):
        self.cluster = cluster
        self.topo = cluster.topo
        self.i = i
        self.name = "n%d" % i
        self.host = self.topo.addr(i)
        self.port = 5433
        self.pg_address = self.topo.pg_address(i)
        self.raft_address = self.topo.raft_address(i)
        self.dir = os.path.join(cluster.workdir, self.name)
        os.makedirs(self.dir, exist_ok=True)
        self.log_path = os.path.join(self.dir, "pqlite.log")
        self.data = self.topo.data_dir(i)
        self.join = None
        self.follower_mode = cluster.follower_mode(i)
        self.proc = None
        self.starts = 0
        self.paused = False
        self.lock = threading.RLock()
        self.expect = None         # the signal we sent and expect the process to die of
        self.exits = []            # dicts: how it ended, as seen by the monitor

    def __repr__(self):
        return "<%s %s %s>" % (self.name, self.host, "up" if self.alive() else "down")

    def argv(self):
        a = [self.cluster.binary, "--data", self.data, "--listen", self.pg_address,
             "--raft", self.raft_address] + list(self.cluster.server_args)
        a += ["--follower-mode", self.follower_mode]
        if self.join:
            a += ["--join", self.join]
        return a

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait=True, timeout=30.0):
        with self.lock:
            if self.alive():
                return self
            self.reap()
            with open(self.log_path, "ab") as log:
                log.write(("\n==== start #%d at %s: %s\n" % (
                    self.starts + 1, time.strftime("%H:%M:%S", time.gmtime()),
                    " ".join(self.argv()))).encode())
            self.expect = None
            self.paused = False
            self.proc = self.topo.spawn(self.i, self.argv(), self.log_path,
                                        env=self.cluster.env, cwd=self.dir)
            self.starts += 1
        if wait:
            self.wait_listening(timeout)
        return self

    def wait_listening(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise ClusterError("%s exited (%s) while starting\n%s"
                                   % (self.name, self.proc and self.proc.returncode,
                                      self.log_tail()))
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(1.0)
            try:
                s.connect((self.host, self.port))
                return
            except OSError:
                pass
            finally:
                s.close()
            if time.monotonic() >= deadline:
                raise ClusterError("%s not listening after %.0fs\n%s"
                                   % (self.name, timeout, self.log_tail()))
            time.sleep(0.05)

    def signal(self, sig):
        """Send sig by pid. For SIGKILL/SIGTERM, note that the exit will be ours."""
        with self.lock:
            if not self.alive():
                return False
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self.expect = sig
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                return False
            if sig == signal.SIGSTOP:
                self.paused = True
            elif sig == signal.SIGCONT:
                self.paused = False
            return True

    def kill(self, timeout=10.0):
        with self.lock:
            if self.paused:
                self.signal(signal.SIGCONT)
            self.signal(signal.SIGKILL)
        return self.wait_exit(timeout)

    def stop(self, timeout=20.0):
        """SIGTERM (SIGCONT first if paused); SIGKILL after timeout. Returns the status."""
        with self.lock:
            if self.paused:
                self.signal(signal.SIGCONT)
            if not self.signal(signal.SIGTERM):
                self.reap()
                return None
        rc = self.wait_exit(timeout)
        if rc == "timeout":
            self.signal(signal.SIGKILL)
            self.wait_exit(10)
        return rc

    def wait_exit(self, timeout):
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return "timeout"
        self.reap()
        return self.proc.returncode

    def reap(self):
        """Record the exit of the current process once. Returns the record or None."""
        with self.lock:
            p = self.proc
            if p is None or p.poll() is None or getattr(p, "_pqc_reaped", False):
                return None
            p._pqc_reaped = True
            rec = {"node": self.name, "pid": p.pid, "rc": p.returncode,
                   "expected": self.expect, "t": time.monotonic(),
                   "start": self.starts}
            self.exits.append(rec)
            return rec

    # -- SQL -------------------------------------------------------------------------------
    def connect(self, timeout=5.0):
        return Conn(self.host, self.port, timeout)

    def query(self, sql, timeout=5.0, stale=False):
        return query(self.host, self.port, sql, timeout, stale)

    def view(self, timeout=3.0):
        """pqlite_cluster as answered through this node with a stale read (for a proxy
        follower: the leader's view, since the proxy relays the session)."""
        rows = self.query(VIEW_SQL, timeout=timeout, stale=True)
        return [dict(zip(VIEW_KEYS, r)) for r in rows]

    def own_view(self, timeout=3.0):
        """This node's own row, from its own view, or None when the answer came from
        another node (a proxy follower relays)."""
        view = self.view(timeout)
        own = [r for r in view if r["pg_address"] == self.pg_address]
        if len(own) != 1:
            return None
        if own[0]["is_leader"]:
            return own[0]
        if any(r is not own[0] and r["applied_index"] is not None for r in view):
            return None  # a leader's view: relayed
        return own[0]

    def claims_leadership(self, timeout=2.0):
        v = self.view(timeout)
        return any(r["pg_address"] == self.pg_address and r["is_leader"] for r in v)

    # -- logs ------------------------------------------------------------------------------
    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def log_tail(self, n=30):
        lines = self.log_text().splitlines()
        return "---- %s (last %d lines of %s) ----\n%s" % (self.name, n, self.log_path,
                                                        "\n".join(lines[-n:]))

    def node_id(self):
        try:
            with open(os.path.join(self.data, "node-id")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None


# Syscalls by which raft_uv writes to its data directory: segment writes go through kernel
# AIO (io_submit), metadata and snapshot files through libuv's positional writes, plus
# preallocation and syncs. Plain write()/writev() are left alone: they are the log and the
# sockets.
IO_SYSCALLS = ("io_submit", "pwrite64", "pwritev", "pwritev2", "fsync", "fdatasync",
               "fallocate")


class IoFault:
    """Make every disk write of a running node fail with `error` (EIO or ENOSPC) by
    attaching strace to it with syscall fault injection (strace -e inject), until stop().
    The node sees the error exactly as it would see a failing disk: from the kernel call."""

    def __init__(self, node, error="EIO", log_path=None):
        if error not in ("EIO", "ENOSPC"):
            raise ValueError(error)
        self.node = node
        self.error = error
        self.proc = None
        self.log_path = log_path or os.path.join(node.dir, "strace.log")

    def start(self, timeout=5.0):
        pid = self.node.proc.pid
        calls = ",".join(IO_SYSCALLS)
        with open(self.log_path, "ab") as log:
            log.write(("\n==== inject %s into %s pid %d at %s\n" % (
                self.error, self.node.name, pid, time.strftime("%H:%M:%S"))).encode())
            log.flush()
            self.proc = subprocess.Popen(
                ["strace", "-f", "-qq", "-p", str(pid), "-e", "trace=" + calls,
                 "-e", "inject=%s:error=%s" % (calls, self.error)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        # strace attaches to every thread before it lets the process run on; give it that
        # long, and fail loudly if it could not attach at all (no ptrace here)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if self.node.alive():
                    raise ClusterError("strace could not attach to %s (status %s); see %s"
                                       % (self.node.name, self.proc.returncode,
                                          self.log_path))
                return self
            if _traced(pid):
                return self
            time.sleep(0.02)
        raise ClusterError("strace did not attach to %s within %.0fs" % (self.node.name,
                                                                          timeout))

    def stop(self, timeout=10.0):
        """Detach (SIGINT makes strace let the process run on untraced)."""
        p, self.proc = self.proc, None
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def strace_probe():
    """None if strace can attach to a process of ours here (ptrace allowed), else why."""
    if shutil.which("strace") is None:
        return "strace is not installed (Debian package strace)"
    victim = subprocess.Popen(["sleep", "10"])
    try:
        p = subprocess.run(["strace", "-qq", "-o", "/dev/null", "-e", "trace=none", "-p",
                            str(victim.pid)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=0.5)
        return "strace cannot attach: %s" % (p.stdout.strip()[:200] or p.returncode)
    except subprocess.TimeoutExpired:
        return None       # attached, and still tracing: it works
    finally:
        victim.kill()
        victim.wait()


def _traced(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("TracerPid:"):
                    return int(line.split()[1]) != 0
    except (OSError, ValueError):
        pass
    return False


class Cluster:
    """N pqlite nodes, one per namespace of `topo`. `mode` is the follower mode: proxy,
    standby, or mixed (even-numbered nodes standby, odd ones proxy)."""

    def __init__(self, topo, binary, workdir, server_args, mode="proxy", env=None, log=None):
        self.topo = topo
        self.binary = binary
        self.workdir = workdir
        self.server_args = list(server_args)
        self.mode = mode
        self.env = env
        self.log = log or (lambda m: None)
        self.nodes = [Node(self, i) for i in range(1, topo.n + 1)]
        self._mon_stop = threading.Event()
        self._mon = None
        self.on_exit = None     # called with the exit record of a process that ended

    def follower_mode(self, i):
        if self.mode == "mixed":
            return "standby" if i % 2 == 0 else "proxy"
        return self.mode

    def __getitem__(self, k):
        return self.nodes[k]

    def __len__(self):
        return len(self.nodes)

    def by_name(self, name):
        return next(n for n in self.nodes if n.name == name)

    def by_address(self, pg):
        return next((n for n in self.nodes if n.pg_address == pg), None)

    def live(self):
        return [n for n in self.nodes if n.alive()]

    # -- process monitor -------------------------------------------------------------------
    def start_monitor(self):
        def loop():
            while not self._mon_stop.wait(0.2):
                for n in self.nodes:
                    rec = n.reap()
                    if rec is not None and self.on_exit:
                        self.on_exit(rec)
        self._mon = threading.Thread(target=loop, name="monitor", daemon=True)
        self._mon.start()

    def stop_monitor(self):
        self._mon_stop.set()
        if self._mon:
            self._mon.join(5)
        for n in self.nodes:
            rec = n.reap()
            if rec is not None and self.on_exit:
                self.on_exit(rec)

    # -- start-up --------------------------------------------------------------------------
    def start(self, timeout=90.0):
        deadline = time.monotonic() + timeout
        first = self.nodes[0]
        first.join = None
        first.start()
        wait_for("n1 to lead its one-node cluster", lambda: first.claims_leadership(),
                 max(1.0, deadline - time.monotonic()))
        for k, n in enumerate(self.nodes[1:], start=2):
            n.join = first.pg_address
            n.start()
            self.wait_voters(k, timeout=max(1.0, deadline - time.monotonic()))
        return self

    def leader(self, timeout=10.0, among=None):
        """The node that claims leadership (exactly one claim among the live, unpaused
        nodes), asking each node itself."""
        def find():
            claims = []
            for n in among or self.nodes:
                if not n.alive() or n.paused:
                    continue
                try:
                    if n.claims_leadership(timeout=2.0):
                        claims.append(n)
                except Exception:  # noqa: BLE001
                    pass
            return claims[0] if len(claims) == 1 else None
        return wait_for("a leader", find, timeout)

    def leader_or_none(self, timeout=4.0):
        try:
            return self.leader(timeout)
        except ClusterError:
            return None

    def view_from_leader(self, timeout=10.0):
        ld = self.leader(timeout)
        return ld, ld.view()

    def wait_voters(self, count, timeout=60.0):
        def check():
            ld, rows = self.view_from_leader(timeout=min(10.0, timeout))
            voters = [r for r in rows if r["role"] == "voter"]
            return len(voters) == count and len(rows) == count
        return wait_for("%d voters" % count, check, timeout, interval=0.3)

    def members(self, timeout=10.0):
        """{pg_address: row} of the configuration, from the leader's view."""
        _, rows = self.view_from_leader(timeout)
        return {r["pg_address"]: r for r in rows}

    # -- teardown --------------------------------------------------------------------------
    def stop_all(self, timeout=30.0):
        """SIGTERM every live node at once, then wait (SIGKILL after timeout). Returns
        {name: status}."""
        live = self.live()
        for n in live:
            with n.lock:
                if n.paused:
                    n.signal(signal.SIGCONT)
                n.signal(signal.SIGTERM)
        out = {}
        for n in live:
            rc = n.wait_exit(timeout)
            if rc == "timeout":
                n.signal(signal.SIGKILL)
                n.wait_exit(10)
            out[n.name] = rc
        return out


# -- log scanning ---------------------------------------------------------------------------
PROBLEM_RE = re.compile(
    r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer|"
    r"ThreadSanitizer|Assertion .* failed|pqlite error:|FAIL-STOP|Segmentation fault|"
    r"core dumped|SUMMARY: |pqlite: cannot ")
DISK_FULL_RE = re.compile(r"NOSPACE|No space left|ENOSPC|not enough space|disk is full|"
                          r"SQLITE_FULL|database or disk is full", re.I)

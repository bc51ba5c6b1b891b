"""A local pqlite cluster for tests and for scripts/demo: N processes on 127.0.0.1.

Node 1 bootstraps; the others start with `--join <node 1's PostgreSQL address>`. Each node has
its own data directory and fixed ports for its whole life, so it can be killed (SIGKILL),
stopped (SIGTERM) and restarted on the same state. Every wait here is bounded, and every
query the harness itself runs goes through `Conn` (psycopg2's asynchronous mode), so that a
server that stops answering cannot block the caller past its time bound.

Reading a node's own copy: `SET pqlite.read_consistency = stale`, checked by reading the
node's pqlite_cluster on the same connection (a follower's own view has an applied index in
its own row only). A follower in proxy mode relays everything to the leader, so
`Cluster.read_each` restarts such a node in standby mode for the read.

No pytest here: the tests register the processes with conftest's watchdog through
`set_process_hooks`, and scripts/demo uses this module as it is. Only processes started
here are ever signalled, always by pid.
"""
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import psycopg2
import psycopg2.extensions

HOST = "127.0.0.1"
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# Errors after which the statement is known not to have run (spec: 25006, 57P03).
NOT_EXECUTED = ("25006", "57P03")

_hooks = {"start": None, "stop": None}


def set_process_hooks(on_start=None, on_stop=None):
    """Called with the subprocess.Popen after each start / after each exit is reaped."""
    _hooks["start"] = on_start
    _hooks["stop"] = on_stop


def default_bin():
    p = os.environ.get("PQLITE_BIN") or os.path.join(REPO, "build", "server", "pqlite")
    if not os.path.isabs(p):
        p = os.path.join(REPO, p)
    return p


def free_ports(n):
    """n distinct ports that were free a moment ago (held open together while choosing).
    Linux picks odd ports for bind(0) and prefers even ones for outgoing connections, so
    clients rarely take these while a node is down (see Node.wait_ports_free)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_is_free(port):
    """True if a server could listen on 127.0.0.1:port now. Binds with SO_REUSEADDR, as
    libuv does: TIME_WAIT left by the previous server on the port does not count, TIME_WAIT
    of a client that got the port as its ephemeral port does."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


class QueryTimeout(Exception):
    pass


class ClusterError(Exception):
    pass


def _wait_async(conn, deadline):
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise QueryTimeout("no answer within the time bound")
        if state == psycopg2.extensions.POLL_READ:
            select.select([conn.fileno()], [], [], min(left, 1.0))
        elif state == psycopg2.extensions.POLL_WRITE:
            select.select([], [conn.fileno()], [], min(left, 1.0))
        else:  # pragma: no cover
            raise psycopg2.OperationalError("bad poll state %r" % state)


class Conn:
    """One psycopg2 connection in asynchronous mode: every call has a hard time bound
    (QueryTimeout). Autocommit, like every asynchronous psycopg2 connection."""

    def __init__(self, port, timeout=5.0, dbname="postgres", host=HOST):
        deadline = time.monotonic() + timeout
        self.conn = psycopg2.connect(host=host, port=port, user="postgres", dbname=dbname,
                                     connect_timeout=max(1, int(timeout + 0.999)), async_=1)
        try:
            _wait_async(self.conn, deadline)
        except BaseException:
            self.conn.close()
            raise

    def run(self, sql, timeout=5.0):
        """Rows of the last statement of `sql`, or None when it returns none."""
        cur = self.conn.cursor()
        cur.execute(sql)
        _wait_async(self.conn, time.monotonic() + timeout)
        return cur.fetchall() if cur.description is not None else None

    def close(self):
        self.conn.close()


def query(port, sql, timeout=5.0, dbname="postgres", host=HOST):
    """Run `sql` (one simple-protocol query string, possibly several statements) on a new
    connection, with a hard time bound (QueryTimeout). Returns the rows of the last
    statement, or None when it returns none. Server errors raise psycopg2 exceptions."""
    t0 = time.monotonic()
    c = Conn(port, timeout, dbname=dbname, host=host)
    try:
        return c.run(sql, max(0.5, timeout - (time.monotonic() - t0)))
    finally:
        c.close()


def stale(sql):
    """`sql` prefixed with SET pqlite.read_consistency = stale."""
    return "SET pqlite.read_consistency = stale; " + sql


class NotLocal(ClusterError):
    """A stale read sent to a node was not answered from that node's own state."""


VIEW_SQL = ("SELECT id, raft_address, pg_address, role, is_leader, applied_index, lag "
            "FROM pqlite_cluster ORDER BY id")
VIEW_KEYS = ("id", "raft_address", "pg_address", "role", "is_leader", "applied_index", "lag")


def check_local_view(pg_address, view):
    """Raise NotLocal unless `view` (rows of pqlite_cluster as dicts) is the own view of the
    node at pg_address: either it leads, or (a follower's view) only its own row has an
    applied index. A leader's view, as a proxy would relay it, has every node's."""
    own = [r for r in view if r["pg_address"] == pg_address]
    if len(own) != 1:
        raise NotLocal("%s is not (once) in the pqlite_cluster it answered: %s"
                       % (pg_address, view))
    if own[0]["is_leader"]:
        return own[0]
    others = [r for r in view if r is not own[0] and r["applied_index"] is not None]
    if others:
        raise NotLocal("a stale read sent to follower %s was answered with the leader's view "
                       "of pqlite_cluster (relayed, not read locally): %s" % (pg_address, view))
    return own[0]


def local_reads(node_port, pg_address, sqls, timeout=10.0, dbname="postgres"):
    """On one connection to the node: SET pqlite.read_consistency = stale, read its
    pqlite_cluster and check that it is the node's own view (NotLocal otherwise: the
    session was relayed to another node), then run each of `sqls`. Returns (view as dicts,
    [rows of each sql])."""
    deadline = time.monotonic() + timeout

    def left():
        return max(0.5, deadline - time.monotonic())
    c = Conn(node_port, timeout, dbname=dbname)
    try:
        c.run("SET pqlite.read_consistency = stale", left())
        view = [dict(zip(VIEW_KEYS, r)) for r in c.run(VIEW_SQL, left())]
        check_local_view(pg_address, view)
        return view, [c.run(sql, left()) for sql in sqls]
    finally:
        c.close()


def wait_for(what, fn, timeout, interval=0.1):
    """Call fn() until it returns a true value (returned); ClusterError after `timeout`
    (with the last exception or value in the message). NotLocal propagates at once."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = fn()
            if v:
                return v
            last = v
        except NotLocal:
            raise  # waiting will not change it
        except Exception as e:  # noqa: BLE001 - "not yet"
            last = e
        if time.monotonic() >= deadline:
            raise ClusterError("timed out after %.1fs waiting for %s (last: %r)"
                               % (timeout, what, last))
        time.sleep(interval)


def wait_node_id(node, timeout=10.0):
    return wait_for("%s to write its node-id" % node.name, node.node_id, timeout)


class Node:
    """One pqlite process with a fixed data directory and fixed ports."""

    def __init__(self, cluster, index, pg_port, raft_port, workdir):
        self.cluster = cluster
        self.index = index
        self.name = "n%d" % index
        self.pg_port = pg_port
        self.raft_port = raft_port
        self.workdir = workdir
        self.data = os.path.join(workdir, "data")
        self.log_path = os.path.join(workdir, "pqlite.log")
        self.join = None           # PostgreSQL address given as --join (kept on restarts)
        self.extra_args = []       # per-node flags on top of the cluster's
        self.proc = None
        self.starts = 0
        self.exit_codes = []       # (how, returncode) of every reaped process
        os.makedirs(self.data, exist_ok=True)

    def __repr__(self):
        return "<%s pg=%d raft=%d %s>" % (self.name, self.pg_port, self.raft_port,
                                          "up" if self.alive() else "down")

    @property
    def host(self):
        return HOST

    @property
    def port(self):
        return self.pg_port

    @property
    def pg_address(self):
        return "%s:%d" % (HOST, self.pg_port)

    @property
    def raft_address(self):
        return "%s:%d" % (HOST, self.raft_port)

    # -- process control --------------------------------------------------------------------
    def argv(self):
        a = [self.cluster.binary, "--data", self.data, "--listen", self.pg_address,
             "--raft", self.raft_address]
        a += self.cluster.args
        if self.join:
            a += ["--join", self.join]
        return a + self.extra_args

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait=True, timeout=30.0):
        if self.alive():
            raise ClusterError("%s already running" % self.name)
        self._reap()
        self.wait_ports_free()
        with open(self.log_path, "ab") as log:
            log.write(("\n==== start #%d at %s: %s\n" % (self.starts + 1, time.strftime("%H:%M:%S"),
                                                        " ".join(self.argv()))).encode())
            log.flush()
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.workdir,
                                         env=self.cluster.env)
        self.starts += 1
        if _hooks["start"]:
            _hooks["start"](self.proc)
        if wait:
            self.wait_listening(timeout)
        return self

    def wait_ports_free(self, timeout=70.0):
        """Until both ports can be listened on. While a node is down, a client's outgoing
        connection may get one of its ports as its ephemeral port (they come from the same
        range); once closed, that port stays in TIME_WAIT for 60 s and a listener cannot
        bind it. Rare; waiting is the only remedy."""
        deadline = time.monotonic() + timeout
        while not (port_is_free(self.pg_port) and port_is_free(self.raft_port)):
            if time.monotonic() >= deadline:
                raise ClusterError("%s: ports %d/%d still in use after %.0fs"
                                   % (self.name, self.pg_port, self.raft_port, timeout))
            time.sleep(0.5)

    def wait_listening(self, timeout=30.0):
        """Until the PostgreSQL port accepts connections (fails early if the process exits).
        Not "ready for queries": a joining node, or one without a quorum, may still refuse."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise ClusterError("%s exited with %s while starting\n%s"
                                   % (self.name, self.proc.returncode, self.log_tail()))
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(1.0)
            try:
                s.connect((HOST, self.pg_port))
                return
            except OSError:
                pass
            finally:
                s.close()
            if time.monotonic() >= deadline:
                raise ClusterError("%s not listening on %d after %.0fs\n%s"
                                   % (self.name, self.pg_port, timeout, self.log_tail()))
            time.sleep(0.05)

    def _reap(self, how="exited"):
        """Record the exit of a process (once): `how` it was stopped, or "exited" when it
        ended by itself."""
        if self.proc is not None and self.proc.poll() is not None and not getattr(
                self.proc, "_pq_reaped", False):
            self.proc._pq_reaped = True
            self.exit_codes.append((how, self.proc.returncode))
            if _hooks["stop"]:
                _hooks["stop"](self.proc)

    def stop(self, sig=signal.SIGTERM, timeout=15.0, signalled=False):
        """Signal by pid and wait; SIGKILL after `timeout`. Returns the exit status
        (negative: killed by that signal; "timeout" if it had to be SIGKILLed).
        signalled: the caller already sent `sig`; only wait."""
        if self.proc is None:
            return None
        how = signal.Signals(sig).name
        if self.proc.poll() is None or signalled:
            if not signalled:
                try:
                    self.proc.send_signal(sig)
                except ProcessLookupError:
                    pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                self._reap("timeout-after-" + how)
                return "timeout"
        else:
            how = "exited"  # ended by itself before we signalled it
        self._reap(how)
        return self.proc.returncode

    def kill(self):
        """SIGKILL: a crash."""
        return self.stop(signal.SIGKILL, timeout=10)

    def restart(self, sig=signal.SIGTERM, timeout=30.0):
        self.stop(sig)
        return self.start(timeout=timeout)

    def wipe(self):
        """Delete the data directory (node must be stopped): it will join as a new node."""
        assert not self.alive()
        shutil.rmtree(self.data, ignore_errors=True)
        os.makedirs(self.data)

    # -- logs -------------------------------------------------------------------------------
    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_since_start(self):
        """The log of the current (last started) process."""
        text = self.log_text()
        i = text.rfind("\n==== start #")
        return text[i:] if i >= 0 else text

    def log_tail(self, n=40):
        lines = self.log_text().splitlines()
        return "---- %s %s (last %d lines) ----\n%s" % (self.name, self.log_path, n,
                                                       "\n".join(lines[-n:]))

    def node_id(self):
        """The id in DATA/node-id (None before the first start wrote it)."""
        try:
            with open(os.path.join(self.data, "node-id")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    # -- clients ----------------------------------------------------------------------------
    def dsn(self, dbname="postgres"):
        return "host=%s port=%d user=postgres dbname=%s" % (HOST, self.pg_port, dbname)

    def connect(self, dbname="postgres", autocommit=True, **kw):
        kw.setdefault("connect_timeout", 5)
        c = psycopg2.connect(host=HOST, port=self.pg_port, user="postgres", dbname=dbname, **kw)
        c.autocommit = autocommit
        return c

    def query(self, sql, timeout=5.0, dbname="postgres"):
        return query(self.pg_port, sql, timeout=timeout, dbname=dbname)

    def view(self, timeout=5.0):
        """pqlite_cluster as this node sees it, read locally (a stale read checked to be
        answered by this node: NotLocal otherwise): a list of dicts ordered by id."""
        return local_reads(self.pg_port, self.pg_address, [], timeout=timeout)[0]

    def own_row(self, timeout=5.0):
        return check_local_view(self.pg_address, self.view(timeout))

    def claims_leadership(self, timeout=3.0):
        return bool(self.own_row(timeout)["is_leader"])

    def local(self, sql, timeout=10.0, dbname="postgres"):
        """Rows of `sql` read from this node's local copy (stale, checked local)."""
        return local_reads(self.pg_port, self.pg_address, [sql], timeout=timeout,
                           dbname=dbname)[1][0]


class Cluster:
    """N nodes on 127.0.0.1. `args` are added to every node's command line (after the
    addresses), e.g. ["--snapshot-threshold", "64"]."""

    def __init__(self, n, workdir=None, binary=None, election_timeout_ms=1000,
                 apply_timeout_ms=None, follower_mode=None, args=(), ports=None,
                 log=None, name="cluster", env=None):
        self.binary = binary or default_bin()
        self.own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="pqlite-%s-" % name)
        self.args = ["--election-timeout", str(election_timeout_ms)]
        if apply_timeout_ms is not None:
            self.args += ["--apply-timeout", str(apply_timeout_ms)]
        if follower_mode is not None:
            self.args += ["--follower-mode", follower_mode]
        self.args += list(args)
        self.election_timeout_s = election_timeout_ms / 1000.0
        self.env = env
        self.log = log or (lambda msg: None)
        self.nodes = []
        if ports is None:
            ports = free_ports(2 * n)
        for i in range(n):
            self.add_node(ports[2 * i], ports[2 * i + 1])

    def add_node(self, pg_port=None, raft_port=None):
        """A new (not started) node; it will join node 1 unless it is node 1."""
        if pg_port is None:
            pg_port, raft_port = free_ports(2)
        idx = len(self.nodes) + 1
        wd = os.path.join(self.workdir, "n%d" % idx)
        os.makedirs(wd, exist_ok=True)
        node = Node(self, idx, pg_port, raft_port, wd)
        if self.nodes:
            node.join = self.nodes[0].pg_address
        self.nodes.append(node)
        return node

    def __getitem__(self, i):
        return self.nodes[i]

    def __len__(self):
        return len(self.nodes)

    def by_address(self, pg_address):
        for n in self.nodes:
            if n.pg_address == pg_address:
                return n
        return None

    def by_id(self, node_id):
        for n in self.nodes:
            if n.node_id() == node_id:
                return n
        return None

    def live(self):
        return [n for n in self.nodes if n.alive()]

    def rejoin(self, node, via=None, timeout=30.0):
        """Stop `node`, empty its data directory and start it with --join to `via` (default:
        another live node): it joins as a new node, with a new id. Returns the new id."""
        node.stop()
        node.wipe()
        via = via or next(n for n in self.live() if n is not node)
        node.join = via.pg_address
        node.start(timeout=timeout)
        return wait_node_id(node, timeout)

    # -- start-up ---------------------------------------------------------------------------
    def start(self, timeout=90.0, concurrent_join=False):
        """Bootstrap node 1, then join the others (one after the other, each waited until it
        is a voter, unless concurrent_join). Returns when every node is a voter."""
        deadline = time.monotonic() + timeout
        first = self.nodes[0]
        first.join = None
        first.start()
        wait_for("%s to lead its one-node cluster" % first.name,
                 lambda: first.claims_leadership(), max(1.0, deadline - time.monotonic()))
        rest = self.nodes[1:]
        if concurrent_join:
            for n in rest:
                n.start()
        for k, n in enumerate(rest, start=2):
            if not concurrent_join:
                n.start()
                self.wait_voters(k, timeout=max(1.0, deadline - time.monotonic()))
        self.wait_voters(len(self.nodes), timeout=max(1.0, deadline - time.monotonic()))
        return self

    # -- observation ------------------------------------------------------------------------
    def leader(self, timeout=20.0, among=None):
        """The node that claims leadership in its own view (exactly one among the live nodes,
        or among `among`)."""
        def find():
            pool = [n for n in (among or self.nodes) if n.alive()]
            claim = []
            for n in pool:
                try:
                    if n.claims_leadership(timeout=2.0):
                        claim.append(n)
                except Exception:  # noqa: BLE001 - down, starting, or no answer
                    pass
            return claim[0] if len(claim) == 1 else None
        return wait_for("a leader among %s" % [n.name for n in (among or self.live())], find,
                        timeout)

    def wait_new_leader(self, old, timeout=30.0):
        """A leader other than `old` (a Node)."""
        return self.leader(timeout=timeout, among=[n for n in self.nodes if n is not old])

    def wait_voters(self, count, timeout=60.0, on=None):
        """Until the leader's view lists exactly `count` voters (and no spare)."""
        def check():
            node = on or self.leader(timeout=min(10.0, timeout))
            rows = node.view()
            voters = [r for r in rows if r["role"] == "voter"]
            return len(voters) == count and len(rows) == count
        return wait_for("%d voters" % count, check, timeout, interval=0.2)

    def applied(self, node, timeout=3.0):
        """The node's own applied index (read locally on it)."""
        return node.own_row(timeout)["applied_index"]

    def wait_replicated(self, timeout=60.0, nodes=None):
        """Until the leader knows that every live node (or `nodes`) stored everything it
        has applied: its pqlite_cluster view (applied_index of the others = the index the
        leader knows they replicated). Returns that index."""
        pool = nodes or self.live()
        addrs = {n.pg_address for n in pool}
        state = {}

        def check():
            leader = self.leader(timeout=min(10.0, timeout))
            rows = leader.view()
            target = [r for r in rows if r["pg_address"] == leader.pg_address][0][
                "applied_index"]
            state["target"] = target
            got = {r["pg_address"]: r["applied_index"] for r in rows if r["pg_address"] in addrs}
            state["got"] = got
            return len(got) == len(addrs) and all((v or 0) >= target for v in got.values())
        try:
            wait_for("replication to %s" % [n.name for n in pool], check, timeout, interval=0.1)
        except ClusterError as e:
            raise ClusterError("%s; leader at %s, others %s" % (e, state.get("target"),
                                                                 state.get("got")))
        return state["target"]

    def wait_caught_up(self, timeout=60.0, nodes=None):
        """Until every live node (or `nodes`) has applied, by its own account (read locally
        on it), at least what the leader had applied when this was called, i.e. after any
        write the caller finished. Returns that index."""
        leader = self.leader(timeout=min(30.0, timeout))
        target = self.applied(leader)
        pool = nodes or self.live()
        state = {}

        def check():
            for n in pool:
                state[n.name] = self.applied(n)
            return all((v or 0) >= target for v in state.values())
        try:
            wait_for("%s to apply index %s" % ([n.name for n in pool], target), check,
                     timeout, interval=0.1)
        except ClusterError as e:
            raise ClusterError("%s; applied: %s" % (e, state))
        return target

    def wait_same_applied(self, timeout=60.0, nodes=None):
        """Until every live node (or `nodes`) reports the same applied index (read locally
        on each) twice in a row: a quiet cluster. Returns it."""
        pool = nodes or self.live()
        prev = [None]

        def check():
            idx = [self.applied(n) for n in pool]
            same = idx[0] is not None and len(set(idx)) == 1
            ok = same and prev[0] == idx
            prev[0] = idx
            return idx[0] if ok else None
        try:
            return wait_for("equal applied indexes on %s" % [n.name for n in pool], check,
                            timeout, interval=0.2)
        except ClusterError as e:
            raise ClusterError("%s; last: %s" % (e, prev[0]))

    def stale_rows(self, node, sql, timeout=10.0, dbname="postgres"):
        """Rows of `sql` from the node's local copy (NotLocal if it would not read it)."""
        return node.local(sql, timeout=timeout, dbname=dbname)

    def dumps(self, sql, nodes=None, timeout=10.0, dbname="postgres"):
        """{node name: rows of `sql` read locally on that node} (NotLocal if one would not
        read its own copy)."""
        return {n.name: n.local(sql, timeout=timeout, dbname=dbname)
                for n in (nodes or self.live())}

    def _read_when_applied(self, node, sqls, target, timeout, dbname):
        """On one connection to the node: its own view (NotLocal if relayed), repeated
        until it has applied `target`, then `sqls` (so they read a state >= target)."""
        deadline = time.monotonic() + timeout
        state = {}
        while True:
            try:
                left = max(1.0, deadline - time.monotonic())
                c = Conn(node.pg_port, min(10.0, left), dbname=dbname)
                try:
                    c.run("SET pqlite.read_consistency = stale", min(10.0, left))
                    while True:
                        view = [dict(zip(VIEW_KEYS, r)) for r in c.run(VIEW_SQL, 10.0)]
                        own = check_local_view(node.pg_address, view)
                        state["applied"] = own["applied_index"]
                        if (own["applied_index"] or 0) >= target:
                            return [c.run(sql, 30.0) for sql in sqls]
                        if time.monotonic() >= deadline:
                            break
                        time.sleep(0.05)
                finally:
                    c.close()
            except NotLocal:
                raise
            except Exception as e:  # noqa: BLE001 - restarting, no answer yet
                state["error"] = repr(e)
            if time.monotonic() >= deadline:
                raise ClusterError("%s did not apply index %d within %.0fs (%s)"
                                   % (node.name, target, timeout, state))
            time.sleep(0.1)

    def read_each(self, sqls, nodes=None, timeout=60.0, dbname="postgres", restore=True):
        """{node name: [rows of each of `sqls`]}, read from each live node's own copy (or
        `nodes`') once it has applied what the leader had applied at the call, i.e. every
        write the caller finished.

        A follower in proxy mode relays every message to the leader, `SET
        pqlite.read_consistency = stale` included (docs/pgwire.md), so its own copy cannot
        be read through it: such a node is restarted (SIGTERM, same data directory) with
        `--follower-mode standby` for the read, then again in its own mode unless
        restore=False (it is left in standby mode then)."""
        target = self.applied(self.leader(timeout=min(30.0, timeout)))
        out = {}
        for n in nodes or self.live():
            try:
                out[n.name] = self._read_when_applied(n, sqls, target, timeout, dbname)
                continue
            except NotLocal:
                pass
            self.log("%s relays reads to the leader (proxy mode): restarting it in standby "
                     "mode to read its own copy" % n.name)
            rc = n.stop()
            if rc not in (0, None):
                raise ClusterError("%s: SIGTERM exit %s\n%s" % (n.name, rc, n.log_tail()))
            n.extra_args += ["--follower-mode", "standby"]
            try:
                n.start()
                out[n.name] = self._read_when_applied(n, sqls, target, timeout, dbname)
            finally:
                if restore:
                    del n.extra_args[-2:]
                    n.stop()
                    n.start()
        return out

    def wait_identical(self, sql, timeout=60.0, nodes=None, dbname="postgres"):
        """Rows of `sql` on every live node (or `nodes`), each read from its own copy once
        it has applied every write finished before the call (see read_each); ClusterError
        unless they are identical. Returns them."""
        got = self.read_each([sql], nodes=nodes, timeout=timeout, dbname=dbname)
        vals = {name: r[0] for name, r in got.items()}
        first = next(iter(vals.values()))
        if any(v != first for v in vals.values()):
            counts = {name: len(v) for name, v in vals.items()}
            diff = {}
            for name, v in vals.items():
                extra = sorted(set(v) - set(first))[:5]
                missing = sorted(set(first) - set(v))[:5]
                if extra or missing:
                    diff[name] = {"extra": extra, "missing": missing}
            raise ClusterError("results of %r differ between nodes: rows %s; against %s: %s"
                               % (sql, counts, next(iter(vals)), diff))
        return first

    def execute(self, node, sql, timeout=20.0, retry_codes=NOT_EXECUTED):
        """Run sql on `node`, retrying (new connection) while it fails with an error that
        means nothing was executed, or cannot connect. Returns rows (or None)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return node.query(sql, timeout=max(1.0, deadline - time.monotonic()))
            except psycopg2.Error as e:
                retry = e.pgcode in retry_codes or (e.pgcode is None and "connect" in str(e))
                if not retry or time.monotonic() >= deadline:
                    raise
            time.sleep(0.1)

    # -- problems in logs -------------------------------------------------------------------
    SANITIZER_RE = re.compile(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|"
                              r"FAIL-STOP|Assertion .* failed|ThreadSanitizer")

    def log_problems(self):
        out = []
        for n in self.nodes:
            for line in n.log_text().splitlines():
                if self.SANITIZER_RE.search(line):
                    out.append("%s: %s" % (n.name, line))
        return out

    def bad_exits(self):
        """Exits that were neither a SIGKILL we sent nor a clean exit 0 after SIGTERM."""
        out = []
        for n in self.nodes:
            for how, rc in n.exit_codes:
                if how == "SIGKILL" and rc == -9:
                    continue
                if how in ("SIGTERM", "SIGINT") and rc == 0:
                    continue
                out.append("%s: %s -> %s" % (n.name, how, rc))
        return out

    def logs(self, n=40):
        return "\n".join(node.log_tail(n) for node in self.nodes)

    # -- teardown ---------------------------------------------------------------------------
    def stop_all(self, sig=signal.SIGTERM, timeout=20.0):
        """Signal every live node at once, then wait for each (SIGKILL after `timeout`)."""
        live = self.live()
        for n in live:
            try:
                n.proc.send_signal(sig)
            except ProcessLookupError:
                pass
        for n in live:
            n.stop(sig, timeout=timeout, signalled=True)

    def destroy(self, keep=False):
        self.stop_all()
        for n in self.nodes:
            n._reap()
        if self.own_workdir and not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


class EventLog:
    """Thread-safe timestamped printing (the demo and verbose tests)."""

    def __init__(self, stream=None, t0=None):
        import sys
        self.stream = stream or sys.stdout
        self.t0 = t0 or time.monotonic()
        self.lock = threading.Lock()

    def __call__(self, msg):
        with self.lock:
            self.stream.write("[%7.2fs] %s\n" % (time.monotonic() - self.t0, msg))
            self.stream.flush()

"""Workloads of the chaos harness: set, bank, list-append, register.

Client threads are pinned to nodes (round-robin), each with its own psycopg2 connection to
its node's address, and record every operation through ONE History writer: the invoke line
is written before the request is sent, the completion after the answer arrived, so line
order is real-time order (docs/reliability.md, "History format").

Completions:
  ok    the operation took effect (reads: the value read)
  fail  it certainly did not: 25006 (not the leader, nothing executed), 57P03 (no leader
        within --apply-timeout), 40001 (not committed), 25P02 (transaction rolled back by
        the server), 08006 sent by a proxy (connection to the leader lost between statements;
        the transaction was rolled back), 23505/22023/53100/53300 (refused), COMMIT answered
        ROLLBACK, or an error before a multi-statement transaction reached COMMIT
  info  unknown: 40003, the connection lost while a write was in flight, a timeout, or an
        error the harness does not know; the process then retires (a new process id).
Reads never take effect, so a read that fails in any way is `fail`, except timeouts and lost
connections (info, retired as well).
"""
import json
import random
import threading
import time

import psycopg2

from nodes import Conn, QueryTimeout

FAIL_CODES = {"25006", "57P03", "40001", "25P02", "08006", "23505", "22023", "53100", "53300",
              "55006"}
INFO_CODES = {"40003"}
OP_TIMEOUT = 12.0          # > --apply-timeout (5 s) + the proxy's give-up delay


class History:
    """The single writer of a history file (JSON Lines). Thread-safe; every line is
    flushed, so a crash of the harness keeps what was recorded."""

    def __init__(self, path):
        self.path = path
        self.f = open(path, "w", encoding="utf-8")
        self.lock = threading.Lock()
        self.index = 0
        self.counts = {"invoke": 0, "ok": 0, "fail": 0, "info": 0}
        self.errors = {}

    def record(self, ev):
        with self.lock:
            ev = dict(ev)
            ev["index"] = self.index
            ev["time"] = time.monotonic_ns()
            self.index += 1
            if ev.get("process") != "nemesis":
                t = ev.get("type")
                if t in self.counts:
                    self.counts[t] += 1
                if ev.get("error") and t != "invoke":
                    k = ev["error"]
                    self.errors[k] = self.errors.get(k, 0) + 1
            self.f.write(json.dumps(ev, separators=(",", ":"), sort_keys=True) + "\n")
            self.f.flush()
            return ev

    def close(self):
        with self.lock:
            self.f.close()


class OpError(Exception):
    """A definite failure decided by the workload (e.g. COMMIT answered ROLLBACK)."""

    def __init__(self, msg, definite=True):
        super().__init__(msg)
        self.definite = definite


def classify(exc, is_read):
    """(type, error text) of an operation that raised exc."""
    if isinstance(exc, OpError):
        return ("fail" if exc.definite else "info"), str(exc)
    if isinstance(exc, QueryTimeout):
        return "info", "timeout"
    if isinstance(exc, psycopg2.Error):
        code = exc.pgcode
        if code:
            if code in INFO_CODES:
                return "info", code
            if code in FAIL_CODES or is_read:
                return "fail", code
            return "info", code
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return "info", "conn: " + msg[:120]
    return "info", "%s: %s" % (type(exc).__name__, exc)


# ---------------------------------------------------------------------------------------------
class Workload:
    name = None
    tables = ()               # tables dumped on every node at the end (must be identical)
    default_follower_mode = "proxy"
    read_mode = "linearizable"   # SET pqlite.read_consistency for proxied sessions

    def __init__(self, rng, n_clients):
        self.rng = rng
        self.n_clients = n_clients
        self.lock = threading.Lock()

    def setup_sql(self):
        return []

    def session_sql(self, client):
        mode = "stale" if client.stale else self.read_mode
        return ["SET pqlite.read_consistency = %s" % mode] if mode else []

    def gen(self, client):
        raise NotImplementedError

    def invoke(self, client, conn, op):
        """Run op; return the ok completion value, or raise."""
        raise NotImplementedError

    def is_read(self, op):
        return op["f"] == "read"

    def final_reads(self, reads):
        """reads: {node: rows of each final_sql}; return completions for the history."""
        return []

    final_sql = ()

    def dump_sql(self):
        return [self.dump]

    dump = None

    def check_options(self):
        return {}


class SetWorkload(Workload):
    name = "set"
    tables = ("chaos_set",)
    dump = "SELECT v FROM chaos_set ORDER BY v"
    default_follower_mode = "mixed"

    def __init__(self, rng, n_clients):
        super().__init__(rng, n_clients)
        self.next = 0

    def setup_sql(self):
        return ["CREATE TABLE chaos_set (v INTEGER)"]   # not unique: a double apply shows

    def gen(self, client):
        if client.rng.random() < (0.5 if client.stale else 0.1):
            return {"f": "read", "value": None}
        with self.lock:
            self.next += 1
            return {"f": "add", "value": self.next}

    def invoke(self, client, conn, op):
        if op["f"] == "add":
            conn.run("INSERT INTO chaos_set (v) VALUES (%d)" % op["value"], timeout=OP_TIMEOUT)
            return op["value"]
        rows = conn.run("SELECT v FROM chaos_set", timeout=OP_TIMEOUT)
        return sorted(r[0] for r in rows)

    final_sql = ("SELECT v FROM chaos_set",)

    def final_reads(self, reads):
        return [("read", None, sorted(r[0] for r in rows[0])) for rows in reads.values()]


class BankWorkload(Workload):
    name = "bank"
    tables = ("accounts",)
    dump = "SELECT id, balance FROM accounts ORDER BY id"
    default_follower_mode = "mixed"
    read_mode = None          # proxied reads in the default (leader) mode; standby: stale
    N_ACCOUNTS = 8
    INITIAL = 100

    def setup_sql(self):
        vals = ", ".join("(%d, %d)" % (i, self.INITIAL) for i in range(self.N_ACCOUNTS))
        return ["CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)",
                "INSERT INTO accounts (id, balance) VALUES " + vals]

    def gen(self, client):
        if client.rng.random() < (0.6 if client.stale else 0.4):
            return {"f": "read", "value": None}
        a, b = client.rng.sample(range(self.N_ACCOUNTS), 2)
        return {"f": "transfer", "value": {"from": a, "to": b,
                                           "amount": client.rng.randint(1, 10)}}

    def invoke(self, client, conn, op):
        if op["f"] == "read":
            rows = conn.run("SELECT id, balance FROM accounts ORDER BY id", timeout=OP_TIMEOUT)
            return {str(i): b for i, b in rows}
        v = op["value"]
        # one message: BEGIN, two updates, COMMIT (a transaction spanning statements)
        conn.run("BEGIN; UPDATE accounts SET balance = balance - %d WHERE id = %d; "
                 "UPDATE accounts SET balance = balance + %d WHERE id = %d; COMMIT"
                 % (v["amount"], v["from"], v["amount"], v["to"]), timeout=OP_TIMEOUT)
        if conn.last_status != "COMMIT":
            raise OpError("COMMIT answered %s" % conn.last_status)
        return v

    final_sql = ("SELECT id, balance FROM accounts ORDER BY id",)

    def final_reads(self, reads):
        return [("read", None, {str(i): b for i, b in rows[0]}) for rows in reads.values()]

    def check_options(self):
        return {"total": self.N_ACCOUNTS * self.INITIAL,
                "accounts": list(range(self.N_ACCOUNTS)), "allow_negative": True}


class KeyPool:
    """A few live keys; a key that has had `per_key` uses is retired and a fresh key takes
    its place, so lists stay short and each register's history stays small. Callers hold
    the workload's lock."""

    def __init__(self, live, per_key):
        self.keys = list(range(live))
        self.next_key = live
        self.per_key = per_key
        self.uses = {}
        self.all_keys = set(self.keys)

    def pick(self, rng):
        """(position, key) of a random live key."""
        pos = rng.randrange(len(self.keys))
        return pos, self.keys[pos]

    def use(self, pos, k):
        """Count one use of key k (at position pos); returns the count so far."""
        c = self.uses.get(k, 0) + 1
        self.uses[k] = c
        if c >= self.per_key:
            self.keys[pos] = self.next_key
            self.all_keys.add(self.next_key)
            self.next_key += 1
        return c


class ListAppendWorkload(Workload):
    name = "list-append"
    tables = ("lists",)
    dump = "SELECT k, v FROM lists ORDER BY k"
    LIVE_KEYS = 8
    MAX_PER_KEY = 60

    def __init__(self, rng, n_clients):
        super().__init__(rng, n_clients)
        self.pool = KeyPool(self.LIVE_KEYS, self.MAX_PER_KEY)   # uses: values appended

    def setup_sql(self):
        return ["CREATE TABLE lists (k INTEGER PRIMARY KEY, v TEXT)"]

    def gen(self, client):
        mops = []
        with self.lock:
            for _ in range(client.rng.randint(1, 4)):
                pos, k = self.pool.pick(client.rng)
                if client.rng.random() < 0.5:
                    mops.append(["r", k, None])
                else:
                    mops.append(["append", k, self.pool.use(pos, k)])
        return {"f": "txn", "value": mops}

    def is_read(self, op):
        return all(m[0] == "r" for m in op["value"])

    def invoke(self, client, conn, op):
        out = []
        try:
            conn.run("BEGIN", timeout=OP_TIMEOUT)
            for f, k, v in op["value"]:
                if f == "r":
                    rows = conn.run("SELECT v FROM lists WHERE k = %d" % k, timeout=OP_TIMEOUT)
                    val = None
                    if rows and rows[0][0] is not None:
                        val = [int(x) for x in rows[0][0].split(",")]
                    out.append(["r", k, val])
                else:
                    conn.run("INSERT INTO lists (k, v) VALUES (%d, '%d') ON CONFLICT (k) DO "
                             "UPDATE SET v = lists.v || ',' || excluded.v" % (k, v),
                             timeout=OP_TIMEOUT)
                    out.append(["append", k, v])
        except psycopg2.Error as e:
            # before COMMIT: the transaction did not commit (the server rolls it back;
            # the client closes the connection) unless the error is not a definite one
            if e.pgcode:
                raise OpError("%s before COMMIT" % e.pgcode)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise OpError("connection lost before COMMIT: %s" % first[:100])
        except QueryTimeout:
            raise OpError("timeout before COMMIT")
        conn.run("COMMIT", timeout=OP_TIMEOUT)
        if conn.last_status != "COMMIT":
            raise OpError("COMMIT answered %s" % conn.last_status)
        return out

    @property
    def final_sql(self):
        return ("SELECT k, v FROM lists ORDER BY k",)

    def final_reads(self, reads):
        res = []
        for rows in reads.values():
            have = {k: [int(x) for x in v.split(",")] for k, v in rows[0] if v}
            res.append(("txn", [["r", k, None] for k in sorted(self.pool.all_keys)],
                        [["r", k, have.get(k)] for k in sorted(self.pool.all_keys)]))
        return res


class RegisterWorkload(Workload):
    name = "register"
    tables = ("regs",)
    dump = "SELECT k, v FROM regs ORDER BY k"
    LIVE_KEYS = 3
    OPS_PER_KEY = 150

    def __init__(self, rng, n_clients):
        super().__init__(rng, n_clients)
        self.pool = KeyPool(self.LIVE_KEYS, self.OPS_PER_KEY)   # uses: every operation

    def setup_sql(self):
        return ["CREATE TABLE regs (k INTEGER PRIMARY KEY, v INTEGER)"]

    def gen(self, client):
        with self.lock:
            pos, k = self.pool.pick(client.rng)
            self.pool.use(pos, k)
        x = client.rng.random()
        if x < 0.5:
            return {"f": "read", "value": {"key": k, "value": None}}
        if x < 0.75:
            return {"f": "write", "value": {"key": k, "value": client.rng.randint(0, 4)}}
        return {"f": "cas", "value": {"key": k, "from": client.rng.randint(0, 4),
                                      "to": client.rng.randint(0, 4)}}

    def invoke(self, client, conn, op):
        v = op["value"]
        if op["f"] == "read":
            rows = conn.run("SELECT v FROM regs WHERE k = %d" % v["key"], timeout=OP_TIMEOUT)
            return {"key": v["key"], "value": rows[0][0] if rows else None}
        if op["f"] == "write":
            conn.run("INSERT INTO regs (k, v) VALUES (%d, %d) ON CONFLICT (k) DO UPDATE SET "
                     "v = excluded.v" % (v["key"], v["value"]), timeout=OP_TIMEOUT)
            return v
        conn.run("UPDATE regs SET v = %d WHERE k = %d AND v = %d"
                 % (v["to"], v["key"], v["from"]), timeout=OP_TIMEOUT)
        if conn.last_rowcount != 1:
            raise OpError("cas: %s rows" % conn.last_rowcount)
        return v


WORKLOADS = {w.name: w for w in (SetWorkload, BankWorkload, ListAppendWorkload,
                                 RegisterWorkload)}


# ---------------------------------------------------------------------------------------------
class Client(threading.Thread):
    """A logical client pinned to one node. Process ids: k, k + n, k + 2n, ..."""

    def __init__(self, k, n_clients, node, workload, history, stop, seed, rate, stale):
        super().__init__(name="client-%d" % k, daemon=True)
        self.k = k
        self.n_clients = n_clients
        self.node = node
        self.workload = workload
        self.history = history
        self.stop_ev = stop
        self.rng = random.Random(seed * 7919 + k)
        self.process = k
        self.rate = rate          # mean ops per second of this client
        self.stale = stale        # session reads its node's local copy
        self.conn = None
        self.ops = 0
        self.last_error = None

    def _connect(self):
        c = Conn(self.node.host, self.node.port, timeout=4.0)
        try:
            for sql in self.workload.session_sql(self):
                c.run(sql, timeout=4.0)
        except BaseException:
            c.close()
            raise
        self.conn = c

    def _drop_conn(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def run(self):
        while not self.stop_ev.is_set():
            if self.conn is None:
                try:
                    self._connect()
                except Exception as e:  # noqa: BLE001 - node down, cut off, starting
                    self.last_error = repr(e)
                    self.stop_ev.wait(0.3 + self.rng.random() * 0.4)
                    continue
            op = self.workload.gen(self)
            extra = {"node": self.node.name}
            if self.stale and self.workload.is_read(op):
                extra["stale"] = True    # left out of the real-time checks
            self.history.record(dict(process=self.process, type="invoke", f=op["f"],
                                     value=op["value"], **extra))
            try:
                val = self.workload.invoke(self, self.conn, op)
                self.history.record(dict(process=self.process, type="ok", f=op["f"],
                                         value=val, **extra))
            except Exception as e:  # noqa: BLE001
                t, err = classify(e, self.workload.is_read(op))
                self.history.record(dict(process=self.process, type=t, f=op["f"],
                                         value=op["value"], error=err, **extra))
                self._drop_conn()
                if t == "info":
                    self.process += self.n_clients
            self.ops += 1
            if self.rate > 0:
                self.stop_ev.wait(self.rng.expovariate(self.rate))
        self._drop_conn()

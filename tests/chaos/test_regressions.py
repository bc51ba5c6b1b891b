"""Regression tests for bugs the chaos harness found (docs/reliability.md, "Bugs found").

Each one replays, deterministically, the fault sequence that exposed the bug, with three
pqlite nodes (ASan+UBSan, $PQLITE_BIN) in their own network namespaces. Needs root.
"""
import os
import sys
import threading
import time

import psycopg2

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from chaos_env import cluster  # noqa: E402,F401 (the fixture)
from nodes import PROBLEM_RE, QueryTimeout, wait_for  # noqa: E402

def test_step_down_with_queued_writers_does_not_crash(cluster):
    """c-raft 0.15 frees the leader's replication progress array on step-down, then fires
    the pending requests' callbacks while raft_state() still says LEADER. The engine hands
    the database to its next queued writer from that callback; its raft_apply crashed the
    node (SEGV in libraft). Found by `tests/chaos/run --workload bank --nemesis partition
    --seed 5013`; fixed in raft_glue (a NULL progress array means not leading).

    Replay: the leader cut off (fast reject), then six autocommit writers on it: one
    commit in flight, the others waiting in the writer queue, then the step-down."""
    cl = cluster
    leader = cl.leader()
    others = [n for n in cl.nodes if n is not leader]
    wait_for("the table", lambda: leader.query(
        "CREATE TABLE IF NOT EXISTS w (k INTEGER PRIMARY KEY, who INTEGER)") is None or True,
        30, interval=0.5)
    conns = [leader.connect(timeout=5.0) for _ in range(6)]
    cl.topo.partition([[leader.i], [n.i for n in others]], "reject")
    results = [None] * len(conns)

    def write(k):
        c = conns[k]
        try:
            time.sleep(0.05 * k)     # in order: one in flight, the rest queued behind it
            c.run("INSERT INTO w VALUES (%d, %d)" % (k, k), timeout=15)
            results[k] = "ok"
        except psycopg2.Error as e:
            results[k] = e.pgcode or "connection error"
        except QueryTimeout:
            results[k] = "timeout"
    threads = [threading.Thread(target=write, args=(k,)) for k in range(len(conns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for c in conns:
        c.close()
    # the cut-off leader has stepped down (two election timeouts at most) and lives on
    # (asked through its log: while cut off, a session there would be relayed to the
    # new leader it cannot reach)
    wait_for("%s to step down" % leader.name,
             lambda: "lost leadership" in leader.log_text() or not leader.alive(), 15,
             interval=0.2)
    time.sleep(1.0)
    assert leader.alive(), "%s died on step-down\n%s" % (leader.name, leader.log_tail(40))
    assert "ok" not in results, "a cut-off leader acknowledged a write: %s" % results
    cl.topo.heal_all()
    cl.wait_voters(3, timeout=60)
    assert all(n.alive() for n in cl.nodes)
    for n in cl.nodes:
        bad = [ln for ln in n.log_text().splitlines() if PROBLEM_RE.search(ln)]
        assert not bad, "%s log: %s" % (n.name, bad[:5])

"""Snapshots and log truncation: with --snapshot-threshold 64 --snapshot-trailing 128, thousands
of transactions must leave snapshot files in DATA/raft and a bounded Raft log (old closed
segments removed), and a restart (clean or after SIGKILL) must give back identical data.

c-raft's raft_uv file names: closed segments "%016llu-%016llu" (first-last index,
inclusive), open segments "open-N", snapshots "snapshot-TERM-INDEX-TIMESTAMP" + ".meta"."""
import os
import re
import time

import pytest

THRESHOLD = 64
TRAILING = 128
N_TX = int(os.environ.get("PQLITE_SNAPSHOT_TX", "3000"))
TX_BUDGET_S = 90.0

CLOSED_RE = re.compile(r"^(\d{16})-(\d{16})$")
SNAP_RE = re.compile(r"^snapshot-(\d+)-(\d+)-(\d+)$")


def raft_files(srv):
    d = os.path.join(srv.data, "raft")
    out = {}
    for name in os.listdir(d):
        try:
            out[name] = os.path.getsize(os.path.join(d, name))
        except FileNotFoundError:  # removed while listing
            pass
    return out


def classify(files):
    closed = {}
    snaps = {}
    opens = {}
    for name, size in files.items():
        m = CLOSED_RE.match(name)
        if m:
            closed[name] = (int(m.group(1)), int(m.group(2)), size)
            continue
        m = SNAP_RE.match(name)
        if m:
            snaps[name] = (int(m.group(1)), int(m.group(2)), size)
            continue
        if name.startswith("open-"):
            opens[name] = size
    return closed, snaps, opens


def listing(files):
    return "\n".join("  %-45s %10d" % (n, s) for n, s in sorted(files.items()))


def dump(cur):
    cur.execute("SELECT id, grp, v FROM kv ORDER BY id")
    rows = cur.fetchall()
    cur.execute("SELECT count(*), sum(grp) FROM kv")
    return rows, cur.fetchone()


@pytest.mark.deadline(240)
def test_snapshots_truncate_log_and_restart(server_factory):
    srv = server_factory(["--snapshot-threshold", str(THRESHOLD),
                          "--snapshot-trailing", str(TRAILING)])
    srv.require_process()
    c = srv.connect()
    cur = c.cursor()
    cur.execute("CREATE TABLE kv (id integer PRIMARY KEY, grp integer, v text)")
    seen_closed = {}
    max_closed = 0
    t0 = time.monotonic()
    done = 0
    for i in range(N_TX):
        if i % 50 == 49:
            cur.execute("DELETE FROM kv WHERE id = %s", (i - 21,))
        elif i % 10 == 9:
            cur.execute("UPDATE kv SET v = v || '+' WHERE id = %s", (i - 5,))
        else:
            cur.execute("INSERT INTO kv VALUES (%s, %s, %s)", (i, i % 7, "value-%d-" % i + "y" * 300))
        done += 1
        if i % 250 == 0:
            closed, _, _ = classify(raft_files(srv))
            seen_closed.update(closed)
            max_closed = max(max_closed, len(closed))
        if time.monotonic() - t0 > TX_BUDGET_S:
            break
    elapsed = time.monotonic() - t0
    assert done >= 1000, "only %d transactions in %.0f s" % (done, elapsed)
    # a couple of larger transactions too (multi-page frames in one entry)
    cur.execute("INSERT INTO kv SELECT id + 1000000, grp, v FROM kv WHERE id < 200")
    before_rows, before_agg = dump(cur)
    c.close()

    time.sleep(0.5)  # let the last snapshot's file work finish
    files = raft_files(srv)
    closed, snaps, opens = classify(files)
    seen_closed.update(closed)
    max_closed = max(max_closed, len(closed))
    info = "after %d tx in %.1fs; raft dir:\n%s" % (done, elapsed, listing(files))
    print(info)

    # snapshots were taken and old ones are pruned
    assert snaps, "no snapshot-* files in %s/raft\n%s" % (srv.data, info)
    for name in snaps:
        assert name + ".meta" in files, "snapshot %s without .meta\n%s" % (name, info)
    assert len(snaps) <= 3, "old snapshots are not removed\n" + info
    latest = max(s[1] for s in snaps.values())
    oldest = min(s[1] for s in snaps.values())
    assert latest >= done - 2 * THRESHOLD - 64, (
        "latest snapshot index %d far behind ~%d entries\n%s" % (latest, done, info))

    # the log is truncated: no closed segment lies entirely before the trailing window
    stale = {n: v for n, v in closed.items() if v[1] < oldest - TRAILING}
    assert not stale, "closed segments older than snapshot %d - trailing %d remain: %s\n%s" % (
        oldest, TRAILING, sorted(stale), info)
    removed = sorted(set(seen_closed) - set(closed))
    print("closed segments seen during the run and since removed: %d" % len(removed))
    assert max_closed <= 8, "up to %d closed segments at once\n%s" % (max_closed, info)
    # open segments are preallocated at their full size; count them, not their bytes
    closed_bytes = sum(v[2] for v in closed.values())
    assert closed_bytes <= 64 << 20, "closed segments take %d bytes\n%s" % (closed_bytes, info)
    assert len(opens) <= 4, "%d open segments\n%s" % (len(opens), info)

    # clean restart
    assert srv.stop() == 0, srv.log_tail()
    srv.start(ready_timeout=30)
    c = srv.connect()
    after_rows, after_agg = dump(c.cursor())
    c.close()
    assert after_agg == before_agg
    assert after_rows == before_rows, "data differs after SIGTERM + restart"

    # more writes, then a crash restart
    c = srv.connect()
    cur = c.cursor()
    for i in range(N_TX, N_TX + 300):
        cur.execute("INSERT INTO kv VALUES (%s, %s, %s)", (i, 9, "post-restart-%d" % i))
    before_rows, before_agg = dump(cur)
    c.close()
    srv.kill()
    srv.start(ready_timeout=30)
    c = srv.connect()
    cur = c.cursor()
    after_rows, after_agg = dump(cur)
    assert after_agg == before_agg
    assert after_rows == before_rows, "data differs after SIGKILL + restart"
    cur.execute("PRAGMA integrity_check")
    assert cur.fetchall() == [("ok",)]
    c.close()

    # and a third restart straight after (restore from snapshot + replay, again)
    srv.kill()
    srv.start(ready_timeout=30)
    c = srv.connect()
    assert dump(c.cursor()) == (before_rows, before_agg)
    c.close()


@pytest.mark.deadline(120)
def test_snapshot_with_several_databases(server_factory):
    """A snapshot holds every database: create some, write past several snapshots, drop one,
    restart, check."""
    srv = server_factory(["--snapshot-threshold", str(THRESHOLD),
                          "--snapshot-trailing", str(TRAILING)])
    srv.require_process()
    c = srv.connect()
    cur = c.cursor()
    for d in ("snapa", "snapb", "snapc"):
        cur.execute("CREATE DATABASE %s" % d)
    expected = {}
    for d in ("snapa", "snapb", "snapc"):
        dc = srv.connect(dbname=d)
        dcur = dc.cursor()
        dcur.execute("CREATE TABLE t (id integer PRIMARY KEY, v text)")
        for i in range(150):
            dcur.execute("INSERT INTO t VALUES (%s, %s)", (i, "%s-%d" % (d, i)))
        dcur.execute("SELECT id, v FROM t ORDER BY id")
        expected[d] = dcur.fetchall()
        dc.close()
    cur.execute("DROP DATABASE snapb")
    for i in range(200):  # push a snapshot after the drop
        cur.execute("CREATE TABLE IF NOT EXISTS pad (id integer PRIMARY KEY)")
        cur.execute("INSERT INTO pad VALUES (%s)", (i,))
    c.close()
    _, snaps, _ = classify(raft_files(srv))
    assert snaps
    srv.kill()
    srv.start(ready_timeout=30)
    for d in ("snapa", "snapc"):
        dc = srv.connect(dbname=d)
        dcur = dc.cursor()
        dcur.execute("SELECT id, v FROM t ORDER BY id")
        assert dcur.fetchall() == expected[d]
        dc.close()
    import psycopg2
    with pytest.raises(psycopg2.OperationalError):
        srv.connect(dbname="snapb")
    c = srv.connect()
    cur = c.cursor()
    cur.execute("SELECT count(*) FROM pad")
    assert cur.fetchone()[0] == 200
    c.close()

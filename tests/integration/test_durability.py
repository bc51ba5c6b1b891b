"""Crash durability: SIGKILL the server at random moments while a client inserts, restart on
the same data directory, and check that every acknowledged write survived and nothing else
appeared (except, possibly, the one write in flight at the kill).

Seeded: PQLITE_DURABILITY_SEED (default 1234), PQLITE_DURABILITY_ROUNDS (default 14),
PQLITE_DURABILITY_BUDGET_S (default 75: no new round starts after that)."""
import os
import random
import threading
import time

import psycopg2
import pytest

SEED = int(os.environ.get("PQLITE_DURABILITY_SEED", "1234"))
ROUNDS = int(os.environ.get("PQLITE_DURABILITY_ROUNDS", "14"))
BUDGET_S = float(os.environ.get("PQLITE_DURABILITY_BUDGET_S", "75"))


class Ledger:
    """What the client knows: acked ids, ids whose fate is unknown, per table."""

    def __init__(self):
        self.acked = {"t1": set(), "t2": set()}
        self.unknown = {"t1": set(), "t2": set()}

    def check(self, cur, round_no):
        for table in ("t1", "t2"):
            cur.execute("SELECT id FROM %s ORDER BY id" % table)
            present = {r[0] for r in cur.fetchall()}
            lost = self.acked[table] - present
            assert not lost, ("round %d: %d acknowledged rows of %s lost after restart, "
                              "e.g. %s" % (round_no, len(lost), table, sorted(lost)[:10]))
            extra = present - self.acked[table] - self.unknown[table]
            assert not extra, ("round %d: rows in %s that were never sent or were "
                               "rejected: %s" % (round_no, table, sorted(extra)[:10]))
            # settle the unknowns: they are now known either way
            self.acked[table] |= (self.unknown[table] & present)
            # an unknown that is absent now must stay absent forever: forget it, so that
            # a later appearance counts as an extra row
            self.unknown[table].clear()
        # atomicity: the two-row transactions wrote both tables or neither
        cur.execute("SELECT id FROM t2 WHERE id NOT IN (SELECT id FROM t1)")
        orphans = cur.fetchall()
        assert not orphans, "round %d: half-applied transactions: %s" % (round_no, orphans[:10])


VARIANTS = {
    # name: (extra server flags, rounds, budget seconds)
    "default": ([], ROUNDS, BUDGET_S),
    # snapshots and log truncation every 64 entries, so kills land during snapshot writes
    "small-snapshots": (["--snapshot-threshold", "64", "--snapshot-trailing", "128"],
                        max(5, ROUNDS // 2), BUDGET_S / 2),
}


@pytest.mark.deadline(240)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_sigkill_during_inserts(server_factory, variant):
    flags, n_rounds, budget = VARIANTS[variant]
    srv = server_factory(flags)
    srv.require_process()
    rng = random.Random(SEED + len(variant))
    c = srv.connect()
    cur = c.cursor()
    cur.execute("CREATE TABLE t1 (id integer PRIMARY KEY, round integer, v text)")
    cur.execute("CREATE TABLE t2 (id integer PRIMARY KEY, v text)")
    c.close()

    ledger = Ledger()
    next_id = [1]
    t_start = time.monotonic()
    rounds_done = 0
    stats = []
    for rnd in range(1, n_rounds + 1):
        if time.monotonic() - t_start > budget:
            break
        kill_after = rng.uniform(0.05, 2.5)
        big = rng.random() < 0.3  # some rounds write ~8 KiB values (multi-page frames)
        stop = threading.Event()

        def killer():
            if not stop.wait(kill_after):
                os.kill(srv.proc.pid, 9)

        c = srv.connect()
        cur = c.cursor()
        kt = threading.Thread(target=killer, daemon=True)
        kt.start()
        n_acked = 0
        t_round = time.monotonic()
        try:
            while True:
                i = next_id[0]
                next_id[0] += 1
                two = (i % 3 == 0)
                val = ("r%d-" % rnd) + ("x" * 8000 if big else "v%d" % i)
                if two:
                    ledger.unknown["t1"].add(i)
                    ledger.unknown["t2"].add(i)
                    sql = ("INSERT INTO t1 VALUES (%d, %d, '%s'); "
                           "INSERT INTO t2 VALUES (%d, 'pair')" % (i, rnd, val, i))
                else:
                    ledger.unknown["t1"].add(i)
                    sql = "INSERT INTO t1 VALUES (%d, %d, '%s')" % (i, rnd, val)
                cur.execute(sql)
                # acknowledged: the server answered CommandComplete + ReadyForQuery
                ledger.unknown["t1"].discard(i)
                ledger.acked["t1"].add(i)
                if two:
                    ledger.unknown["t2"].discard(i)
                    ledger.acked["t2"].add(i)
                n_acked += 1
                if time.monotonic() - t_round > 10:
                    raise AssertionError("round %d: the kill did not interrupt the client" % rnd)
        except psycopg2.Error:
            pass  # the kill: the statement in flight stays "unknown"
        finally:
            stop.set()
            kt.join(timeout=5)
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass
        srv.proc.wait(timeout=10)
        assert srv.proc.returncode == -9, "server exited by itself: %s\n%s" % (
            srv.proc.returncode, srv.log_tail())
        srv.exit_codes.append(("SIGKILL", -9))
        srv._forget()
        t0 = time.monotonic()
        srv.start(ready_timeout=30)
        restart_s = time.monotonic() - t0
        c = srv.connect()
        cur = c.cursor()
        ledger.check(cur, rnd)
        cur.execute("PRAGMA integrity_check")
        assert cur.fetchall() == [("ok",)], "round %d: integrity_check failed" % rnd
        c.close()
        rounds_done += 1
        stats.append((rnd, round(kill_after, 2), n_acked, round(restart_s, 2)))

    print("durability[%s]: seed=%d rounds=%d acked t1=%d t2=%d still-unknown=%d; "
          "(round, kill_after_s, acked, restart_s): %s"
          % (variant, SEED, rounds_done, len(ledger.acked["t1"]), len(ledger.acked["t2"]),
             len(ledger.unknown["t1"]), stats))
    assert rounds_done >= 5, "only %d rounds within the budget" % rounds_done
    assert sum(s[2] for s in stats) > 0, "no insert was ever acknowledged"

    # finally a clean stop/start keeps everything too
    assert srv.stop() == 0
    srv.start()
    c = srv.connect()
    ledger.check(c.cursor(), n_rounds + 1)
    c.close()


@pytest.mark.deadline(120)
def test_sigkill_with_concurrent_writers(fresh_server):
    """Three writers in parallel (writes queue on the one database) during kills."""
    srv = fresh_server
    srv.require_process()
    rng = random.Random(SEED + 1)
    c = srv.connect()
    c.cursor().execute("CREATE TABLE w (id integer PRIMARY KEY, writer integer)")
    c.close()
    acked, unknown = set(), set()
    lock = threading.Lock()
    for rnd in range(1, 5):
        ids = iter(range(rnd * 1000000, rnd * 1000000 + 900000))

        def writer(wid):
            try:
                cc = srv.connect()
            except psycopg2.Error:
                return
            cur = cc.cursor()
            try:
                while True:
                    with lock:
                        i = next(ids)
                        unknown.add(i)
                    cur.execute("INSERT INTO w VALUES (%s, %s)", (i, wid))
                    with lock:
                        unknown.discard(i)
                        acked.add(i)
            except psycopg2.Error:
                pass
            finally:
                try:
                    cc.close()
                except Exception:  # noqa: BLE001
                    pass

        threads = [threading.Thread(target=writer, args=(k,), daemon=True) for k in range(3)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.3, 1.5))
        srv.kill()
        for t in threads:
            t.join(timeout=15)
            assert not t.is_alive(), "writer hung after the server was killed"
        srv.start(ready_timeout=30)
        c = srv.connect()
        cur = c.cursor()
        cur.execute("SELECT id FROM w")
        present = {r[0] for r in cur.fetchall()}
        assert not (acked - present), "lost acked rows: %s" % sorted(acked - present)[:10]
        assert not (present - acked - unknown), sorted(present - acked - unknown)[:10]
        acked |= unknown & present
        unknown.clear()
        cur.execute("PRAGMA integrity_check")
        assert cur.fetchall() == [("ok",)]
        c.close()
    assert len(acked) > 0


@pytest.mark.deadline(120)
def test_large_transactions_survive_crash(fresh_server):
    """Multi-megabyte transactions (one Raft entry carrying thousands of pages), a big
    UPDATE and a big DELETE, then SIGKILL and restart: contents identical."""
    srv = fresh_server
    srv.require_process()
    c = srv.connect()
    cur = c.cursor()
    cur.execute("CREATE TABLE big (id integer PRIMARY KEY, v text)")
    blob = "b" * 10000
    cur.execute("BEGIN")
    for i in range(2000):  # ~20 MB in one transaction
        cur.execute("INSERT INTO big VALUES (%s, %s)", (i, blob))
    cur.execute("COMMIT")
    cur.execute("UPDATE big SET v = 'u' || substr(v, 2) WHERE id % 2 = 0")
    assert cur.rowcount == 1000
    cur.execute("DELETE FROM big WHERE id % 5 = 0")
    assert cur.rowcount == 400
    cur.execute("SELECT count(*), sum(length(v)), sum(id), "
                "sum(CASE WHEN v LIKE 'u%' THEN 1 ELSE 0 END) FROM big")
    before = cur.fetchone()
    assert before[0] == 1600
    c.close()
    srv.kill()
    srv.start(ready_timeout=60)
    c = srv.connect()
    cur = c.cursor()
    cur.execute("SELECT count(*), sum(length(v)), sum(id), "
                "sum(CASE WHEN v LIKE 'u%' THEN 1 ELSE 0 END) FROM big")
    assert cur.fetchone() == before
    cur.execute("PRAGMA integrity_check")
    assert cur.fetchall() == [("ok",)]
    c.close()

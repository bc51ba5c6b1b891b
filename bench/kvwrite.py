#!/usr/bin/python3
"""kvwrite in Python (psycopg2 threads): the same workload and output as bench/kvwrite.c.

Used only when the C client cannot be built (no cc or libpq-dev), and to show the Python
client's ceiling (see docs/benchmarks.md): psycopg2 releases the GIL during network waits,
but building the statement and the bookkeeping still hold it.

Usage: kvwrite.py -h HOST -p PORT [-d DB] [-U USER] [-c CLIENTS] [-t SECONDS] [-s]"""
import argparse
import json
import random
import string
import threading
import time

import psycopg2

LETTERS = string.ascii_letters


def main():
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("-h", dest="host", default="127.0.0.1")
    ap.add_argument("-p", dest="port", default="5433")
    ap.add_argument("-d", dest="db", default="postgres")
    ap.add_argument("-U", dest="user", default="postgres")
    ap.add_argument("-c", dest="clients", type=int, default=1)
    ap.add_argument("-t", dest="seconds", type=float, default=10.0)
    ap.add_argument("-s", dest="setup", action="store_true")
    a = ap.parse_args()

    def connect():
        c = psycopg2.connect(host=a.host, port=a.port, dbname=a.db, user=a.user,
                             connect_timeout=10, sslmode="disable")
        c.autocommit = True
        return c

    if a.setup:
        c = connect()
        cur = c.cursor()
        cur.execute("DROP TABLE IF EXISTS model")
        cur.execute("CREATE TABLE model(key TEXT PRIMARY KEY, value TEXT)")
        c.close()

    barrier = threading.Barrier(a.clients)
    start = [0.0]
    results = []
    lock = threading.Lock()

    def worker(wid):
        rng = random.Random()
        lats, errors, first = [], 0, ""
        try:
            c = connect()
        except psycopg2.Error as e:
            c, first = None, "connect: %s" % str(e).strip()
        if barrier.wait() == 0:
            start[0] = time.monotonic()
        barrier.wait()
        if c is not None:
            cur = c.cursor()
            deadline = start[0] + a.seconds
            while time.monotonic() < deadline:
                key = "".join(rng.choices(LETTERS, k=32))
                value = rng.choice(LETTERS) * 512 + "".join(rng.choices(LETTERS, k=512))
                sql = ("INSERT INTO model(key, value) VALUES('%s', '%s') ON CONFLICT(key) "
                       "DO UPDATE SET value = excluded.value" % (key, value))
                t0 = time.perf_counter()
                try:
                    cur.execute(sql)
                    lats.append(time.perf_counter() - t0)
                except psycopg2.Error as e:
                    errors += 1
                    if not first:
                        first = "%s %s" % (e.pgcode, str(e).strip())
                    if c.closed:
                        break
            c.close()
        with lock:
            results.append((lats, errors, first, time.monotonic(), c is None))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lats = sorted(x for r in results for x in r[0])
    errors = sum(r[1] for r in results)
    first = next((r[2] for r in results if r[2]), "")
    elapsed = max(r[3] for r in results) - start[0]

    def pct(p):
        if not lats:
            return -1
        k = max(1, min(len(lats), int(p / 100.0 * len(lats) + 0.4999999)))
        return lats[k - 1] * 1000

    print(json.dumps({
        "clients": a.clients, "duration_s": round(elapsed, 3), "ops": len(lats),
        "errors": errors, "connect_failed": sum(1 for r in results if r[4]),
        "ops_per_s": round(len(lats) / elapsed, 1), "p50_ms": round(pct(50), 3),
        "p99_ms": round(pct(99), 3), "max_ms": round(lats[-1] * 1000, 3) if lats else -1,
        "mean_ms": round(sum(lats) / len(lats) * 1000, 3) if lats else -1,
        "first_error": first.replace("\n", " ")}))


if __name__ == "__main__":
    main()

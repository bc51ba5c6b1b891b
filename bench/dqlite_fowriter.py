#!/usr/bin/python3
"""The dqlite side of bench/failover: shared/bench/dqlite_failover.sh's writer, unchanged
but for this docstring (same pacing and kill rule as bench/fowriter.c for pqlite).

A serial writer of `PUT /KEY` (body = sequence number) to one dqlite-demo HTTP API, one new
connection per request, 20 s client timeout; next start = max(previous start + INTERVAL_MS,
previous end). After WARMUP s of successful PUTs it SIGKILLs KILL_PID in the middle of a gap
(no PUT in flight); recovery = kill -> completion of the first PUT answered "done"; keeps
going POST s after that, at most MAX_WAIT s after the kill. Prints one `status=... | ...` line.

Usage: dqlite_fowriter.py API_HOST:PORT KILL_PID KEY WARMUP POST MAX_WAIT INTERVAL_MS LOGFILE
"""
import http.client, os, signal, sys, time, collections
host, port = sys.argv[1].rsplit(":", 1)
kill_pid, key = int(sys.argv[2]), sys.argv[3]
warmup, post, max_wait = float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
interval = int(sys.argv[7]) * 1_000_000
log = open(sys.argv[8], "w")
now = time.monotonic_ns
def put(seq):
    t0 = now()
    try:
        c = http.client.HTTPConnection(host, int(port), timeout=20)
        c.request("PUT", "/" + key, body=str(seq))
        r = c.getresponse()
        body = r.read().decode(errors="replace").strip()
        c.close()
        ok = (r.status == 200 and body == "done")
        res = body if r.status == 200 else "HTTP %d %s" % (r.status, body)
    except Exception as e:  # connection refused, timeout, ...
        ok, res = False, "client: %s: %s" % (type(e).__name__, e)
    return t0, now(), ok, res
seq, t_begin, next_start = 0, now(), now()
t_kill = None
pre_ok = pre_fail = 0
after = []            # (t0, t1, ok, res) of PUTs after the kill
first_ok = None
while True:
    t = now()
    if t < next_start:
        time.sleep((next_start - t) / 1e9)
    seq += 1
    t0, t1, ok, res = put(seq)
    log.write("%d %s %.3f %.3f %d %s\n" % (seq, "pre" if t_kill is None else "post",
              (t0 - (t_kill or t_begin)) / 1e6, (t1 - (t_kill or t_begin)) / 1e6, ok, res))
    next_start = max(t0 + interval, t1)
    if t_kill is None:
        pre_ok += ok; pre_fail += (not ok)
        if ok and t1 - t_begin >= warmup * 1e9:
            # kill in the middle of the gap before the next PUT: nothing is in flight
            mid = t0 + interval // 2
            t = now()
            if t < mid:
                time.sleep((mid - t) / 1e9)
            t_kill, t_kill_rt = now(), time.time_ns()
            os.kill(kill_pid, signal.SIGKILL)
            open(sys.argv[8] + ".kill_ns", "w").write("%d\n" % t_kill_rt)
        elif t1 - t_begin > (warmup + 30) * 1e9:
            print("status=no_stable_warmup pre_ok=%d pre_fail=%d" % (pre_ok, pre_fail)); sys.exit(2)
        continue
    after.append((t0, t1, ok, res))
    if ok and first_ok is None:
        first_ok = len(after) - 1
    if first_ok is not None and t1 - after[first_ok][1] >= post * 1e9:
        break
    if t1 - t_kill >= max_wait * 1e9:
        break
ms = lambda ns: "%.0f" % (ns / 1e6)
fails = [a for a in (after if first_ok is None else after[:first_ok]) if not a[2]]
post_fails = [] if first_ok is None else [a for a in after[first_ok + 1:] if not a[2]]
errs = collections.Counter(a[3][:160] for a in fails + post_fails)
errtxt = "; ".join("%dx '%s'" % (n, e) for e, n in errs.most_common()) or "-"
out = ["status=%s" % ("ok" if first_ok is not None else "no_recovery_within_%gs" % max_wait)]
if first_ok is not None:
    f = after[first_ok]
    out += ["recovery_ms=" + ms(f[1] - t_kill),
            "failed_puts=%d" % len(fails),
            "puts_until_ok=%d" % (first_ok + 1),
            "first_put_after_kill: start=+%sms took=%sms ok=%d" % (ms(after[0][0] - t_kill), ms(after[0][1] - after[0][0]), after[0][2]),
            "longest_put_ms=" + ms(max(a[1] - a[0] for a in after[:first_ok + 1])),
            "after_recovery: puts=%d failed=%d" % (len(after) - first_ok - 1, len(post_fails))]
else:
    out += ["failed_puts=%d" % len(fails)]
out += ["warmup: puts=%d failed=%d" % (pre_ok + pre_fail, pre_fail), "errors=" + errtxt]
print(" | ".join(out))

#!/usr/bin/env python3
"""History checkers for the pqlite chaos (Jepsen-style) harness.

Pure functions of a recorded history; Python 3.11 standard library only.

    load_history(path)                      -> list of event dicts (JSON Lines)
    check(workload, history, realtime=True, **options) -> result dict
    check_set / check_bank / check_list_append / check_register(history, realtime=True, ...)

Every checker returns

    {"valid": bool, "workload": str, "anomalies": [{"type": str, "detail": {...}}, ...],
     "anomaly_counts": {type: n}, "stats": {...}}

"valid" is True only when no anomaly of any kind was found; a history the checker could not
decide (malformed input, no final read, search time limit) is reported invalid, never valid.
At most MAX_ANOMALIES_PER_TYPE anomalies of each type are listed; anomaly_counts has the
totals.  The history format and what each checker detects are documented in
docs/reliability.md, section "Checkers".

Command line:  python3 tests/chaos/checkers.py WORKLOAD history.jsonl [options]
prints the result as JSON; exit status 0 = valid, 1 = invalid, 2 = usage error.
"""

import argparse
import collections
import json
import math
import os
import sys
import time as _time
from bisect import bisect_left

INF = math.inf
EVENT_TYPES = ("invoke", "ok", "fail", "info")
MAX_ANOMALIES_PER_TYPE = 50
MAX_LISTED_VALUES = 100          # values listed inside one anomaly detail
NEMESIS = "nemesis"
_ALIASES = {"p": "process", "t": "time", "err": "error"}


# --------------------------------------------------------------------------------------
# Loading and pairing
# --------------------------------------------------------------------------------------

def load_history(path):
    """Read a JSON Lines history file: one JSON object per line, blank lines ignored.

    Raises ValueError naming the line on malformed JSON or a non-object line."""
    events = []
    with open(path, "r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON: {exc}") from None
            if not isinstance(ev, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(ev).__name__}")
            events.append(ev)
    return events


class Op:
    """One operation: an invoke and its completion (or none: then it counts as info)."""
    __slots__ = ("index", "end_index", "process", "f", "type", "inv", "ret", "end",
                 "value", "inv_value", "node", "error", "final", "extra")

    def __init__(self, ev, pos):
        self.index = ev.get("index", pos)     # invoke event's index, for reports
        self.end_index = None                 # completion event's index
        self.process = ev.get("process")
        self.f = ev.get("f")
        self.type = "info"                    # until completed
        self.inv = pos                        # history position of the invoke
        self.ret = INF                        # position of an ok/fail completion; INF for info
        self.end = None                       # position of the completion event, if any
        self.inv_value = ev.get("value")
        self.value = self.inv_value
        self.node = ev.get("node")
        self.error = ev.get("error")
        self.final = bool(ev.get("final"))
        self.extra = None

    def brief(self):
        d = {"index": self.index, "process": self.process, "f": self.f, "type": self.type,
             "node": self.node, "value": self.value}
        if self.error is not None:
            d["error"] = self.error
        return d


class _Report:
    def __init__(self, workload):
        self.workload = workload
        self.anomalies = []
        self.counts = collections.Counter()

    def add(self, typ, detail):
        self.counts[typ] += 1
        if self.counts[typ] <= MAX_ANOMALIES_PER_TYPE:
            self.anomalies.append({"type": typ, "detail": detail})

    def malformed(self, why, **detail):
        detail["problem"] = why
        self.add("malformed-history", detail)

    def result(self, stats):
        return _jsonable({
            "valid": not self.counts,
            "workload": self.workload,
            "anomalies": self.anomalies,
            "anomaly_counts": dict(sorted(self.counts.items())),
            "stats": stats,
        })


def _sorted_any(xs):
    xs = list(xs)
    try:
        return sorted(xs)
    except TypeError:
        return sorted(xs, key=lambda x: (type(x).__name__, repr(x)))


def _jsonable(x):
    if isinstance(x, dict):
        return {(k if isinstance(k, (str, int, float, bool)) or k is None else repr(k)): _jsonable(v)
                for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (set, frozenset)):
        return [_jsonable(v) for v in _sorted_any(x)]
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    return repr(x)


def _cap(values):
    values = _sorted_any(values)
    return values[:MAX_LISTED_VALUES]


def _freeze(v):
    """Hashable, equality-preserving version of a JSON value."""
    if isinstance(v, list):
        return ("__list__",) + tuple(_freeze(x) for x in v)
    if isinstance(v, dict):
        return ("__dict__",) + tuple(sorted((str(k), _freeze(x)) for k, x in v.items()))
    return v


def _normalize_event(raw):
    ev = dict(raw)
    for short, full in _ALIASES.items():
        if short in ev and full not in ev:
            ev[full] = ev.pop(short)
    return ev


def pair_history(history, report):
    """Validate the event stream and pair invokes with completions.

    Returns (ops, stats).  Ordering is the order of the events in the history (line
    order); "index", when present, must increase strictly.  Events of process "nemesis"
    are skipped.  An invoke without a completion counts as info."""
    ops = []
    open_ = {}
    crashed = set()
    last_index = None
    times = []
    nemesis_events = 0
    n_events = 0
    for pos, raw in enumerate(history):
        if not isinstance(raw, dict):
            report.malformed("event is not an object", position=pos, event=repr(raw)[:200])
            continue
        ev = _normalize_event(raw)
        if ev.get("process") == NEMESIS:
            nemesis_events += 1
            continue
        n_events += 1
        typ = ev.get("type")
        idx = ev.get("index", pos)
        if typ not in EVENT_TYPES:
            report.malformed("unknown event type", position=pos, event=ev)
            continue
        if "index" in ev:
            if not isinstance(idx, int) or (last_index is not None and idx <= last_index):
                report.malformed("index does not increase strictly", position=pos, index=idx,
                                 previous=last_index)
            else:
                last_index = idx
        t = ev.get("time")
        if isinstance(t, (int, float)) and not isinstance(t, bool):
            times.append(t)
        p = ev.get("process")
        try:
            hash(p)
        except TypeError:
            report.malformed("process is not hashable", position=pos, event=ev)
            continue
        if p is None:
            report.malformed("event has no process", position=pos, event=ev)
            continue
        if typ == "invoke":
            if p in open_:
                prev = open_.pop(p)
                report.malformed("process invoked again while an operation was in flight",
                                 process=p, index=idx, in_flight=prev.index)
            if p in crashed:
                report.malformed("process issued an operation after an info completion "
                                 "(use a new process id)", process=p, index=idx)
            op = Op(ev, pos)
            open_[p] = op
            ops.append(op)
            continue
        op = open_.pop(p, None)
        if op is None:
            report.malformed("completion without a preceding invoke", process=p, index=idx,
                             event=ev)
            continue
        if ev.get("f") is not None and ev.get("f") != op.f:
            report.malformed("completion f differs from its invoke", process=p, index=idx,
                             invoke_f=op.f, completion_f=ev.get("f"))
        op.type = typ
        op.end = pos
        op.end_index = idx
        op.ret = INF if typ == "info" else pos
        if ev.get("node") is not None:
            op.node = ev.get("node")
        if ev.get("error") is not None:
            op.error = ev.get("error")
        if ev.get("final"):
            op.final = True
        if typ == "ok" and ev.get("value") is not None:
            op.value = ev.get("value")
        if typ == "info":
            crashed.add(p)
    incomplete = len(open_)
    stats = {"events": n_events, "ops": len(ops), "incomplete_ops_counted_as_info": incomplete,
             "nemesis_events": nemesis_events}
    if len(times) >= 2:
        stats["duration_s"] = round((max(times) - min(times)) / 1e9, 3)
    return ops, stats


def _count_types(ops):
    c = collections.Counter(o.type for o in ops)
    return {t: c.get(t, 0) for t in ("ok", "fail", "info")}


def _as_history(history):
    if isinstance(history, (str, bytes)) or hasattr(history, "__fspath__"):
        return load_history(history)
    return list(history)


# --------------------------------------------------------------------------------------
# Set
# --------------------------------------------------------------------------------------

def check_set(history, realtime=True, **_options):
    """Set workload: f="add" value=int (unique), f="read" value=list of ints.

    Final reads are the ok reads flagged "final": true, or, when no event carries that
    flag, every ok read invoked after the last add event.  Detects: lost, duplicate,
    unexpected, failed-add-visible, divergence, no-final-read, and with realtime=True
    stale-read (a non-final read missing a value whose add completed, or which some read
    returned, before it was invoked)."""
    rep = _Report("set")
    ops, base = pair_history(_as_history(history), rep)
    adds = [o for o in ops if o.f == "add"]
    reads = [o for o in ops if o.f == "read"]
    ignored = len(ops) - len(adds) - len(reads)

    attempted = {}
    for a in adds:
        v = a.inv_value
        try:
            hash(v)
        except TypeError:
            rep.malformed("add value is not a scalar", op=a.brief())
            continue
        if v in attempted:
            rep.malformed("value added more than once (add values must be unique)", value=v,
                          ops=[attempted[v].index, a.index])
            continue
        attempted[v] = a
    ok_vals = {v for v, a in attempted.items() if a.type == "ok"}
    fail_vals = {v for v, a in attempted.items() if a.type == "fail"}
    info_vals = {v for v, a in attempted.items() if a.type == "info"}
    possible = ok_vals | info_vals

    ok_reads = []
    for r in reads:
        if r.type != "ok":
            continue
        if not isinstance(r.value, list):
            rep.malformed("ok read value is not a list", op=r.brief())
            continue
        try:
            r.extra = collections.Counter(r.value)
        except TypeError:
            rep.malformed("read contains a non-scalar element", op=r.brief())
            continue
        ok_reads.append(r)

    if any(r.final for r in ok_reads):
        finals = [r for r in ok_reads if r.final]
    else:
        last_add = max((a.end if a.end is not None else a.inv for a in adds), default=-1)
        finals = [r for r in ok_reads if r.inv > last_add]
    final_ids = {id(r) for r in finals}

    for r in ok_reads:
        counts = r.extra
        dups = {v: n for v, n in counts.items() if n > 1} if len(counts) < len(r.value) else {}
        if dups:
            rep.add("duplicate", {"read": r.index, "node": r.node, "final": id(r) in final_ids,
                                  "values": dict(list(sorted(dups.items()))[:MAX_LISTED_VALUES]),
                                  "count": len(dups)})
        unexpected = counts.keys() - attempted.keys()
        if unexpected:
            rep.add("unexpected", {"read": r.index, "node": r.node, "final": id(r) in final_ids,
                                   "values": _cap(unexpected), "count": len(unexpected),
                                   "why": "value never attempted by any add"})
        failed = counts.keys() & fail_vals
        if failed:
            rep.add("failed-add-visible", {"read": r.index, "node": r.node,
                                           "final": id(r) in final_ids, "values": _cap(failed),
                                           "adds": [attempted[v].index for v in _cap(failed)],
                                           "why": "add completed with fail (certainly not "
                                                  "applied) but the value is present"})

    # values any earlier read observed are known committed
    first_final_inv = min((r.inv for r in finals), default=INF)
    observed = set()
    for r in ok_reads:
        if id(r) not in final_ids and r.ret < first_final_inv:
            observed.update(r.extra.keys() & possible)
    must = ok_vals | observed

    lost_all = set()
    for r in finals:
        present = r.extra
        missing = must.difference(present)
        if missing:
            lost_all.update(missing)
            ack = [v for v in missing if v in ok_vals]
            rep.add("lost", {"read": r.index, "node": r.node, "values": _cap(missing),
                             "count": len(missing), "acknowledged": len(ack),
                             "observed_earlier": len(missing) - len(ack),
                             "adds": [attempted[v].index for v in _cap(missing)]})

    if len(finals) > 1:
        sets = [set(r.extra) for r in finals]
        union = set().union(*sets)
        inter = set.intersection(*sets)
        if union != inter or len({tuple(sorted(r.extra.items(), key=repr)) for r in finals}) > 1:
            per = []
            for r, s in zip(finals, sets):
                per.append({"read": r.index, "node": r.node, "size": sum(r.extra.values()),
                            "missing_vs_union": _cap(union - s),
                            "missing_count": len(union - s)})
            rep.add("divergence", {"reads": per, "disagreeing_values": len(union - inter)})

    if adds and not finals:
        rep.add("no-final-read", {"why": "no ok read was invoked after the last add "
                                         "completed (or flagged final): nothing to check"})

    stale_reads = 0
    if realtime:
        # pos at which each value became required: ok add completion, or completion of an
        # ok read that returned it
        req_at = {}
        for v in ok_vals:
            req_at[v] = attempted[v].ret
        seen = set()
        for r in sorted(ok_reads, key=lambda r: r.ret):
            # reads in completion order: the first read returning a value fixes its time
            new = (r.extra.keys() & possible) - seen
            seen |= new
            for v in new:
                if r.ret < req_at.get(v, INF):
                    req_at[v] = r.ret
        req = sorted(((p, v) for v, p in req_at.items() if p != INF), key=lambda x: x[0])
        req_pos = [p for p, _ in req]
        req_vals = [v for _, v in req]
        for r in ok_reads:
            if id(r) in final_ids:
                continue
            k = bisect_left(req_pos, r.inv)
            missing = set(req_vals[:k]).difference(r.extra)
            if missing:
                stale_reads += 1
                rep.add("stale-read", {"read": r.index, "node": r.node, "values": _cap(missing),
                                       "count": len(missing),
                                       "why": "values whose add completed, or which another "
                                              "read returned, before this read was invoked"})

    stats = dict(base)
    stats.update({
        "adds": _count_types(adds), "reads": _count_types(reads), "ignored_ops": ignored,
        "final_reads": [{"read": r.index, "node": r.node, "size": sum(r.extra.values())}
                        for r in finals],
        "lost": len(lost_all),
        "recovered_info_adds": len({v for r in finals for v in r.extra if v in info_vals}),
        "stale_reads": stale_reads,
        "realtime": bool(realtime),
    })
    return rep.result(stats)


# --------------------------------------------------------------------------------------
# Bank
# --------------------------------------------------------------------------------------

def _norm_account(a):
    if isinstance(a, str):
        s = a.strip()
        if s.lstrip("-").isdigit():
            return int(s)
        return s
    return a


def _number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_bank(history, realtime=True, total=None, accounts=None, n_accounts=8,
               allow_negative=False, **_options):
    """Bank workload: f="transfer" value={"from","to","amount"}; f="read" value={account: balance}.

    Every ok read (any node) must show exactly the expected accounts, no null balances, sum
    to the total, and (unless allow_negative) have no negative balance.  total / accounts
    default to the most common sum / account set among the reads (pass them explicitly when
    known).  Anomalies: wrong-total, wrong-accounts, null-balance, negative-balance,
    no-reads."""
    rep = _Report("bank")
    ops, base = pair_history(_as_history(history), rep)
    transfers = [o for o in ops if o.f == "transfer"]
    reads = [o for o in ops if o.f == "read"]
    ignored = len(ops) - len(transfers) - len(reads)

    for t in transfers:
        v = t.inv_value
        if not (isinstance(v, dict) and "from" in v and "to" in v and _number(v.get("amount"))):
            rep.malformed("transfer value must be {from, to, amount}", op=t.brief())

    parsed = []
    for r in reads:
        if r.type != "ok":
            continue
        v = r.value
        if isinstance(v, list) and all(isinstance(x, (list, tuple)) and len(x) == 2 for x in v):
            pairs = [(x[0], x[1]) for x in v]
        elif isinstance(v, dict):
            pairs = list(v.items())
        else:
            rep.malformed("ok read value is not an {account: balance} object", op=r.brief())
            continue
        bal = {}
        dup = []
        for a, b in pairs:
            a = _norm_account(a)
            if a in bal:
                dup.append(a)
            bal[a] = b
        parsed.append((r, bal, dup))

    if accounts is not None:
        expected = frozenset(_norm_account(a) for a in accounts)
        accounts_inferred = False
    else:
        c = collections.Counter(frozenset(bal) for _, bal, _ in parsed)
        expected = c.most_common(1)[0][0] if c else frozenset()
        accounts_inferred = True
        if parsed and n_accounts is not None and len(expected) != n_accounts:
            rep.add("wrong-accounts", {"why": f"the most common account set has {len(expected)} "
                                              f"accounts, expected {n_accounts}",
                                       "accounts": expected})

    def clean(bal):
        return all(_number(x) for x in bal.values())

    if total is None:
        c = collections.Counter(sum(bal.values()) for _, bal, _ in parsed
                                if frozenset(bal) == expected and clean(bal))
        total_used = c.most_common(1)[0][0] if c else None
        total_inferred = True
    else:
        total_used = total
        total_inferred = False

    bad_by_node = collections.Counter()
    reads_by_node = collections.Counter()
    bad_reads = 0
    for r, bal, dup in parsed:
        reads_by_node[str(r.node)] += 1
        bad = False
        keys = frozenset(bal)
        if keys != expected or dup:
            bad = True
            rep.add("wrong-accounts", {"read": r.index, "node": r.node,
                                       "missing": _cap(expected - keys),
                                       "extra": _cap(keys - expected),
                                       "duplicated": _cap(set(dup)), "balances": bal})
        nulls = [a for a, b in bal.items() if not _number(b)]
        if nulls:
            bad = True
            rep.add("null-balance", {"read": r.index, "node": r.node, "accounts": _cap(nulls),
                                     "balances": bal})
        else:
            s = sum(bal.values())
            if total_used is not None and s != total_used:
                bad = True
                rep.add("wrong-total", {"read": r.index, "node": r.node, "total": s,
                                        "expected": total_used, "difference": s - total_used,
                                        "balances": bal,
                                        "why": "torn or partly applied transfer (or lost/"
                                               "duplicated write)"})
            if not allow_negative:
                neg = {a: b for a, b in bal.items() if b < 0}
                if neg:
                    bad = True
                    rep.add("negative-balance", {"read": r.index, "node": r.node,
                                                 "negative": neg, "balances": bal})
        if bad:
            bad_reads += 1
            bad_by_node[str(r.node)] += 1

    if not parsed:
        rep.add("no-reads", {"why": "no ok read in the history: nothing to check"})

    stats = dict(base)
    stats.update({
        "transfers": _count_types(transfers), "reads": _count_types(reads),
        "ignored_ops": ignored, "total": total_used, "total_inferred": total_inferred,
        "accounts": expected, "accounts_inferred": accounts_inferred,
        "reads_by_node": dict(reads_by_node), "bad_reads": bad_reads,
        "bad_reads_by_node": dict(bad_by_node), "allow_negative": bool(allow_negative),
    })
    return rep.result(stats)


# --------------------------------------------------------------------------------------
# List-append (Elle-lite)
# --------------------------------------------------------------------------------------

WW, WR, RW, RT = 1, 2, 4, 8
_EDGE_NAME = {WW: "ww", WR: "wr", RW: "rw", RT: "rt"}


def _lowest_bit(m):
    return m & -m


def _sccs(n, adj, mask):
    """Iterative Tarjan: strongly connected components (size > 1) of the subgraph whose
    edges have a bit in mask.  adj: list of {neighbour: bits}."""
    index = [-1] * n
    low = [0] * n
    on = [False] * n
    stack = []
    out = []
    counter = 0
    for s in range(n):
        if index[s] != -1:
            continue
        index[s] = low[s] = counter
        counter += 1
        stack.append(s)
        on[s] = True
        work = [(s, iter(adj[s].items()))]
        while work:
            v, it = work[-1]
            descended = False
            for w, m in it:
                if not m & mask:
                    continue
                if index[w] == -1:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on[w] = True
                    work.append((w, iter(adj[w].items())))
                    descended = True
                    break
                if on[w] and index[w] < low[v]:
                    low[v] = index[w]
            if descended:
                continue
            work.pop()
            if work:
                u = work[-1][0]
                if low[v] < low[u]:
                    low[u] = low[v]
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on[w] = False
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(comp)
    return out


def _bfs_path(adj, src, dst, mask, members):
    """Shortest path src -> dst using edges in mask, staying inside members."""
    prev = {src: None}
    q = collections.deque([src])
    while q:
        v = q.popleft()
        if v == dst:
            break
        for w, m in adj[v].items():
            if m & mask and w in members and w not in prev:
                prev[w] = v
                q.append(w)
    if dst not in prev:
        return None
    path = [dst]
    while path[-1] != src:
        path.append(prev[path[-1]])
    path.reverse()
    return path


def check_list_append(history, realtime=True, cycle_search_budget=200, **_options):
    """List-append workload (Elle-style): f="txn", value = list of micro-ops
    ["append", k, v] / ["r", k, list-or-null].

    Detects: incompatible-order, append-order, duplicate-elements, garbage-read, G1a, G1b,
    internal, lost-update, G0, G1c, G-single, G2 and, with realtime=True, lost-append and
    the -realtime variants of the cycles (strict serializability).  info txns count as
    committed only if one of their appends was observed; their reads are ignored.  See
    docs/reliability.md."""
    rep = _Report("list-append")
    ops, base = pair_history(_as_history(history), rep)
    txns = [o for o in ops if o.f == "txn"]
    ignored = len(ops) - len(txns)

    # ---- parse micro-ops -------------------------------------------------------------
    def parse(t):
        """-> (list of (f, k, v), None) or (None, problem)."""
        mops = t.value if t.type == "ok" else t.inv_value
        if not isinstance(mops, list):
            return None, "txn value must be a list of micro-ops"
        out = []
        for m in mops:
            if not (isinstance(m, (list, tuple)) and len(m) == 3 and m[0] in ("append", "r")):
                return None, "micro-op must be [\"append\", k, v] or [\"r\", k, list-or-null]"
            f, k, v = m
            try:
                hash(k)
                if f == "append":
                    hash(v)
            except TypeError:
                return None, "keys and appended values must be scalars"
            if f == "r":
                if t.type != "ok":
                    v = None                    # unknown outcome: the read tells nothing
                else:
                    if v is None:
                        v = []                  # null = key absent = empty list
                    if not isinstance(v, list):
                        return None, "read result must be a list or null"
                    try:
                        for x in v:
                            hash(x)
                    except TypeError:
                        return None, "read result elements must be scalars"
            out.append((f, k, v))
        if t.type == "ok":
            inv = t.inv_value
            if t.value is inv:
                if any(f == "r" for f, _, _ in out):
                    return None, "ok completion carries no read results"
            elif not (isinstance(inv, list) and len(inv) == len(out) and all(
                    isinstance(a, (list, tuple)) and len(a) == 3 and a[0] == b[0] and a[1] == b[1]
                    and (a[0] != "append" or a[2] == b[2]) for a, b in zip(inv, out))):
                return None, "ok completion's micro-ops do not match the invoke's"
        return out, None

    good = []
    for t in txns:
        parsed, problem = parse(t)
        if problem is not None:
            rep.malformed(problem, op=t.brief(), invoke_value=t.inv_value)
            continue
        t.extra = parsed
        good.append(t)
    txns = good

    # ---- writers ---------------------------------------------------------------------
    writer = {}                                   # (k, v) -> txn
    appends_of = {}                               # id(txn) -> {k: [v, ...]}
    for t in txns:
        own = {}
        for f, k, v in t.extra:
            if f == "append":
                if (k, v) in writer:
                    rep.malformed("value appended to the same key by more than one micro-op "
                                  "(appended values must be unique per key)", key=k, value=v,
                                  txns=[writer[(k, v)].index, t.index])
                    continue
                writer[(k, v)] = t
                own.setdefault(k, []).append(v)
        appends_of[id(t)] = own

    # ---- reads, internal consistency, local checks -------------------------------------
    reads_by_key = collections.defaultdict(list)  # k -> [(txn, list, external)]
    ok_txns = [t for t in txns if t.type == "ok"]
    rmw = collections.defaultdict(list)           # (k, external read) -> txns appending k after
    for t in ok_txns:
        prefix = {}
        pending = {}
        wrote = set()
        mops = t.extra
        for j, (f, k, v) in enumerate(mops):
            if f == "append":
                pending.setdefault(k, []).append(v)
                wrote.add(k)
                continue
            L = v
            pend = pending.get(k, [])
            later = {x for f2, k2, x in mops[j + 1:] if f2 == "append" and k2 == k}
            if k in prefix:
                expect = prefix[k] + pend
                if L != expect:
                    rep.add("internal", {"txn": t.index, "key": k, "read": L, "expected": expect,
                                         "why": "a read inside the transaction disagrees with its "
                                                "earlier read plus its own appends", "op": t.brief()})
            elif pend and L[-len(pend):] != pend:
                rep.add("internal", {"txn": t.index, "key": k, "read": L,
                                     "expected_suffix": pend,
                                     "why": "a read after the transaction's own appends does not "
                                            "end with them", "op": t.brief()})
            if later and any(x in later for x in L):
                rep.add("internal", {"txn": t.index, "key": k, "read": L,
                                     "values": _cap(x for x in L if x in later),
                                     "why": "a read contains a value the transaction itself "
                                            "appends only later (future read)", "op": t.brief()})
            if k not in prefix and k not in wrote and later:
                rmw[(k, tuple(L))].append(t)
            prefix[k] = L
            pending[k] = []
            reads_by_key[k].append((t, L, k not in wrote))

    for (k, L), ts in rmw.items():
        if len(ts) > 1:
            rep.add("lost-update", {"key": k, "read": list(L), "txns": [t.index for t in ts],
                                    "nodes": [t.node for t in ts],
                                    "why": "committed transactions read the same version of the "
                                           "key and each appended to it: one update overwrote "
                                           "the other unseen"})

    for k, rs in reads_by_key.items():
        for t, L, _ext in rs:
            c = collections.Counter(L)
            dups = [x for x, n in c.items() if n > 1]
            if dups:
                rep.add("duplicate-elements", {"txn": t.index, "key": k, "values": _cap(dups),
                                               "read": L, "node": t.node})
            garbage = [x for x in c if (k, x) not in writer]
            if garbage:
                rep.add("garbage-read", {"txn": t.index, "key": k, "values": _cap(garbage),
                                         "read": L, "node": t.node,
                                         "why": "value never appended by any transaction"})
            aborted = [x for x in c if (k, x) in writer and writer[(k, x)].type == "fail"]
            if aborted:
                rep.add("G1a", {"txn": t.index, "key": k, "values": _cap(aborted), "node": t.node,
                                "writers": sorted({writer[(k, x)].index for x in aborted}),
                                "why": "read a value appended by a failed (aborted) transaction"})
            if L:
                w = writer.get((k, L[-1]))
                if w is not None and w is not t and w.type != "fail":
                    mine = appends_of[id(w)].get(k, [])
                    if mine and mine[-1] != L[-1]:
                        rep.add("G1b", {"txn": t.index, "key": k, "value": L[-1], "writer": w.index,
                                        "writer_appends": mine, "node": t.node,
                                        "why": "read ends at an intermediate (non-final) append "
                                               "of another transaction"})

    # ---- version orders ------------------------------------------------------------------
    order = {}
    compatible = collections.defaultdict(list)    # k -> [(txn, L, external)]
    for k, rs in reads_by_key.items():
        longest_t, longest = rs[0][0], rs[0][1]
        for t, L, _ in rs:
            if len(L) > len(longest):
                longest_t, longest = t, L
        order[k] = longest
        for t, L, ext in rs:
            if L == longest[:len(L)]:
                compatible[k].append((t, L, ext))
            else:
                i = next(i for i, (a, b) in enumerate(zip(L, longest)) if a != b) \
                    if any(a != b for a, b in zip(L, longest)) else min(len(L), len(longest))
                rep.add("incompatible-order", {"key": k, "txn": t.index, "read": L,
                                               "longest_read_txn": longest_t.index,
                                               "longest_read": longest, "differs_at": i,
                                               "why": "read is not a prefix of the longest read "
                                                      "of this key: replicas diverged"})

    # one transaction's appends to a key must show up in the order it issued them, and a
    # later one only if the earlier ones are there too
    for t in txns:
        for k, vals in appends_of[id(t)].items():
            vo = order.get(k)
            if not vo or len(vals) < 2:
                continue
            where = {}
            for i, x in enumerate(vo):
                where.setdefault(x, i)
            ps = [where.get(x) for x in vals]
            seen_ps = [p for p in ps if p is not None]
            n_seen = len(seen_ps)
            if seen_ps != sorted(seen_ps) or any(p is None for p in ps[:n_seen]):
                rep.add("append-order", {"txn": t.index, "key": k, "appends": vals,
                                         "positions": ps, "version_order": vo,
                                         "why": "the transaction's appends to this key appear "
                                                "reordered, or a later one without an earlier "
                                                "one (not applied atomically, in order)"})

    observed = set()
    for k, rs in reads_by_key.items():
        for t, L, _ in rs:
            for x in L:
                w = writer.get((k, x))
                if w is not None and w.type == "info":
                    observed.add(id(w))

    # ---- graph -------------------------------------------------------------------------
    nodes = [t for t in txns if t.type == "ok" or (t.type == "info" and id(t) in observed)]
    nid = {id(t): i for i, t in enumerate(nodes)}
    n = len(nodes)
    adj = [dict() for _ in range(n)]
    why = {}
    order_sets = {}

    def edge(a, b, bit, expl):
        if a == b:
            return
        m = adj[a].get(b, 0)
        if not m & bit:
            adj[a][b] = m | bit
            why[(a, b, bit)] = expl

    unobserved = collections.defaultdict(list)    # k -> [(graph node, value)], one per writer
    for t in nodes:
        for k, vals in appends_of[id(t)].items():
            if k in order:
                seen_k = order_sets.setdefault(k, set(order[k]))
                x = next((x for x in vals if x not in seen_k), None)
                if x is not None:
                    unobserved[k].append((nid[id(t)], x))

    for k, vo in order.items():
        prev = None
        for x in vo:
            w = writer.get((k, x))
            cur = nid.get(id(w)) if w is not None else None
            if cur is not None and prev is not None:
                edge(prev, cur, WW, (k, x))
            prev = cur
        if prev is not None:                 # unobserved appends follow the last version
            for w, x in unobserved.get(k, ()):
                edge(prev, w, WW, (k, x))
        for t, L, ext in compatible[k]:
            if not ext:
                continue
            r = nid[id(t)]
            if L:
                w = writer.get((k, L[-1]))
                if w is not None and id(w) in nid:
                    edge(nid[id(w)], r, WR, (k, L[-1]))
            if len(L) < len(vo):
                w = writer.get((k, vo[len(L)]))
                if w is not None and id(w) in nid:
                    edge(r, nid[id(w)], RW, (k, vo[len(L)]))
            # a committed append no read ever observed lies after every observed version of
            # k, so this reader precedes its writer (needed to see read skew or lost
            # updates on values nobody read back)
            for w, x in unobserved.get(k, ()):
                edge(r, w, RW, (k, x))

    lost_appends = 0
    if realtime:
        evs = []
        for i, t in enumerate(nodes):
            evs.append((t.inv, 0, i))
            if t.type == "ok":
                evs.append((t.ret, 1, i))
        evs.sort()
        frontier = set()
        preds = {}
        for _pos, kind, i in evs:
            if kind == 0:
                preds[i] = list(frontier)
                if nodes[i].type != "ok":
                    for p in preds[i]:
                        edge(p, i, RT, None)
            else:
                ps = preds.pop(i, ())
                for p in ps:
                    edge(p, i, RT, None)
                frontier.difference_update(ps)
                frontier.add(i)

        # acknowledged appends never observed although a later read of the key exists
        seen = collections.defaultdict(set)
        for k, rs in reads_by_key.items():
            for _t, L, _ in rs:
                seen[k].update(L)
        readers = {}
        for k, rs in reads_by_key.items():
            srt = sorted({id(t): t for t, _L, _e in rs}.values(), key=lambda t: t.inv)
            readers[k] = ([t.inv for t in srt], srt)
        for t in ok_txns:
            for k, vals in appends_of[id(t)].items():
                if k not in readers or all(x in seen[k] for x in vals):
                    continue
                invs, srt = readers[k]
                j = bisect_left(invs, t.ret)
                later = [r for r in srt[j:j + 2] if r is not t]
                if not later:
                    continue
                for x in vals:
                    if x not in seen[k]:
                        lost_appends += 1
                        rep.add("lost-append", {"key": k, "value": x, "writer": t.index,
                                                "later_read": later[0].index,
                                                "later_read_node": later[0].node,
                                                "why": "append acknowledged, never observed, "
                                                       "although a read of the key was invoked "
                                                       "after the append completed"})

    # ---- cycles ------------------------------------------------------------------------
    def describe(steps):
        out = []
        text = []
        for a, b, bit in steps:
            e = {"from": nodes[a].index, "to": nodes[b].index, "type": _EDGE_NAME[bit]}
            ex = why.get((a, b, bit))
            if ex is not None:
                e["key"], e["value"] = ex
            out.append(e)
            label = _EDGE_NAME[bit] + (f"[{ex[0]}:{ex[1]}]" if ex is not None else "")
            text.append(f"T{nodes[a].index} -{label}->")
        text.append(f"T{nodes[steps[0][0]].index}")
        return {"cycle": [nodes[a].index for a, _, _ in steps], "edges": out,
                "explanation": " ".join(text),
                "txns": [nodes[a].brief() for a, _, _ in steps]}

    def close(a, b, bit, path, mask):
        steps = [(a, b, bit)]
        for x, y in zip(path, path[1:]):
            steps.append((x, y, _lowest_bit(adj[x][y] & mask)))
        return steps

    cycles_found = collections.Counter()

    def report(kind, steps):
        cycles_found[kind] += 1
        rep.add(kind, describe(steps))

    budget = max(1, int(cycle_search_budget))
    # round 0: ww only -> G0
    for comp in _sccs(n, adj, WW):
        mem = set(comp)
        a = comp[0]
        b = next(w for w, m in adj[a].items() if m & WW and w in mem)
        report("G0", close(a, b, WW, _bfs_path(adj, b, a, WW, mem), WW))
    # round 1: ww+wr -> G1c (cycle with at least one wr edge)
    for comp in _sccs(n, adj, WW | WR):
        mem = set(comp)
        for a in comp:
            b = next((w for w, m in adj[a].items() if m & WR and not m & WW and w in mem), None)
            if b is not None:
                report("G1c", close(a, b, WR, _bfs_path(adj, b, a, WW | WR, mem), WW | WR))
                break
    # round 2: + rw -> G-single (exactly one rw) or G2
    DEP = WW | WR | RW
    for comp in _sccs(n, adj, DEP):
        mem = set(comp)
        rws = [(a, b) for a in comp for b, m in adj[a].items()
               if m & RW and not m & (WW | WR) and b in mem]
        if not rws:
            continue
        best = None
        for a, b in rws[:budget]:
            p = _bfs_path(adj, b, a, WW | WR, mem)
            if p is not None and (best is None or len(p) < len(best[2])):
                best = (a, b, p)
                if len(p) == 2:
                    break
        if best is not None:
            report("G-single", close(best[0], best[1], RW, best[2], WW | WR))
            continue
        best = None
        for a, b in rws[:budget]:
            p = _bfs_path(adj, b, a, DEP, mem)
            if p is not None and (best is None or len(p) < len(best[2])):
                best = (a, b, p)
        report("G2", close(best[0], best[1], RW, best[2], DEP))
    # round 3: + rt -> strict-serializability violations
    if realtime:
        ALL = DEP | RT
        for comp in _sccs(n, adj, ALL):
            mem = set(comp)
            rts = [(a, b) for a in comp for b, m in adj[a].items() if m == RT and b in mem]
            if not rts:
                continue
            best = None
            for a, b in rts[:budget]:
                for mask in (WW | WR | RT, ALL):
                    p = _bfs_path(adj, b, a, mask, mem)
                    if p is not None:
                        break
                if p is None:
                    continue
                steps = close(a, b, RT, p, mask)
                n_rw = sum(1 for s in steps if s[2] == RW)
                score = (n_rw, len(steps))
                if best is None or score < best[0]:
                    best = (score, steps)
                    if score == (0, 2):
                        break
            if best is None:
                continue
            steps = best[1]
            kinds = {s[2] for s in steps}
            n_rw = best[0][0]
            if n_rw == 0:
                kind = "G1c-realtime" if WR in kinds else "G0-realtime"
            else:
                kind = "G-single-realtime" if n_rw == 1 else "G2-realtime"
            report(kind, steps)

    stats = dict(base)
    stats.update({
        "txns": _count_types(txns), "ignored_ops": ignored, "keys": len(order),
        "observed_info_txns": len(observed),
        "graph_nodes": n, "graph_edges": sum(len(a) for a in adj),
        "edges_by_type": {name: sum(1 for a in adj for m in a.values() if m & bit)
                          for bit, name in _EDGE_NAME.items()},
        "cycles": dict(cycles_found), "lost_appends": lost_appends,
        "realtime": bool(realtime),
    })
    return rep.result(stats)


# --------------------------------------------------------------------------------------
# Register (linearizability, Wing-Gong / Lowe)
# --------------------------------------------------------------------------------------

_READ, _WRITE, _CAS = 0, 1, 2


class _RegOp:
    __slots__ = ("op", "kind", "a", "b", "inv", "ret")

    def __init__(self, op, kind, a, b):
        self.op, self.kind, self.a, self.b = op, kind, a, b
        self.inv = op.inv
        self.ret = op.ret if op.type == "ok" else INF


def _wgl(rops, initial, deadline):
    """Wing & Gong search with Lowe's memoisation over (linearized bitset, state).

    Entries (call/return) in history order in an array-based doubly linked list.  Ops with
    ret == INF (info) have no return entry: they may be linearized anywhere after their call,
    or never.  Returns (result, info) where result is True, False or None (time limit)."""
    n = len(rops)
    entries = []
    for i, o in enumerate(rops):
        entries.append((o.inv, 0, i))
        if o.ret != INF:
            entries.append((o.ret, 1, i))
    entries.sort()
    m = len(entries)
    HEAD = m                      # sentinel; entries are 0..m-1 in history order
    NIL = -1
    nxt = [NIL] * (m + 1)
    prv = [NIL] * (m + 1)
    last = HEAD
    for e in range(m):
        nxt[last] = e
        prv[e] = last
        last = e
    is_ret = [e[1] for e in entries]
    op_of = [e[2] for e in entries]
    pos_of = [e[0] for e in entries]
    ret_entry = [NIL] * n
    for e in range(m):
        if is_ret[e]:
            ret_entry[op_of[e]] = e
    kind = [o.kind for o in rops]
    arg_a = [o.a for o in rops]
    arg_b = [o.b for o in rops]
    bits = [1 << i for i in range(n)]

    remaining = sum(1 for o in rops if o.ret != INF)
    state = initial
    linearized = 0
    stack = []
    cache = set()
    entry = nxt[HEAD]
    steps = 0
    best_pos = -1
    best_op = None
    best_states = set()
    max_depth = 0

    while True:
        if remaining == 0:
            return True, {"steps": steps, "cache": len(cache)}
        steps += 1
        if steps & 4095 == 0 and _time.monotonic() > deadline:
            return None, {"steps": steps, "cache": len(cache), "depth": max_depth}
        if entry != NIL and not is_ret[entry]:
            i = op_of[entry]
            k = kind[i]
            if k == _READ:
                legal, ns = state == arg_a[i], state
            elif k == _WRITE:
                legal, ns = True, arg_a[i]
            else:
                legal, ns = state == arg_a[i], arg_b[i]
            if legal:
                nl = linearized | bits[i]
                key = (nl, ns)
                if key not in cache:
                    cache.add(key)
                    stack.append((entry, state))
                    state = ns
                    linearized = nl
                    # lift the call entry and its return entry
                    nxt[prv[entry]] = nxt[entry]
                    if nxt[entry] != NIL:
                        prv[nxt[entry]] = prv[entry]
                    r = ret_entry[i]
                    if r != NIL:
                        nxt[prv[r]] = nxt[r]
                        if nxt[r] != NIL:
                            prv[nxt[r]] = prv[r]
                        remaining -= 1
                    if len(stack) > max_depth:
                        max_depth = len(stack)
                    entry = nxt[HEAD]
                    continue
            entry = nxt[entry]
            continue
        # a return entry whose op is not linearized yet (or the end of the list): backtrack
        if entry != NIL:
            p = pos_of[entry]
            if p > best_pos:
                best_pos, best_op, best_states = p, op_of[entry], {_freeze(state)}
            elif p == best_pos and len(best_states) < 20:
                best_states.add(_freeze(state))
        if not stack:
            return False, {"steps": steps, "cache": len(cache), "op": best_op,
                           "states": best_states, "depth": max_depth}
        entry, state = stack.pop()
        i = op_of[entry]
        linearized &= ~bits[i]
        r = ret_entry[i]
        if r != NIL:
            nxt[prv[r]] = r
            if nxt[r] != NIL:
                prv[nxt[r]] = r
            remaining += 1
        nxt[prv[entry]] = entry
        if nxt[entry] != NIL:
            prv[nxt[entry]] = entry
        entry = nxt[entry]


def _unfreeze_for_report(states):
    out = []
    for s in states:
        out.append(s if not isinstance(s, tuple) else repr(s))
    return _sorted_any(out)


def check_register(history, realtime=True, initial=None, time_limit=10.0, **_options):
    """Register workload, checked for linearizability per key.

    f="read"  value={"key": k, "value": v-or-null}
    f="write" value={"key": k, "value": v}
    f="cas"   value={"key": k, "from": a, "to": b}   (ok = applied, fail = not applied)

    fail ops and info/fail reads are dropped; info writes/cas may take effect at any time
    after their invoke, or never.  Anomalies: nonlinearizable (with the first op that
    could not be linearized), stale-read, garbage-read, unknown (per-key time limit hit).
    realtime is accepted for API symmetry: linearizability always uses real time."""
    rep = _Report("register")
    ops, base = pair_history(_as_history(history), rep)
    ignored = 0
    by_key = collections.OrderedDict()
    written_any = collections.defaultdict(set)   # frozen key -> frozen values any write attempted
    for o in ops:
        if o.f not in ("read", "write", "cas"):
            ignored += 1
            continue
        iv = o.inv_value
        v = o.value
        if not isinstance(iv, dict) or "key" not in iv:
            rep.malformed("register op value must be an object with \"key\"", op=o.brief())
            continue
        k = _freeze(iv["key"])
        if o.f == "read":
            if o.type != "ok":
                continue
            if not isinstance(v, dict) or "value" not in v:
                rep.malformed("ok read completion must carry {\"key\", \"value\"}", op=o.brief())
                continue
            if "key" in v and _freeze(v["key"]) != k:
                rep.malformed("read completion key differs from its invoke", op=o.brief())
                continue
            by_key.setdefault(k, []).append(_RegOp(o, _READ, _freeze(v["value"]), None))
        elif o.f == "write":
            if "value" not in iv:
                rep.malformed("write value must be {\"key\", \"value\"}", op=o.brief())
                continue
            written_any[k].add(_freeze(iv["value"]))
            if o.type == "fail":
                continue
            by_key.setdefault(k, []).append(_RegOp(o, _WRITE, _freeze(iv["value"]), None))
        else:
            if "from" not in iv or "to" not in iv:
                rep.malformed("cas value must be {\"key\", \"from\", \"to\"}", op=o.brief())
                continue
            written_any[k].add(_freeze(iv["to"]))
            if o.type == "fail":
                continue
            by_key.setdefault(k, []).append(
                _RegOp(o, _CAS, _freeze(iv["from"]), _freeze(iv["to"])))

    init = _freeze(initial)
    per_key = {}
    total_pruned = 0
    slowest = 0.0
    for k, rops in by_key.items():
        # An info write/cas whose value no kept op depends on (an ok read, the "from" of an
        # ok cas, or the "from" of a kept info cas: fixpoint) can be dropped: it either
        # never happened or was overwritten unseen, so dropping it changes no verdict and
        # keeps the search from branching on it.
        needed = set()
        for r in rops:
            if r.ret != INF and r.kind in (_READ, _CAS):
                needed.add(r.a)
        infos = [r for r in rops if r.ret == INF]
        keep_info = set()
        changed = True
        while changed:
            changed = False
            for r in infos:
                if id(r) not in keep_info and (r.a if r.kind == _WRITE else r.b) in needed:
                    keep_info.add(id(r))
                    changed = True
                    if r.kind == _CAS:
                        needed.add(r.a)
        kept = [r for r in rops if r.ret != INF or id(r) in keep_info]
        pruned = len(rops) - len(kept)
        total_pruned += pruned

        key_report = _jsonable(k if not isinstance(k, tuple) else repr(k))
        # garbage reads
        for r in kept:
            if r.kind == _READ and r.a != init and r.a not in written_any[k]:
                rep.add("garbage-read", {"key": key_report, "op": r.op.brief(),
                                         "why": "read a value no write or cas ever tried to "
                                                "store"})

        # stale reads: the value read was certainly overwritten before the read began
        writers = [(r.inv, r.ret, r.a if r.kind == _WRITE else r.b, r) for r in kept
                   if r.kind != _READ]
        ok_writers = [w for w in writers if w[1] != INF]
        overwritten = {}

        def first_overwrite(w_ret, val):
            best = None
            for inv, ret, v2, r2 in ok_writers:
                if v2 != val and inv > w_ret and (best is None or ret < best[0]):
                    best = (ret, r2)
            return best

        for r in kept:
            if r.kind != _READ:
                continue
            cands = [w for w in writers if w[2] == r.a]
            srcs = [(w[1], w[3]) for w in cands]
            if r.a == init:
                srcs.append((-1, None))
            if not srcs:
                continue
            stale_by = None
            for w_ret, w_op in srcs:
                if w_ret == INF:
                    stale_by = None
                    break
                key2 = (id(w_op), r.a)
                if key2 not in overwritten:
                    overwritten[key2] = first_overwrite(w_ret, r.a)
                ow = overwritten[key2]
                if ow is None or ow[0] >= r.inv:
                    stale_by = None
                    break
                stale_by = (w_op, ow[1])
            if stale_by is not None:
                w_op, ow = stale_by
                rep.add("stale-read", {
                    "key": key_report, "op": r.op.brief(), "value_read": r.op.value,
                    "written_by": (w_op.op.index if w_op is not None else "initial value"),
                    "overwritten_by": ow.op.brief(),
                    "why": "the value read had been overwritten by an operation that "
                           "completed before this read was invoked"})

        t0 = _time.monotonic()
        res, info = _wgl(kept, init, t0 + time_limit)
        dt = _time.monotonic() - t0
        slowest = max(slowest, dt)
        per_key[str(key_report)] = {"ops": len(rops), "checked": len(kept),
                                    "pruned_info": pruned, "seconds": round(dt, 4),
                                    "cache": info.get("cache"), "result": res}
        if res is None:
            rep.add("unknown", {"key": key_report, "why": f"linearizability search exceeded the "
                                                          f"time limit of {time_limit} s",
                                "ops": len(kept)})
        elif res is False:
            bad = kept[info["op"]] if info.get("op") is not None else None
            states = _unfreeze_for_report(info.get("states", ()))
            detail = {"key": key_report, "ops": len(kept)}
            if bad is not None:
                o = bad.op
                detail["op"] = o.brief()
                if bad.kind == _READ:
                    expl = (f"read of key {key_report} returned {o.value.get('value')!r}, but "
                            f"every linearization of the operations before it completed leaves "
                            f"the register holding one of {states}")
                    if bad.a != init and bad.a not in written_any[k]:
                        expl += "; no write or cas ever stored that value"
                elif bad.kind == _CAS:
                    expl = (f"cas of key {key_report} from {o.inv_value.get('from')!r} to "
                            f"{o.inv_value.get('to')!r} succeeded, but the register could only "
                            f"hold one of {states} when it could have taken effect")
                else:
                    expl = (f"write of key {key_report} could not be placed consistently with "
                            f"the operations around it; register values then: {states}")
                detail["explanation"] = expl
                detail["possible_values"] = states
            rep.add("nonlinearizable", detail)

    stats = dict(base)
    stats.update({
        "ops_by_type": _count_types([o for o in ops if o.f in ("read", "write", "cas")]),
        "ignored_ops": ignored, "keys": len(by_key), "pruned_unobserved_info": total_pruned,
        "slowest_key_s": round(slowest, 4), "per_key": per_key,
    })
    return rep.result(stats)


# --------------------------------------------------------------------------------------
# Dispatch and command line
# --------------------------------------------------------------------------------------

CHECKERS = {
    "set": check_set,
    "bank": check_bank,
    "list-append": check_list_append,
    "append": check_list_append,
    "register": check_register,
}


def check(workload, history, realtime=True, **options):
    """Run the checker for workload ("set", "bank", "list-append" / "append", "register").

    history: list of event dicts, or a path to a JSON Lines file.  Extra keyword options
    go to the workload's checker (bank: total, accounts, n_accounts, allow_negative;
    list-append: cycle_search_budget; register: initial, time_limit)."""
    try:
        fn = CHECKERS[workload]
    except KeyError:
        raise ValueError(f"unknown workload {workload!r}; expected one of "
                         f"{sorted(set(CHECKERS))}") from None
    return fn(_as_history(history), realtime=realtime, **options)


def _emit(res, compact):
    try:
        print(json.dumps(res, indent=None if compact else 2))
        sys.stdout.flush()
    except BrokenPipeError:                  # e.g. piped into head: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="checkers.py",
        description="Check a chaos-test history; prints JSON, exit 0 if valid, 1 if not.")
    ap.add_argument("workload", choices=sorted(CHECKERS))
    ap.add_argument("history", help="JSON Lines history file ('-' for stdin)")
    ap.add_argument("--no-realtime", action="store_true",
                    help="set: skip stale-read checks; list-append: serializable instead of "
                         "strict serializable")
    ap.add_argument("--total", type=int, help="bank: expected total (default: most common sum)")
    ap.add_argument("--accounts", help="bank: comma-separated account ids "
                                       "(default: most common account set)")
    ap.add_argument("--allow-negative", action="store_true", help="bank: allow negative balances")
    ap.add_argument("--initial", default="null", help="register: initial value as JSON")
    ap.add_argument("--time-limit", type=float, default=10.0,
                    help="register: per-key search time limit in seconds (default 10)")
    ap.add_argument("--compact", action="store_true", help="print JSON on one line")
    args = ap.parse_args(argv)

    try:
        if args.history == "-":
            hist = []
            for lineno, line in enumerate(sys.stdin, 1):
                if line.strip():
                    ev = json.loads(line)
                    if not isinstance(ev, dict):
                        raise ValueError(f"<stdin>:{lineno}: expected a JSON object")
                    hist.append(ev)
        else:
            hist = load_history(args.history)
    except (OSError, ValueError) as exc:
        res = {"valid": False, "workload": args.workload,
               "anomalies": [{"type": "malformed-history", "detail": {"problem": str(exc)}}],
               "anomaly_counts": {"malformed-history": 1}, "stats": {}}
        _emit(res, args.compact)
        return 1

    opts = {}
    if args.workload == "bank":
        opts.update(total=args.total, allow_negative=args.allow_negative)
        if args.accounts:
            opts["accounts"] = [a for a in args.accounts.split(",") if a.strip()]
    elif args.workload == "register":
        try:
            opts.update(initial=json.loads(args.initial), time_limit=args.time_limit)
        except json.JSONDecodeError:
            ap.error("--initial must be JSON")
    res = check(args.workload, hist, realtime=not args.no_realtime, **opts)
    _emit(res, args.compact)
    return 0 if res["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""The pqlite command line and process lifecycle: --help, bad flags, unusable data dirs,
clean shutdown on SIGTERM/SIGINT, restart on an existing data directory."""
import os
import signal
import subprocess

import pytest

from conftest import EXTERNAL_PGPORT, free_ports, pqlite_bin
from helpers import one

pytestmark = pytest.mark.skipif(
    bool(EXTERNAL_PGPORT) or not os.path.exists(pqlite_bin()),
    reason="needs the pqlite binary (PQLITE_BIN=%s)" % pqlite_bin())


def run(args, timeout=15):
    return subprocess.run([pqlite_bin()] + args, capture_output=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_help():
    p = run(["--help"])
    out = (p.stdout + p.stderr).decode()
    assert p.returncode == 0, out
    for flag in ("--data", "--listen", "--raft", "--snapshot-threshold", "--snapshot-trailing"):
        assert flag in out, "--help does not mention %s:\n%s" % (flag, out)


@pytest.mark.parametrize("args", [
    ["--no-such-flag"],
    ["--listen"],                              # missing value
    ["--listen", "not-an-address"],
    ["--listen", "127.0.0.1:99999"],
    ["--raft", "127.0.0.1:notaport"],
    ["--snapshot-threshold", "-5"],
    ["--snapshot-threshold", "abc"],
    ["positional-garbage"],
])
def test_bad_flags_exit_nonzero(args, tmp_path):
    p = run(["--data", str(tmp_path / "d")] + args)
    assert p.returncode != 0, "pqlite %s exited 0" % args
    assert p.returncode > 0, "pqlite %s died with signal %d" % (args, -p.returncode)
    assert p.stderr.strip(), "no message on stderr for %s" % args


def test_unusable_data_dir(tmp_path):
    f = tmp_path / "a-file"
    f.write_text("not a directory")
    port, raft = free_ports(2)
    for data in (str(f), str(f / "sub")):
        p = run(["--data", data, "--listen", "127.0.0.1:%d" % port,
                 "--raft", "127.0.0.1:%d" % raft])
        assert p.returncode > 0, "data dir %s: exit %d" % (data, p.returncode)
        assert p.stderr.strip()


def test_listen_port_in_use(fresh_server, tmp_path):
    """A second server on the same client port must fail cleanly, not hang."""
    _, raft = free_ports(2)
    p = run(["--data", str(tmp_path / "d2"), "--listen", "127.0.0.1:%d" % fresh_server.port,
             "--raft", "127.0.0.1:%d" % raft])
    assert p.returncode > 0
    assert p.stderr.strip()
    assert fresh_server.alive()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_clean_shutdown_exit_0(fresh_server, sig):
    c = fresh_server.connect()
    c.cursor().execute("CREATE TABLE t (id integer PRIMARY KEY)")
    # keep a session open (and one in a transaction) during shutdown
    c2 = fresh_server.connect()
    c2.cursor().execute("BEGIN")
    rc = fresh_server.stop(sig)
    assert rc == 0, "exit status %r after %s\n%s" % (rc, sig.name, fresh_server.log_tail())
    c.close()
    c2.close()


def test_restart_keeps_data(fresh_server):
    c = fresh_server.connect()
    cur = c.cursor()
    cur.execute("CREATE TABLE t (id integer PRIMARY KEY, v text)")
    cur.execute("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
    cur.execute("CREATE DATABASE other")
    c.close()
    o = fresh_server.connect(dbname="other")
    o.cursor().execute("CREATE TABLE t2 (x text); INSERT INTO t2 VALUES ('in other')")
    o.close()
    assert fresh_server.stop() == 0
    assert os.path.isdir(os.path.join(fresh_server.data, "raft"))
    fresh_server.start()
    c = fresh_server.connect()
    cur = c.cursor()
    cur.execute("SELECT id, v FROM t ORDER BY id")
    assert cur.fetchall() == [(1, "one"), (2, "two")]
    c.close()
    o = fresh_server.connect(dbname="other")
    assert one(o.cursor(), "SELECT x FROM t2") == "in other"
    o.close()



def test_second_server_on_same_data_dir(fresh_server):
    """Two processes on one data directory would corrupt the Raft log: the second must
    refuse to start (non-zero exit) and the first keep working."""
    port, raft = free_ports(2)
    try:
        p = subprocess.run([pqlite_bin(), "--data", fresh_server.data,
                            "--listen", "127.0.0.1:%d" % port, "--raft", "127.0.0.1:%d" % raft],
                           capture_output=True, timeout=5, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail("a second pqlite on the same data dir started and kept running")
    assert p.returncode > 0, p.returncode
    assert p.stderr.strip()
    c = fresh_server.connect()
    c.cursor().execute("CREATE TABLE still_ok (id integer)")
    c.close()


def test_sigterm_under_write_load(fresh_server):
    """SIGTERM while clients are writing: exit 0 promptly, and every acknowledged row is
    there after the restart."""
    import threading
    import psycopg2
    srv = fresh_server
    c = srv.connect()
    c.cursor().execute("CREATE TABLE load (id integer PRIMARY KEY, w integer)")
    c.close()
    acked = set()
    lock = threading.Lock()

    def writer(w):
        try:
            cc = srv.connect()
        except psycopg2.Error:
            return
        cur = cc.cursor()
        i = 0
        try:
            while True:
                key = w * 10000000 + i
                cur.execute("INSERT INTO load VALUES (%s, %s)", (key, w))
                with lock:
                    acked.add(key)
                i += 1
        except psycopg2.Error:
            pass
        finally:
            cc.close()

    threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(4)]
    for t in threads:
        t.start()
    import time
    time.sleep(1.0)
    t0 = time.monotonic()
    rc = srv.stop(signal.SIGTERM)
    took = time.monotonic() - t0
    for t in threads:
        t.join(timeout=10)
    assert rc == 0, "exit %r after SIGTERM under load\n%s" % (rc, srv.log_tail())
    assert took < 5, "shutdown took %.1f s" % took
    srv.start()
    c = srv.connect()
    cur = c.cursor()
    cur.execute("SELECT id FROM load")
    present = {r[0] for r in cur.fetchall()}
    c.close()
    assert acked, "no write was acknowledged"
    missing = acked - present
    assert not missing, "%d acknowledged rows lost: %s" % (len(missing), sorted(missing)[:5])

"""Integration-test harness for pqlite.

Starts the real `pqlite` binary (path from $PQLITE_BIN, default build/server/pqlite under
the repository root) on free 127.0.0.1 ports with a temporary data directory, waits until
it answers `SELECT 1`, and stops it with SIGTERM (SIGKILL after a bound). Only processes
started here are signalled, always by pid.

Time bounds: every test runs under a watchdog (default 120 s, `@pytest.mark.deadline(S)`
to change it). On expiry SIGALRM is raised in the test (which interrupts sleeps, socket
waits and subprocess waits); if the test is stuck inside libpq, a second timer SIGKILLs
the servers this harness started, which makes the blocked call return.

Validation mode: PQLITE_TEST_PGPORT=PORT points the client-side tests at an already
running PostgreSQL (user postgres, trust) instead of starting pqlite; tests that need to
control the server process are skipped, and `server.is_pg` lets a test adjust for known
dialect differences.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

try:
    import psycopg2
    import psycopg2.extensions
except ImportError:  # pragma: no cover
    psycopg2 = None

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

DEFAULT_DEADLINE_S = 120
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0


def pqlite_bin():
    p = os.environ.get("PQLITE_BIN") or os.path.join(REPO, "build", "server", "pqlite")
    if not os.path.isabs(p):
        p = os.path.join(REPO, p)
    return p


EXTERNAL_PGPORT = os.environ.get("PQLITE_TEST_PGPORT")


def free_port():
    """A port that was free a moment ago (bind 127.0.0.1:0)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def free_ports(n):
    """n distinct free ports (held open together while choosing)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# Every pqlite process started by this harness, so the watchdog can kill them by pid.
_LIVE = {}
_LIVE_LOCK = threading.Lock()
# The same pids in a file, for the out-of-process watchdog (see _deadline).
_PIDFILE = os.path.join(tempfile.gettempdir(), "pqlite-it-pids.%d" % os.getpid())


def _write_pidfile():
    tmp = _PIDFILE + ".tmp"
    with open(tmp, "w") as f:
        f.write("".join("%d\n" % pid for pid in _LIVE))
    os.replace(tmp, _PIDFILE)


class ServerDied(Exception):
    pass


class Server:
    """One pqlite process on a data directory; can be stopped, killed and restarted."""

    is_pg = False

    def __init__(self, workdir, extra_args=(), name="pqlite"):
        self.workdir = workdir
        self.data = os.path.join(workdir, "data")
        self.log_path = os.path.join(workdir, name + ".log")
        self.extra_args = list(extra_args)
        self.port, self.raft_port = free_ports(2)
        self.host = "127.0.0.1"
        self.proc = None
        self.exit_codes = []  # exit status of each stopped process, in order
        self.starts = 0

    # -- process control --------------------------------------------------------------------
    def argv(self):
        return [pqlite_bin(), "--data", self.data,
                "--listen", "%s:%d" % (self.host, self.port),
                "--raft", "%s:%d" % (self.host, self.raft_port)] + self.extra_args

    def start(self, wait=True, ready_timeout=READY_TIMEOUT_S):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = open(self.log_path, "ab")
        log.write(("\n==== start #%d: %s\n" % (self.starts + 1, " ".join(self.argv()))).encode())
        log.flush()
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, cwd=self.workdir)
        log.close()
        self.starts += 1
        with _LIVE_LOCK:
            _LIVE[self.proc.pid] = self.proc
            _write_pidfile()
        if wait:
            self.wait_ready(ready_timeout)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout=READY_TIMEOUT_S):
        """Poll until TCP connect + SELECT 1 succeeds; fail early if the process exits."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not self.alive():
                raise ServerDied("pqlite exited with %s before becoming ready\n%s"
                                 % (self.proc.returncode, self.log_tail()))
            try:
                c = psycopg2.connect(host=self.host, port=self.port, user="postgres",
                                     dbname="postgres", connect_timeout=2)
                try:
                    c.autocommit = True
                    cur = c.cursor()
                    cur.execute("SELECT 1")
                    if cur.fetchone()[0] == 1:
                        return
                finally:
                    c.close()
            except Exception as e:  # noqa: BLE001 - any failure means "not yet"
                last = e
            time.sleep(0.05)
        raise TimeoutError("pqlite not ready after %.0fs (last error: %r)\n%s"
                           % (timeout, last, self.log_tail()))

    def _forget(self):
        if self.proc is not None:
            with _LIVE_LOCK:
                _LIVE.pop(self.proc.pid, None)
                _write_pidfile()

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT_S):
        """Signal the process and wait for it; SIGKILL after `timeout`. Returns the exit
        status (negative = killed by that signal)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                self.exit_codes.append(("timeout-after-%s" % signal.Signals(sig).name,
                                        self.proc.returncode))
                self._forget()
                return "timeout"
        self.exit_codes.append((signal.Signals(sig).name, self.proc.returncode))
        self._forget()
        return self.proc.returncode

    def kill(self):
        """SIGKILL (a crash)."""
        return self.stop(signal.SIGKILL, timeout=10)

    def restart(self, sig=signal.SIGTERM, ready_timeout=30.0):
        self.stop(sig)
        self.start(ready_timeout=ready_timeout)

    def log_tail(self, n=60):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "---- %s (last %d lines) ----\n%s" % (self.log_path, n, "\n".join(lines[-n:]))
        except OSError:
            return "(no server log)"

    def require_process(self):
        pass

    # -- clients ----------------------------------------------------------------------------
    def dsn(self, dbname="postgres"):
        return "host=%s port=%d user=postgres dbname=%s" % (self.host, self.port, dbname)

    def connect(self, dbname="postgres", autocommit=True, **kw):
        kw.setdefault("connect_timeout", 5)
        c = psycopg2.connect(host=self.host, port=self.port, user="postgres", dbname=dbname, **kw)
        c.autocommit = autocommit
        return c

    def raw(self, timeout=10.0):
        import pgraw
        return pgraw.Conn(self.port, host=self.host, timeout=timeout)


class ExternalServer(Server):
    """An already running PostgreSQL, for validating the client-side tests."""

    is_pg = True

    def __init__(self, port):
        self.host = "127.0.0.1"
        self.port = int(port)
        self.proc = None
        self.log_path = None

    def start(self, *a, **k):
        return self

    def alive(self):
        return True

    def stop(self, *a, **k):
        return None

    def log_tail(self, n=60):
        return "(external server)"

    def require_process(self):
        pytest.skip("needs a pqlite process (PQLITE_TEST_PGPORT points at an external server)")


def _need_binary():
    if EXTERNAL_PGPORT:
        return
    if psycopg2 is None:
        pytest.skip("python3-psycopg2 is not installed")
    if not os.path.exists(pqlite_bin()):
        pytest.skip("pqlite binary not found at %s (set PQLITE_BIN)" % pqlite_bin())


def make_server(extra_args=(), name="pqlite"):
    """Create (not start) a Server in a fresh temp dir; caller must stop it."""
    _need_binary()
    if EXTERNAL_PGPORT:
        return ExternalServer(EXTERNAL_PGPORT)
    workdir = tempfile.mkdtemp(prefix="pqlite-it-")
    return Server(workdir, extra_args, name=name)


def _cleanup_server(srv, failed):
    if isinstance(srv, ExternalServer):
        return
    if srv.alive():
        srv.stop()
    if failed:
        print(srv.log_tail(120))
        print("(kept %s for inspection)" % srv.workdir)
    else:
        shutil.rmtree(srv.workdir, ignore_errors=True)


# -- fixtures ----------------------------------------------------------------------------------

@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request):
    node = request.node
    for when in ("setup", "call"):
        rep = getattr(node, "rep_" + when, None)
        if rep is not None and rep.failed:
            return True
    return False


@pytest.fixture(scope="module")
def module_server(request):
    """One server for a whole module (tests use distinct table names); restarted on a
    fresh data dir if a test left it dead."""
    _need_binary()
    holder = {"srv": make_server()}
    holder["srv"].start()
    holder["failed"] = False
    yield holder
    _cleanup_server(holder["srv"], holder["failed"])


@pytest.fixture
def server(request, module_server):
    srv = module_server["srv"]
    if not srv.alive():
        # an earlier test crashed it: that test already failed; give this one a fresh server
        module_server["failed"] = True
        _cleanup_server(srv, True)
        srv = make_server()
        srv.start()
        module_server["srv"] = srv
    yield srv
    if _failed(request):
        module_server["failed"] = True
        print(srv.log_tail(60))
    if not srv.alive():
        pytest.fail("pqlite died during this test (exit %s)\n%s"
                    % (srv.proc.returncode, srv.log_tail()))


@pytest.fixture
def fresh_server(request):
    """A server of its own (fresh data dir), started; the test may stop/kill/restart it."""
    _need_binary()
    srv = make_server()
    srv.start()
    yield srv
    _cleanup_server(srv, _failed(request))


@pytest.fixture
def server_factory(request):
    """Build servers with custom flags: srv = server_factory(['--snapshot-threshold', '64'])."""
    _need_binary()
    made = []

    def make(extra_args=(), start=True):
        srv = make_server(extra_args)
        made.append(srv)
        if start:
            srv.start()
        return srv

    yield make
    for srv in made:
        _cleanup_server(srv, _failed(request))


@pytest.fixture
def pqlite_only(server):
    if server.is_pg:
        pytest.skip("pqlite-specific behaviour (SQLite dialect, type mapping or limits)")


_counter = [0]


@pytest.fixture
def tname(request):
    """A table name unique in this run (tests share a module server)."""
    _counter[0] += 1
    base = "".join(ch if ch.isalnum() else "_" for ch in request.node.name.lower())[:36]
    return "t_%s_%d_%d" % (base, os.getpid() % 100000, _counter[0])


@pytest.fixture
def conn(server):
    c = server.connect()
    yield c
    c.close()


# -- watchdog ----------------------------------------------------------------------------------

def pytest_configure(config):
    config.addinivalue_line("markers", "deadline(seconds): per-test time bound (default %d)"
                            % DEFAULT_DEADLINE_S)


class DeadlineExceeded(Exception):
    pass


@pytest.fixture(autouse=True)
def _deadline(request):
    m = request.node.get_closest_marker("deadline")
    secs = int(m.args[0]) if m else DEFAULT_DEADLINE_S
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise DeadlineExceeded("test exceeded its %d s deadline" % secs)

    # Second stage, out of process (immune to a GIL held by a stuck C call, e.g. psycopg2's
    # cancel()): after secs + 10 s, SIGKILL the pqlite processes this harness started (pids
    # from the pid file, checked against /proc/PID/cmdline), so blocked client calls return.
    script = (
        'sleep %d; '
        'for p in $(cat "$1" 2>/dev/null); do '
        '  if tr "\\0" " " < /proc/$p/cmdline 2>/dev/null | grep -qF -- "$2"; then '
        '    echo "watchdog: test stuck, SIGKILL pqlite pid $p" >&2; kill -9 $p; '
        '  fi; '
        'done' % (secs + 10))
    dog = subprocess.Popen(["bash", "-c", script, "watchdog", _PIDFILE, pqlite_bin()],
                           stdin=subprocess.DEVNULL, start_new_session=True)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(secs)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        # stop the watchdog: its process group holds only bash and its sleep
        try:
            os.killpg(dog.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        dog.wait()


def pytest_sessionfinish(session, exitstatus):
    # Never leave a pqlite process behind (only the ones we started, by pid).
    with _LIVE_LOCK:
        procs = list(_LIVE.values())
        _LIVE.clear()
    for p in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
    try:
        os.unlink(_PIDFILE)
    except OSError:
        pass

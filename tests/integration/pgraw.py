"""A tiny PostgreSQL v3 wire client on raw sockets, for the bad-input tests.

Only what the tests need: build messages byte by byte, read and decode the server's
messages, with a timeout on every read. Nothing here is clever on purpose: the tests
must be able to send *wrong* bytes.
"""
import socket
import struct
import time

PROTO_V3 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102


def startup_packet(user="postgres", database="postgres", extra=None, version=PROTO_V3):
    body = struct.pack("!I", version)
    params = [("user", user), ("database", database)]
    if extra:
        params += list(extra)
    for k, v in params:
        if v is None:
            continue
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def msg(kind, payload=b""):
    """A typed message: kind byte + int32 length (payload + 4) + payload."""
    if isinstance(kind, str):
        kind = kind.encode()
    return kind + struct.pack("!I", len(payload) + 4) + payload


def query(sql):
    if isinstance(sql, str):
        sql = sql.encode()
    return msg("Q", sql + b"\0")


TERMINATE = msg("X")


class Closed(Exception):
    """The server closed the connection."""


def parse_fields(payload):
    """ErrorResponse / NoticeResponse fields: {'S': 'ERROR', 'C': '42P01', 'M': ...}."""
    out = {}
    i = 0
    while i < len(payload) and payload[i] != 0:
        code = chr(payload[i])
        j = payload.index(b"\0", i + 1)
        out[code] = payload[i + 1:j].decode("utf-8", "replace")
        i = j + 1
    return out


class Conn:
    def __init__(self, port, host="127.0.0.1", timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""
        self.params = {}
        self.closed = False

    # -- sending -------------------------------------------------------------------------
    def send(self, data):
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise Closed(str(e))

    def try_send(self, data):
        """Send; a server that already closed is fine (returns False)."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    # -- receiving -----------------------------------------------------------------------
    def _fill(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no data from server within %.1fs" % self.timeout)
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("no data from server within %.1fs" % self.timeout)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = True
                raise Closed("connection closed by server")
            self.buf += chunk

    def read_byte(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        self._fill(1, deadline)
        b, self.buf = self.buf[:1], self.buf[1:]
        return b

    def read_msg(self, timeout=None):
        """Returns (kind as str, payload bytes)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        self._fill(5, deadline)
        kind = chr(self.buf[0])
        (length,) = struct.unpack("!I", self.buf[1:5])
        if length < 4 or length > (1 << 30):
            raise AssertionError("server sent a bad length %d for %r" % (length, kind))
        self._fill(1 + length, deadline)
        payload = self.buf[5:1 + length]
        self.buf = self.buf[1 + length:]
        if kind == "S":
            parts = payload.split(b"\0")
            self.params[parts[0].decode()] = parts[1].decode()
        return kind, payload

    def read_until(self, kinds, timeout=None):
        """Read messages until one of `kinds`; returns the list read (the last included)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        got = []
        while True:
            left = max(0.01, deadline - time.monotonic())
            k, p = self.read_msg(timeout=left)
            got.append((k, p))
            if k in kinds:
                return got

    def read_until_or_close(self, kinds, timeout=None):
        """Like read_until, but a close is not an error: returns (msgs, closed)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        got = []
        while True:
            try:
                k, p = self.read_msg(timeout=max(0.01, deadline - time.monotonic()))
            except Closed:
                return got, True
            got.append((k, p))
            if k in kinds:
                return got, False

    def expect_close(self, timeout=5.0):
        """Drain until the server closes. Returns the messages seen before the close.
        Raises TimeoutError if the connection is still open after `timeout`."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            try:
                got.append(self.read_msg(timeout=max(0.01, deadline - time.monotonic())))
            except Closed:
                return got
            except AssertionError:
                # undecodable bytes: read raw until EOF
                self.buf = b""
                self._drain_raw(deadline)
                return got

    def _drain_raw(self, deadline):
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("connection not closed")
            self.sock.settimeout(left)
            try:
                if not self.sock.recv(65536):
                    return
            except ConnectionResetError:
                return
            except socket.timeout:
                raise TimeoutError("connection not closed")

    # -- higher level ----------------------------------------------------------------------
    def startup(self, **kw):
        """Send a startup packet and read up to ReadyForQuery (or an ErrorResponse)."""
        self.send(startup_packet(**kw))
        return self.read_until({"Z", "E"})

    def simple_query(self, sql):
        """Send Query, read up to ReadyForQuery. Returns the messages."""
        self.send(query(sql))
        return self.read_until({"Z"})

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def errors_in(msgs):
    return [parse_fields(p) for k, p in msgs if k == "E"]


def data_rows(msgs):
    """Decode DataRow messages into lists of bytes/None."""
    rows = []
    for k, p in msgs:
        if k != "D":
            continue
        (n,) = struct.unpack("!H", p[:2])
        i = 2
        row = []
        for _ in range(n):
            (ln,) = struct.unpack("!i", p[i:i + 4])
            i += 4
            if ln < 0:
                row.append(None)
            else:
                row.append(p[i:i + ln])
                i += ln
        rows.append(row)
    return rows

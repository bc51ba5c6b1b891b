"""Bad bytes on the wire. Each case: a psycopg2 session is opened *before* the abuse and
used *after* it, and the server process must still be alive. The server must answer with
an ErrorResponse and/or close the connection: never crash, hang, or allocate the declared
length up front."""
import os
import socket
import struct
import time

import pytest

import pgraw
from pgraw import Closed, msg, query, startup_packet


@pytest.fixture
def bystander(server, tname):
    """An ordinary session that lives across the abuse."""
    c = server.connect()
    cur = c.cursor()
    cur.execute("CREATE TABLE %s (id integer PRIMARY KEY, v text)" % tname)
    cur.execute("INSERT INTO %s VALUES (1, 'before')" % tname)
    yield c
    # after the abuse: same session still works, server alive, new sessions work
    assert server.alive(), "server died\n" + server.log_tail()
    cur = c.cursor()
    cur.execute("INSERT INTO %s VALUES (2, 'after')" % tname)
    cur.execute("SELECT v FROM %s ORDER BY id" % tname)
    assert cur.fetchall() == [("before",), ("after",)]
    c.close()
    c2 = server.connect()
    c2.cursor().execute("SELECT 1")
    c2.close()


def ready_conn(server):
    r = server.raw()
    msgs = r.startup()
    assert msgs[-1][0] == "Z", "startup failed: %r" % (pgraw.errors_in(msgs),)
    return r


def assert_closed_maybe_fatal(r, code=None, timeout=5.0):
    """The server must close the connection (within timeout). If it sent an ErrorResponse
    first, it must be FATAL (and carry `code` when given)."""
    try:
        msgs = r.expect_close(timeout=timeout)
    except TimeoutError:
        raise AssertionError("server kept the connection open after bad input")
    errs = pgraw.errors_in(msgs)
    for e in errs:
        assert e.get("S") == "FATAL", e
        if code:
            assert e.get("C") == code, e
    return errs


# ---- startup phase -------------------------------------------------------------------------

def test_garbage_startup(server, bystander):
    r = server.raw()
    r.send(os.urandom(8) + b"\x00\x00\x00\x08garbage!" * 4)
    assert_closed_maybe_fatal(r)
    r.close()


def test_garbage_startup_small_length(server, bystander):
    # plausible length (16), unknown protocol code, random payload
    r = server.raw()
    r.send(struct.pack("!II", 16, 0x12345678) + os.urandom(8))
    assert_closed_maybe_fatal(r)
    r.close()


def test_http_request(server, bystander):
    r = server.raw()
    r.try_send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/7.88\r\n\r\n")
    assert_closed_maybe_fatal(r)
    r.close()


def test_tls_client_hello_first(server, bystander):
    r = server.raw()
    r.try_send(bytes.fromhex("16030100a5010000a10303") + os.urandom(160))
    assert_closed_maybe_fatal(r)
    r.close()


# PostgreSQL compares the length minus 4 with 10000, so 10005 is over the limit either way
@pytest.mark.parametrize("length", [10005, 20000, 1 << 20, 0x7FFFFFFF, 0xFFFFFFFF])
def test_startup_too_long(server, bystander, length):
    r = server.raw()
    r.try_send(struct.pack("!II", length, pgraw.PROTO_V3) + b"user\0postgres\0" + b"x" * 100)
    assert_closed_maybe_fatal(r)
    r.close()


def test_startup_over_limit_with_real_data(server, bystander):
    """A well-formed startup packet of 12000 bytes (many parameters): rejected."""
    r = server.raw()
    extra = [("opt%d" % i, "v" * 10) for i in range(800)]
    pkt = startup_packet(extra=extra)
    assert len(pkt) > 10000
    r.try_send(pkt)
    assert_closed_maybe_fatal(r)
    r.close()


@pytest.mark.parametrize("length", [0, 1, 3, 4, 7])
def test_startup_length_too_small(server, bystander, length):
    r = server.raw()
    r.try_send(struct.pack("!I", length) + b"\x00\x03\x00\x00")
    assert_closed_maybe_fatal(r)
    r.close()


def test_startup_missing_user(server, bystander):
    r = server.raw()
    r.send(startup_packet(user=None))
    errs = assert_closed_maybe_fatal(r)
    assert errs and errs[0]["C"] == "28000", errs
    r.close()


def test_startup_bad_protocol_version(server, bystander):
    r = server.raw()
    r.send(startup_packet(version=(2 << 16)))  # protocol 2.0
    assert_closed_maybe_fatal(r)
    r.close()


def test_startup_odd_key_value_count(server, bystander):
    r = server.raw()
    body = struct.pack("!I", pgraw.PROTO_V3) + b"user\0postgres\0database\0"  # value missing
    r.try_send(struct.pack("!I", len(body) + 4) + body)
    assert_closed_maybe_fatal(r)
    r.close()


def test_truncated_startup_then_close(server, bystander):
    for cut in (1, 3, 4, 6, 20):
        r = server.raw()
        r.send(startup_packet()[:cut])
        r.close()
    time.sleep(0.2)


def test_message_before_startup(server, bystander):
    """A Query as the very first packet: its bytes read as a startup length of ~1.3 GB."""
    r = server.raw()
    r.try_send(query("SELECT 1"))
    assert_closed_maybe_fatal(r)
    r.close()


def test_terminate_before_startup(server, bystander):
    r = server.raw()
    r.try_send(pgraw.TERMINATE)
    assert_closed_maybe_fatal(r)
    r.close()


def test_startup_pipelined_with_query(server, bystander):
    """Startup and a Query in one write. Valid per the protocol with trust auth; the
    server may answer it or refuse, but must not crash or hang."""
    r = server.raw()
    r.send(startup_packet() + query("SELECT 41 + 1"))
    try:
        msgs = r.read_until({"Z"})
        if msgs[-1][0] == "Z" and not pgraw.errors_in(msgs):
            msgs = r.read_until({"Z"})
            assert pgraw.data_rows(msgs) == [[b"42"]], msgs
    except Closed:
        pass
    r.close()


def test_ssl_request_then_startup(server, bystander):
    r = server.raw()
    r.send(struct.pack("!II", 8, pgraw.SSL_REQUEST))
    assert r.read_byte() == b"N"
    msgs = r.startup()
    assert msgs[-1][0] == "Z", pgraw.errors_in(msgs)
    assert "server_version" in r.params
    rows = pgraw.data_rows(r.simple_query("SELECT 1"))
    assert rows == [[b"1"]]
    r.send(pgraw.TERMINATE)
    r.close()


def test_gssenc_then_ssl_then_startup(server, bystander):
    r = server.raw()
    r.send(struct.pack("!II", 8, pgraw.GSSENC_REQUEST))
    b = r.read_byte()
    if server.is_pg and b == b"G":
        pytest.skip("this PostgreSQL build supports GSSAPI encryption")
    assert b == b"N"
    r.send(struct.pack("!II", 8, pgraw.SSL_REQUEST))
    assert r.read_byte() == b"N"
    msgs = r.startup()
    assert msgs[-1][0] == "Z", pgraw.errors_in(msgs)
    assert pgraw.data_rows(r.simple_query("SELECT 2")) == [[b"2"]]
    r.close()


def test_ssl_request_twice(server, bystander):
    r = server.raw()
    r.send(struct.pack("!II", 8, pgraw.SSL_REQUEST))
    assert r.read_byte() == b"N"
    r.try_send(struct.pack("!II", 8, pgraw.SSL_REQUEST))
    # PostgreSQL closes here; answering 'N' again and continuing is also harmless
    try:
        b = r.read_byte(timeout=3)
        if b == b"N":
            msgs = r.startup()
            assert msgs[-1][0] in ("Z", "E")
        else:
            r.buf = b + r.buf
            assert_closed_maybe_fatal(r)
    except (Closed, TimeoutError):
        pass
    r.close()


def test_ssl_request_with_pipelined_bytes(server, bystander):
    """CVE-2021-23214: bytes sent after SSLRequest before the answer must not be
    processed later as if they were part of the (plaintext) session."""
    r = server.raw()
    r.send(struct.pack("!II", 8, pgraw.SSL_REQUEST) + startup_packet() + query("SELECT 1"))
    try:
        b = r.read_byte(timeout=5)
    except Closed:
        r.close()
        return
    # Answering 'N' and then reading the startup is what PostgreSQL does for plaintext
    # (the CVE concerns the 'S' case); either way no crash and a sane reply.
    assert b in (b"N", b"E"), b
    r.close()


def test_cancel_request_random_key(server, bystander):
    r = server.raw()
    r.send(struct.pack("!IIII", 16, pgraw.CANCEL_REQUEST, 12345, 67890))
    msgs = assert_closed_maybe_fatal(r)
    assert msgs == []  # a cancel gets no reply
    r.close()


def test_cancel_request_bad_length(server, bystander):
    r = server.raw()
    r.try_send(struct.pack("!III", 12, pgraw.CANCEL_REQUEST, 1))
    assert_closed_maybe_fatal(r)
    r.close()


# ---- after startup -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [b"z", b"\x00", b"\xff", b"!"])
def test_unknown_message_type(server, bystander, kind):
    r = ready_conn(server)
    r.send(msg(kind, b"abc"))
    errs = assert_closed_maybe_fatal(r, code="08P01")
    assert errs, "expected ErrorResponse FATAL 08P01 before the close"
    r.close()


@pytest.mark.parametrize("length", [0, 1, 3])
def test_message_length_below_4(server, bystander, length):
    r = ready_conn(server)
    r.try_send(b"Q" + struct.pack("!I", length) + b"SELECT 1\0")
    assert_closed_maybe_fatal(r)
    r.close()


def test_message_length_2gb(server, bystander):
    r = ready_conn(server)
    r.try_send(b"Q" + struct.pack("!I", 0x7FFFFFFF) + b"SELECT 1")
    assert_closed_maybe_fatal(r, timeout=5)
    r.close()


def test_message_length_4gb(server, bystander):
    r = ready_conn(server)
    r.try_send(b"Q" + struct.pack("!I", 0xFFFFFFFF) + b"SELECT 1")
    assert_closed_maybe_fatal(r, timeout=5)
    r.close()


def test_message_length_over_64mib(pqlite_only, server, bystander):
    """pqlite's cap is 64 MiB (PostgreSQL's is 1 GB, so this case is pqlite-only)."""
    r = ready_conn(server)
    r.try_send(b"Q" + struct.pack("!I", (64 << 20) + 5) + b"SELECT 1")
    assert_closed_maybe_fatal(r, timeout=5)
    r.close()


def test_many_huge_lengths_do_not_exhaust_memory(pqlite_only, server, bystander):
    """Twenty connections each declaring a 60 MiB message (under the cap) and sending
    only a few bytes, then leaving: the server must not commit 1.2 GB up front."""
    conns = []
    for _ in range(20):
        r = ready_conn(server)
        r.try_send(b"Q" + struct.pack("!I", 60 << 20) + b"SELECT 1")
        conns.append(r)
    time.sleep(0.5)
    rss = _rss_kib(server)
    for r in conns:
        r.close()
    if rss is not None:
        assert rss < 512 * 1024, "server RSS %d KiB with 20 pending 60 MiB messages" % rss


def _rss_kib(server):
    try:
        with open("/proc/%d/status" % server.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, AttributeError):
        return None
    return None


def test_truncated_messages_then_close(server, bystander):
    cases = [
        b"Q",                                          # type byte only
        b"Q\x00\x00",                                  # half a length
        b"Q" + struct.pack("!I", 100) + b"SELECT",     # body shorter than declared
        b"P" + struct.pack("!I", 50) + b"\0SELECT 1",  # extended protocol, truncated
        query("SELECT 1")[:-1],                        # last byte missing
    ]
    for data in cases:
        r = ready_conn(server)
        r.send(data)
        r.close()
    time.sleep(0.2)
    # and a truncated message on a connection that then stays idle, then closes
    r = ready_conn(server)
    r.send(b"Q" + struct.pack("!I", 100) + b"SELECT")
    time.sleep(0.3)
    r.close()


def test_query_without_nul(server, bystander):
    r = ready_conn(server)
    r.send(msg("Q", b"SELECT 1"))  # no terminating NUL
    msgs, closed = r.read_until_or_close({"Z"}, timeout=5)
    errs = pgraw.errors_in(msgs)
    assert errs and errs[0]["C"] == "08P01", msgs
    assert not pgraw.data_rows(msgs), "the unterminated query must not run"
    if not closed:
        assert errs[0]["S"] == "ERROR"
        # the session survives (PostgreSQL: ERROR, session continues)
        assert pgraw.data_rows(r.simple_query("SELECT 3")) == [[b"3"]]
    else:
        assert errs[0]["S"] == "FATAL"
    r.close()


def test_query_with_trailing_garbage_after_nul(server, bystander):
    r = ready_conn(server)
    r.send(msg("Q", b"SELECT 1\0garbage"))
    try:
        msgs = r.read_until({"Z"}, timeout=5)
        errs = pgraw.errors_in(msgs)
        if errs:
            assert errs[0]["C"] == "08P01", errs
        assert pgraw.data_rows(r.simple_query("SELECT 4")) == [[b"4"]]
    except Closed:
        pass
    r.close()


def test_invalid_utf8_query(server, bystander):
    r = ready_conn(server)
    msgs = r.simple_query(b"SELECT '\xff\xfe\xfd'")
    errs = pgraw.errors_in(msgs)
    assert errs and errs[0]["C"] == "22021" and errs[0]["S"] == "ERROR", msgs
    msgs = r.simple_query(b"SELECT 'ok \xe2\x82'")  # truncated 3-byte sequence
    errs = pgraw.errors_in(msgs)
    assert errs and errs[0]["C"] == "22021", msgs
    msgs = r.simple_query(b"SELECT '\xed\xa0\x80'")  # UTF-16 surrogate encoded in UTF-8
    errs = pgraw.errors_in(msgs)
    assert errs and errs[0]["C"] == "22021", msgs
    msgs = r.simple_query(b"SELECT '\xc0\xaf'")  # overlong encoding of '/'
    errs = pgraw.errors_in(msgs)
    assert errs and errs[0]["C"] == "22021", msgs
    # the connection survives
    assert pgraw.data_rows(r.simple_query("SELECT 'fine'")) == [[b"fine"]]
    r.close()


def test_query_with_embedded_nul(server, bystander):
    r = ready_conn(server)
    # the string ends at the first NUL; what follows is garbage inside the message
    r.send(msg("Q", b"SELECT 5\0; DROP TABLE x\0"))
    try:
        msgs = r.read_until({"Z"}, timeout=5)
        assert pgraw.data_rows(msgs) in ([], [[b"5"]])
        assert pgraw.data_rows(r.simple_query("SELECT 6")) == [[b"6"]]
    except Closed:
        pass
    r.close()


def test_second_startup_after_ready(server, bystander):
    r = ready_conn(server)
    r.try_send(startup_packet())  # int32 length first: type byte 0x00 -> unknown type
    assert_closed_maybe_fatal(r)
    r.close()


def test_password_message_after_auth(server, bystander):
    r = ready_conn(server)
    r.try_send(msg("p", b"secret\0"))
    try:
        msgs = r.read_until({"Z"}, timeout=5)
        errs = pgraw.errors_in(msgs)
        assert errs and errs[0]["C"] == "08P01", msgs
    except Closed:
        pass
    r.close()


def test_terminate_mid_transaction(server, bystander, tname):
    r = ready_conn(server)
    r.simple_query("BEGIN")
    r.simple_query("INSERT INTO %s VALUES (100, 'uncommitted')" % tname)
    r.send(pgraw.TERMINATE)
    r.expect_close()
    r.close()
    # the uncommitted row is gone and the writer lock released (bystander writes next)
    cur = bystander.cursor()
    cur.execute("SELECT count(*) FROM %s WHERE id = 100" % tname)
    assert cur.fetchone()[0] == 0


def test_abrupt_close_mid_transaction(server, bystander, tname):
    r = ready_conn(server)
    r.simple_query("BEGIN")
    r.simple_query("INSERT INTO %s VALUES (101, 'uncommitted')" % tname)
    r.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    r.close()  # RST
    time.sleep(0.2)
    cur = bystander.cursor()
    cur.execute("SELECT count(*) FROM %s WHERE id = 101" % tname)
    assert cur.fetchone()[0] == 0


def test_split_messages_byte_by_byte(server, bystander):
    """A valid session delivered one byte per write must work (framing across reads)."""
    r = server.raw()
    data = struct.pack("!II", 8, pgraw.SSL_REQUEST)
    for i in range(len(data)):
        r.send(data[i:i + 1])
        time.sleep(0.001)
    assert r.read_byte() == b"N"
    for b in startup_packet() + query("SELECT 7"):
        r.send(bytes([b]))
    msgs = r.read_until({"Z"})
    assert not pgraw.errors_in(msgs)
    msgs = r.read_until({"Z"})
    assert pgraw.data_rows(msgs) == [[b"7"]]
    r.close()


def test_many_connections_open_and_abandoned(server, bystander):
    socks = []
    for i in range(100):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        if i % 2:
            s.sendall(startup_packet()[:10])
        socks.append(s)
    for s in socks:
        s.close()
    time.sleep(0.2)

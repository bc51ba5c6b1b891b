/* Follower modes and leadership changes in pgwire, socket-free: the real session state
 * machine and engine over the stand-in replicator, with a fake upstream connection whose
 * bytes the test reads and writes and whose time the test moves. Covers the PROXY relay
 * (message boundaries, lost and refused statements, settings replayed on a new leader,
 * no leader, back-pressure), the proxied marker, STANDBY's ParameterStatus and read mode,
 * the end of local sessions on a deposed leader, and the core's own SQLSTATEs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/core.h"
#include "lib/buf.h"
#include "pgwire/codec.h"
#include "pgwire/pgwire.h"
#include "pgwire/session.h"
#include "tests/lib/fake_repl.h"

#define LEADER "10.0.0.1:5433"

struct fake_up {
	int n_connects;
	int n_closes;
	char addr[64];
	bool open;       /* the session holds a connection (connect called, not closed) */
	int connect_rc;  /* what connect returns */
	unsigned timer_ms;
	uint64_t now;
};

struct fixture {
	struct fake_repl f;
	struct pgw_session *s;
	struct fake_up up;
	int status;      /* last status returned or woken with */
	int wakes;
};

/* ---- The fake upstream -------------------------------------------------------------- */

static int op_connect(void *arg, const char *address)
{
	struct fixture *fx = arg;
	assert_false(fx->up.open); /* never two at once */
	fx->up.n_connects++;
	snprintf(fx->up.addr, sizeof fx->up.addr, "%s", address);
	if (fx->up.connect_rc != 0)
		return fx->up.connect_rc;
	fx->up.open = true;
	return 0;
}

static void op_close(void *arg)
{
	struct fixture *fx = arg;
	assert_true(fx->up.open); /* only a connection it holds */
	fx->up.open = false;
	fx->up.n_closes++;
}

static void op_timer(void *arg, unsigned ms)
{
	((struct fixture *)arg)->up.timer_ms = ms;
}

static uint64_t op_now(void *arg)
{
	return ((struct fixture *)arg)->up.now;
}

static const struct pgw_upstream_ops ops = {op_connect, op_close, op_timer, op_now};

static void on_wake(void *arg, int status)
{
	struct fixture *fx = arg;
	fx->wakes++;
	fx->status = status;
}

/* ---- Fixture ------------------------------------------------------------------------ */

static void set_leader(struct fixture *fx, bool leader)
{
	fx->f.leader = leader;
	core_engine_set_leader(fx->f.engine, leader, leader);
}

static int process(struct fixture *fx)
{
	return fx->status = pgw_session_process(fx->s);
}

static void put_query(struct buf *in, const char *sql)
{
	size_t n = strlen(sql) + 1;
	buf_put_u8(in, 'Q');
	buf_put_u32be(in, (uint32_t)(4 + n));
	buf_put(in, sql, n);
}

static int query(struct fixture *fx, const char *sql)
{
	put_query(pgw_session_in(fx->s), sql);
	return process(fx);
}

static void destroy_session(struct fixture *fx)
{
	if (fx->s != NULL)
		pgw_session_destroy(fx->s);
	fx->s = NULL;
	fx->up.open = false;
}

/* A new session in `mode` started with the startup parameters params[0..len). */
static void open_session(struct fixture *fx, int mode, const char *params, size_t len)
{
	struct pgw_session_config sc = {
		.engine = fx->f.engine,
		.server_version = "15.0",
		.max_msg_len = 1 << 20,
		.wake = on_wake,
		.wake_arg = fx,
		.follower_mode = mode,
		.apply_timeout_ms = 10000,
		.upstream = &ops,
		.upstream_arg = fx,
	};
	struct buf *in;

	destroy_session(fx);
	memset(&fx->up, 0, sizeof fx->up);
	assert_int_equal(pgw_session_create(&sc, &fx->s), 0);
	in = pgw_session_in(fx->s);
	buf_put_u32be(in, (uint32_t)(8 + len));
	buf_put_u32be(in, 196608);
	buf_put(in, params, len);
	process(fx);
}

#define PARAMS(lit) lit, sizeof(lit)
#define PLAIN_PARAMS PARAMS("user\0alice\0database\0postgres\0")

static void step_done(struct core_stmt *st, int rc, void *arg)
{
	*(int *)arg = rc;
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof *fx);
	struct core_config cc;
	struct core_session *cs;
	struct core_stmt *st;
	const char *tail, *sql = "CREATE TABLE t (id integer PRIMARY KEY, v text)";
	int rc = -1;

	core_config_defaults(&cc);
	fake_repl_init(&fx->f);
	fx->f.leader_addr = LEADER;
	fx->f.barriers_fail = true;
	assert_int_equal(core_engine_create(&cc, &fx->f.r, &fx->f.engine), 0);
	set_leader(fx, true);
	assert_int_equal(core_session_open(fx->f.engine, "postgres", &cs), 0);
	assert_int_equal(core_session_prepare(cs, sql, (int)strlen(sql), &tail, &st), 0);
	assert_int_equal(core_stmt_step(st, step_done, &rc), CORE_PENDING);
	fake_repl_run(&fx->f);
	assert_int_equal(rc, CORE_DONE);
	core_stmt_finalize(st);
	core_session_close(cs);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	destroy_session(fx);
	fake_repl_run(&fx->f);
	core_engine_destroy(fx->f.engine);
	free(fx);
	return 0;
}

/* ---- Rendering ---------------------------------------------------------------------- */

/* The client's output as "type[:detail]|..." (E/N: SQLSTATE, C: tag, Z: status, D: first
 * value, S: name=value), consumed. */
static char *drain(struct fixture *fx)
{
	static char out[8192];
	struct buf *b = pgw_session_out(fx->s);
	size_t off = 0, n = 0;

	out[0] = 0;
	while (off + 5 <= b->len) {
		uint8_t type = b->data[off];
		uint32_t len = get_u32be(b->data + off + 1);
		const char *body = (const char *)b->data + off + 5;
		size_t blen = len - 4;
		n += (size_t)snprintf(out + n, sizeof out - n, "%c", type);
		if (type == 'E' || type == 'N') {
			size_t i = 0;
			while (i < blen && body[i] != 0) {
				if (body[i] == 'C')
					n += (size_t)snprintf(out + n, sizeof out - n, ":%s",
							      body + i + 1);
				i += 1 + strlen(body + i + 1) + 1;
			}
		} else if (type == 'C') {
			n += (size_t)snprintf(out + n, sizeof out - n, ":%s", body);
		} else if (type == 'S') {
			n += (size_t)snprintf(out + n, sizeof out - n, ":%s=%s", body,
					      body + strlen(body) + 1);
		} else if (type == 'D' && get_u16be((const uint8_t *)body) > 0) {
			uint32_t flen = get_u32be((const uint8_t *)body + 2);
			if (flen != 0xffffffffu)
				n += (size_t)snprintf(out + n, sizeof out - n, ":%.*s", (int)flen,
						      body + 6);
		} else if (type == 'Z') {
			n += (size_t)snprintf(out + n, sizeof out - n, ":%c", body[0]);
		}
		n += (size_t)snprintf(out + n, sizeof out - n, "|");
		off += 1 + len;
	}
	assert_int_equal(off, b->len); /* whole messages only */
	b->len = 0;
	return out;
}

/* A field of the first ErrorResponse in the client's output (not consumed). */
static const char *error_field(struct fixture *fx, char field)
{
	static char v[512];
	struct buf *b = pgw_session_out(fx->s);
	size_t off = 0;
	while (off + 5 <= b->len) {
		uint32_t len = get_u32be(b->data + off + 1);
		if (b->data[off] == 'E') {
			const char *body = (const char *)b->data + off + 5;
			size_t i = 0;
			while (i < len - 4 && body[i] != 0) {
				if (body[i] == field) {
					snprintf(v, sizeof v, "%s", body + i + 1);
					return v;
				}
				i += 1 + strlen(body + i + 1) + 1;
			}
		}
		off += 1 + len;
	}
	return NULL;
}

/* What the session sent upstream: "startup k=v ...|" or "Q:sql|" or the type byte,
 * consumed. */
static char *sent(struct fixture *fx)
{
	static char out[8192];
	struct buf *b = pgw_session_up_out(fx->s);
	size_t off = 0, n = 0;

	out[0] = 0;
	if (b == NULL)
		return out;
	while (off < b->len) {
		if (b->data[off] == 0) { /* a StartupMessage: no type byte */
			uint32_t len = get_u32be(b->data + off);
			const char *p = (const char *)b->data + off + 8;
			assert_int_equal(get_u32be(b->data + off + 4), 196608);
			n += (size_t)snprintf(out + n, sizeof out - n, "startup");
			while (*p != 0) {
				const char *v = p + strlen(p) + 1;
				n += (size_t)snprintf(out + n, sizeof out - n, " %s=%s", p, v);
				p = v + strlen(v) + 1;
			}
			off += len;
		} else {
			uint32_t len = get_u32be(b->data + off + 1);
			if (b->data[off] == 'Q')
				n += (size_t)snprintf(out + n, sizeof out - n, "Q:%s",
						      (const char *)b->data + off + 5);
			else
				n += (size_t)snprintf(out + n, sizeof out - n, "%c", b->data[off]);
			off += 1 + len;
		}
		n += (size_t)snprintf(out + n, sizeof out - n, "|");
	}
	b->len = 0;
	return out;
}

/* ---- Upstream input ------------------------------------------------------------------- */

static struct buf *up_in(struct fixture *fx)
{
	struct buf *b = pgw_session_up_in(fx->s);
	assert_non_null(b);
	return b;
}

static void up_error(struct fixture *fx, const char *severity, const char *code)
{
	struct pgw_error e = {severity, code, "upstream says no", NULL, NULL, 0};
	pgw_encode_error(up_in(fx), 'E', &e);
}

static void up_handshake(struct fixture *fx)
{
	pgw_encode_auth_ok(up_in(fx));
	pgw_encode_parameter_status(up_in(fx), "in_hot_standby", "off");
	pgw_encode_parameter_status(up_in(fx), "server_version", "15.0");
	pgw_encode_backend_key(up_in(fx), 1, 2);
	pgw_encode_ready(up_in(fx), 'I');
	process(fx);
}

/* A one-column row set: RowDescription, one DataRow per value, CommandComplete. */
static void up_rows(struct fixture *fx, unsigned n, const char *value)
{
	struct pgw_column col = {"x", 25, -1};
	char tag[32];
	unsigned i;
	pgw_encode_row_description(up_in(fx), 1, &col);
	for (i = 0; i < n; i++) {
		size_t m = pgw_datarow_start(up_in(fx), 1);
		pgw_datarow_put(up_in(fx), value, strlen(value));
		pgw_buf_finish(up_in(fx), m);
	}
	snprintf(tag, sizeof tag, "SELECT %u", n);
	pgw_encode_command_complete(up_in(fx), tag);
}

static void up_done(struct fixture *fx, const char *tag, char status)
{
	if (tag != NULL)
		pgw_encode_command_complete(up_in(fx), tag);
	pgw_encode_ready(up_in(fx), status);
	process(fx);
}

static void up_close(struct fixture *fx)
{
	assert_true(fx->up.open);
	fx->up.open = false;
	fx->status = pgw_session_upstream_closed(fx->s);
}

/* A PROXY-mode session on a follower, with alice's startup. */
static void open_proxy(struct fixture *fx)
{
	set_leader(fx, false);
	open_session(fx, PGW_FOLLOWER_PROXY, PLAIN_PARAMS);
	assert_true(pgw_session_is_proxy(fx->s));
	drain(fx);
}

#define STARTUP_SENT "startup user=alice database=postgres pqlite.proxied=1|"

/* Send sql on a proxy session that has no upstream yet: it connects, and the query goes
 * out after the handshake. */
static void query_connecting(struct fixture *fx, const char *sql)
{
	char expect[512];
	int connects = fx->up.n_connects;

	assert_int_equal(query(fx, sql), PGW_SESSION_BUSY);
	assert_int_equal(fx->up.n_connects, connects + 1);
	assert_string_equal(fx->up.addr, LEADER);
	assert_string_equal(sent(fx), STARTUP_SENT);
	up_handshake(fx);
	snprintf(expect, sizeof expect, "Q:%s|", sql);
	assert_string_equal(sent(fx), expect);
	assert_string_equal(drain(fx), "");
}

/* ---- PROXY mode ------------------------------------------------------------------- */

/* Startup is answered locally (read-write flags); the upstream gets the marker, its own
 * startup answer is consumed, and then messages pass whole both ways. */
static void test_proxy_relays(void **state)
{
	struct fixture *fx = *state;
	char *out;

	set_leader(fx, false);
	open_session(fx, PGW_FOLLOWER_PROXY,
		     PARAMS("user\0alice\0database\0postgres\0application_name\0app1\0"
			    "client_encoding\0UTF8\0"));
	out = drain(fx);
	assert_non_null(strstr(out, "S:in_hot_standby=off|S:default_transaction_read_only=off|"));
	assert_non_null(strstr(out, "|K|Z:I|"));
	assert_int_equal(fx->up.n_connects, 0); /* lazily, at the first message */

	assert_int_equal(query(fx, "SELECT 1"), PGW_SESSION_BUSY);
	assert_int_equal(fx->up.n_connects, 1);
	assert_string_equal(fx->up.addr, LEADER);
	assert_string_equal(sent(fx), "startup user=alice database=postgres application_name=app1 "
				      "client_encoding=UTF8 pqlite.proxied=1|");
	up_handshake(fx);
	assert_string_equal(drain(fx), ""); /* its ParameterStatus/BackendKeyData are not ours */
	assert_string_equal(sent(fx), "Q:SELECT 1|");
	up_rows(fx, 1, "1");
	up_done(fx, NULL, 'I');
	assert_int_equal(fx->status, PGW_SESSION_IDLE);
	assert_string_equal(drain(fx), "T|D:1|C:SELECT 1|Z:I|");

	/* A reply split anywhere is relayed only once whole. */
	query(fx, "SELECT 2");
	assert_string_equal(sent(fx), "Q:SELECT 2|");
	{
		struct buf tmp;
		size_t i;
		buf_init(&tmp);
		pgw_encode_command_complete(&tmp, "SELECT 0");
		pgw_encode_ready(&tmp, 'I');
		for (i = 0; i < tmp.len; i++) {
			buf_put_u8(up_in(fx), tmp.data[i]);
			process(fx);
			if (i < 13)
				assert_string_equal(drain(fx), "");
		}
		buf_close(&tmp);
	}
	assert_string_equal(drain(fx), "C:SELECT 0|Z:I|");

	/* Hot-standby flags from upstream never reach the client; other parameters do. */
	pgw_encode_parameter_status(up_in(fx), "in_hot_standby", "on");
	pgw_encode_parameter_status(up_in(fx), "application_name", "x");
	process(fx);
	assert_string_equal(drain(fx), "S:application_name=x|");

	/* Messages wait while one is in flight, and go in order. */
	put_query(pgw_session_in(fx->s), "SELECT 3");
	put_query(pgw_session_in(fx->s), "SELECT 4");
	process(fx);
	assert_string_equal(sent(fx), "Q:SELECT 3|");
	up_done(fx, "SELECT 0", 'I');
	assert_string_equal(sent(fx), "Q:SELECT 4|");
	up_done(fx, "SELECT 0", 'I');
	assert_string_equal(drain(fx), "C:SELECT 0|Z:I|C:SELECT 0|Z:I|");

	/* Terminate closes both sides, once the message before it was answered. */
	put_query(pgw_session_in(fx->s), "SELECT 5");
	buf_put_u8(pgw_session_in(fx->s), 'X');
	buf_put_u32be(pgw_session_in(fx->s), 4);
	assert_int_equal(process(fx), PGW_SESSION_BUSY);
	assert_string_equal(sent(fx), "Q:SELECT 5|");
	up_done(fx, "SELECT 0", 'I');
	assert_int_equal(fx->status, PGW_SESSION_CLOSE);
	assert_string_equal(drain(fx), "C:SELECT 0|Z:I|");
	assert_false(fx->up.open);
}

/* Upstream gone while idle outside a transaction: nothing to say; the next message
 * reconnects. A leader that moved is followed before the next message too. */
static void test_idle_loss_reconnects(void **state)
{
	struct fixture *fx = *state;

	open_proxy(fx);
	query_connecting(fx, "SELECT 1");
	up_done(fx, "SELECT 0", 'I');
	drain(fx);
	up_close(fx);
	assert_int_equal(fx->status, PGW_SESSION_IDLE);
	assert_string_equal(drain(fx), "");
	query_connecting(fx, "SELECT 2");
	up_done(fx, "SELECT 0", 'I');
	assert_string_equal(drain(fx), "C:SELECT 0|Z:I|");

	/* FATAL from an idle upstream (a deposed leader): the same. */
	up_error(fx, "FATAL", "57P01");
	process(fx);
	assert_false(fx->up.open);
	assert_string_equal(drain(fx), "");

	query_connecting(fx, "SELECT 3");
	up_done(fx, "SELECT 0", 'I');
	drain(fx);
	fx->f.leader_addr = "10.0.0.2:5433";
	query(fx, "SELECT 4");
	assert_int_equal(fx->up.n_closes, 2);
	assert_string_equal(fx->up.addr, "10.0.0.2:5433");
	assert_string_equal(sent(fx), STARTUP_SENT);
}

/* The leader refuses the statement before running anything (FATAL 57P01 or 25006 as the
 * first answer): the same Query goes to the next leader, and the client never knows. */
static void test_refused_statement_is_resent(void **state)
{
	struct fixture *fx = *state;
	const char *codes[] = {"57P01", "25006"};
	int i;

	open_proxy(fx);
	for (i = 0; i < 2; i++) {
		query_connecting(fx, "INSERT INTO t VALUES (1, 'a')");
		fx->f.leader_addr = "10.0.0.2:5433"; /* known already: no pause */
		up_error(fx, "FATAL", codes[i]);
		assert_int_equal(process(fx), PGW_SESSION_BUSY);
		assert_int_equal(fx->up.n_connects, 2 * (i + 1));
		assert_true(fx->up.open);
		assert_string_equal(fx->up.addr, "10.0.0.2:5433");
		assert_string_equal(drain(fx), "");
		assert_string_equal(sent(fx), STARTUP_SENT);
		up_handshake(fx);
		assert_string_equal(sent(fx), "Q:INSERT INTO t VALUES (1, 'a')|");
		up_done(fx, "INSERT 0 1", 'I');
		assert_string_equal(drain(fx), "C:INSERT 0 1|Z:I|");
		up_close(fx);
		fx->f.leader_addr = LEADER;
	}
}

/* Lost with the statement in flight: 40003 (outcome unknown), never resent; an error
 * already relayed ended the message, so only ReadyForQuery is added. */
static void test_lost_in_flight(void **state)
{
	struct fixture *fx = *state;

	open_proxy(fx);
	query_connecting(fx, "INSERT INTO t VALUES (1, 'a')");
	up_close(fx);
	assert_int_equal(fx->status, PGW_SESSION_IDLE);
	assert_string_equal(drain(fx), "E:40003|Z:I|");
	assert_int_equal(fx->up.n_connects, 1); /* not sent again */
	assert_string_equal(sent(fx), "");

	query_connecting(fx, "INSERT INTO t VALUES (1, 'a'); INSERT INTO t VALUES (2, 'b')");
	pgw_encode_command_complete(up_in(fx), "INSERT 0 1");
	process(fx);
	up_close(fx);
	assert_string_equal(drain(fx), "C:INSERT 0 1|E:40003|Z:I|");

	/* A FATAL other than a refusal, or after a partial answer, is a loss too. */
	query_connecting(fx, "SELECT 1");
	up_rows(fx, 1, "1");
	up_error(fx, "FATAL", "57P01");
	process(fx);
	assert_false(fx->up.open);
	assert_string_equal(drain(fx), "T|D:1|C:SELECT 1|E:40003|Z:I|");
	query_connecting(fx, "SELECT 1");
	up_error(fx, "FATAL", "XX000");
	process(fx);
	assert_string_equal(drain(fx), "E:40003|Z:I|");

	query_connecting(fx, "INSERT INTO t VALUES (1, 'a')");
	up_error(fx, "ERROR", "23505");
	process(fx);
	up_close(fx);
	assert_string_equal(drain(fx), "E:23505|Z:I|");
}

/* Lost in flight inside a transaction: 40003 and 'E'; then the failed block is served
 * locally until ROLLBACK (or COMMIT, answered ROLLBACK). */
static void test_lost_in_flight_in_transaction(void **state)
{
	struct fixture *fx = *state;

	open_proxy(fx);
	query_connecting(fx, "BEGIN");
	up_done(fx, "BEGIN", 'T');
	assert_string_equal(drain(fx), "C:BEGIN|Z:T|");
	query(fx, "INSERT INTO t VALUES (1, 'a')");
	assert_string_equal(sent(fx), "Q:INSERT INTO t VALUES (1, 'a')|");
	up_close(fx);
	assert_string_equal(drain(fx), "E:40003|Z:E|");
	query(fx, "SELECT 1");
	assert_string_equal(drain(fx), "E:25P02|Z:E|");
	query(fx, "rollback to savepoint a");
	assert_string_equal(drain(fx), "E:25P02|Z:E|");
	query(fx, "COMMIT");
	assert_string_equal(drain(fx), "C:ROLLBACK|Z:I|");
	assert_int_equal(fx->up.n_connects, 1);
	query_connecting(fx, "SELECT 1");
}

/* Lost while a transaction was open and nothing in flight: the next message gets 08006
 * and 'E'; ROLLBACK is answered locally. */
static void test_lost_idle_in_transaction(void **state)
{
	struct fixture *fx = *state;

	open_proxy(fx);
	query_connecting(fx, "BEGIN");
	up_done(fx, "BEGIN", 'T');
	drain(fx);
	up_close(fx);
	assert_string_equal(drain(fx), "");
	query(fx, "INSERT INTO t VALUES (1, 'a')");
	assert_string_equal(error_field(fx, 'C'), "08006");
	assert_string_equal(error_field(fx, 'M'),
			    "connection to the leader was lost; the transaction was rolled back");
	assert_string_equal(drain(fx), "E:08006|Z:E|");
	query(fx, "SELECT 1");
	assert_string_equal(drain(fx), "E:25P02|Z:E|");
	query(fx, "ABORT");
	assert_string_equal(drain(fx), "C:ROLLBACK|Z:I|");

	/* COMMIT as the very next message must fail: the client saw no error yet. */
	query_connecting(fx, "BEGIN");
	up_done(fx, "BEGIN", 'T');
	drain(fx);
	up_close(fx);
	query(fx, "COMMIT");
	assert_string_equal(drain(fx), "E:08006|Z:E|");
	query(fx, "COMMIT");
	assert_string_equal(drain(fx), "C:ROLLBACK|Z:I|");

	/* ROLLBACK as the very next message needs no error first. */
	query_connecting(fx, "BEGIN");
	up_done(fx, "BEGIN", 'E');
	drain(fx);
	up_error(fx, "FATAL", "57P01");
	process(fx);
	query(fx, "ROLLBACK");
	assert_string_equal(drain(fx), "C:ROLLBACK|Z:I|");

	/* The rest of a message after its ROLLBACK goes to the new leader. */
	query_connecting(fx, "BEGIN");
	up_done(fx, "BEGIN", 'T');
	drain(fx);
	up_close(fx);
	query(fx, "ROLLBACK; SELECT 5");
	assert_string_equal(drain(fx), "C:ROLLBACK|");
	assert_string_equal(sent(fx), STARTUP_SENT);
	up_handshake(fx);
	assert_string_equal(sent(fx), "Q: SELECT 5|");
	up_rows(fx, 1, "5");
	up_done(fx, NULL, 'I');
	assert_string_equal(drain(fx), "T|D:5|C:SELECT 1|Z:I|");

	/* An extended-protocol batch in the failed state: one error, then Sync answers. */
	query(fx, "BEGIN");
	up_done(fx, "BEGIN", 'T');
	up_close(fx);
	drain(fx);
	buf_put_u8(pgw_session_in(fx->s), 'P');
	buf_put_u32be(pgw_session_in(fx->s), 4 + 3);
	buf_put(pgw_session_in(fx->s), "\0x\0", 3);
	buf_put_u8(pgw_session_in(fx->s), 'S');
	buf_put_u32be(pgw_session_in(fx->s), 4);
	process(fx);
	assert_string_equal(drain(fx), "E:08006|Z:E|");
}

/* SETs that completed outside a transaction are replayed on a new upstream (answers
 * discarded); failed ones, multi-statement ones and those inside a transaction are not;
 * a later SET of the same name replaces, RESET forgets, RESET ALL clears. */
static void test_settings_replayed(void **state)
{
	struct fixture *fx = *state;

	open_proxy(fx);
	query_connecting(fx, "SET pqlite.read_consistency = 'stale'");
	up_done(fx, "SET", 'I');
	query(fx, "set session PQLITE.read_consistency to leader");
	up_done(fx, "SET", 'I');
	query(fx, "SET application_name = 'x'");
	up_error(fx, "ERROR", "42601");
	up_done(fx, NULL, 'I');
	query(fx, "SET foo.bar = 1; SELECT 1");
	up_done(fx, "SET", 'I');
	query(fx, "BEGIN");
	up_done(fx, "BEGIN", 'T');
	query(fx, "SET foo.baz = 2");
	up_done(fx, "SET", 'T');
	query(fx, "COMMIT");
	up_done(fx, "COMMIT", 'I');
	query(fx, "SET LOCAL foo.local = 3");
	up_done(fx, "SET", 'I');
	query(fx, "SET foo.qux = 3");
	up_done(fx, "SET", 'I');
	query(fx, "RESET foo.qux");
	up_done(fx, "RESET", 'I');
	sent(fx);
	drain(fx);

	up_close(fx);
	query(fx, "SELECT 1");
	assert_string_equal(sent(fx), STARTUP_SENT);
	up_handshake(fx);
	assert_string_equal(sent(fx), "Q:set session PQLITE.read_consistency to leader|");
	up_done(fx, "SET", 'I');
	assert_string_equal(sent(fx), "Q:SELECT 1|");
	up_rows(fx, 1, "1");
	up_done(fx, NULL, 'I');
	assert_string_equal(drain(fx), "T|D:1|C:SELECT 1|Z:I|");

	/* A replayed SET the new leader refuses is not the client's business either. */
	up_close(fx);
	query(fx, "SELECT 2");
	sent(fx);
	up_handshake(fx);
	assert_string_equal(sent(fx), "Q:set session PQLITE.read_consistency to leader|");
	up_error(fx, "ERROR", "22023");
	up_done(fx, NULL, 'I');
	assert_string_equal(sent(fx), "Q:SELECT 2|");
	up_done(fx, "SELECT 0", 'I');
	assert_string_equal(drain(fx), "C:SELECT 0|Z:I|");

	query(fx, "RESET ALL");
	up_done(fx, "RESET", 'I');
	drain(fx);
	up_close(fx);
	query_connecting(fx, "SELECT 3"); /* nothing replayed */
}

/* No leader known, or every attempt refused: retried every 100 ms until the apply
 * timeout, then 57P03 and ReadyForQuery. */
static void test_no_leader_is_57P03(void **state)
{
	struct fixture *fx = *state;
	int rounds = 0;

	open_proxy(fx);
	fx->f.leader_addr = NULL;
	assert_int_equal(query(fx, "SELECT 1"), PGW_SESSION_BUSY);
	assert_int_equal(fx->up.n_connects, 0);
	assert_int_equal(fx->up.timer_ms, 100);
	while (drain(fx)[0] == '\0') {
		assert_true(++rounds < 200);
		fx->up.now += fx->up.timer_ms;
		fx->status = pgw_session_timeout(fx->s);
	}
	assert_int_equal(fx->up.now, 10000);
	assert_int_equal(fx->status, PGW_SESSION_IDLE);
	assert_int_equal(fx->up.n_connects, 0);
	/* drained above: it was "E:57P03|Z:I|" */
	query(fx, "SELECT 1");
	assert_string_equal(drain(fx), "");
	fx->up.now += 10000;
	pgw_session_timeout(fx->s);
	assert_string_equal(error_field(fx, 'C'), "57P03");
	assert_string_equal(drain(fx), "E:57P03|Z:I|");

	/* A leader appears during the retries: the message goes through. */
	query(fx, "SELECT 2");
	fx->up.now += 100;
	fx->f.leader_addr = LEADER;
	pgw_session_timeout(fx->s);
	assert_int_equal(fx->up.n_connects, 1);
	/* ... but refuses (not the leader any more), then the connection fails, then it
	 * works: all retried within the same deadline. */
	assert_string_equal(sent(fx), STARTUP_SENT);
	up_error(fx, "FATAL", "25006");
	process(fx);
	assert_false(fx->up.open);
	assert_int_equal(fx->up.timer_ms, 100);
	fx->up.now += 100;
	pgw_session_timeout(fx->s);
	assert_int_equal(fx->up.n_connects, 2);
	up_close(fx);
	fx->up.now += 100;
	pgw_session_timeout(fx->s);
	assert_int_equal(fx->up.n_connects, 3);
	fx->up.connect_rc = -1; /* (checked: a synchronous failure is retried too) */
	up_close(fx);
	fx->up.now += 100;
	pgw_session_timeout(fx->s);
	assert_int_equal(fx->up.n_connects, 4);
	fx->up.connect_rc = 0;
	fx->up.now += 100;
	pgw_session_timeout(fx->s);
	assert_int_equal(fx->up.n_connects, 5);
	sent(fx);
	up_handshake(fx);
	assert_string_equal(sent(fx), "Q:SELECT 2|");
	up_done(fx, "SELECT 0", 'I');
	assert_string_equal(drain(fx), "C:SELECT 0|Z:I|");

	/* A connection that never answers is given up at the deadline. */
	up_close(fx);
	query(fx, "SELECT 3");
	assert_true(fx->up.open);
	assert_int_equal(fx->up.timer_ms, 100); /* looks for another leader meanwhile */
	fx->up.now += 10000;
	pgw_session_timeout(fx->s);
	assert_false(fx->up.open);
	assert_string_equal(drain(fx), "E:57P03|Z:I|");
}

/* The leader hangs (stopped, partitioned) after accepting the connection: once another
 * leader is known the proxy goes there, instead of waiting for the deadline and 57P03. */
static void test_hung_leader_is_left_for_the_new_one(void **state)
{
	struct fixture *fx = *state;
	int rounds = 0;

	open_proxy(fx);
	assert_int_equal(query(fx, "SELECT 1"), PGW_SESSION_BUSY);
	assert_string_equal(sent(fx), STARTUP_SENT); /* ... and no answer ever comes */
	fx->up.now += 1000;
	fx->f.leader_addr = "10.0.0.2:5433";
	while (fx->up.n_connects == 1) {
		assert_true(++rounds < 20);
		fx->up.now += fx->up.timer_ms;
		fx->status = pgw_session_timeout(fx->s);
	}
	assert_true(fx->up.now < 2000);
	assert_int_equal(fx->up.n_closes, 1);
	assert_string_equal(fx->up.addr, "10.0.0.2:5433");
	assert_string_equal(sent(fx), STARTUP_SENT);
	up_handshake(fx);
	assert_string_equal(sent(fx), "Q:SELECT 1|");
	up_done(fx, "SELECT 0", 'I');
	assert_string_equal(drain(fx), "C:SELECT 0|Z:I|");
}

/* A leader that hangs with a statement in flight (stopped or cut off: TCP notices nothing
 * while its kernel acknowledges) is given up once another leader is known and the apply
 * timeout passed: 40003, never resent. A slow statement on a leader that still leads is
 * left alone however long it takes. */
static void test_hung_leader_with_statement_in_flight(void **state)
{
	struct fixture *fx = *state;
	int rounds = 0;

	open_proxy(fx);
	query_connecting(fx, "INSERT INTO t VALUES (1, 'a')");
	/* Still the leader: a long statement is waited for. */
	while (fx->up.now < 30000) {
		assert_true(++rounds < 200);
		fx->up.now += fx->up.timer_ms;
		fx->status = pgw_session_timeout(fx->s);
	}
	assert_true(fx->up.open);
	assert_string_equal(drain(fx), "");
	/* Another node leads now, and the statement has waited longer than the apply
	 * timeout: it is given up at the next check. */
	fx->f.leader_addr = "10.0.0.2:5433";
	rounds = 0;
	while (fx->up.open) {
		assert_true(++rounds < 200);
		fx->up.now += fx->up.timer_ms;
		fx->status = pgw_session_timeout(fx->s);
	}
	assert_true(fx->up.now <= 30000 + 500);
	assert_string_equal(drain(fx), "E:40003|Z:I|");
	assert_int_equal(fx->up.n_connects, 1); /* not sent again */
	/* The next statement goes to the new leader. */
	assert_int_equal(query(fx, "SELECT 1"), PGW_SESSION_BUSY);
	assert_string_equal(fx->up.addr, "10.0.0.2:5433");
	up_handshake(fx);
	up_done(fx, "SELECT 1", 'I');
	drain(fx);
	/* Sent just now to the new leader, which then appears to move: the apply timeout
	 * counts from the send. */
	assert_int_equal(query(fx, "SELECT 2"), PGW_SESSION_BUSY);
	fx->f.leader_addr = "10.0.0.3:5433";
	rounds = 0;
	while (fx->up.open) {
		assert_true(++rounds < 200);
		fx->up.now += fx->up.timer_ms;
		fx->status = pgw_session_timeout(fx->s);
	}
	assert_true(fx->up.now >= 40000 && fx->up.now <= 40000 + 500);
	assert_string_equal(drain(fx), "E:40003|Z:I|");
}

/* A refusal from a node that is still the known leader (25006 while it hands leadership
 * over): the Query goes again after a pause, not in a tight reconnect loop. */
static void test_refusal_by_same_leader_backs_off(void **state)
{
	struct fixture *fx = *state;

	open_proxy(fx);
	query_connecting(fx, "INSERT INTO t VALUES (1, 'a')");
	up_error(fx, "FATAL", "25006");
	assert_int_equal(process(fx), PGW_SESSION_BUSY);
	assert_false(fx->up.open);
	assert_int_equal(fx->up.n_connects, 1); /* not at once */
	assert_int_equal(fx->up.timer_ms, 100);
	fx->up.now += 100;
	pgw_session_timeout(fx->s);
	assert_int_equal(fx->up.n_connects, 2);
	assert_string_equal(sent(fx), STARTUP_SENT);
	up_handshake(fx);
	assert_string_equal(sent(fx), "Q:INSERT INTO t VALUES (1, 'a')|");
	up_done(fx, "INSERT 0 1", 'I');
	assert_string_equal(drain(fx), "C:INSERT 0 1|Z:I|");
}

/* A startup refusal that retrying cannot cure ends the client session with it. */
static void test_startup_refused_for_good(void **state)
{
	struct fixture *fx = *state;

	open_proxy(fx);
	query(fx, "SELECT 1");
	up_error(fx, "FATAL", "3D000");
	assert_int_equal(process(fx), PGW_SESSION_CLOSE);
	assert_string_equal(drain(fx), "E:3D000|");
	assert_false(fx->up.open);
}

/* Rows are not read from upstream faster than the client takes them. */
static void test_backpressure(void **state)
{
	struct fixture *fx = *state;
	static char value[60000];
	unsigned rows = 0, total = 200; /* 12 MB */
	struct buf *out;

	memset(value, 'v', sizeof value - 1);
	open_proxy(fx);
	query_connecting(fx, "SELECT big");
	up_rows(fx, total, value);
	pgw_encode_ready(up_in(fx), 'I');
	process(fx);
	out = pgw_session_out(fx->s);
	for (;;) {
		size_t off = 0;
		assert_true(out->len < PGW_SESSION_OUT_HIGH + 2 * sizeof value);
		if (out->len >= PGW_SESSION_OUT_HIGH) {
			assert_int_equal(fx->status, PGW_SESSION_BUSY);
			assert_false(pgw_session_upstream_wants_input(fx->s));
		}
		while (off < out->len) {
			if (out->data[off] == 'D')
				rows++;
			off += 1 + get_u32be(out->data + off + 1);
		}
		if (out->len > 0 && out->data[off - 6] == 'Z')
			break;
		out->len = 0;
		process(fx);
	}
	assert_int_equal(rows, total);
	assert_true(pgw_session_upstream_wants_input(fx->s));
}

/* Messages that are not answered one by one (extended protocol, CopyData...) are not
 * read from the client faster than the upstream takes them: a client cannot make the
 * upstream's output grow without bound (a leader that stopped reading). */
static void test_upstream_output_bounded(void **state)
{
	struct fixture *fx = *state;
	static char body[65000];
	struct buf *in, *up_out;
	size_t total = 0, sent_bytes = 0;
	int i;

	open_proxy(fx);
	query_connecting(fx, "SELECT 1");
	up_done(fx, "SELECT 0", 'I');
	drain(fx);
	in = pgw_session_in(fx->s);
	up_out = pgw_session_up_out(fx->s);
	for (i = 0; i < 64; i++) { /* 4 MB of CopyData */
		buf_put_u8(in, 'd');
		buf_put_u32be(in, 4 + sizeof body);
		buf_put(in, body, sizeof body);
		total += 5 + sizeof body;
	}
	process(fx);
	assert_true(up_out->len <= PGW_SESSION_OUT_HIGH + 5 + sizeof body);
	assert_int_equal(fx->status, PGW_SESSION_BUSY); /* the server stops reading */
	/* Everything goes once the upstream takes it. */
	for (i = 0; i < 100 && sent_bytes < total; i++) {
		sent_bytes += up_out->len;
		up_out->len = 0;
		process(fx);
	}
	assert_int_equal(sent_bytes, total);
	assert_int_equal(fx->status, PGW_SESSION_IDLE);
	assert_string_equal(drain(fx), "");
}

/* Garbage from upstream is a lost connection, never a crash. */
static void test_bad_upstream_input(void **state)
{
	struct fixture *fx = *state;

	open_proxy(fx);
	query_connecting(fx, "SELECT 1");
	buf_put_u8(up_in(fx), 'D');
	buf_put_u32be(up_in(fx), 2); /* a length below 4 */
	process(fx);
	assert_false(fx->up.open);
	assert_string_equal(drain(fx), "E:40003|Z:I|");

	query_connecting(fx, "SELECT 1");
	buf_put_u8(up_in(fx), 'E');
	buf_put_u32be(up_in(fx), 4 + 3);
	buf_put(up_in(fx), "Sxx", 3); /* unterminated field */
	process(fx);
	assert_string_equal(drain(fx), "E:40003|Z:I|");

	query_connecting(fx, "SELECT 1");
	pgw_encode_ready(up_in(fx), 'Q'); /* no such status */
	process(fx);
	assert_string_equal(drain(fx), "E:40003|Z:I|");

	/* During the handshake: retried. */
	query(fx, "SELECT 1");
	buf_put_u8(up_in(fx), 'R');
	buf_put_u32be(up_in(fx), 8);
	buf_put_u32be(up_in(fx), 3); /* cleartext password: unsupported */
	process(fx);
	assert_false(fx->up.open);
	assert_int_equal(fx->up.timer_ms, 100);
}

/* ---- The proxied marker -------------------------------------------------------------- */

/* A follower never serves (or proxies again) a session another node proxies to it. */
static void test_proxied_refused_on_follower(void **state)
{
	struct fixture *fx = *state;

	set_leader(fx, false);
	open_session(fx, PGW_FOLLOWER_PROXY,
		     PARAMS("user\0alice\0database\0postgres\0pqlite.proxied\0001\0"));
	assert_int_equal(fx->status, PGW_SESSION_CLOSE);
	assert_string_equal(error_field(fx, 'C'), "25006");
	assert_string_equal(error_field(fx, 'S'), "FATAL");
	assert_string_equal(error_field(fx, 'D'), "leader: " LEADER);
	assert_false(pgw_session_is_proxy(fx->s));
	assert_int_equal(fx->up.n_connects, 0);
}

/* On the leader a proxied session is local; if the node stops leading before any of a
 * message ran, the refusal is FATAL so that the proxy resends it; later statements'
 * refusals are ordinary errors. */
static void test_proxied_session_on_leader(void **state)
{
	struct fixture *fx = *state;

	open_session(fx, PGW_FOLLOWER_PROXY,
		     PARAMS("user\0alice\0database\0postgres\0pqlite.proxied\0001\0"));
	assert_false(pgw_session_is_proxy(fx->s));
	assert_non_null(strstr(drain(fx), "Z:I|"));
	query(fx, "SET pqlite.read_consistency = stale");
	drain(fx);
	set_leader(fx, false);
	query(fx, "SELECT count(*) FROM t; INSERT INTO t VALUES (1, 'a')");
	assert_string_equal(drain(fx), "T|D:0|C:SELECT 1|E:25006|Z:I|");
	query(fx, "INSERT INTO t VALUES (1, 'a')");
	assert_string_equal(error_field(fx, 'S'), "FATAL");
	assert_string_equal(error_field(fx, 'D'), "leader: " LEADER);
	assert_string_equal(drain(fx), "E:25006|");
	assert_int_equal(fx->status, PGW_SESSION_CLOSE);
}

/* A proxy's session on a leader running in STANDBY mode (nodes may use different modes):
 * once the node follows, the proxy's client must not get the stale reads STANDBY gives its
 * own clients. The refusal comes as FATAL 25006 so that the proxy goes to the new leader. */
static void test_proxied_session_on_standby_node(void **state)
{
	struct fixture *fx = *state;

	open_session(fx, PGW_FOLLOWER_STANDBY,
		     PARAMS("user\0alice\0database\0postgres\0pqlite.proxied\0001\0"));
	assert_non_null(strstr(drain(fx), "Z:I|"));
	query(fx, "SELECT count(*) FROM t");
	assert_string_equal(drain(fx), "T|D:0|C:SELECT 1|Z:I|");
	set_leader(fx, false);
	query(fx, "SELECT count(*) FROM t");
	assert_int_equal(fx->status, PGW_SESSION_CLOSE);
	assert_string_equal(error_field(fx, 'S'), "FATAL");
	assert_string_equal(drain(fx), "E:25006|");
}

/* CREATE DATABASE proposed, then Raft closed under it (ERR_SHUTDOWN: the entry may still
 * commit). A FATAL as the first answer would tell the proxy that nothing ran, and it would
 * send the statement again to the next leader: the outcome must be reported unknown first. */
static void test_proxied_db_command_shutdown(void **state)
{
	struct fixture *fx = *state;
	struct fake_entry e;

	open_session(fx, PGW_FOLLOWER_PROXY,
		     PARAMS("user\0alice\0database\0postgres\0pqlite.proxied\0001\0"));
	drain(fx);
	assert_int_equal(query(fx, "CREATE DATABASE d1"), PGW_SESSION_BUSY);
	assert_int_equal(fx->f.n, 1);
	e = fx->f.q[0];
	fx->f.n = 0;
	free(e.buf);
	e.cb(e.arg, ERR_SHUTDOWN);
	assert_int_equal(fx->status, PGW_SESSION_CLOSE);
	assert_string_equal(error_field(fx, 'S'), "ERROR"); /* the first error is not FATAL */
	assert_string_equal(drain(fx), "E:40003|E:57P01|");
}

/* ---- Deposed leader (PROXY mode) --------------------------------------------------- */

static void test_deposed_leader_ends_local_sessions(void **state)
{
	struct fixture *fx = *state;

	open_session(fx, PGW_FOLLOWER_PROXY, PLAIN_PARAMS);
	assert_false(pgw_session_is_proxy(fx->s)); /* the leader serves it */
	drain(fx);
	set_leader(fx, false);
	assert_int_equal(pgw_session_terminate(fx->s), PGW_SESSION_CLOSE);
	assert_string_equal(error_field(fx, 'S'), "FATAL");
	assert_string_equal(error_field(fx, 'M'),
			    "terminating connection because this node is no longer the leader");
	assert_string_equal(drain(fx), "E:57P01|");

	/* Busy: the statement's own result first (40003: its commit was in flight), then
	 * ReadyForQuery, then the FATAL. */
	set_leader(fx, true);
	open_session(fx, PGW_FOLLOWER_PROXY, PLAIN_PARAMS);
	drain(fx);
	query(fx, "INSERT INTO t VALUES (1, 'a')");
	assert_int_equal(fx->f.n, 1);
	fake_repl_lose_leadership(&fx->f);
	/* (the core reports the lost commit through Raft, before or after the listener) */
	fx->wakes = 0;
	core_engine_set_leader(fx->f.engine, false, false);
	assert_int_equal(pgw_session_terminate(fx->s), PGW_SESSION_CLOSE);
	assert_string_equal(drain(fx), "E:40003|Z:I|E:57P01|");

	set_leader(fx, true);
	open_session(fx, PGW_FOLLOWER_PROXY, PLAIN_PARAMS);
	drain(fx);
	query(fx, "INSERT INTO t VALUES (1, 'a')");
	fx->f.leader = false;
	core_engine_set_leader(fx->f.engine, false, false);
	assert_int_equal(pgw_session_terminate(fx->s), -1); /* after its statement */
	assert_string_equal(drain(fx), "");
	fx->wakes = 0;
	fake_repl_lose_leadership(&fx->f);
	assert_int_equal(fx->wakes, 1);
	assert_int_equal(fx->status, PGW_SESSION_CLOSE);
	assert_string_equal(drain(fx), "E:40003|Z:I|E:57P01|");

	/* A proxy session is not ended. */
	open_proxy(fx);
	assert_int_equal(pgw_session_terminate(fx->s), -1);
	assert_string_equal(drain(fx), "");
}

/* ---- STANDBY mode ------------------------------------------------------------------ */

static void test_standby(void **state)
{
	struct fixture *fx = *state;
	char *out;

	set_leader(fx, false);
	open_session(fx, PGW_FOLLOWER_STANDBY, PLAIN_PARAMS);
	assert_false(pgw_session_is_proxy(fx->s));
	out = drain(fx);
	assert_non_null(strstr(out, "S:in_hot_standby=on|S:default_transaction_read_only=on|"));
	/* Reads run on the local copy; writes fail with the leader's address. */
	query(fx, "SHOW pqlite.read_consistency");
	assert_string_equal(drain(fx), "T|D:stale|C:SHOW|Z:I|");
	query(fx, "SELECT count(*) FROM t");
	assert_string_equal(drain(fx), "T|D:0|C:SELECT 1|Z:I|");
	query(fx, "INSERT INTO t VALUES (1, 'a')");
	assert_string_equal(error_field(fx, 'D'), "leader: " LEADER);
	assert_string_equal(drain(fx), "E:25006|Z:I|");
	/* Promotion is reported before the next ReadyForQuery; reads follow the role. */
	set_leader(fx, true);
	query(fx, "SHOW pqlite.read_consistency");
	assert_string_equal(drain(fx), "T|D:leader|C:SHOW|S:in_hot_standby=off|"
				       "S:default_transaction_read_only=off|Z:I|");
	query(fx, "SELECT 1");
	assert_string_equal(drain(fx), "T|D:1|C:SELECT 1|Z:I|");
	set_leader(fx, false);
	query(fx, "SELECT count(*) FROM t");
	assert_string_equal(drain(fx), "T|D:0|C:SELECT 1|S:in_hot_standby=on|"
				       "S:default_transaction_read_only=on|Z:I|");
	/* An explicit setting wins until RESET. */
	query(fx, "SET pqlite.read_consistency = leader");
	drain(fx);
	query(fx, "SELECT count(*) FROM t");
	assert_string_equal(drain(fx), "E:25006|Z:I|");
	query(fx, "RESET pqlite.read_consistency");
	drain(fx);
	query(fx, "SELECT count(*) FROM t");
	assert_string_equal(drain(fx), "T|D:0|C:SELECT 1|Z:I|");

	/* On the leader in STANDBY mode the flags are off, and a deposed leader's sessions
	 * are not ended. */
	set_leader(fx, true);
	open_session(fx, PGW_FOLLOWER_STANDBY, PLAIN_PARAMS);
	out = drain(fx);
	assert_non_null(strstr(out, "S:in_hot_standby=off|S:default_transaction_read_only=off|"));
}

/* ---- Core SQLSTATEs and ERR_SHUTDOWN ------------------------------------------------ */

static int change_notleader(struct core_replication *r, enum core_change_op op, uint64_t id,
			    const char *raft, const char *pg, enum core_role *role,
			    uint64_t *id_out, char errmsg[256])
{
	snprintf(errmsg, 256, "not the leader");
	return ERR_NOTLEADER;
}

static void test_core_sqlstate(void **state)
{
	struct fixture *fx = *state;

	open_session(fx, PGW_FOLLOWER_PROXY, PLAIN_PARAMS);
	drain(fx);
	query(fx, "SELECT pqlite_remove(-1)");
	assert_string_equal(drain(fx), "E:22023|Z:I|");
	fx->f.r.change = change_notleader;
	query(fx, "SELECT pqlite_remove(5)");
	assert_string_equal(error_field(fx, 'D'), "leader: " LEADER);
	assert_string_equal(drain(fx), "E:25006|Z:I|");
	query(fx, "SELECT 1");
	assert_string_equal(drain(fx), "T|D:1|C:SELECT 1|Z:I|"); /* not sticky */
}

/* A follower's database image replaced by a snapshot under an open transaction: the
 * session cannot go on (FATAL 57P01). */
static void test_snapshot_ends_busy_session(void **state)
{
	struct fixture *fx = *state;
	void *buf;
	size_t len;

	set_leader(fx, false);
	open_session(fx, PGW_FOLLOWER_STANDBY, PLAIN_PARAMS);
	drain(fx);
	query(fx, "BEGIN; SELECT count(*) FROM t");
	assert_string_equal(drain(fx), "C:BEGIN|T|D:0|C:SELECT 1|Z:T|");
	assert_int_equal(core_fsm_snapshot(fx->f.engine, &buf, &len), 0);
	assert_int_equal(core_fsm_restore(fx->f.engine, buf, len), 0);
	free(buf);
	assert_int_equal(query(fx, "SELECT 1"), PGW_SESSION_CLOSE);
	assert_string_equal(error_field(fx, 'S'), "FATAL");
	assert_string_equal(drain(fx), "E:57P01|");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_proxy_relays, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle_loss_reconnects, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refused_statement_is_resent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lost_in_flight, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lost_in_flight_in_transaction, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_lost_idle_in_transaction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_settings_replayed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_leader_is_57P03, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hung_leader_is_left_for_the_new_one, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_refusal_by_same_leader_backs_off, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_hung_leader_with_statement_in_flight, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_startup_refused_for_good, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backpressure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_upstream_input, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upstream_output_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_proxied_refused_on_follower, setup, teardown),
		cmocka_unit_test_setup_teardown(test_proxied_session_on_leader, setup, teardown),
		cmocka_unit_test_setup_teardown(test_proxied_session_on_standby_node, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_proxied_db_command_shutdown, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deposed_leader_ends_local_sessions, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_standby, setup, teardown),
		cmocka_unit_test_setup_teardown(test_core_sqlstate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_snapshot_ends_busy_session, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

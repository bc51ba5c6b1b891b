/* pgwire session tests: the real session state machine and the real engine, driven with
 * byte streams, over a stand-in replicator whose proposals the test commits or fails. This
 * is where the SQLSTATEs of replication failures are checked end to end (40003 after a
 * lost leadership, 25006 on a non-leader), which a single real node cannot provoke. */
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
#include "pgwire/session.h"
#include "tests/lib/fake_repl.h"

/* Commit and apply everything proposed so far (and whatever that triggers). */
static void commit_all(struct fake_repl *f)
{
	fake_repl_run(f);
}

/* Step down with proposals in flight: their outcome is unknown; the engine learns it. */
static void lose_leadership(struct fake_repl *f)
{
	fake_repl_lose_leadership(f);
	core_engine_set_leader(f->engine, false, false);
}

struct fixture {
	struct fake_repl f;
	struct pgw_session *s;
	int wakes;
};

static void on_wake(void *arg, int status)
{
	((struct fixture *)arg)->wakes++;
}

/* Render the session's output as "type[:detail]|..." and consume it: E and N show their
 * SQLSTATE, C its tag, Z its status, D its first value; other messages just their type. */
static char *drain(struct fixture *fx)
{
	static char out[4096];
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
					n += (size_t)snprintf(out + n, sizeof out - n, ":%s", body + i + 1);
				i += 1 + strlen(body + i + 1) + 1;
			}
		} else if (type == 'C') {
			n += (size_t)snprintf(out + n, sizeof out - n, ":%s", body);
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
	b->len = 0;
	return out;
}

/* The whole ErrorResponse field `field` of the first error in the output (not consumed). */
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

static void query(struct fixture *fx, const char *sql)
{
	struct buf *in = pgw_session_in(fx->s);
	size_t n = strlen(sql) + 1;
	buf_put_u8(in, 'Q');
	buf_put_u32be(in, (uint32_t)(4 + n));
	buf_put(in, sql, n);
	pgw_session_process(fx->s);
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof *fx);
	struct core_config cc;
	struct pgw_session_config sc;
	struct buf *in;
	static const char params[] = "user\0postgres\0database\0postgres\0";

	core_config_defaults(&cc);
	fake_repl_init(&fx->f);
	fx->f.leader_addr = "10.1.2.3:5433";
	fx->f.barriers_fail = true; /* linearizable reads fail here, as without a quorum */
	assert_int_equal(core_engine_create(&cc, &fx->f.r, &fx->f.engine), 0);
	core_engine_set_leader(fx->f.engine, true, true);
	sc = (struct pgw_session_config){.engine = fx->f.engine, .server_version = "15.0",
					 .max_msg_len = 1 << 20, .wake = on_wake, .wake_arg = fx};
	assert_int_equal(pgw_session_create(&sc, &fx->s), 0);
	in = pgw_session_in(fx->s);
	buf_put_u32be(in, (uint32_t)(8 + sizeof params));
	buf_put_u32be(in, 196608);
	buf_put(in, params, sizeof params);
	pgw_session_process(fx->s);
	assert_true(pgw_session_started(fx->s));
	assert_non_null(strstr(drain(fx), "K|Z:I|"));
	query(fx, "CREATE TABLE t (id integer PRIMARY KEY, v text)");
	commit_all(&fx->f);
	assert_string_equal(drain(fx), "C:CREATE TABLE|Z:I|");
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	pgw_session_destroy(fx->s);
	commit_all(&fx->f); /* nothing may stay queued that points at freed memory */
	core_engine_destroy(fx->f.engine);
	free(fx);
	return 0;
}

/* The reply to a write comes only once its entry is applied. */
static void test_reply_after_apply(void **state)
{
	struct fixture *fx = *state;
	query(fx, "INSERT INTO t VALUES (1, 'a')");
	assert_string_equal(drain(fx), "");
	commit_all(&fx->f);
	assert_true(fx->wakes > 0);
	assert_string_equal(drain(fx), "C:INSERT 0 1|Z:I|");
	query(fx, "SELECT v FROM t");
	assert_string_equal(drain(fx), "T|D:a|C:SELECT 1|Z:I|");
}

/* Leadership lost with the commit in flight: 40003, never "failed", never retried. */
static void test_leadership_lost_is_40003(void **state)
{
	struct fixture *fx = *state;
	query(fx, "INSERT INTO t VALUES (2, 'b')");
	assert_int_equal(fx->f.n, 1);
	lose_leadership(&fx->f);
	assert_string_equal(drain(fx), "E:40003|Z:I|");
	assert_int_equal(fx->f.n, 0); /* not proposed again */
}

/* On a non-leader nothing runs: 25006 with the leader's address, safe to retry. */
static void test_not_leader_is_25006(void **state)
{
	struct fixture *fx = *state;
	fx->f.leader = false;
	core_engine_set_leader(fx->f.engine, false, false);
	query(fx, "INSERT INTO t VALUES (3, 'c')");
	assert_string_equal(error_field(fx, 'C'), "25006");
	assert_string_equal(error_field(fx, 'D'), "leader: 10.1.2.3:5433");
	assert_string_equal(drain(fx), "E:25006|Z:I|");
	assert_int_equal(fx->f.n, 0);
}

/* A transaction open when leadership goes is rolled back; the client sees 25P02 until it
 * ends the block, then can go on. */
static void test_stepdown_in_transaction(void **state)
{
	struct fixture *fx = *state;
	query(fx, "BEGIN");
	query(fx, "INSERT INTO t VALUES (4, 'd')");
	assert_string_equal(drain(fx), "C:BEGIN|Z:T|C:INSERT 0 1|Z:T|");
	lose_leadership(&fx->f);
	query(fx, "INSERT INTO t VALUES (5, 'e')");
	assert_string_equal(drain(fx), "E:25P02|Z:E|");
	query(fx, "COMMIT");
	assert_string_equal(drain(fx), "C:ROLLBACK|Z:I|");
	fx->f.leader = true;
	core_engine_set_leader(fx->f.engine, true, true);
	query(fx, "SELECT count(*) FROM t");
	assert_string_equal(drain(fx), "T|D:0|C:SELECT 1|Z:I|");
}

/* COMMIT as the first statement after the server rolled the transaction back must fail:
 * the client has seen no error for it yet. */
static void test_commit_after_server_rollback(void **state)
{
	struct fixture *fx = *state;
	query(fx, "BEGIN; INSERT INTO t VALUES (8, 'h')");
	drain(fx);
	lose_leadership(&fx->f);
	fx->f.leader = true;
	core_engine_set_leader(fx->f.engine, true, true);
	query(fx, "COMMIT");
	assert_string_equal(drain(fx), "E:40001|Z:I|");
	query(fx, "SELECT count(*) FROM t WHERE id = 8");
	assert_string_equal(drain(fx), "T|D:0|C:SELECT 1|Z:I|");
}

/* A write refused by SQLite as read-only (PRAGMA query_only) is 25006 as well. */
static void test_readonly_is_25006(void **state)
{
	struct fixture *fx = *state;
	query(fx, "PRAGMA query_only = 1");
	drain(fx);
	query(fx, "INSERT INTO t VALUES (6, 'f')");
	assert_string_equal(drain(fx), "E:25006|Z:I|");
}

/* A multi-statement message is one transaction: a failure in it undoes the earlier
 * statements, and nothing of it is proposed. */
static void test_implicit_transaction_rolls_back(void **state)
{
	struct fixture *fx = *state;
	query(fx, "INSERT INTO t VALUES (7, 'g'); INSERT INTO t VALUES (7, 'dup')");
	commit_all(&fx->f);
	assert_string_equal(drain(fx), "C:INSERT 0 1|E:23505|Z:I|");
	query(fx, "SELECT count(*) FROM t WHERE id = 7");
	assert_string_equal(drain(fx), "T|D:0|C:SELECT 1|Z:I|");
	assert_int_equal(fx->f.n, 0);
}

/* pqlite.read_consistency is a session setting served by pgwire: SET / SHOW / RESET. */
static void test_read_consistency_setting(void **state)
{
	struct fixture *fx = *state;
	query(fx, "SHOW pqlite.read_consistency");
	assert_string_equal(drain(fx), "T|D:leader|C:SHOW|Z:I|");
	query(fx, "SET pqlite.read_consistency = 'linearizable'");
	assert_string_equal(drain(fx), "C:SET|Z:I|");
	query(fx, "show PQLITE.READ_CONSISTENCY");
	assert_string_equal(drain(fx), "T|D:linearizable|C:SHOW|Z:I|");
	/* A linearizable read waits for a barrier; this stand-in cannot issue one, so the
	 * read fails as on a node that cannot confirm its leadership. */
	query(fx, "SELECT 1");
	assert_string_equal(drain(fx), "E:25006|Z:I|");
	query(fx, "set session pqlite.read_consistency to stale");
	assert_string_equal(drain(fx), "C:SET|Z:I|");
	fx->f.leader = false;
	core_engine_set_leader(fx->f.engine, false, false);
	query(fx, "SELECT count(*) FROM t");
	assert_string_equal(drain(fx), "T|D:0|C:SELECT 1|Z:I|"); /* stale: local copy */
	query(fx, "SET pqlite.read_consistency TO eventually");
	assert_string_equal(error_field(fx, 'C'), "22023");
	assert_string_equal(drain(fx), "E:22023|Z:I|");
	query(fx, "SET LOCAL pqlite.read_consistency TO leader");
	assert_string_equal(drain(fx), "E:0A000|Z:I|");
	query(fx, "SET pqlite.read_consistency leader");
	assert_string_equal(drain(fx), "E:42601|Z:I|");
	query(fx, "RESET pqlite.read_consistency; SHOW pqlite.read_consistency");
	assert_string_equal(drain(fx), "C:RESET|T|D:leader|C:SHOW|Z:I|");
	query(fx, "SET pqlite.read_consistency = DEFAULT");
	assert_string_equal(drain(fx), "C:SET|Z:I|");
}

/* PostgreSQL parameters drivers SET and SHOW at connect time are kept per session. */
static void test_postgres_parameters(void **state)
{
	struct fixture *fx = *state;
	query(fx, "SET extra_float_digits = 3");
	assert_string_equal(drain(fx), "C:SET|Z:I|");
	query(fx, "show EXTRA_FLOAT_DIGITS;");
	assert_string_equal(drain(fx), "T|D:3|C:SHOW|Z:I|");
	query(fx, "SET application_name TO 'PostgreSQL JDBC Driver'; SHOW application_name");
	assert_string_equal(drain(fx), "C:SET|T|D:PostgreSQL JDBC Driver|C:SHOW|Z:I|");
	query(fx, "SET SESSION search_path = \"$user\", public; SHOW search_path");
	assert_string_equal(drain(fx), "C:SET|T|D:\"$user\", public|C:SHOW|Z:I|");
	query(fx, "show transaction_read_only");
	assert_string_equal(drain(fx), "T|D:off|C:SHOW|Z:I|");
	query(fx, "SHOW server_version_num");
	assert_string_equal(drain(fx), "T|D:150000|C:SHOW|Z:I|");
	query(fx, "SET server_version = '9'");
	assert_string_equal(drain(fx), "E:55P02|Z:I|");
	query(fx, "SET client_encoding = 'LATIN1'");
	assert_string_equal(drain(fx), "E:22023|Z:I|");
	query(fx, "SET client_encoding = 'UTF8'");
	assert_string_equal(drain(fx), "C:SET|Z:I|");
	query(fx, "SET extra_float_digits");
	assert_string_equal(drain(fx), "E:42601|Z:I|");
	query(fx, "SET LOCAL extra_float_digits = 2");
	assert_string_equal(drain(fx), "E:0A000|Z:I|");
	query(fx, "RESET extra_float_digits; SHOW extra_float_digits");
	assert_string_equal(drain(fx), "C:RESET|T|D:1|C:SHOW|Z:I|");
	query(fx, "SET TimeZone = 'Europe/Paris'; SET pqlite.read_consistency = stale; "
		  "RESET ALL; SHOW TimeZone; SHOW pqlite.read_consistency");
	assert_string_equal(drain(fx), "C:SET|C:SET|C:RESET|T|D:UTC|C:SHOW|T|D:leader|C:SHOW|Z:I|");
	/* Unknown parameters are not pgwire's: SQLite reports them. */
	query(fx, "SHOW no_such_parameter");
	assert_string_equal(drain(fx), "E:42601|Z:I|");
}

static void ignore_step(struct core_stmt *st, int rc, void *arg)
{
	*(int *)arg = rc;
}

/* A new leader compiles nothing before it is ready: a table whose CREATE was committed
 * but not yet applied here must not be "missing" (42P01) for a statement that arrives
 * in between. */
static void test_new_leader_prepares_after_ready(void **state)
{
	struct fixture *fx = *state;
	struct core_session *cs;
	struct core_stmt *st;
	int rc = -1;

	assert_int_equal(core_session_open(fx->f.engine, "postgres", &cs), 0);
	assert_int_equal(core_session_prepare(cs, "CREATE TABLE u (x)", -1, NULL, &st), 0);
	assert_int_equal(core_stmt_step(st, ignore_step, &rc), CORE_PENDING);
	/* Re-elected: leader again, its barrier not applied yet. */
	core_engine_set_leader(fx->f.engine, true, false);
	query(fx, "INSERT INTO u VALUES (1)");
	assert_string_equal(drain(fx), ""); /* waiting, not 42P01 */
	commit_all(&fx->f);                  /* the CREATE is applied */
	assert_int_equal(rc, CORE_DONE);
	core_stmt_finalize(st);
	core_session_close(cs);
	core_engine_set_leader(fx->f.engine, true, true);
	commit_all(&fx->f);
	assert_string_equal(drain(fx), "C:INSERT 0 1|Z:I|");
	/* Leadership lost while waiting: 25006, nothing ran. */
	core_engine_set_leader(fx->f.engine, true, false);
	query(fx, "INSERT INTO u VALUES (2)");
	assert_string_equal(drain(fx), "");
	lose_leadership(&fx->f);
	assert_string_equal(drain(fx), "E:25006|Z:I|");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_reply_after_apply, setup, teardown),
		cmocka_unit_test_setup_teardown(test_leadership_lost_is_40003, setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_leader_is_25006, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stepdown_in_transaction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_commit_after_server_rollback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readonly_is_25006, setup, teardown),
		cmocka_unit_test_setup_teardown(test_implicit_transaction_rolls_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_consistency_setting, setup, teardown),
		cmocka_unit_test_setup_teardown(test_postgres_parameters, setup, teardown),
		cmocka_unit_test_setup_teardown(test_new_leader_prepares_after_ready, setup,
						teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

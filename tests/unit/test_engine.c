/* Engine tests with an in-process stand-in replicator: proposals queue up and are applied
 * (core_fsm_apply, then the callback) when the test "runs the loop". Covers the write path,
 * the writer queue, hidden-until-applied, leadership loss, snapshots and databases. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/core.h"
#include "tests/lib/fake_repl.h"

struct fixture {
	struct fake_repl repl;
	struct core_engine *e;
	struct fake_repl repl2;
	struct core_engine *e2; /* follower */
};

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof *fx);
	struct core_config cfg;
	core_config_defaults(&cfg);
	cfg.checkpoint_threshold = 50;
	fake_repl_init(&fx->repl);
	fake_repl_init(&fx->repl2);
	fx->repl2.leader = false;
	assert_int_equal(core_engine_create(&cfg, &fx->repl.r, &fx->e), 0);
	assert_int_equal(core_engine_create(&cfg, &fx->repl2.r, &fx->e2), 0);
	fx->repl.engine = fx->e;
	fx->repl.mirror = fx->e2;
	core_engine_set_leader(fx->e, true, true);
	core_engine_set_leader(fx->e2, false, false);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	core_engine_destroy(fx->e);
	core_engine_destroy(fx->e2);
	free(fx);
	return 0;
}

struct result {
	int calls;
	int rc;
};

static void step_cb(struct core_stmt *st, int rc, void *arg)
{
	struct result *r = arg;
	r->calls++;
	r->rc = rc;
}

/* Run one statement to completion (applying proposals), return its final code. */
static int exec(struct fake_repl *f, struct core_session *s, const char *sql)
{
	struct core_stmt *st;
	struct result r = {0, 0};
	int rc;
	rc = core_session_prepare(s, sql, -1, NULL, &st);
	if (rc != 0)
		return rc;
	if (st == NULL)
		return CORE_DONE;
	do {
		rc = core_stmt_step(st, step_cb, &r);
		if (rc == CORE_PENDING) {
			fake_repl_run(f);
			assert_int_equal(r.calls, 1);
			rc = r.rc;
			r.calls = 0;
		}
	} while (rc == CORE_ROW);
	core_stmt_finalize(st);
	return rc;
}

/* Read one integer with a (read-only) query on session s. */
static int64_t query_int(struct core_session *s, const char *sql)
{
	struct core_stmt *st;
	struct result r = {0, 0};
	int64_t v;
	assert_int_equal(core_session_prepare(s, sql, -1, NULL, &st), 0);
	assert_int_equal(core_stmt_step(st, step_cb, &r), CORE_ROW);
	v = sqlite3_column_int64(core_stmt_sqlite(st), 0);
	core_stmt_finalize(st);
	return v;
}

/* A follower engine has no leader: read its data through a raw SQLite connection on its
 * VFS is not exposed, so compare through a snapshot restored on a leader-mode engine. */
static int64_t follower_count(struct fixture *fx, const char *table)
{
	struct fake_repl f;
	struct core_engine *e;
	struct core_config cfg;
	struct core_session *s;
	void *buf;
	size_t len;
	char sql[128];
	int64_t n;
	core_config_defaults(&cfg);
	fake_repl_init(&f);
	assert_int_equal(core_engine_create(&cfg, &f.r, &e), 0);
	f.engine = e;
	core_engine_set_leader(e, true, true);
	assert_int_equal(core_fsm_snapshot(fx->e2, &buf, &len), 0);
	assert_int_equal(core_fsm_restore(e, buf, len), 0);
	free(buf);
	assert_int_equal(core_session_open(e, "postgres", &s), 0);
	snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
	n = query_int(s, sql);
	core_session_close(s);
	core_engine_destroy(e);
	return n;
}

static void test_write_and_read(void **state)
{
	struct fixture *fx = *state;
	struct core_session *s;
	int i;
	assert_int_equal(core_session_open(fx->e, "postgres", &s), 0);
	assert_int_equal(exec(&fx->repl, s, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"),
			 CORE_DONE);
	for (i = 0; i < 200; i++)
		assert_int_equal(exec(&fx->repl, s, "INSERT INTO t(v) VALUES (randomblob(300))"),
				 CORE_DONE);
	assert_int_equal(query_int(s, "SELECT count(*) FROM t"), 200);
	assert_int_equal(follower_count(fx, "t"), 200);
	core_session_close(s);
}

static void test_hidden_until_applied(void **state)
{
	struct fixture *fx = *state;
	struct core_session *a, *b;
	struct core_stmt *st;
	struct result r = {0, 0};
	assert_int_equal(core_session_open(fx->e, "postgres", &a), 0);
	assert_int_equal(core_session_open(fx->e, "postgres", &b), 0);
	assert_int_equal(exec(&fx->repl, a, "CREATE TABLE t (x)"), CORE_DONE);
	assert_int_equal(core_session_prepare(a, "INSERT INTO t VALUES (1)", -1, NULL, &st), 0);
	assert_int_equal(core_stmt_step(st, step_cb, &r), CORE_PENDING);
	/* Not applied yet: another session does not see it. */
	assert_int_equal(query_int(b, "SELECT count(*) FROM t"), 0);
	fake_repl_run(&fx->repl);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.rc, CORE_DONE);
	assert_int_equal(core_stmt_changes(st), 1);
	core_stmt_finalize(st);
	assert_int_equal(query_int(b, "SELECT count(*) FROM t"), 1);
	core_session_close(a);
	core_session_close(b);
}

static void test_writer_queue(void **state)
{
	struct fixture *fx = *state;
	struct core_session *a, *b;
	struct core_stmt *sa, *sb;
	struct result ra = {0, 0}, rb = {0, 0};
	assert_int_equal(core_session_open(fx->e, "postgres", &a), 0);
	assert_int_equal(core_session_open(fx->e, "postgres", &b), 0);
	assert_int_equal(exec(&fx->repl, a, "CREATE TABLE t (x UNIQUE)"), CORE_DONE);
	/* a opens an explicit transaction and writes: b's write queues behind it. */
	assert_int_equal(exec(&fx->repl, a, "BEGIN"), CORE_DONE);
	assert_int_equal(exec(&fx->repl, a, "INSERT INTO t VALUES (1)"), CORE_DONE);
	assert_int_equal(core_session_prepare(b, "INSERT INTO t VALUES (2)", -1, NULL, &sb), 0);
	assert_int_equal(core_stmt_step(sb, step_cb, &rb), CORE_PENDING);
	assert_true(core_session_in_txn(a));
	assert_int_equal(core_session_prepare(a, "COMMIT", -1, NULL, &sa), 0);
	assert_int_equal(core_stmt_step(sa, step_cb, &ra), CORE_PENDING);
	fake_repl_run(&fx->repl); /* applies a's commit, which hands the slot to b, which proposes */
	fake_repl_run(&fx->repl);
	assert_int_equal(ra.rc, CORE_DONE);
	assert_int_equal(rb.rc, CORE_DONE);
	core_stmt_finalize(sa);
	core_stmt_finalize(sb);
	assert_int_equal(query_int(a, "SELECT count(*) FROM t"), 2);
	assert_int_equal(follower_count(fx, "t"), 2);
	core_session_close(a);
	core_session_close(b);
}

static void test_writer_timeout(void **state)
{
	struct fixture *fx = *state;
	struct core_session *a, *b;
	struct core_stmt *sb;
	struct result rb = {0, 0};
	assert_int_equal(core_session_open(fx->e, "postgres", &a), 0);
	assert_int_equal(core_session_open(fx->e, "postgres", &b), 0);
	core_engine_tick(fx->e, 1000);
	assert_int_equal(exec(&fx->repl, a, "CREATE TABLE t (x)"), CORE_DONE);
	assert_int_equal(exec(&fx->repl, a, "BEGIN; "), CORE_DONE);
	assert_int_equal(exec(&fx->repl, a, "INSERT INTO t VALUES (1)"), CORE_DONE);
	assert_int_equal(core_session_prepare(b, "INSERT INTO t VALUES (2)", -1, NULL, &sb), 0);
	assert_int_equal(core_stmt_step(sb, step_cb, &rb), CORE_PENDING);
	core_engine_tick(fx->e, 5000);
	assert_int_equal(rb.calls, 0);
	core_engine_tick(fx->e, 1000 + 10001);
	assert_int_equal(rb.calls, 1);
	assert_int_equal(rb.rc, ERR_TIMEOUT);
	core_stmt_finalize(sb);
	core_session_close(b);
	/* Closing a rolls its transaction back. */
	core_session_close(a);
	assert_int_equal(core_session_open(fx->e, "postgres", &a), 0);
	assert_int_equal(query_int(a, "SELECT count(*) FROM t"), 0);
	core_session_close(a);
}

static void test_leadership_lost(void **state)
{
	struct fixture *fx = *state;
	struct core_session *a;
	struct core_stmt *st;
	struct result r = {0, 0};
	assert_int_equal(core_session_open(fx->e, "postgres", &a), 0);
	assert_int_equal(exec(&fx->repl, a, "CREATE TABLE t (x)"), CORE_DONE);
	assert_int_equal(core_session_prepare(a, "INSERT INTO t VALUES (1)", -1, NULL, &st), 0);
	assert_int_equal(core_stmt_step(st, step_cb, &r), CORE_PENDING);
	fake_repl_lose_leadership(&fx->repl);
	core_engine_set_leader(fx->e, false, false);
	assert_int_equal(r.rc, ERR_LEADERSHIP_LOST);
	core_stmt_finalize(st);
	/* Not the leader: nothing runs, nothing is proposed. */
	assert_int_equal(exec(&fx->repl, a, "INSERT INTO t VALUES (2)"), ERR_NOTLEADER);

	/* Leader again (the lost entry was never committed): the database is usable and
	 * does not contain the lost row. */
	fx->repl.leader = true;
	core_engine_set_leader(fx->e, true, true);
	assert_int_equal(query_int(a, "SELECT count(*) FROM t"), 0);
	assert_int_equal(exec(&fx->repl, a, "INSERT INTO t VALUES (3)"), CORE_DONE);
	assert_int_equal(query_int(a, "SELECT count(*) FROM t"), 1);
	core_session_close(a);
}

static void done_cb(void *arg, int status);

/* A transaction open when the node steps down is rolled back at once: it cannot commit
 * any more, and its write lock would block the new leader's entries. ROLLBACK stays
 * allowed on any node. */
static void test_rollback_after_stepdown(void **state)
{
	struct fixture *fx = *state;
	struct core_session *a, *b;
	assert_int_equal(core_session_open(fx->e, "postgres", &a), 0);
	assert_int_equal(core_session_open(fx->e, "postgres", &b), 0);
	assert_int_equal(exec(&fx->repl, a, "CREATE TABLE t (x)"), CORE_DONE);
	assert_int_equal(exec(&fx->repl, a, "BEGIN"), CORE_DONE);
	assert_int_equal(exec(&fx->repl, a, "INSERT INTO t VALUES (1)"), CORE_DONE);
	assert_true(core_session_in_txn(a));
	fx->repl.leader = false;
	core_engine_set_leader(fx->e, false, false);
	assert_false(core_session_in_txn(a));
	assert_int_equal(exec(&fx->repl, a, "COMMIT"), ERR_NOTLEADER);
	assert_int_equal(exec(&fx->repl, a, "SELECT 1"), ERR_NOTLEADER);
	/* ROLLBACK reaches SQLite on any node (here: no transaction left, SQLite's error). */
	assert_int_equal(exec(&fx->repl, a, "  rollback"), ERR_SQL);
	/* The writer slot went with the transaction: another session can write. */
	fx->repl.leader = true;
	core_engine_set_leader(fx->e, true, true);
	assert_int_equal(exec(&fx->repl, b, "INSERT INTO t VALUES (2)"), CORE_DONE);
	assert_int_equal(query_int(b, "SELECT count(*) FROM t"), 1);
	core_session_close(a);
	core_session_close(b);
}

/* An autocommit INSERT ... RETURNING commits when it is finalized if its rows were not all
 * read (a client that went away): that commit was never replicated and must not survive. */
static void test_abandoned_statement_rolled_back(void **state)
{
	struct fixture *fx = *state;
	struct core_session *a, *b;
	struct core_stmt *st;
	struct result r = {0, 0};
	assert_int_equal(core_session_open(fx->e, "postgres", &a), 0);
	assert_int_equal(core_session_open(fx->e, "postgres", &b), 0);
	assert_int_equal(exec(&fx->repl, a, "CREATE TABLE t (x)"), CORE_DONE);
	assert_int_equal(core_session_prepare(a,
		"WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 100) "
		"INSERT INTO t SELECT i FROM c RETURNING x", -1, NULL, &st), 0);
	assert_int_equal(core_stmt_step(st, step_cb, &r), CORE_ROW);
	core_stmt_finalize(st); /* abandoned after one row */
	assert_int_equal(fx->repl.n, 0); /* nothing was proposed */
	assert_int_equal(query_int(b, "SELECT count(*) FROM t"), 0);
	assert_int_equal(follower_count(fx, "t"), 0);
	/* The database is still writable by anyone. */
	assert_int_equal(exec(&fx->repl, b, "INSERT INTO t VALUES (7)"), CORE_DONE);
	assert_int_equal(query_int(a, "SELECT count(*) FROM t"), 1);
	assert_int_equal(follower_count(fx, "t"), 1);
	core_session_close(a);
	core_session_close(b);
}

/* Once a DROP DATABASE is proposed, nobody may start on that database: a write proposed
 * after the DROP would land on nothing. */
static void test_no_sessions_while_drop_in_flight(void **state)
{
	struct fixture *fx = *state;
	struct core_session *s;
	int status = -1;
	assert_int_equal(core_database_create(fx->e, "gone", done_cb, &status), CORE_PENDING);
	fake_repl_run(&fx->repl);
	assert_int_equal(status, 0);
	assert_int_equal(core_database_drop(fx->e, "gone", done_cb, &status), CORE_PENDING);
	assert_int_equal(core_session_open(fx->e, "gone", &s), ERR_NOTFOUND);
	assert_int_equal(core_database_drop(fx->e, "gone", done_cb, &status), ERR_INUSE);
	fake_repl_run(&fx->repl);
	assert_int_equal(status, 0);
	assert_false(core_database_exists(fx->e, "gone"));
}

/* BEGIN IMMEDIATE takes the write lock although SQLite calls it read-only: it must queue
 * for the writer slot like any writer. */
static void test_begin_immediate_queues(void **state)
{
	struct fixture *fx = *state;
	struct core_session *a, *b;
	struct core_stmt *sb;
	struct result rb = {0, 0};
	assert_int_equal(core_session_open(fx->e, "postgres", &a), 0);
	assert_int_equal(core_session_open(fx->e, "postgres", &b), 0);
	assert_int_equal(exec(&fx->repl, a, "CREATE TABLE t (x)"), CORE_DONE);
	assert_int_equal(exec(&fx->repl, a, "BEGIN IMMEDIATE"), CORE_DONE);
	assert_int_equal(core_session_prepare(b, "begin  exclusive", -1, NULL, &sb), 0);
	assert_int_equal(core_stmt_step(sb, step_cb, &rb), CORE_PENDING);
	assert_int_equal(exec(&fx->repl, a, "INSERT INTO t VALUES (1)"), CORE_DONE);
	assert_int_equal(exec(&fx->repl, a, "COMMIT"), CORE_DONE);
	assert_int_equal(rb.calls, 1);
	assert_int_equal(rb.rc, CORE_DONE);
	core_stmt_finalize(sb);
	assert_true(core_session_in_txn(b));
	assert_int_equal(exec(&fx->repl, b, "INSERT INTO t VALUES (2)"), CORE_DONE);
	assert_int_equal(exec(&fx->repl, b, "COMMIT"), CORE_DONE);
	assert_int_equal(query_int(a, "SELECT count(*) FROM t"), 2);
	core_session_close(a);
	core_session_close(b);
}

/* A transaction idle while holding the writer slot is rolled back after the timeout, so
 * writers queued behind it proceed; a lone idle reader transaction is left alone. */
static void test_idle_in_transaction(void **state)
{
	struct fixture *fx = *state;
	struct core_session *a, *b, *c;
	struct core_stmt *sb;
	struct result rb = {0, 0};
	core_engine_tick(fx->e, 1000);
	assert_int_equal(core_session_open(fx->e, "postgres", &a), 0);
	assert_int_equal(core_session_open(fx->e, "postgres", &b), 0);
	assert_int_equal(core_session_open(fx->e, "postgres", &c), 0);
	assert_int_equal(exec(&fx->repl, a, "CREATE TABLE t (x)"), CORE_DONE);
	assert_int_equal(exec(&fx->repl, c, "BEGIN"), CORE_DONE);
	assert_int_equal(query_int(c, "SELECT count(*) FROM t"), 0); /* reader, no slot */
	assert_int_equal(exec(&fx->repl, a, "BEGIN"), CORE_DONE);
	assert_int_equal(exec(&fx->repl, a, "INSERT INTO t VALUES (1)"), CORE_DONE);
	assert_int_equal(core_session_prepare(b, "INSERT INTO t VALUES (2)", -1, NULL, &sb), 0);
	assert_int_equal(core_stmt_step(sb, step_cb, &rb), CORE_PENDING);
	core_engine_tick(fx->e, 1000 + 9000);
	assert_true(core_session_in_txn(a));
	assert_int_equal(rb.calls, 0);
	core_engine_tick(fx->e, 1000 + 60000); /* a idle for 60 s with the slot */
	assert_false(core_session_in_txn(a));
	assert_int_equal(core_session_error(a)->code, ERR_TIMEOUT);
	/* b got the slot and proposed; a's row is gone. */
	fake_repl_run(&fx->repl);
	assert_int_equal(rb.calls, 1);
	assert_int_equal(rb.rc, CORE_DONE);
	core_stmt_finalize(sb);
	assert_int_equal(query_int(a, "SELECT count(*) FROM t"), 1);
	assert_true(core_session_in_txn(c)); /* the reader's transaction is untouched */
	core_session_close(a);
	core_session_close(b);
	core_session_close(c);
}

struct order {
	int seen[8];
	int n;
};

struct tagged {
	struct order *o;
	int tag;
	int rc;
};

static void order_cb(struct core_stmt *st, int rc, void *arg)
{
	struct tagged *t = arg;
	t->rc = rc;
	t->o->seen[t->o->n++] = t->tag;
}

/* Linearizable reads wait for a barrier issued after they arrived; readers that arrive
 * together share one; one arriving while a barrier is in flight waits for the next. */
static void test_linearizable_reads(void **state)
{
	struct fixture *fx = *state;
	struct core_session *a, *b, *c;
	struct core_stmt *sa, *sb, *sc;
	struct order o = {{0}, 0};
	struct tagged ta = {&o, 1, 0}, tb = {&o, 2, 0}, tc = {&o, 3, 0};
	assert_int_equal(core_session_open(fx->e, "postgres", &a), 0);
	assert_int_equal(core_session_open(fx->e, "postgres", &b), 0);
	assert_int_equal(core_session_open(fx->e, "postgres", &c), 0);
	core_session_set_read_mode(a, CORE_READ_LINEARIZABLE);
	core_session_set_read_mode(b, CORE_READ_LINEARIZABLE);
	core_session_set_read_mode(c, CORE_READ_LINEARIZABLE);
	assert_int_equal(core_session_read_mode(c), CORE_READ_LINEARIZABLE);
	assert_int_equal(core_session_prepare(a, "SELECT 1", -1, NULL, &sa), 0);
	assert_int_equal(core_session_prepare(b, "SELECT 2", -1, NULL, &sb), 0);
	assert_int_equal(core_session_prepare(c, "SELECT 3", -1, NULL, &sc), 0);
	fx->repl.n_barriers = 0;
	/* a arrives: a barrier is issued. */
	assert_int_equal(core_stmt_step(sa, order_cb, &ta), CORE_PENDING);
	assert_int_equal(fx->repl.n_barriers, 1);
	/* b and c arrive while it is in flight: it was issued before them, so they wait for
	 * the next one, which they share. */
	assert_int_equal(core_stmt_step(sb, order_cb, &tb), CORE_PENDING);
	assert_int_equal(core_stmt_step(sc, order_cb, &tc), CORE_PENDING);
	assert_int_equal(fx->repl.n_barriers, 1);
	fake_repl_run(&fx->repl);
	assert_int_equal(fx->repl.n_barriers, 2);
	assert_int_equal(o.n, 3);
	assert_int_equal(o.seen[0], 1);
	assert_int_equal(ta.rc, CORE_ROW);
	assert_int_equal(tb.rc, CORE_ROW);
	assert_int_equal(tc.rc, CORE_ROW);
	assert_int_equal(sqlite3_column_int(core_stmt_sqlite(sc), 0), 3);
	core_stmt_finalize(sa);
	core_stmt_finalize(sb);
	core_stmt_finalize(sc);
	/* Writes are not delayed by barriers: their commit is a quorum round already. */
	fx->repl.n_barriers = 0;
	assert_int_equal(exec(&fx->repl, a, "CREATE TABLE t (x)"), CORE_DONE);
	assert_int_equal(fx->repl.n_barriers, 0);
	/* Losing leadership while a read waits: it fails, nothing ran, retryable. */
	assert_int_equal(core_session_prepare(a, "SELECT count(*) FROM t", -1, NULL, &sa), 0);
	o.n = 0;
	assert_int_equal(core_stmt_step(sa, order_cb, &ta), CORE_PENDING);
	fake_repl_lose_leadership(&fx->repl);
	assert_int_equal(o.n, 1);
	assert_int_equal(ta.rc, ERR_NOTLEADER);
	core_stmt_finalize(sa);
	/* Not the leader at all: refused at once. */
	core_engine_set_leader(fx->e, false, false);
	assert_int_equal(exec(&fx->repl, a, "SELECT 1"), ERR_NOTLEADER);
	core_session_close(a);
	core_session_close(b);
	core_session_close(c);
}

/* Callbacks finalize their statement on error, as pgwire does. */
static void finalize_cb(struct core_stmt *st, int rc, void *arg)
{
	int *out = arg;
	*out = rc;
	if (rc != CORE_ROW && rc != CORE_DONE)
		core_stmt_finalize(st);
}

/* Linearizable reads whose barrier never comes time out, and the timeout survives the
 * callbacks freeing the statements (several expire in one tick). */
static void test_linearizable_timeout(void **state)
{
	struct fixture *fx = *state;
	struct core_session *ss[4];
	struct core_stmt *st;
	int rcs[4] = {-1, -1, -1, -1}, i;
	core_engine_tick(fx->e, 1000);
	for (i = 0; i < 4; i++) {
		assert_int_equal(core_session_open(fx->e, "postgres", &ss[i]), 0);
		core_session_set_read_mode(ss[i], CORE_READ_LINEARIZABLE);
		assert_int_equal(core_session_prepare(ss[i], "SELECT 1", -1, NULL, &st), 0);
		assert_int_equal(core_stmt_step(st, finalize_cb, &rcs[i]), CORE_PENDING);
	}
	core_engine_tick(fx->e, 1000 + 10000); /* the barrier never completed */
	for (i = 0; i < 4; i++)
		assert_int_equal(rcs[i], ERR_TIMEOUT);
	fake_repl_run(&fx->repl); /* the late barrier completes with nobody waiting */
	for (i = 0; i < 4; i++)
		assert_int_equal(rcs[i], ERR_TIMEOUT);
	for (i = 0; i < 4; i++)
		core_session_close(ss[i]);
}

struct closer {
	struct core_session *victim;
	int rc;
};

static void close_other_cb(struct core_stmt *st, int rc, void *arg)
{
	struct closer *c = arg;
	c->rc = rc;
	if (c->victim != NULL) {
		core_session_close(c->victim); /* abandons its pending read */
		c->victim = NULL;
	}
}

/* A callback run while a barrier group finishes may close another session of the same
 * group: its statement must simply vanish. */
static void test_barrier_group_reentrancy(void **state)
{
	struct fixture *fx = *state;
	struct core_session *a, *b, *c;
	struct core_stmt *sa, *sb, *sc;
	struct closer cb_b = {NULL, -1};
	int ra = -1, rc_c = -1;
	assert_int_equal(core_session_open(fx->e, "postgres", &a), 0);
	assert_int_equal(core_session_open(fx->e, "postgres", &b), 0);
	assert_int_equal(core_session_open(fx->e, "postgres", &c), 0);
	core_session_set_read_mode(a, CORE_READ_LINEARIZABLE);
	core_session_set_read_mode(b, CORE_READ_LINEARIZABLE);
	core_session_set_read_mode(c, CORE_READ_LINEARIZABLE);
	assert_int_equal(core_session_prepare(a, "SELECT 1", -1, NULL, &sa), 0);
	assert_int_equal(core_session_prepare(b, "SELECT 2", -1, NULL, &sb), 0);
	assert_int_equal(core_session_prepare(c, "SELECT 3", -1, NULL, &sc), 0);
	assert_int_equal(core_stmt_step(sa, finalize_cb, &ra), CORE_PENDING);
	cb_b.victim = c;
	assert_int_equal(core_stmt_step(sb, close_other_cb, &cb_b), CORE_PENDING);
	assert_int_equal(core_stmt_step(sc, finalize_cb, &rc_c), CORE_PENDING);
	fake_repl_run(&fx->repl);
	assert_int_equal(ra, CORE_ROW);
	assert_int_equal(cb_b.rc, CORE_ROW);
	assert_int_equal(rc_c, -1); /* closed before its turn: never called */
	core_stmt_finalize(sa);
	core_stmt_finalize(sb);
	core_session_close(a);
	core_session_close(b);
}

/* PRAGMA optimize writes (ANALYZE) though SQLite calls it read-only: denied. */
static void test_optimize_denied(void **state)
{
	struct fixture *fx = *state;
	struct core_session *a;
	struct core_stmt *st;
	assert_int_equal(core_session_open(fx->e, "postgres", &a), 0);
	assert_int_equal(core_session_prepare(a, "PRAGMA optimize", -1, NULL, &st), ERR_SQL);
	assert_int_equal(core_session_error(a)->sqlite_code & 0xff, SQLITE_AUTH);
	core_session_close(a);
}

/* Idle means waiting for the client: a transaction whose statement is still alive (its
 * rows not all read) is not timed out. */
static void test_idle_timeout_spares_live_statements(void **state)
{
	struct fixture *fx = *state;
	struct core_session *a;
	struct core_stmt *st;
	struct result r = {0, 0};
	core_engine_tick(fx->e, 1000);
	assert_int_equal(core_session_open(fx->e, "postgres", &a), 0);
	assert_int_equal(exec(&fx->repl, a, "CREATE TABLE t (x)"), CORE_DONE);
	assert_int_equal(exec(&fx->repl, a, "BEGIN"), CORE_DONE);
	assert_int_equal(exec(&fx->repl, a, "INSERT INTO t VALUES (1), (2)"), CORE_DONE);
	assert_int_equal(core_session_prepare(a, "SELECT x FROM t", -1, NULL, &st), 0);
	assert_int_equal(core_stmt_step(st, step_cb, &r), CORE_ROW);
	core_engine_tick(fx->e, 1000 + 120000);
	assert_true(core_session_in_txn(a));
	core_stmt_finalize(st);
	core_engine_tick(fx->e, 1000 + 240000);
	assert_false(core_session_in_txn(a));
	core_session_close(a);
}

/* Stale reads run on the local copy of any node; writes still need the leader. */
static void test_stale_reads_anywhere(void **state)
{
	struct fixture *fx = *state;
	struct core_session *a;
	assert_int_equal(core_session_open(fx->e, "postgres", &a), 0);
	assert_int_equal(exec(&fx->repl, a, "CREATE TABLE t (x)"), CORE_DONE);
	assert_int_equal(exec(&fx->repl, a, "INSERT INTO t VALUES (1)"), CORE_DONE);
	fx->repl.leader = false;
	core_engine_set_leader(fx->e, false, false);
	assert_int_equal(exec(&fx->repl, a, "SELECT count(*) FROM t"), ERR_NOTLEADER);
	core_session_set_read_mode(a, CORE_READ_STALE);
	assert_int_equal(query_int(a, "SELECT count(*) FROM t"), 1);
	assert_int_equal(exec(&fx->repl, a, "INSERT INTO t VALUES (2)"), ERR_NOTLEADER);
	assert_int_equal(exec(&fx->repl, a, "BEGIN IMMEDIATE"), ERR_NOTLEADER);
	core_session_close(a);
}

static void test_wait_for_ready(void **state)
{
	struct fixture *fx = *state;
	struct core_session *a;
	struct core_stmt *st;
	struct result r = {0, 0};
	core_engine_set_leader(fx->e, true, false);
	assert_int_equal(core_session_open(fx->e, "postgres", &a), 0);
	assert_int_equal(core_session_prepare(a, "SELECT 42", -1, NULL, &st), 0);
	assert_int_equal(core_stmt_step(st, step_cb, &r), CORE_PENDING);
	core_engine_set_leader(fx->e, true, true);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.rc, CORE_ROW);
	assert_int_equal(sqlite3_column_int(core_stmt_sqlite(st), 0), 42);
	core_stmt_finalize(st);
	core_session_close(a);
}

static void done_cb(void *arg, int status)
{
	*(int *)arg = status;
}

static void test_databases(void **state)
{
	struct fixture *fx = *state;
	struct core_session *s;
	int status = -1;
	assert_true(core_database_exists(fx->e, "postgres"));
	assert_false(core_database_exists(fx->e, "app"));
	assert_int_equal(core_session_open(fx->e, "app", &s), ERR_NOTFOUND);
	assert_int_equal(core_database_create(fx->e, "app", done_cb, &status), CORE_PENDING);
	fake_repl_run(&fx->repl);
	assert_int_equal(status, 0);
	assert_true(core_database_exists(fx->e, "app"));
	assert_true(core_database_exists(fx->e2, "app"));
	assert_int_equal(core_database_create(fx->e, "app", done_cb, &status), ERR_EXISTS);
	assert_int_equal(core_session_open(fx->e, "app", &s), 0);
	assert_int_equal(exec(&fx->repl, s, "CREATE TABLE t (x)"), CORE_DONE);
	/* Dropping a database in use waits for its sessions, then gives up. */
	core_engine_tick(fx->e, 100);
	status = -1;
	assert_int_equal(core_database_drop(fx->e, "app", done_cb, &status), CORE_PENDING);
	assert_int_equal(core_database_drop(fx->e, "app", done_cb, &status), ERR_INUSE);
	core_engine_tick(fx->e, 4000);
	assert_int_equal(status, -1);
	core_engine_tick(fx->e, 5200);
	assert_int_equal(status, ERR_INUSE);
	assert_true(core_database_exists(fx->e, "app"));
	/* ... and proceeds as soon as the last session closes. */
	status = -1;
	assert_int_equal(core_database_drop(fx->e, "app", done_cb, &status), CORE_PENDING);
	core_session_close(s);
	fake_repl_run(&fx->repl);
	assert_int_equal(status, 0);
	assert_false(core_database_exists(fx->e, "app"));
	assert_false(core_database_exists(fx->e2, "app"));
	/* Re-created empty. */
	assert_int_equal(core_database_create(fx->e, "app", done_cb, &status), CORE_PENDING);
	fake_repl_run(&fx->repl);
	assert_int_equal(core_session_open(fx->e, "app", &s), 0);
	assert_int_equal(query_int(s, "SELECT count(*) FROM sqlite_master"), 0);
	core_session_close(s);
}

static void test_snapshot_restore(void **state)
{
	struct fixture *fx = *state;
	struct core_session *s;
	void *buf;
	size_t len;
	int i;
	assert_int_equal(core_session_open(fx->e, "postgres", &s), 0);
	assert_int_equal(exec(&fx->repl, s, "CREATE TABLE t (x)"), CORE_DONE);
	for (i = 0; i < 120; i++) /* crosses the checkpoint threshold of 50 frames */
		assert_int_equal(exec(&fx->repl, s, "INSERT INTO t VALUES (randomblob(2000))"),
				 CORE_DONE);
	assert_int_equal(core_fsm_snapshot(fx->e, &buf, &len), 0);
	/* Corrupt snapshots are refused and leave the state alone. */
	assert_int_equal(core_fsm_restore(fx->e2, buf, len / 2), ERR_CORRUPT);
	assert_int_equal(core_fsm_restore(fx->e2, buf, 7), ERR_CORRUPT);
	assert_int_equal(follower_count(fx, "t"), 120);
	/* Sessions open on a follower (stale reads) do not stop a restore: an idle one
	 * moves to the restored image, one inside a transaction ends with ERR_SHUTDOWN. */
	{
		struct core_session *idle, *busy;
		assert_int_equal(core_session_open(fx->e2, "postgres", &idle), 0);
		assert_int_equal(core_session_open(fx->e2, "postgres", &busy), 0);
		core_session_set_read_mode(idle, CORE_READ_STALE);
		core_session_set_read_mode(busy, CORE_READ_STALE);
		assert_int_equal(query_int(idle, "SELECT count(*) FROM t"), 120);
		assert_int_equal(exec(&fx->repl, busy, "BEGIN"), CORE_DONE);
		assert_int_equal(query_int(busy, "SELECT count(*) FROM t"), 120);
		assert_true(core_session_in_txn(busy));
		assert_int_equal(core_fsm_restore(fx->e2, buf, len), 0);
		assert_int_equal(query_int(idle, "SELECT count(*) FROM t"), 120);
		assert_int_equal(exec(&fx->repl, busy, "SELECT count(*) FROM t"), ERR_SHUTDOWN);
		assert_int_equal(core_session_error(busy)->code, ERR_SHUTDOWN);
		core_session_close(busy);
		core_session_close(idle);
	}
	free(buf);
	assert_int_equal(follower_count(fx, "t"), 120);
	assert_int_equal(exec(&fx->repl, s, "DELETE FROM t WHERE rowid % 2 = 0"), CORE_DONE);
	assert_int_equal(follower_count(fx, "t"), 60);
	core_session_close(s);
}

/* pqlite_cluster and the cluster functions, with a replicator that reports two members
 * and answers changes with a scripted result. */
static int change_rv;
static enum core_change_op change_op;
static uint64_t change_id;

static unsigned two_members(struct core_replication *r, struct core_member *out, unsigned max)
{
	static const struct core_member m[2] = {
		{7, "127.0.0.1:7433", "127.0.0.1:5433", CORE_ROLE_VOTER, true, 42, 0},
		{9, "127.0.0.1:7434", "127.0.0.1:5434", CORE_ROLE_SPARE, false, -1, -1},
	};
	unsigned i;
	for (i = 0; i < 2 && i < max; i++)
		out[i] = m[i];
	return 2;
}

static int scripted_change(struct core_replication *r, enum core_change_op op, uint64_t id,
			   const char *raft, const char *pg, enum core_role *role,
			   uint64_t *id_out, char errmsg[256])
{
	change_op = op;
	change_id = id;
	if (change_rv != 0) {
		snprintf(errmsg, 256, "scripted failure");
		return change_rv;
	}
	*role = CORE_ROLE_SPARE;
	*id_out = id != 0 ? id : 9;
	return 0;
}

static void test_cluster_sql(void **state)
{
	struct fixture *fx = *state;
	struct core_session *s;
	struct core_stmt *st;
	struct result r = {0, 0};
	sqlite3_stmt *ss;

	fx->repl.r.members = two_members;
	fx->repl.r.change = scripted_change;
	assert_int_equal(core_session_open(fx->e, "postgres", &s), 0);
	assert_int_equal(query_int(s, "SELECT count(*) FROM pqlite_cluster"), 2);
	assert_int_equal(query_int(s, "SELECT id FROM pqlite_cluster WHERE is_leader"), 7);
	assert_int_equal(query_int(s, "SELECT count(*) FROM pqlite_cluster WHERE lag IS NULL "
				      "AND applied_index IS NULL AND role = 'spare'"), 1);
	assert_int_equal(core_session_prepare(s, "SELECT pg_address FROM pqlite_cluster "
						 "ORDER BY id DESC", -1, NULL, &st), 0);
	assert_int_equal(core_stmt_step(st, step_cb, &r), CORE_ROW);
	ss = core_stmt_sqlite(st);
	assert_string_equal((const char *)sqlite3_column_text(ss, 0), "127.0.0.1:5434");
	core_stmt_finalize(st);
	/* Read-only: no writes to the relation. */
	assert_int_equal(exec(&fx->repl, s, "DELETE FROM pqlite_cluster"), ERR_SQL);

	change_rv = 0;
	assert_int_equal(query_int(s, "SELECT pqlite_transfer()"), 9);
	assert_int_equal(change_op, CORE_CHANGE_TRANSFER);
	assert_int_equal(query_int(s, "SELECT pqlite_remove(9)"), 9);
	assert_int_equal(change_op, CORE_CHANGE_REMOVE);
	assert_int_equal(change_id, 9);
	assert_int_equal(exec(&fx->repl, s, "SELECT pqlite_join(11, '127.0.0.1:1', "
					   "'127.0.0.1:2')"), CORE_DONE);
	assert_int_equal(change_op, CORE_CHANGE_JOIN);

	/* Errors carry their SQLSTATE; a later plain SQL error does not inherit it. */
	change_rv = ERR_BUSY;
	assert_int_equal(exec(&fx->repl, s, "SELECT pqlite_remove(9)"), ERR_SQL);
	assert_string_equal(core_session_error(s)->sqlstate, "55006");
	assert_string_equal(core_session_error(s)->msg, "scripted failure");
	change_rv = ERR_NOTLEADER;
	assert_int_equal(exec(&fx->repl, s, "SELECT pqlite_transfer(7)"), ERR_SQL);
	assert_string_equal(core_session_error(s)->sqlstate, "25006");
	assert_int_equal(exec(&fx->repl, s, "SELECT pqlite_remove(0)"), ERR_SQL);
	assert_string_equal(core_session_error(s)->sqlstate, "22023");
	assert_int_equal(exec(&fx->repl, s, "SELECT pqlite_join(1, 'no|pipes', '1.2.3.4:5')"),
			 ERR_SQL);
	assert_string_equal(core_session_error(s)->sqlstate, "22023");
	assert_int_equal(exec(&fx->repl, s, "SELECT nosuchfunction()"), ERR_SQL);
	assert_string_equal(core_session_error(s)->sqlstate, "");
	assert_int_equal(exec(&fx->repl, s, "SELECT 1/0 + abs(-9223372036854775807 - 1)"),
			 ERR_SQL);
	assert_string_equal(core_session_error(s)->sqlstate, "");
	change_rv = 0;
	core_session_close(s);
}

/* A session that opened and began writing before the server's first tick must not count
 * as idle since the epoch of the monotonic clock (rolled back at once: seen in CI when a
 * client was faster than the first 50 ms tick). */
static void test_idle_clock_starts_at_first_tick(void **state)
{
	struct fixture *fx = *state;
	struct core_session *s;

	assert_int_equal(core_session_open(fx->e, "postgres", &s), 0);
	assert_int_equal(exec(&fx->repl, s, "CREATE TABLE t (x)"), CORE_DONE);
	assert_int_equal(exec(&fx->repl, s, "BEGIN"), CORE_DONE);
	assert_int_equal(exec(&fx->repl, s, "INSERT INTO t VALUES (1)"), CORE_DONE);
	core_engine_tick(fx->e, 4000000000ull); /* a monotonic clock days after boot */
	assert_true(core_session_in_txn(s));
	core_engine_tick(fx->e, 4000000000ull + 59000);
	assert_true(core_session_in_txn(s));
	core_engine_tick(fx->e, 4000000000ull + 61000);
	assert_false(core_session_in_txn(s)); /* now it really sat idle 60 s */
	core_session_close(s);
}

static void test_guard_rails(void **state)
{
	struct fixture *fx = *state;
	struct core_session *s;
	struct core_stmt *st;
	const char *denied[] = {"PRAGMA journal_mode=DELETE", "PRAGMA wal_checkpoint(TRUNCATE)",
				"PRAGMA busy_timeout=1000", "PRAGMA page_size=1024",
				"ATTACH '/tmp/x.db' AS x", "PRAGMA locking_mode=EXCLUSIVE"};
	size_t i;
	assert_int_equal(core_session_open(fx->e, "postgres", &s), 0);
	for (i = 0; i < sizeof denied / sizeof denied[0]; i++) {
		assert_int_equal(core_session_prepare(s, denied[i], -1, NULL, &st), ERR_SQL);
		assert_int_equal(core_session_error(s)->sqlite_code & 0xff, SQLITE_AUTH);
	}
	assert_int_equal(query_int(s, "PRAGMA page_size"), 4096);
	core_session_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_write_and_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hidden_until_applied, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writer_queue, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writer_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_leadership_lost, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rollback_after_stepdown, setup, teardown),
		cmocka_unit_test_setup_teardown(test_abandoned_statement_rolled_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_sessions_while_drop_in_flight, setup, teardown),
		cmocka_unit_test_setup_teardown(test_begin_immediate_queues, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle_in_transaction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_linearizable_reads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stale_reads_anywhere, setup, teardown),
		cmocka_unit_test_setup_teardown(test_linearizable_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_barrier_group_reentrancy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_optimize_denied, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle_timeout_spares_live_statements, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wait_for_ready, setup, teardown),
		cmocka_unit_test_setup_teardown(test_databases, setup, teardown),
		cmocka_unit_test_setup_teardown(test_snapshot_restore, setup, teardown),
		cmocka_unit_test_setup_teardown(test_guard_rails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cluster_sql, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle_clock_starts_at_first_tick, setup,
						teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

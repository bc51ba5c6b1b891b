/* Unit tests of the in-memory replicating VFS (core/vfs.h). A "cluster" emulates the
 * engine's protocol on three VFS instances of one process: the leader A runs SQL and, after
 * every sqlite3_step, polls its frames, round-trips them through an encoded CMD_FRAMES
 * command and applies them to A (originator) and to the follower B (and C when it
 * follows). Databases are compared through a deterministic dump. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "../../core/command.h"
#include "../../core/vfs.h"
#include "../../lib/buf.h"
#include "../../lib/err.h"
#include "../lib/rng.h"

#define DB "db"
#define PAGE_SIZE 4096
#define OPEN_FLAGS (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_EXRESCODE)
#define BIG_ROW_MAX 20000
#define MIB (1024u * 1024u)

static uint64_t base_seed;
static bool trace; /* PQ_TEST_TRACE: print every leader statement and shipped transaction */
static unsigned vfs_serial; /* VFS names must be unique in the process */

/* ---- Values bound to statements --------------------------------------------------- */

enum { V_NULL = 1, V_INT, V_TEXT, V_BLOB };

struct val {
	int type;
	int64_t i;
	const void *p;
	int len;
};

static struct val vint(int64_t i)
{
	struct val v = {.type = V_INT, .i = i};
	return v;
}

static struct val vtext(const char *p, int len)
{
	struct val v = {.type = V_TEXT, .p = p, .len = len};
	return v;
}

static struct val vblob(const void *p, int len)
{
	struct val v = {.type = V_BLOB, .p = p, .len = len};
	return v;
}

static struct val vnull(void)
{
	struct val v = {.type = V_NULL};
	return v;
}

static void bind_vals(sqlite3_stmt *stmt, const struct val *v, int n_v)
{
	int i, n = sqlite3_bind_parameter_count(stmt), rv = SQLITE_OK;

	for (i = 0; i < n_v && i < n; i++) {
		switch (v[i].type) {
		case V_INT:
			rv = sqlite3_bind_int64(stmt, i + 1, v[i].i);
			break;
		case V_TEXT:
			rv = sqlite3_bind_text(stmt, i + 1, v[i].p, v[i].len, SQLITE_STATIC);
			break;
		case V_BLOB:
			rv = sqlite3_bind_blob(stmt, i + 1, v[i].p, v[i].len, SQLITE_STATIC);
			break;
		default:
			rv = sqlite3_bind_null(stmt, i + 1);
			break;
		}
		assert_int_equal(rv, SQLITE_OK);
	}
}

/* ---- Nodes and the cluster --------------------------------------------------------- */

struct node {
	struct core_vfs *vfs;
	char name[48];
};

struct cluster {
	struct node a, b, c;
	bool c_follows;   /* applies also go to C */
	sqlite3 *w;       /* the leader's writing connection, on A */
	sqlite3 *ra;      /* an otherwise idle connection on A: reads and checkpoints */
	sqlite3 *rb;      /* a connection on B */
	sqlite3 *rc;      /* a connection on C, when open */
	unsigned n_stmts; /* statements run on the leader */
	unsigned n_tx;    /* transactions replicated */
	uint64_t n_pages; /* pages replicated */
	uint64_t n_delta_pages; /* of which sent as deltas */
	uint64_t n_bytes; /* encoded entry bytes */
	unsigned n_ckpt[3];
	uint32_t last_pages; /* pages replicated during the last lexec() */
};

struct fixture {
	struct cluster cl;
	bool started;
};

static void node_create(struct node *n, const char *tag, uint64_t mem_cap)
{
	int rv;

	snprintf(n->name, sizeof n->name, "ut-%s-%u", tag, vfs_serial++);
	rv = core__vfs_create(n->name, mem_cap, &n->vfs);
	assert_int_equal(rv, 0);
	assert_non_null(n->vfs);
	assert_string_equal(core__vfs_name(n->vfs), n->name);
	assert_non_null(sqlite3_vfs_find(n->name));
}

static void node_destroy(struct node *n)
{
	if (n->vfs == NULL)
		return;
	core__vfs_destroy(n->vfs);
	n->vfs = NULL;
	assert_null(sqlite3_vfs_find(n->name));
}

static void conn_close(sqlite3 **conn)
{
	if (*conn == NULL)
		return;
	assert_int_equal(sqlite3_close(*conn), SQLITE_OK);
	*conn = NULL;
}

/* Run sql (any number of statements, no replication) and fail on error. */
static void must_exec(sqlite3 *conn, const char *sql)
{
	char *msg = NULL;
	int rv = sqlite3_exec(conn, sql, NULL, NULL, &msg);
	if (rv != SQLITE_OK)
		fail_msg("%s: %d %s", sql, rv, msg != NULL ? msg : "");
}

static int64_t query_int(sqlite3 *conn, const char *sql)
{
	sqlite3_stmt *stmt;
	int64_t out;
	int rv = sqlite3_prepare_v2(conn, sql, -1, &stmt, NULL);

	if (rv != SQLITE_OK)
		fail_msg("prepare %s: %s", sql, sqlite3_errmsg(conn));
	rv = sqlite3_step(stmt);
	if (rv != SQLITE_ROW)
		fail_msg("%s: step returned %d: %s", sql, rv, sqlite3_errmsg(conn));
	out = sqlite3_column_int64(stmt, 0);
	sqlite3_finalize(stmt);
	return out;
}

/* ---- Replication ------------------------------------------------------------------- */

static void expect_same_frames(const struct core_frames *x, const struct core_frames *y)
{
	uint32_t i;

	assert_int_equal(x->page_size, y->page_size);
	assert_int_equal(x->n, y->n);
	assert_int_equal(x->commit_size, y->commit_size);
	for (i = 0; i < x->n; i++) {
		assert_int_equal(x->pgnos[i], y->pgnos[i]);
		assert_memory_equal(x->pages[i], y->pages[i], x->page_size);
	}
}

static void apply_to(struct node *n, const struct core_frames *f, bool originator)
{
	uint32_t before = core__vfs_wal_frames(n->vfs, DB);
	int rv = core__vfs_apply(n->vfs, DB, f, originator);

	if (rv != 0)
		fail_msg("apply of %u pages to %s (originator %d): %s", f->n, n->name,
			 originator, err_str(rv));
	assert_int_equal(core__vfs_wal_frames(n->vfs, DB), before + f->n);
}

/* Encode the polled frames as a command, decode it and apply the decoded copy to every
 * node; then free the frames. */
struct base_ctx {
	struct core_vfs *vfs;
};

static const uint8_t *base_of(void *arg, uint32_t pgno)
{
	return core__vfs_base_page(((struct base_ctx *)arg)->vfs, DB, pgno);
}

/* Decode the entry again and rebuild its pages against node n's own committed state, as
 * every node does in core_fsm_apply; then apply. */
static void apply_entry(struct node *n, const uint8_t *buf, size_t len,
			const struct core_frames *f, bool originator)
{
	struct base_ctx bc = {n->vfs};
	struct command dec;
	int rv;
	/* As in the engine, the database exists on every node before its first entry
	 * (CREATE DATABASE, or "postgres" at start): the same page 1 everywhere. */
	rv = core__vfs_create_db(n->vfs, DB, PAGE_SIZE);
	assert_true(rv == 0 || rv == ERR_EXISTS);
	rv = cmd_decode(buf, len, &dec);
	if (rv != 0)
		fail_msg("node %s: decode of a %zu-byte entry: %s", n->name, len, err_str(rv));
	assert_int_equal(dec.type, CMD_FRAMES);
	assert_string_equal(dec.db, DB);
	if (cmd_materialize(&dec, base_of, &bc) != 0)
		fail_msg("node %s: delta base differs from the leader's", n->name);
	expect_same_frames(f, &dec.frames);
	apply_to(n, &dec.frames, originator);
	cmd_close(&dec);
}

static void ship(struct cluster *cl, struct core_frames *f)
{
	struct base_ctx bc = {cl->a.vfs};
	struct command cmd;
	uint8_t *buf;
	size_t len;
	uint32_t i;

	assert_int_equal(f->page_size, PAGE_SIZE);
	assert_true(f->commit_size >= 1);
	for (i = 0; i < f->n; i++)
		assert_true(f->pgnos[i] >= 1);

	memset(&cmd, 0, sizeof cmd);
	cmd.type = CMD_FRAMES;
	strcpy(cmd.db, DB);
	cmd.frames = *f;
	/* As the engine: small changes travel as deltas against A's committed pages. */
	assert_int_equal(cmd_set_base(&cmd, base_of, &bc), 0);
	len = cmd_sizeof(&cmd);
	assert_int_equal(len % 8, 0);
	buf = malloc(len);
	assert_non_null(buf);
	cmd_encode(&cmd, buf);
	cl->n_delta_pages += cmd.n_delta;
	cl->n_bytes += len;
	i = cmd.n_delta;
	cmd_close(&cmd);

	/* Every node rebuilds the pages against its own committed state. */
	apply_entry(&cl->b, buf, len, f, false);
	if (cl->c_follows)
		apply_entry(&cl->c, buf, len, f, false);
	apply_entry(&cl->a, buf, len, f, true);

	cl->n_tx++;
	cl->n_pages += f->n;
	if (trace)
		printf("    shipped %u pages (%u as deltas, %zu bytes), commit size %u, WAL A %u B %u\n",
		       f->n, i, len, f->commit_size, core__vfs_wal_frames(cl->a.vfs, DB),
		       core__vfs_wal_frames(cl->b.vfs, DB));
	free(buf);
	core__frames_close(f);
}

/* Poll A; ship a transaction if one just committed. Returns its number of pages. */
static uint32_t replicate(struct cluster *cl)
{
	struct core_frames f;
	uint32_t n;
	int rv;

	memset(&f, 0, sizeof f);
	rv = core__vfs_poll(cl->a.vfs, DB, &f);
	assert_int_equal(rv, 0);
	n = f.n;
	if (n > 0)
		ship(cl, &f);
	return n;
}

/* Run every statement of sql on a connection of the leader, stepping each to its end and
 * replicating after every step. v binds ?1.. of each statement. Returns SQLITE_OK or the
 * (extended) code of the failing prepare or step; cl->last_pages counts the pages shipped. */
static int lexec(struct cluster *cl, sqlite3 *conn, const char *sql, const struct val *v,
		 int n_v)
{
	const char *tail = sql;
	int rv = SQLITE_OK;

	cl->last_pages = 0;
	while (rv == SQLITE_OK && tail != NULL && *tail != '\0') {
		sqlite3_stmt *stmt = NULL;
		rv = sqlite3_prepare_v2(conn, tail, -1, &stmt, &tail);
		cl->last_pages += replicate(cl);
		if (rv != SQLITE_OK || stmt == NULL)
			break;
		bind_vals(stmt, v, n_v);
		cl->n_stmts++;
		if (trace)
			printf("    sql: %s\n", sqlite3_sql(stmt));
		do {
			rv = sqlite3_step(stmt);
			cl->last_pages += replicate(cl);
		} while (rv == SQLITE_ROW);
		sqlite3_finalize(stmt);
		if (rv == SQLITE_DONE)
			rv = SQLITE_OK;
	}
	return rv;
}

static void lx(struct cluster *cl, sqlite3 *conn, const char *sql, const struct val *v,
	       int n_v)
{
	int rv = lexec(cl, conn, sql, v, n_v);
	if (rv != SQLITE_OK)
		fail_msg("%.200s: %d %s", sql, rv, sqlite3_errmsg(conn));
}

/* Open and configure a connection on node n as the engine does. On the leader the
 * configuration statements go through lexec like any other. */
static sqlite3 *conn_open_db(struct cluster *cl, struct node *n, const char *db)
{
	/* As core/engine.c: no page_size pragma (the VFS fixes the page size and refuses the
	 * pragma), the rest run on every connection. */
	static const char *const pragmas[] = {
	    "PRAGMA journal_mode=WAL",
	    "PRAGMA synchronous=OFF",
	    "PRAGMA foreign_keys=ON",
	};
	sqlite3 *conn = NULL;
	size_t i;
	int rv = sqlite3_open_v2(db, &conn, OPEN_FLAGS, n->name);

	if (rv != SQLITE_OK)
		fail_msg("open %s on %s: %d %s", db, n->name, rv,
			 conn != NULL ? sqlite3_errmsg(conn) : "");
	for (i = 0; i < sizeof pragmas / sizeof pragmas[0]; i++) {
		if (n == &cl->a)
			lx(cl, conn, pragmas[i], NULL, 0);
		else
			must_exec(conn, pragmas[i]);
	}
	sqlite3_wal_autocheckpoint(conn, 0);
	sqlite3_db_config(conn, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
	sqlite3_db_config(conn, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
	assert_int_equal(query_int(conn, "PRAGMA page_size"), PAGE_SIZE);
	return conn;
}

static sqlite3 *conn_open(struct cluster *cl, struct node *n)
{
	return conn_open_db(cl, n, DB);
}

/* Open a possibly corrupt database: the same settings, errors ignored. */
static int conn_open_raw(struct node *n, const char *db, sqlite3 **conn)
{
	int rv = sqlite3_open_v2(db, conn, OPEN_FLAGS, n->name);
	if (rv != SQLITE_OK)
		return rv;
	sqlite3_db_config(*conn, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
	sqlite3_wal_autocheckpoint(*conn, 0);
	sqlite3_exec(*conn, "PRAGMA synchronous=OFF", NULL, NULL, NULL);
	sqlite3_exec(*conn, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
	return SQLITE_OK;
}

static void cluster_start(struct fixture *fx, uint64_t cap_a)
{
	struct cluster *cl = &fx->cl;

	memset(cl, 0, sizeof *cl);
	node_create(&cl->a, "a", cap_a);
	node_create(&cl->b, "b", 0);
	node_create(&cl->c, "c", 0);
	fx->started = true;
	cl->w = conn_open(cl, &cl->a);
	lx(cl, cl->w, "PRAGMA cache_size=10", NULL, 0);
	cl->ra = conn_open(cl, &cl->a);
}

static void cluster_stop(struct fixture *fx)
{
	struct cluster *cl = &fx->cl;

	if (!fx->started)
		return;
	conn_close(&cl->w);
	conn_close(&cl->ra);
	conn_close(&cl->rb);
	conn_close(&cl->rc);
	node_destroy(&cl->a);
	node_destroy(&cl->b);
	node_destroy(&cl->c);
	fx->started = false;
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof *fx);
	assert_non_null(fx);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	cluster_stop(fx);
	free(fx);
	return 0;
}

/* Checkpoint (TRUNCATE) the database of node n through conn if the VFS says it is idle.
 * Returns whether it ran. */
#define checkpoint(cl, n, conn) checkpoint_at(cl, n, conn, __LINE__)
static bool checkpoint_at(struct cluster *cl, struct node *n, sqlite3 *conn, int line)
{
	int log = -1, ckpt = -1, rv;

	if (!core__vfs_idle(n->vfs, DB))
		return false;
	rv = sqlite3_wal_checkpoint_v2(conn, "main", SQLITE_CHECKPOINT_TRUNCATE, &log, &ckpt);
	if (rv != SQLITE_OK)
		fail_msg("checkpoint on %s (line %d): %d %s", n->name, line, rv,
			 sqlite3_errmsg(conn));
	assert_int_equal(log, ckpt);
	assert_int_equal(core__vfs_wal_frames(n->vfs, DB), 0);
	assert_true(core__vfs_idle(n->vfs, DB));
	if (trace)
		printf("    checkpoint %s\n", n->name);
	cl->n_ckpt[n == &cl->a ? 0 : n == &cl->b ? 1 : 2]++;
	return true;
}

/* ---- Comparing databases ----------------------------------------------------------- */

static void put_row(struct buf *b, sqlite3_stmt *stmt)
{
	int i, n = sqlite3_column_count(stmt);

	buf_put_u8(b, 'R');
	buf_put_u32le(b, (uint32_t)n);
	for (i = 0; i < n; i++) {
		int type = sqlite3_column_type(stmt, i);
		buf_put_u8(b, (uint8_t)type);
		switch (type) {
		case SQLITE_INTEGER:
			buf_put_u64le(b, (uint64_t)sqlite3_column_int64(stmt, i));
			break;
		case SQLITE_FLOAT: {
			double d = sqlite3_column_double(stmt, i);
			uint64_t bits;
			memcpy(&bits, &d, sizeof bits);
			buf_put_u64le(b, bits);
			break;
		}
		case SQLITE_TEXT:
		case SQLITE_BLOB: {
			const void *p = type == SQLITE_TEXT
					    ? (const void *)sqlite3_column_text(stmt, i)
					    : sqlite3_column_blob(stmt, i);
			int len = sqlite3_column_bytes(stmt, i);
			buf_put_u32le(b, (uint32_t)len);
			buf_put(b, p, (size_t)len);
			break;
		}
		default:
			break;
		}
	}
}

/* A deterministic image of the logical content: the sqlite_master rows ordered by name,
 * then every table's rows ordered by rowid, with type tags. */
static void dump(sqlite3 *conn, struct buf *out)
{
	sqlite3_stmt *stmt;
	char **names = NULL;
	size_t n_names = 0, i;
	int rv;

	buf_reset(out);
	must_exec(conn, "BEGIN");
	rv = sqlite3_prepare_v2(conn,
				"SELECT type, name, tbl_name, rootpage, sql FROM sqlite_master "
				"ORDER BY name, type",
				-1, &stmt, NULL);
	if (rv != SQLITE_OK)
		fail_msg("dump: %d %s", rv, sqlite3_errmsg(conn));
	while ((rv = sqlite3_step(stmt)) == SQLITE_ROW) {
		put_row(out, stmt);
		if (strcmp((const char *)sqlite3_column_text(stmt, 0), "table") == 0) {
			names = realloc(names, sizeof *names * (n_names + 1));
			assert_non_null(names);
			names[n_names] = strdup((const char *)sqlite3_column_text(stmt, 1));
			assert_non_null(names[n_names]);
			n_names++;
		}
	}
	if (rv != SQLITE_DONE)
		fail_msg("dump: sqlite_master: %d %s", rv, sqlite3_errmsg(conn));
	sqlite3_finalize(stmt);
	for (i = 0; i < n_names; i++) {
		char *sql = sqlite3_mprintf("SELECT * FROM \"%w\" ORDER BY rowid", names[i]);
		assert_non_null(sql);
		buf_put_u8(out, 'T');
		buf_put(out, names[i], strlen(names[i]) + 1);
		rv = sqlite3_prepare_v2(conn, sql, -1, &stmt, NULL);
		if (rv != SQLITE_OK)
			fail_msg("dump: %s: %d %s", sql, rv, sqlite3_errmsg(conn));
		while ((rv = sqlite3_step(stmt)) == SQLITE_ROW)
			put_row(out, stmt);
		if (rv != SQLITE_DONE)
			fail_msg("dump: %s: %d %s", sql, rv, sqlite3_errmsg(conn));
		sqlite3_finalize(stmt);
		sqlite3_free(sql);
		free(names[i]);
	}
	free(names);
	must_exec(conn, "COMMIT");
	assert_false(out->failed);
}

static void expect_same(sqlite3 *x, const char *xn, sqlite3 *y, const char *yn)
{
	struct buf bx, by;
	size_t i, n;

	buf_init(&bx);
	buf_init(&by);
	dump(x, &bx);
	dump(y, &by);
	if (bx.len != by.len || memcmp(bx.data, by.data, bx.len) != 0) {
		n = bx.len < by.len ? bx.len : by.len;
		for (i = 0; i < n && bx.data[i] == by.data[i]; i++)
			;
		fail_msg("dumps differ: %s %zu bytes, %s %zu bytes, first difference at %zu", xn,
			 bx.len, yn, by.len, i);
	}
	buf_close(&bx);
	buf_close(&by);
}

static void expect_integrity(sqlite3 *conn, const char *who)
{
	sqlite3_stmt *stmt;
	int rv = sqlite3_prepare_v2(conn, "PRAGMA integrity_check", -1, &stmt, NULL);

	if (rv != SQLITE_OK)
		fail_msg("%s: integrity_check: %d %s", who, rv, sqlite3_errmsg(conn));
	rv = sqlite3_step(stmt);
	if (rv != SQLITE_ROW)
		fail_msg("%s: integrity_check: step %d %s", who, rv, sqlite3_errmsg(conn));
	if (strcmp((const char *)sqlite3_column_text(stmt, 0), "ok") != 0)
		fail_msg("%s: integrity_check: %s", who, sqlite3_column_text(stmt, 0));
	sqlite3_finalize(stmt);
}

/* ---- Snapshots --------------------------------------------------------------------- */

/* Snapshot `db` of from, restore it as `db` of to (no connection may be open there), and
 * check that the whole snapshot was consumed. */
static void copy_db(struct node *from, struct node *to)
{
	struct buf b;
	struct cursor c;
	int rv;

	buf_init(&b);
	rv = core__vfs_snapshot_db(from->vfs, DB, &b);
	assert_int_equal(rv, 0);
	assert_false(b.failed);
	assert_true(b.len > 0);
	c.p = b.data;
	c.len = b.len;
	rv = core__vfs_restore_db(to->vfs, DB, &c);
	if (rv != 0)
		fail_msg("restore from %s into %s: %s", from->name, to->name, err_str(rv));
	assert_int_equal(c.len, 0);
	buf_close(&b);
}

/* ---- Random workload --------------------------------------------------------------- */

#define MAX_TABLES 6

struct wl_table {
	unsigned id;
	int64_t hi; /* about the largest rowid inserted */
};

struct workload {
	struct rng rng;
	uint64_t seed;
	int auto_vacuum; /* 0 none, 1 full, 2 incremental */
	struct wl_table t[MAX_TABLES];
	unsigned n_tables, next_table;
	int64_t meta; /* expected meta.n: explicit transactions committed */
	bool shrink;  /* prefer deletes: the database is large */
	char *text;
	uint8_t *blob;
	unsigned n_commit, n_rollback, n_big, n_vacuum, n_undo;
};

static void workload_init(struct workload *wl, uint64_t seed)
{
	memset(wl, 0, sizeof *wl);
	wl->seed = seed;
	rng_init(&wl->rng, seed);
	wl->auto_vacuum = (int)rng_below(&wl->rng, 3);
	wl->text = malloc(BIG_ROW_MAX + 1);
	wl->blob = malloc(BIG_ROW_MAX + 1);
	assert_non_null(wl->text);
	assert_non_null(wl->blob);
}

static void workload_close(struct workload *wl)
{
	free(wl->text);
	free(wl->blob);
}

static struct val rand_text(struct workload *wl, bool large)
{
	uint32_t len = large ? rng_range(&wl->rng, 5000, BIG_ROW_MAX) : rng_below(&wl->rng, 100);
	rng_text(&wl->rng, wl->text, len);
	return vtext(wl->text, (int)len);
}

static struct val rand_blob(struct workload *wl, bool large)
{
	uint32_t len = large ? rng_range(&wl->rng, 5000, BIG_ROW_MAX) : rng_below(&wl->rng, 200);
	rng_fill(&wl->rng, wl->blob, len);
	return vblob(wl->blob, (int)len);
}

static struct wl_table *pick_table(struct workload *wl)
{
	return &wl->t[rng_below(&wl->rng, wl->n_tables)];
}

static int64_t pick_id(struct workload *wl, struct wl_table *t)
{
	return 1 + (int64_t)rng_below(&wl->rng, (uint32_t)(t->hi > 0 ? t->hi : 1));
}

static void op_insert_into(struct cluster *cl, struct workload *wl, struct wl_table *t,
			   bool large)
{
	bool big_s = large && rng_chance(&wl->rng, 50);
	struct val v[3];
	char sql[128];
	int64_t id;

	v[0] = vint((int64_t)rng_next(&wl->rng));
	v[1] = rand_text(wl, big_s);
	v[2] = rng_chance(&wl->rng, 10) ? vnull() : rand_blob(wl, large && !big_s);
	snprintf(sql, sizeof sql, "INSERT INTO t%u(k, s, b) VALUES(?1, ?2, ?3)", t->id);
	lx(cl, cl->w, sql, v, 3);
	id = sqlite3_last_insert_rowid(cl->w);
	if (id > t->hi)
		t->hi = id;
}

static void op_insert(struct cluster *cl, struct workload *wl, bool large)
{
	op_insert_into(cl, wl, pick_table(wl), large);
}

static void op_update(struct cluster *cl, struct workload *wl)
{
	struct wl_table *t = pick_table(wl);
	struct val v[2];
	char sql[128];

	switch (rng_below(&wl->rng, 3)) {
	case 0:
		snprintf(sql, sizeof sql,
			 "UPDATE t%u SET k = k + 1, s = ?2 WHERE id >= ?1 AND id < ?1 + 5", t->id);
		v[0] = vint(pick_id(wl, t));
		v[1] = rand_text(wl, rng_chance(&wl->rng, 20));
		break;
	case 1:
		snprintf(sql, sizeof sql, "UPDATE t%u SET b = ?2 WHERE id = ?1", t->id);
		v[0] = vint(pick_id(wl, t));
		v[1] = rand_blob(wl, rng_chance(&wl->rng, 40));
		break;
	default:
		snprintf(sql, sizeof sql, "UPDATE t%u SET k = k / 3 + ?2 WHERE k %% 5 = ?1",
			 t->id);
		v[0] = vint((int64_t)rng_below(&wl->rng, 9) - 4);
		v[1] = vint((int64_t)rng_below(&wl->rng, 1000));
		break;
	}
	lx(cl, cl->w, sql, v, 2);
}

static void op_delete(struct cluster *cl, struct workload *wl)
{
	struct wl_table *t = pick_table(wl);
	struct val v[2];
	char sql[128];

	if (rng_chance(&wl->rng, 10)) {
		snprintf(sql, sizeof sql, "DELETE FROM t%u WHERE k %% 11 = ?1", t->id);
		v[0] = vint((int64_t)rng_below(&wl->rng, 21) - 10);
		lx(cl, cl->w, sql, v, 1);
		return;
	}
	snprintf(sql, sizeof sql, "DELETE FROM t%u WHERE id >= ?1 AND id < ?1 + ?2", t->id);
	v[0] = vint(pick_id(wl, t));
	v[1] = vint(rng_range(&wl->rng, 1, wl->shrink ? 40 : 10));
	lx(cl, cl->w, sql, v, 2);
}

/* One random row-level statement (inside or outside an explicit transaction). */
static void op_dml(struct cluster *cl, struct workload *wl)
{
	uint32_t r = rng_below(&wl->rng, 100);

	if (wl->shrink && r < 40)
		op_delete(cl, wl);
	else if (r < 35)
		op_insert(cl, wl, false);
	else if (r < 55)
		op_insert(cl, wl, true);
	else if (r < 78)
		op_update(cl, wl);
	else
		op_delete(cl, wl);
}

static void op_create_table(struct cluster *cl, struct workload *wl, bool in_tx)
{
	unsigned id;
	char sql[256];
	int i, n_rows;

	if (wl->n_tables == MAX_TABLES)
		return;
	id = wl->next_table++;
	if (in_tx)
		lx(cl, cl->w, "BEGIN", NULL, 0);
	snprintf(sql, sizeof sql,
		 "CREATE TABLE t%u (id INTEGER PRIMARY KEY, k INTEGER, s TEXT, b BLOB);"
		 "CREATE INDEX t%u_k ON t%u(k)",
		 id, id, id);
	lx(cl, cl->w, sql, NULL, 0);
	if (rng_chance(&wl->rng, 50)) {
		snprintf(sql, sizeof sql, "CREATE INDEX t%u_s ON t%u(s)", id, id);
		lx(cl, cl->w, sql, NULL, 0);
	}
	wl->t[wl->n_tables].id = id;
	wl->t[wl->n_tables].hi = 0;
	wl->n_tables++;
	if (in_tx) {
		/* Fill the new table in the same transaction, then commit. */
		n_rows = (int)rng_range(&wl->rng, 1, 20);
		for (i = 0; i < n_rows; i++) {
			op_insert_into(cl, wl, &wl->t[wl->n_tables - 1],
				       rng_chance(&wl->rng, 30));
			assert_int_equal(cl->last_pages, 0);
		}
		lx(cl, cl->w, "UPDATE meta SET n = n + 1", NULL, 0);
		assert_int_equal(cl->last_pages, 0);
		lx(cl, cl->w, "COMMIT", NULL, 0);
		assert_true(cl->last_pages > 0);
		wl->meta++;
		wl->n_commit++;
	}
}

static void op_drop_table(struct cluster *cl, struct workload *wl)
{
	unsigned i;
	char sql[64];

	if (wl->n_tables <= 1)
		return;
	i = rng_below(&wl->rng, wl->n_tables);
	snprintf(sql, sizeof sql, "DROP TABLE t%u", wl->t[i].id);
	lx(cl, cl->w, sql, NULL, 0);
	wl->t[i] = wl->t[--wl->n_tables];
}

static void op_index(struct cluster *cl, struct workload *wl)
{
	struct wl_table *t = pick_table(wl);
	char sql[128];

	if (rng_chance(&wl->rng, 50))
		snprintf(sql, sizeof sql, "CREATE INDEX IF NOT EXISTS t%u_ks ON t%u(k, s)", t->id,
			 t->id);
	else
		snprintf(sql, sizeof sql, "DROP INDEX IF EXISTS t%u_ks", t->id);
	lx(cl, cl->w, sql, NULL, 0);
}

/* An explicit transaction: many statements, or (big) more than 2 MB of 16 KB rows with a
 * page cache of 10 pages; optionally a savepoint rolled back after a spill; then COMMIT,
 * or ROLLBACK with no frames at all. */
static void op_tx(struct cluster *cl, struct workload *wl, bool big, bool undo, bool rollback)
{
	unsigned i, m;
	char sql[128];

	lx(cl, cl->w, rng_chance(&wl->rng, 50) ? "BEGIN" : "BEGIN IMMEDIATE", NULL, 0);
	assert_int_equal(cl->last_pages, 0);
	if (big) {
		struct wl_table *t = pick_table(wl);
		size_t bytes = 0, target = 2 * MIB + rng_below(&wl->rng, MIB);
		snprintf(sql, sizeof sql, "INSERT INTO t%u(k, s, b) VALUES(?1, 'big', ?2)", t->id);
		while (bytes < target) {
			struct val v[2];
			v[0] = vint((int64_t)rng_next(&wl->rng));
			rng_fill(&wl->rng, wl->blob, 16384);
			v[1] = vblob(wl->blob, 16384);
			lx(cl, cl->w, sql, v, 2);
			assert_int_equal(cl->last_pages, 0);
			bytes += 16384;
		}
		if (sqlite3_last_insert_rowid(cl->w) > t->hi)
			t->hi = sqlite3_last_insert_rowid(cl->w);
		wl->n_big++;
	} else {
		m = rng_range(&wl->rng, 2, 40);
		for (i = 0; i < m; i++) {
			op_dml(cl, wl);
			assert_int_equal(cl->last_pages, 0);
		}
	}
	assert_false(sqlite3_get_autocommit(cl->w));
	assert_false(core__vfs_idle(cl->a.vfs, DB));
	if (undo) {
		/* Changes made (and spilled) after a savepoint, then undone. */
		lx(cl, cl->w, "SAVEPOINT sp", NULL, 0);
		m = big ? 60 : rng_range(&wl->rng, 1, 20);
		for (i = 0; i < m; i++) {
			if (big) {
				struct val v[2];
				snprintf(sql, sizeof sql, "INSERT INTO t%u(k, b) VALUES(?1, ?2)",
					 wl->t[0].id);
				v[0] = vint(i);
				rng_fill(&wl->rng, wl->blob, 16384);
				v[1] = vblob(wl->blob, 16384);
				lx(cl, cl->w, sql, v, 2);
			} else {
				op_dml(cl, wl);
			}
			assert_int_equal(cl->last_pages, 0);
		}
		lx(cl, cl->w, "ROLLBACK TO sp", NULL, 0);
		assert_int_equal(cl->last_pages, 0);
		lx(cl, cl->w, "RELEASE sp", NULL, 0);
		assert_int_equal(cl->last_pages, 0);
		wl->n_undo++;
	}
	lx(cl, cl->w, "UPDATE meta SET n = n + 1", NULL, 0);
	assert_int_equal(cl->last_pages, 0);
	if (rollback) {
		lx(cl, cl->w, "ROLLBACK", NULL, 0);
		assert_int_equal(cl->last_pages, 0);
		wl->n_rollback++;
	} else {
		lx(cl, cl->w, "COMMIT", NULL, 0);
		assert_true(cl->last_pages > 0);
		wl->meta++;
		wl->n_commit++;
	}
	assert_true(sqlite3_get_autocommit(cl->w));
	assert_true(core__vfs_idle(cl->a.vfs, DB));
}

static void workload_schema(struct cluster *cl, struct workload *wl)
{
	static const char *const modes[] = {"NONE", "FULL", "INCREMENTAL"};
	char sql[64];
	unsigned i;

	/* A database that already has a page 1 changes auto_vacuum only through VACUUM. */
	snprintf(sql, sizeof sql, "PRAGMA auto_vacuum=%s", modes[wl->auto_vacuum]);
	lx(cl, cl->w, sql, NULL, 0);
	if (wl->auto_vacuum != 0)
		lx(cl, cl->w, "VACUUM", NULL, 0);
	assert_int_equal(query_int(cl->w, "PRAGMA auto_vacuum"), wl->auto_vacuum);
	lx(cl, cl->w, "CREATE TABLE meta (id INTEGER PRIMARY KEY, n INTEGER)", NULL, 0);
	lx(cl, cl->w, "INSERT INTO meta VALUES (1, 0)", NULL, 0);
	for (i = 0; i < 3; i++)
		op_create_table(cl, wl, false);
}

/* Run n_ops random top-level operations on the leader. */
static void workload_run(struct cluster *cl, struct workload *wl, unsigned n_ops)
{
	unsigned op;

	for (op = 0; op < n_ops; op++) {
		uint32_t r;
		if (op % 20 == 0)
			wl->shrink = query_int(cl->w, "PRAGMA page_count") > 5000;
		/* Make sure every run sees the big cases. */
		if (op == n_ops / 4) {
			op_tx(cl, wl, true, false, false);
			continue;
		}
		if (op == n_ops / 2) {
			op_tx(cl, wl, true, true, false);
			continue;
		}
		if (op == 3 * n_ops / 4) {
			op_tx(cl, wl, true, rng_chance(&wl->rng, 50), true);
			continue;
		}
		r = rng_below(&wl->rng, 1000);
		if (r < 560) {
			op_dml(cl, wl);
		} else if (r < 760) {
			op_tx(cl, wl, false, rng_chance(&wl->rng, 15), rng_chance(&wl->rng, 12));
		} else if (r < 770) {
			op_tx(cl, wl, true, rng_chance(&wl->rng, 30), rng_chance(&wl->rng, 20));
		} else if (r < 800) {
			op_create_table(cl, wl, rng_chance(&wl->rng, 30));
		} else if (r < 815) {
			op_drop_table(cl, wl);
		} else if (r < 835) {
			op_index(cl, wl);
		} else if (r < 845) {
			lx(cl, cl->w, "VACUUM", NULL, 0);
			wl->n_vacuum++;
		} else if (r < 860) {
			if (wl->auto_vacuum == 2)
				lx(cl, cl->w, "PRAGMA incremental_vacuum(50)", NULL, 0);
		} else if (r < 900) {
			assert_true(checkpoint(cl, &cl->a, cl->ra));
		} else if (r < 940) {
			if (cl->rb != NULL)
				assert_true(checkpoint(cl, &cl->b, cl->rb));
		} else if (r < 950) {
			if (cl->c_follows && cl->rc != NULL)
				assert_true(checkpoint(cl, &cl->c, cl->rc));
		} else if (r < 960) {
			if (cl->rb != NULL)
				expect_same(cl->ra, "A", cl->rb, "B");
		} else if (r < 965) {
			if (cl->rb != NULL)
				expect_same(cl->w, "A writer", cl->rb, "B");
		} else {
			op_dml(cl, wl);
		}
		assert_true(sqlite3_get_autocommit(cl->w));
	}
}

static void expect_meta(sqlite3 *conn, int64_t n)
{
	assert_int_equal(query_int(conn, "SELECT n FROM meta WHERE id = 1"), n);
}

/* ---- Tests --------------------------------------------------------------------------- */

static void test_api_edges(void **state)
{
	struct fixture *fx = *state;
	struct core_vfs *dup = NULL;
	struct buf b;
	int rv;

	cluster_start(fx, 0);
	rv = core__vfs_create(fx->cl.a.name, 0, &dup);
	assert_int_equal(rv, ERR_EXISTS);
	assert_int_equal(core__vfs_wal_frames(fx->cl.a.vfs, "nope"), 0);
	buf_init(&b);
	assert_int_equal(core__vfs_snapshot_db(fx->cl.a.vfs, "nope", &b), ERR_NOTFOUND);
	buf_close(&b);
	assert_int_equal(core__vfs_mem_used(fx->cl.b.vfs), 0);
	lx(&fx->cl, fx->cl.w, "CREATE TABLE t (x); INSERT INTO t VALUES (1)", NULL, 0);
	assert_true(core__vfs_mem_used(fx->cl.a.vfs) > 0);
	assert_true(core__vfs_mem_used(fx->cl.b.vfs) > 0);
	assert_true(fx->cl.n_tx >= 2);
	/* Forgetting a database frees its memory. */
	core__vfs_delete_db(fx->cl.b.vfs, DB);
	assert_int_equal(core__vfs_mem_used(fx->cl.b.vfs), 0);
	assert_int_equal(core__vfs_wal_frames(fx->cl.b.vfs, DB), 0);
}

static void run_seed(struct fixture *fx, uint64_t seed, unsigned n_ops)
{
	struct cluster *cl = &fx->cl;
	struct workload wl;

	printf("  workload seed 0x%" PRIx64 "\n", seed);
	fflush(stdout);
	cluster_start(fx, 0);
	workload_init(&wl, seed);
	workload_schema(cl, &wl);
	cl->rb = conn_open(cl, &cl->b);
	workload_run(cl, &wl, n_ops);

	expect_integrity(cl->ra, "A");
	expect_integrity(cl->rb, "B");
	expect_same(cl->ra, "A", cl->rb, "B");
	expect_same(cl->w, "A writer", cl->rb, "B");
	expect_meta(cl->ra, wl.meta);
	expect_meta(cl->rb, wl.meta);
	/* Checkpointed, both hold exactly the same main file: same number of pages. */
	assert_true(checkpoint(cl, &cl->a, cl->ra));
	assert_true(checkpoint(cl, &cl->b, cl->rb));
	if (core__vfs_mem_used(cl->a.vfs) != core__vfs_mem_used(cl->b.vfs))
		fail_msg("after checkpoints A holds %" PRIu64 " bytes, B %" PRIu64,
			 core__vfs_mem_used(cl->a.vfs), core__vfs_mem_used(cl->b.vfs));

	/* A snapshot of the leader restored on a third node. */
	copy_db(&cl->a, &cl->c);
	cl->rc = conn_open(cl, &cl->c);
	expect_integrity(cl->rc, "C");
	expect_same(cl->ra, "A", cl->rc, "C");

	printf("  %u statements, %u transactions (%u commits, %u rollbacks, %u big, %u undone "
	       "savepoints, %u vacuums), %" PRIu64 " pages, checkpoints A %u B %u, auto_vacuum "
	       "%d, %lld pages\n",
	       cl->n_stmts, cl->n_tx, wl.n_commit, wl.n_rollback, wl.n_big, wl.n_undo,
	       wl.n_vacuum, cl->n_pages, cl->n_ckpt[0], cl->n_ckpt[1], wl.auto_vacuum,
	       (long long)query_int(cl->ra, "PRAGMA page_count"));
	printf("  %" PRIu64 " of the pages sent as deltas, %" PRIu64 " entry bytes (%.0f%% of "
	       "full pages)\n",
	       cl->n_delta_pages, cl->n_bytes, 100.0 * (double)cl->n_bytes /
	       (double)(cl->n_pages * PAGE_SIZE));
	/* The workloads make many small changes: the delta path must have been exercised. */
	assert_true(cl->n_delta_pages > 0);
	workload_close(&wl);
	cluster_stop(fx);
}

static void test_random_workloads(void **state)
{
	struct fixture *fx = *state;
	uint64_t i;

	for (i = 0; i < 6; i++)
		run_seed(fx, seed_mix(base_seed, 100 + i), 300);
}

/* Frames polled but not applied are invisible to every reader; apply publishes them. */
static void test_hidden_until_applied(void **state)
{
	struct fixture *fx = *state;
	struct cluster *cl = &fx->cl;
	struct core_frames f;
	sqlite3 *r1, *r2, *r3;
	uint32_t wal_before;
	int rv;

	cluster_start(fx, 0);
	cl->rb = conn_open(cl, &cl->b); /* a follower connection on a still empty database */
	lx(cl, cl->w, "CREATE TABLE t (x INTEGER PRIMARY KEY, y)", NULL, 0);
	lx(cl, cl->w, "INSERT INTO t VALUES (1, 'one')", NULL, 0);
	assert_int_equal(query_int(cl->rb, "SELECT count(*) FROM t"), 1);

	r1 = conn_open(cl, &cl->a);
	r3 = conn_open(cl, &cl->a);
	assert_int_equal(query_int(r1, "SELECT count(*) FROM t"), 1);
	/* r3 keeps a read transaction open across the commit. */
	must_exec(r3, "BEGIN");
	assert_int_equal(query_int(r3, "SELECT count(*) FROM t"), 1);

	wal_before = core__vfs_wal_frames(cl->a.vfs, DB);
	must_exec(cl->w, "INSERT INTO t VALUES (2, 'two')");
	memset(&f, 0, sizeof f);
	rv = core__vfs_poll(cl->a.vfs, DB, &f);
	assert_int_equal(rv, 0);
	assert_true(f.n > 0);
	assert_int_equal(core__vfs_wal_frames(cl->a.vfs, DB), wal_before);
	assert_false(core__vfs_idle(cl->a.vfs, DB));

	/* Old and new readers see the state before the transaction. */
	assert_int_equal(query_int(r1, "SELECT count(*) FROM t"), 1);
	r2 = conn_open(cl, &cl->a);
	assert_int_equal(query_int(r2, "SELECT count(*) FROM t"), 1);
	assert_int_equal(query_int(r2, "SELECT count(*) FROM t WHERE x = 2"), 0);
	assert_int_equal(query_int(r3, "SELECT count(*) FROM t"), 1);
	assert_int_equal(query_int(cl->rb, "SELECT count(*) FROM t"), 1);
	/* Nothing more to poll, and nobody else can write meanwhile. */
	{
		struct core_frames g;
		memset(&g, 0, sizeof g);
		assert_int_equal(core__vfs_poll(cl->a.vfs, DB, &g), 0);
		assert_int_equal(g.n, 0);
	}
	rv = sqlite3_exec(r2, "INSERT INTO t VALUES (3, 'three')", NULL, NULL, NULL);
	assert_int_equal(rv & 0xff, SQLITE_BUSY);
	assert_int_equal(replicate(cl), 0);
	/* A snapshot holds the committed image only. */
	copy_db(&cl->a, &cl->c);
	cl->rc = conn_open(cl, &cl->c);
	assert_int_equal(query_int(cl->rc, "SELECT count(*) FROM t"), 1);
	conn_close(&cl->rc);

	ship(cl, &f); /* checks that A's WAL grows by exactly the shipped frames */
	assert_int_equal(query_int(r1, "SELECT count(*) FROM t"), 2);
	assert_int_equal(query_int(r2, "SELECT count(*) FROM t"), 2);
	assert_int_equal(query_int(cl->rb, "SELECT count(*) FROM t"), 2);
	/* The open read transaction keeps its snapshot until it ends. */
	assert_int_equal(query_int(r3, "SELECT count(*) FROM t"), 1);
	must_exec(r3, "COMMIT");
	assert_int_equal(query_int(r3, "SELECT count(*) FROM t"), 2);
	/* And writing works again, from any connection. */
	lx(cl, r2, "INSERT INTO t VALUES (3, 'three')", NULL, 0);
	assert_true(cl->last_pages > 0);
	lx(cl, cl->w, "INSERT INTO t VALUES (4, 'four')", NULL, 0);
	assert_int_equal(query_int(cl->rb, "SELECT count(*) FROM t"), 4);
	assert_true(core__vfs_idle(cl->a.vfs, DB));
	expect_same(r1, "A", cl->rb, "B");
	expect_integrity(r1, "A");
	expect_integrity(cl->rb, "B");
	conn_close(&r1);
	conn_close(&r2);
	conn_close(&r3);
}

/* Poll, then abort: the transaction vanishes on A for every connection, the writer
 * included, and the next write works. */
static void abort_one(struct cluster *cl)
{
	struct core_frames f;
	uint32_t wal_before = core__vfs_wal_frames(cl->a.vfs, DB);
	int rv;

	memset(&f, 0, sizeof f);
	rv = core__vfs_poll(cl->a.vfs, DB, &f);
	assert_int_equal(rv, 0);
	assert_true(f.n > 0);
	core__vfs_abort(cl->a.vfs, DB);
	core__frames_close(&f);
	assert_int_equal(core__vfs_wal_frames(cl->a.vfs, DB), wal_before);
	assert_true(core__vfs_idle(cl->a.vfs, DB));
}

static void test_abort(void **state)
{
	struct fixture *fx = *state;
	struct cluster *cl = &fx->cl;
	struct workload wl;
	sqlite3 *r;
	unsigned i, n_aborts = 0;
	int64_t count;

	cluster_start(fx, 0);
	workload_init(&wl, seed_mix(base_seed, 300));
	lx(cl, cl->w, "CREATE TABLE t (x INTEGER PRIMARY KEY, y)", NULL, 0);
	lx(cl, cl->w, "INSERT INTO t VALUES (1, 'one')", NULL, 0);
	cl->rb = conn_open(cl, &cl->b);
	r = conn_open(cl, &cl->a);

	/* A single autocommit insert. */
	must_exec(cl->w, "INSERT INTO t VALUES (2, 'two')");
	abort_one(cl);
	assert_int_equal(query_int(r, "SELECT count(*) FROM t"), 1);
	assert_int_equal(query_int(cl->w, "SELECT count(*) FROM t"), 1);
	lx(cl, cl->w, "INSERT INTO t VALUES (3, 'three')", NULL, 0);
	assert_true(cl->last_pages > 0);
	assert_int_equal(query_int(r, "SELECT count(*) FROM t WHERE x IN (1, 3)"), 2);
	assert_int_equal(query_int(cl->w, "SELECT count(*) FROM t"), 2);
	expect_same(cl->w, "A writer", cl->rb, "B");

	/* A spilled 3 MB transaction that grew the file. */
	must_exec(cl->w, "BEGIN");
	for (i = 0; i < 200; i++) {
		struct val v[1];
		char sql[64];
		rng_fill(&wl.rng, wl.blob, 16384);
		v[0] = vblob(wl.blob, 16384);
		snprintf(sql, sizeof sql, "INSERT INTO t VALUES (%u, ?1)", 100 + i);
		lx(cl, cl->w, sql, v, 1);
		assert_int_equal(cl->last_pages, 0);
	}
	must_exec(cl->w, "COMMIT");
	abort_one(cl);
	assert_int_equal(query_int(r, "SELECT count(*) FROM t"), 2);
	assert_int_equal(query_int(cl->w, "SELECT count(*) FROM t"), 2);
	expect_integrity(cl->w, "A writer");
	/* A different connection writes next. */
	lx(cl, r, "INSERT INTO t VALUES (4, 'four')", NULL, 0);
	assert_true(cl->last_pages > 0);
	expect_same(cl->w, "A writer", cl->rb, "B");
	expect_same(r, "A", cl->rb, "B");

	/* Random writes, a third aborted, with checkpoints on both sides. */
	for (i = 0; i < 120; i++) {
		uint32_t k = rng_below(&wl.rng, 100);
		struct val v[2];
		v[0] = vint(rng_range(&wl.rng, 1, 400));
		if (k < 50) {
			v[1] = rand_blob(&wl, rng_chance(&wl.rng, 30));
			must_exec(cl->w, "BEGIN");
			lx(cl, cl->w, "INSERT OR REPLACE INTO t VALUES (?1, ?2)", v, 2);
			lx(cl, cl->w, "DELETE FROM t WHERE x > ?1 AND x < ?1 + 3", v, 1);
			must_exec(cl->w, "COMMIT");
		} else if (k < 70) {
			/* Statements inside a transaction commit nothing: no poll needed. Every
			 * transaction changes something (SQLite skips identical rewrites). */
			must_exec(cl->w, "BEGIN; DELETE FROM t WHERE x % 7 = 3;"
					 "INSERT OR REPLACE INTO t VALUES (1, 'one again');"
					 "UPDATE t SET y = y || '+' WHERE x = 1; COMMIT");
		} else if (k < 80) {
			lx(cl, cl->w, "BEGIN", NULL, 0);
			lx(cl, cl->w, "UPDATE t SET y = 'u' || x || '.' || ?1 WHERE x < 50", v, 1);
			must_exec(cl->w, "COMMIT");
		} else if (k < 90) {
			checkpoint(cl, &cl->a, r);
			continue;
		} else {
			if (cl->rb != NULL)
				checkpoint(cl, &cl->b, cl->rb);
			continue;
		}
		if (rng_chance(&wl.rng, 33)) {
			abort_one(cl);
			n_aborts++;
			expect_same(cl->w, "A writer", cl->rb, "B");
		} else {
			assert_true(replicate(cl) > 0);
		}
	}
	assert_true(n_aborts > 10);
	count = query_int(cl->rb, "SELECT count(*) FROM t");
	assert_int_equal(query_int(cl->w, "SELECT count(*) FROM t"), count);
	expect_integrity(cl->w, "A");
	expect_integrity(cl->rb, "B");
	expect_same(r, "A", cl->rb, "B");
	expect_same(cl->w, "A writer", cl->rb, "B");
	conn_close(&r);
	workload_close(&wl);
}

/* Thousands of one-row transactions with checkpoints at different moments on A and B; the
 * follower connection exists before the first write. */
static void test_many_small_transactions(void **state)
{
	struct fixture *fx = *state;
	struct cluster *cl = &fx->cl;
	struct rng rng;
	unsigned i;

	rng_init(&rng, seed_mix(base_seed, 400));
	cluster_start(fx, 0);
	cl->rb = conn_open(cl, &cl->b);
	lx(cl, cl->w, "CREATE TABLE t (x INTEGER PRIMARY KEY, y TEXT, z INTEGER)", NULL, 0);
	lx(cl, cl->w, "CREATE INDEX t_y ON t(y)", NULL, 0);
	for (i = 1; i <= 2000; i++) {
		char text[64];
		struct val v[2];
		rng_text(&rng, text, rng_below(&rng, 40));
		v[0] = vtext(text, -1);
		v[1] = vint((int64_t)rng_next(&rng));
		lx(cl, cl->w, "INSERT INTO t(y, z) VALUES (?1, ?2)", v, 2);
		assert_true(cl->last_pages > 0);
		if (core__vfs_wal_frames(cl->a.vfs, DB) >= 300)
			assert_true(checkpoint(cl, &cl->a, cl->ra));
		if (core__vfs_wal_frames(cl->b.vfs, DB) >= 500)
			assert_true(checkpoint(cl, &cl->b, cl->rb));
		if (i % 97 == 0) {
			assert_int_equal(query_int(cl->ra, "SELECT count(*) FROM t"), i);
			assert_int_equal(query_int(cl->rb, "SELECT count(*) FROM t"), i);
		}
		if (i % 500 == 0)
			expect_same(cl->ra, "A", cl->rb, "B");
	}
	assert_true(cl->n_ckpt[0] >= 3);
	assert_true(cl->n_ckpt[1] >= 2);
	assert_int_equal(query_int(cl->w, "SELECT count(*) FROM t"), 2000);
	assert_int_equal(query_int(cl->rb, "SELECT count(*) FROM t"), 2000);
	expect_integrity(cl->ra, "A");
	expect_integrity(cl->rb, "B");
	expect_same(cl->ra, "A", cl->rb, "B");
	printf("  %u transactions, %" PRIu64 " pages, checkpoints A %u B %u\n", cl->n_tx,
	       cl->n_pages, cl->n_ckpt[0], cl->n_ckpt[1]);
}

/* The leader's VFS is capped at 1 MiB: a 4 MB write fails with SQLITE_FULL, replicates
 * nothing, and leaves the database consistent and writable. */
static void test_mem_cap(void **state)
{
	struct fixture *fx = *state;
	struct cluster *cl = &fx->cl;
	struct rng rng;
	uint8_t *big = malloc(4 * MIB);
	uint8_t small[4000];
	struct val v[1];
	unsigned i;
	int rv;

	assert_non_null(big);
	rng_init(&rng, seed_mix(base_seed, 500));
	cluster_start(fx, MIB);
	lx(cl, cl->w, "CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)", NULL, 0);
	for (i = 0; i < 20; i++) {
		rng_fill(&rng, small, sizeof small);
		v[0] = vblob(small, sizeof small);
		lx(cl, cl->w, "INSERT INTO t(b) VALUES (?1)", v, 1);
	}
	cl->rb = conn_open(cl, &cl->b);
	expect_same(cl->ra, "A", cl->rb, "B");

	/* One 4 MB statement in autocommit mode. */
	rng_fill(&rng, big, 4 * MIB);
	v[0] = vblob(big, 4 * MIB);
	rv = lexec(cl, cl->w, "INSERT INTO t(b) VALUES (?1)", v, 1);
	if ((rv & 0xff) != SQLITE_FULL)
		fail_msg("4 MB insert under a 1 MiB cap: %d %s", rv, sqlite3_errmsg(cl->w));
	assert_int_equal(cl->last_pages, 0);
	assert_true(sqlite3_get_autocommit(cl->w));
	assert_true(core__vfs_mem_used(cl->a.vfs) <= MIB);
	assert_true(core__vfs_idle(cl->a.vfs, DB));
	expect_integrity(cl->w, "A writer");
	expect_same(cl->w, "A writer", cl->rb, "B");
	expect_same(cl->ra, "A", cl->rb, "B");

	/* 64 KB rows in one explicit transaction until the cap is hit. */
	lx(cl, cl->w, "BEGIN", NULL, 0);
	for (i = 0; i < 64; i++) {
		v[0] = vblob(big + (size_t)i * 65536, 65536);
		rv = lexec(cl, cl->w, "INSERT INTO t(b) VALUES (?1)", v, 1);
		assert_int_equal(cl->last_pages, 0);
		if (rv != SQLITE_OK)
			break;
	}
	if ((rv & 0xff) != SQLITE_FULL)
		fail_msg("4 MB transaction under a 1 MiB cap: %d %s", rv, sqlite3_errmsg(cl->w));
	if (!sqlite3_get_autocommit(cl->w)) {
		lx(cl, cl->w, "ROLLBACK", NULL, 0);
		assert_int_equal(cl->last_pages, 0);
	}
	assert_true(core__vfs_mem_used(cl->a.vfs) <= MIB);
	assert_true(core__vfs_idle(cl->a.vfs, DB));
	expect_integrity(cl->w, "A writer");
	expect_same(cl->w, "A writer", cl->rb, "B");
	assert_int_equal(query_int(cl->ra, "SELECT count(*) FROM t"), 20);

	/* Still usable: a small write replicates, a checkpoint runs. */
	lx(cl, cl->w, "INSERT INTO t(b) VALUES (x'00112233')", NULL, 0);
	assert_true(cl->last_pages > 0);
	assert_true(checkpoint(cl, &cl->a, cl->ra));
	lx(cl, cl->w, "UPDATE t SET b = zeroblob(100) WHERE id = 1", NULL, 0);
	expect_integrity(cl->ra, "A");
	expect_integrity(cl->rb, "B");
	expect_same(cl->ra, "A", cl->rb, "B");
	free(big);
}

/* Filling a capped database in small autocommit steps until SQLITE_FULL: it can then be
 * checkpointed, shrunk by deletes and written again. */
static void test_mem_cap_recover(void **state)
{
	struct fixture *fx = *state;
	struct cluster *cl = &fx->cl;
	struct rng rng;
	uint8_t row[32768];
	struct val v[1];
	unsigned i;
	int rv = SQLITE_OK;

	rng_init(&rng, seed_mix(base_seed, 550));
	cluster_start(fx, MIB);
	cl->rb = conn_open(cl, &cl->b);
	lx(cl, cl->w, "CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)", NULL, 0);
	for (i = 0; i < 200 && rv == SQLITE_OK; i++) {
		rng_fill(&rng, row, sizeof row);
		v[0] = vblob(row, sizeof row);
		rv = lexec(cl, cl->w, "INSERT INTO t(b) VALUES (?1)", v, 1);
		if (rv == SQLITE_OK) {
			assert_true(cl->last_pages > 0);
			if (core__vfs_wal_frames(cl->a.vfs, DB) > 100)
				checkpoint(cl, &cl->a, cl->ra);
		}
	}
	if ((rv & 0xff) != SQLITE_FULL)
		fail_msg("filling a 1 MiB database: %d %s", rv, sqlite3_errmsg(cl->w));
	assert_int_equal(cl->last_pages, 0);
	assert_true(core__vfs_mem_used(cl->a.vfs) <= MIB);
	expect_integrity(cl->ra, "A");
	expect_same(cl->ra, "A", cl->rb, "B");
	printf("  full after %u rows of 32 KB, %" PRIu64 " bytes used\n", i - 1,
	       core__vfs_mem_used(cl->a.vfs));

	assert_true(checkpoint(cl, &cl->a, cl->ra));
	lx(cl, cl->w, "DELETE FROM t WHERE id % 2 = 0", NULL, 0);
	assert_true(checkpoint(cl, &cl->a, cl->ra));
	rng_fill(&rng, row, sizeof row);
	v[0] = vblob(row, sizeof row);
	lx(cl, cl->w, "INSERT INTO t(b) VALUES (?1)", v, 1);
	expect_integrity(cl->ra, "A");
	expect_integrity(cl->rb, "B");
	expect_same(cl->ra, "A", cl->rb, "B");
}

/* A snapshot restored on C after a workload, then C follows; snapshots of the follower,
 * several databases in one buffer, and a replaced database. */
static void test_snapshot_restore(void **state)
{
	struct fixture *fx = *state;
	struct cluster *cl = &fx->cl;
	struct workload wl;
	struct buf b;
	struct cursor c;
	sqlite3 *other;
	int rv;

	cluster_start(fx, 0);
	workload_init(&wl, seed_mix(base_seed, 600));
	workload_schema(cl, &wl);
	cl->rb = conn_open(cl, &cl->b);
	workload_run(cl, &wl, 120);

	/* Restore with committed frames in the WAL, then C follows through applies. */
	if (core__vfs_wal_frames(cl->a.vfs, DB) == 0)
		lx(cl, cl->w, "INSERT OR REPLACE INTO meta VALUES (2, 1)", NULL, 0);
	assert_true(core__vfs_wal_frames(cl->a.vfs, DB) > 0);
	copy_db(&cl->a, &cl->c);
	cl->c_follows = true;
	cl->rc = conn_open(cl, &cl->c);
	expect_integrity(cl->rc, "C");
	expect_same(cl->ra, "A", cl->rc, "C");
	workload_run(cl, &wl, 120);
	expect_integrity(cl->ra, "A");
	expect_integrity(cl->rb, "B");
	expect_integrity(cl->rc, "C");
	expect_same(cl->ra, "A", cl->rb, "B");
	expect_same(cl->ra, "A", cl->rc, "C");
	expect_meta(cl->rc, wl.meta);

	/* Restoring over a database that is open is refused. */
	buf_init(&b);
	assert_int_equal(core__vfs_snapshot_db(cl->b.vfs, DB, &b), 0);
	c.p = b.data;
	c.len = b.len;
	rv = core__vfs_restore_db(cl->c.vfs, DB, &c);
	assert_int_equal(rv, ERR_BUSY);
	expect_same(cl->ra, "A", cl->rc, "C");

	/* Replace C's database with the follower's image taken after a checkpoint. */
	conn_close(&cl->rc);
	cl->c_follows = false;
	assert_true(checkpoint(cl, &cl->b, cl->rb));
	copy_db(&cl->b, &cl->c);
	cl->rc = conn_open(cl, &cl->c);
	expect_integrity(cl->rc, "C");
	expect_same(cl->ra, "A", cl->rc, "C");

	/* Two images back to back in one buffer, restored one after the other. */
	buf_reset(&b);
	assert_int_equal(core__vfs_snapshot_db(cl->a.vfs, DB, &b), 0);
	lx(cl, cl->w, "UPDATE meta SET n = n + 1000", NULL, 0);
	assert_int_equal(core__vfs_snapshot_db(cl->a.vfs, DB, &b), 0);
	assert_false(b.failed);
	c.p = b.data;
	c.len = b.len;
	assert_int_equal(core__vfs_restore_db(cl->c.vfs, "first", &c), 0);
	assert_int_equal(core__vfs_restore_db(cl->c.vfs, "second", &c), 0);
	assert_int_equal(c.len, 0);
	buf_close(&b);
	other = conn_open_db(cl, &cl->c, "first");
	expect_integrity(other, "C first");
	assert_int_equal(query_int(other, "SELECT n FROM meta"), wl.meta);
	conn_close(&other);
	other = conn_open_db(cl, &cl->c, "second");
	expect_integrity(other, "C second");
	assert_int_equal(query_int(other, "SELECT n FROM meta"), wl.meta + 1000);
	expect_same(other, "C second", cl->rb, "B");
	conn_close(&other);
	core__vfs_delete_db(cl->c.vfs, "first");
	core__vfs_delete_db(cl->c.vfs, "second");
	workload_close(&wl);
}

/* Truncated snapshot bytes are rejected with ERR_CORRUPT; corrupted bytes are rejected or
 * restored into something SQLite can open without crashing. */
static void test_restore_corrupt(void **state)
{
	struct fixture *fx = *state;
	struct cluster *cl = &fx->cl;
	struct rng rng;
	struct buf b;
	struct cursor c;
	uint8_t *copy;
	size_t l, i;
	unsigned n_accepted = 0;
	sqlite3 *conn;
	int rv;

	rng_init(&rng, seed_mix(base_seed, 700));
	cluster_start(fx, 0);
	lx(cl, cl->w, "CREATE TABLE t (x INTEGER PRIMARY KEY, y); CREATE INDEX t_y ON t(y)",
	   NULL, 0);
	lx(cl, cl->w, "INSERT INTO t VALUES (1, 'a'), (2, zeroblob(5000))", NULL, 0);
	assert_true(checkpoint(cl, &cl->a, cl->ra));
	lx(cl, cl->w, "INSERT INTO t VALUES (3, 'c'); UPDATE t SET y = 'b' WHERE x = 2", NULL, 0);
	buf_init(&b);
	assert_int_equal(core__vfs_snapshot_db(cl->a.vfs, DB, &b), 0);
	assert_false(b.failed);
	printf("  snapshot of %zu bytes\n", b.len);

	for (l = 0; l < b.len; l += (l < 256 || l + 256 > b.len) ? 1 : 5) {
		copy = malloc(l);
		assert_true(l == 0 || copy != NULL);
		if (l > 0)
			memcpy(copy, b.data, l);
		c.p = copy;
		c.len = l;
		rv = core__vfs_restore_db(cl->c.vfs, "x", &c);
		if (rv != ERR_CORRUPT)
			fail_msg("snapshot truncated to %zu of %zu bytes: restore returned %d (%s)",
				 l, b.len, rv, err_str(rv));
		free(copy);
	}

	/* Random single-byte corruptions, biased to the start where the sizes are. */
	copy = malloc(b.len);
	assert_non_null(copy);
	for (i = 0; i < 400; i++) {
		size_t pos = i < 200 ? rng_below(&rng, b.len < 128 ? (uint32_t)b.len : 128)
				     : rng_below(&rng, (uint32_t)b.len);
		memcpy(copy, b.data, b.len);
		copy[pos] ^= (uint8_t)rng_range(&rng, 1, 255);
		c.p = copy;
		c.len = b.len;
		rv = core__vfs_restore_db(cl->c.vfs, "y", &c);
		if (rv != 0 && rv != ERR_CORRUPT)
			fail_msg("byte %zu corrupted: restore returned %d (%s)", pos, rv,
				 err_str(rv));
		if (rv == 0) {
			/* Whatever was accepted can be opened and read without crashing. */
			n_accepted++;
			conn = NULL;
			rv = conn_open_raw(&cl->c, "y", &conn);
			if (rv == SQLITE_OK) {
				sqlite3_exec(conn, "PRAGMA integrity_check", NULL, NULL, NULL);
				sqlite3_exec(conn, "SELECT * FROM t", NULL, NULL, NULL);
			}
			sqlite3_close(conn);
			core__vfs_delete_db(cl->c.vfs, "y");
		}
	}
	printf("  %u of 400 corrupted snapshots accepted (page bytes)\n", n_accepted);
	free(copy);

	/* The failed attempts left nothing behind that breaks a good restore. */
	c.p = b.data;
	c.len = b.len;
	assert_int_equal(core__vfs_restore_db(cl->c.vfs, "x", &c), 0);
	assert_int_equal(c.len, 0);
	conn = conn_open_db(cl, &cl->c, "x");
	expect_integrity(conn, "C x");
	assert_int_equal(query_int(conn, "SELECT count(*) FROM t"), 3);
	expect_same(conn, "C x", cl->ra, "A");
	conn_close(&conn);
	core__vfs_delete_db(cl->c.vfs, "x");
	buf_close(&b);
}

/* Index pages spilled and re-spilled after a SAVEPOINT, ROLLBACK TO, then COMMIT. SQLite
 * 3.40's ROLLBACK TO keeps the frame where it must start recomputing checksums (iReCksum),
 * so the COMMIT reads a frame header beyond the rolled-back end of the WAL; on a file the
 * stale bytes are still there. The COMMIT must succeed and replicate exactly once. */
static void test_savepoint_respill(void **state)
{
	struct fixture *fx = *state;
	struct cluster *cl = &fx->cl;
	struct rng rng;
	static uint8_t blob[16384];
	struct val v[2];
	unsigned i;
	int rv;

	rng_init(&rng, seed_mix(base_seed, 800));
	cluster_start(fx, 0);
	cl->rb = conn_open(cl, &cl->b);
	lx(cl, cl->w, "CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER, b BLOB)", NULL, 0);
	lx(cl, cl->w, "CREATE INDEX t_k ON t(k)", NULL, 0);
	lx(cl, cl->w, "BEGIN", NULL, 0);
	for (i = 0; i < 300; i++) {
		if (i == 100)
			lx(cl, cl->w, "SAVEPOINT sp", NULL, 0);
		rng_fill(&rng, blob, 16384);
		v[0] = vint((int64_t)rng_next(&rng));
		v[1] = vblob(blob, 16384);
		lx(cl, cl->w, "INSERT INTO t(k, b) VALUES (?1, ?2)", v, 2);
		assert_int_equal(cl->last_pages, 0);
	}
	lx(cl, cl->w, "ROLLBACK TO sp", NULL, 0);
	lx(cl, cl->w, "RELEASE sp", NULL, 0);
	lx(cl, cl->w, "INSERT INTO t(k, b) VALUES (1, x'00')", NULL, 0);
	assert_int_equal(cl->last_pages, 0);
	rv = lexec(cl, cl->w, "COMMIT", NULL, 0);
	if (rv != SQLITE_OK)
		fail_msg("COMMIT failed with %d (%s) after shipping %u pages: the client is told "
			 "the transaction failed, yet %lld rows are visible on B",
			 rv, sqlite3_errmsg(cl->w), cl->last_pages,
			 (long long)query_int(cl->rb, "SELECT count(*) FROM t"));
	assert_true(cl->last_pages > 0);
	assert_int_equal(query_int(cl->w, "SELECT count(*) FROM t"), 101);
	assert_int_equal(query_int(cl->rb, "SELECT count(*) FROM t"), 101);
	lx(cl, cl->w, "INSERT INTO t(k, b) VALUES (2, x'00')", NULL, 0);
	expect_integrity(cl->ra, "A");
	expect_integrity(cl->rb, "B");
	expect_same(cl->ra, "A", cl->rb, "B");
}

/* On an empty WAL (after a TRUNCATE checkpoint), a savepoint taken before anything was
 * spilled and rolled back after a spill: SQLite then starts the log again and rewrites the
 * WAL header at offset 0 while the rolled-back frames are still pending in the VFS. */
static void test_savepoint_empty_wal(void **state)
{
	struct fixture *fx = *state;
	struct cluster *cl = &fx->cl;
	struct rng rng;
	uint8_t blob[16384];
	struct val v[1];
	unsigned i;
	int rv;

	rng_init(&rng, seed_mix(base_seed, 900));
	cluster_start(fx, 0);
	cl->rb = conn_open(cl, &cl->b);
	lx(cl, cl->w, "CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)", NULL, 0);
	assert_true(checkpoint(cl, &cl->a, cl->ra));
	lx(cl, cl->w, "BEGIN", NULL, 0);
	lx(cl, cl->w, "SAVEPOINT sp", NULL, 0);
	for (i = 0; i < 5; i++) {
		rng_fill(&rng, blob, sizeof blob);
		v[0] = vblob(blob, sizeof blob);
		lx(cl, cl->w, "INSERT INTO t(b) VALUES (?1)", v, 1);
	}
	lx(cl, cl->w, "ROLLBACK TO sp", NULL, 0);
	lx(cl, cl->w, "RELEASE sp", NULL, 0);
	rv = lexec(cl, cl->w, "INSERT INTO t(b) VALUES (x'00')", NULL, 0);
	if (rv == SQLITE_OK)
		rv = lexec(cl, cl->w, "COMMIT", NULL, 0);
	if (rv != SQLITE_OK)
		fail_msg("write after ROLLBACK TO on an empty WAL: %d %s", rv,
			 sqlite3_errmsg(cl->w));
	assert_true(cl->last_pages > 0);
	assert_int_equal(query_int(cl->rb, "SELECT count(*) FROM t"), 1);
	expect_integrity(cl->ra, "A");
	expect_same(cl->ra, "A", cl->rb, "B");
}

/* Frames that cannot be applied are refused and leave the follower unchanged. Each case
 * runs on a fresh cluster; all cases run before the test reports. */
static void test_apply_rejects(void **state)
{
	static const char *const cases[] = {"page number 0", "page size of another database",
					     "commit size 0", "no pages"};
	struct fixture *fx = *state;
	struct cluster *cl = &fx->cl;
	char failures[512] = "";
	struct core_frames f;
	uint32_t pgno, wal;
	uint8_t page[8192];
	const uint8_t *pages[1] = {page};
	size_t i;
	int rv;

	memset(page, 0, sizeof page);
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		cluster_start(fx, 0);
		lx(cl, cl->w, "CREATE TABLE t (x); INSERT INTO t VALUES (1)", NULL, 0);
		cl->rb = conn_open(cl, &cl->b);
		wal = core__vfs_wal_frames(cl->b.vfs, DB);
		memset(&f, 0, sizeof f);
		pgno = i == 0 ? 0 : 2;
		f.page_size = i == 1 ? 8192 : PAGE_SIZE;
		f.n = i == 3 ? 0 : 1;
		f.commit_size = i == 2 ? 0 : 2;
		f.pgnos = &pgno;
		f.pages = pages;
		rv = core__vfs_apply(cl->b.vfs, DB, &f, false);
		if (rv != ERR_CORRUPT) {
			size_t used = strlen(failures);
			snprintf(failures + used, sizeof failures - used, "%s%s: apply returned %d",
				 used > 0 ? "; " : "", cases[i], rv);
		} else {
			assert_int_equal(core__vfs_wal_frames(cl->b.vfs, DB), wal);
			expect_same(cl->ra, "A", cl->rb, "B");
			expect_integrity(cl->rb, "B");
		}
		cluster_stop(fx);
	}
	if (failures[0] != '\0')
		fail_msg("%s", failures);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_api_edges, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hidden_until_applied, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_abort, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_many_small_transactions, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_mem_cap, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_mem_cap_recover, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_random_workloads, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snapshot_restore, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_restore_corrupt, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_savepoint_respill, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_savepoint_empty_wal, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_apply_rejects, setup, teardown),
	};
	base_seed = test_seed("test_vfs", 0x5eed0002);
	trace = getenv("PQ_TEST_TRACE") != NULL;
	if (trace)
		setvbuf(stdout, NULL, _IONBF, 0);
	if (getenv("PQ_TEST_FILTER") != NULL)
		cmocka_set_test_filter(getenv("PQ_TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The replicated engine: database registry, sessions, the per-database writer queue, the
 * write path (step -> poll -> propose -> apply -> reply), the FSM, snapshots and local
 * checkpoints. See core.h for the contract and docs/design.md for the reasoning.
 *
 * Writer slot: each database has at most one writing session at a time. A statement that
 * may write (sqlite3_stmt_readonly false) takes the slot before its first step, or waits in
 * a FIFO queue (bounded by writer_timeout_ms) rather than failing with "database is
 * locked". A session keeps the slot until its transaction ends (autocommit again) and any
 * commit it proposed has been applied. While a commit is in flight the VFS also holds
 * SQLite's WAL write lock on its behalf, so nothing else can write underneath. */
#include "core.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/buf.h"
#include "../lib/log.h"
#include "cluster.h"
#include "command.h"
#include "vfs.h"

#define SNAPSHOT_MAGIC 0x4e535150u /* "PQSN" */
#define SNAPSHOT_VERSION 1
#define DROP_WAIT_MS 5000 /* as PostgreSQL: DROP DATABASE waits this long for sessions */

enum stmt_state {
	ST_NEW,         /* never stepped */
	ST_WAIT_READY,  /* waiting for this node to be a ready leader */
	ST_WAIT_SLOT,   /* in the database's writer queue */
	ST_WAIT_BARRIER,/* a linearizable read waiting for its barrier */
	ST_RUNNING,     /* stepping */
	ST_WAIT_COMMIT, /* its commit was proposed */
	ST_FINISHED,    /* returned CORE_DONE or an error */
};

struct proposal {
	struct core_engine *engine;
	struct database *db;  /* NULL for create/drop */
	struct core_stmt *st; /* NULL once the statement's session is gone */
	uint64_t index;
	int result;           /* set by apply for create/drop */
	core_done_cb done_cb; /* create/drop */
	void *done_arg;
	uint8_t admin_type;   /* CMD_CREATE_DB / CMD_DROP_DB */
	char admin_db[CORE_DB_NAME_MAX + 1];
	struct proposal *next; /* engine's list of proposals in flight */
};

struct database {
	char name[CORE_DB_NAME_MAX + 1];
	char file[CORE_DB_NAME_MAX + 32]; /* VFS file name: "<create index>-<name>" */
	uint64_t create_index;
	bool dropped;                  /* dropped while sessions were still on it */
	bool drop_proposed;            /* a DROP is in the log: no new sessions */
	int n_sessions;
	struct core_session *writer;   /* holder of the writer slot */
	struct proposal *inflight;     /* the commit in flight */
	struct core_stmt *wait_head, *wait_tail; /* writer queue */
	sqlite3 *ckpt_conn;            /* internal connection for checkpoints */
	/* A DROP DATABASE waiting for the sessions on it to go away. */
	core_done_cb drop_cb;
	void *drop_arg;
	uint64_t drop_deadline;
	struct database *next;
};

struct core_session {
	struct core_engine *engine;
	struct database *db;
	sqlite3 *conn;
	struct core_stmt *active; /* the statement with a pending step, if any */
	struct core_error err;
	uint64_t last_active; /* engine time of the last step or finalize */
	int n_stmts;          /* statements prepared and not finalized */
	enum core_read_mode read_mode;
	struct generation *orphan; /* not NULL: its database image was replaced by a
				    * snapshot while a statement or transaction was open */
	struct core_session *next;
};

/* Databases replaced by a snapshot restore that orphaned sessions still use: kept, with
 * their VFS, until the last of those sessions closes. */
struct generation {
	struct core_vfs *vfs;
	struct database *dbs;
	int n_orphans;
	struct generation *next;
};

struct core_stmt {
	struct core_session *session;
	sqlite3_stmt *stmt;
	enum stmt_state state;
	core_step_cb cb;
	void *arg;
	uint64_t deadline;
	int step_rc;      /* CORE_ROW/CORE_DONE to report once the commit is applied */
	int64_t changes;
	struct core_stmt *next_wait;
	struct core_stmt *next_ready;
	struct core_stmt *next_barrier;
	int barrier_status; /* outcome of its barrier, while in bar_finishing */
};

/* Linearizable reads: a read may only use a barrier issued after it arrived. Readers that
 * arrive while one is in flight gather for the next, issued when that one completes. */
struct barrier_group {
	struct core_stmt *head, *tail;
};

struct barrier_req {
	struct core_engine *engine; /* NULL once the engine is gone */
};

struct core_engine {
	struct core_config cfg;
	struct core_replication *repl;
	struct core_vfs *vfs;
	struct database *dbs;
	struct core_session *sessions;
	struct proposal *proposals;
	struct core_stmt *ready_head, *ready_tail;
	struct barrier_group bar_inflight; /* waiting for the barrier in flight */
	struct barrier_group bar_next;     /* arrived after it was issued */
	struct barrier_group bar_finishing;/* barrier done: being run or failed one by one */
	bool finishing;
	bool barrier_pending;
	struct barrier_req *barrier_req;   /* the barrier in flight (detached on destroy) */
	bool leader;
	bool ready;
	uint64_t now;
	core_leader_cb leader_cb;
	void *leader_cb_arg;
	char fn_sqlstate[6]; /* set by a failing cluster function, see cluster.h */
	struct generation *old_gens;
	bool clock_started;       /* core_engine_tick was called */
};

static unsigned vfs_counter;

void core_config_defaults(struct core_config *c)
{
	c->page_size = 4096;
	c->checkpoint_threshold = 1000;
	c->writer_timeout_ms = 10000;
	c->apply_timeout_ms = 10000;
	c->mem_cap = 0;
	c->idle_in_txn_timeout_ms = 60000;
}

/* ---- Databases ---------------------------------------------------------------------- */

static struct database *db_find(struct core_engine *e, const char *name)
{
	struct database *d;
	for (d = e->dbs; d != NULL; d = d->next)
		if (!d->dropped && strcmp(d->name, name) == 0)
			return d;
	return NULL;
}

static struct database *db_add(struct core_engine *e, const char *name, uint64_t index)
{
	struct database *d = calloc(1, sizeof *d);
	if (d == NULL)
		return NULL;
	snprintf(d->name, sizeof d->name, "%s", name);
	snprintf(d->file, sizeof d->file, "%llu-%s", (unsigned long long)index, name);
	d->create_index = index;
	d->next = e->dbs;
	e->dbs = d;
	return d;
}

static void db_close_ckpt(struct database *d)
{
	if (d->ckpt_conn != NULL) {
		sqlite3_close(d->ckpt_conn);
		d->ckpt_conn = NULL;
	}
}

/* Free a database's memory once nothing refers to it. */
static void db_release(struct core_engine *e, struct database *d)
{
	struct database **pp;
	if (d->n_sessions > 0 || d->inflight != NULL)
		return;
	db_close_ckpt(d);
	core__vfs_delete_db(e->vfs, d->file);
	for (pp = &e->dbs; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == d) {
			*pp = d->next;
			break;
		}
	}
	free(d);
}

static bool valid_db_name(const char *name)
{
	size_t n = strlen(name);
	return n >= 1 && n <= CORE_DB_NAME_MAX;
}

bool core_database_exists(struct core_engine *e, const char *name)
{
	return db_find(e, name) != NULL;
}

/* ---- Connections ---------------------------------------------------------------------- */

/* Deny what would touch the WAL behind the VFS's back or block the loop thread. */
static int authorizer(void *arg, int action, const char *a1, const char *a2, const char *a3,
		      const char *a4)
{
	static const char *const denied_pragmas[] = {
		"journal_mode", "page_size", "wal_checkpoint", "wal_autocheckpoint", "synchronous",
		"busy_timeout", "locking_mode", "journal_size_limit", "read_uncommitted",
		"mmap_size", "temp_store_directory", "data_store_directory",
		"optimize", /* runs ANALYZE (a write) although SQLite calls it read-only */
		NULL,
	};
	int i;

	if (action == SQLITE_ATTACH)
		return (a1 == NULL || a1[0] == 0) ? SQLITE_OK : SQLITE_DENY;
	if (action == SQLITE_PRAGMA) {
		for (i = 0; denied_pragmas[i] != NULL; i++) {
			if (sqlite3_stricmp(a1, denied_pragmas[i]) != 0)
				continue;
			/* Reading journal_mode and page_size is harmless. */
			if (a2 == NULL && (sqlite3_stricmp(a1, "journal_mode") == 0 ||
					   sqlite3_stricmp(a1, "page_size") == 0 ||
					   sqlite3_stricmp(a1, "synchronous") == 0))
				return SQLITE_OK;
			return SQLITE_DENY;
		}
	}
	return SQLITE_OK;
}

static int conn_exec(sqlite3 *conn, const char *sql)
{
	return sqlite3_exec(conn, sql, NULL, NULL, NULL);
}

/* Open and configure a connection to database d. */
static int conn_open(struct core_engine *e, struct database *d, sqlite3 **out)
{
	sqlite3 *conn = NULL;
	struct core_frames fr;
	int rv;

	rv = sqlite3_open_v2(d->file, &conn, SQLITE_OPEN_READWRITE | SQLITE_OPEN_EXRESCODE,
			     core__vfs_name(e->vfs));
	if (rv != SQLITE_OK)
		goto err;
	sqlite3_extended_result_codes(conn, 1);
	if (conn_exec(conn, "PRAGMA journal_mode=WAL") != SQLITE_OK ||
	    conn_exec(conn, "PRAGMA synchronous=OFF") != SQLITE_OK ||
	    conn_exec(conn, "PRAGMA foreign_keys=ON") != SQLITE_OK)
		goto err;
	sqlite3_wal_autocheckpoint(conn, 0);
	sqlite3_db_config(conn, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
	sqlite3_db_config(conn, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
	sqlite3_set_authorizer(conn, authorizer, NULL);
	if (core__cluster_register(conn, e) != SQLITE_OK)
		goto err;
	/* Configuration must not have produced frames. */
	if (core__vfs_poll(e->vfs, d->file, &fr) != 0 || fr.n != 0) {
		LOGE("engine: %s: connection setup wrote to the database", d->name);
		core__vfs_abort(e->vfs, d->file);
		core__frames_close(&fr);
		goto err;
	}
	*out = conn;
	return 0;
err:
	LOGE("engine: open %s: %s", d->name, conn ? sqlite3_errmsg(conn) : "out of memory");
	sqlite3_close(conn);
	return ERR_IO;
}

/* ---- Checkpoints ---------------------------------------------------------------------- */

static void maybe_checkpoint(struct core_engine *e, struct database *d)
{
	int rv, log = 0, ckpt = 0;
	if (core__vfs_wal_frames(e->vfs, d->file) < e->cfg.checkpoint_threshold)
		return;
	if (!core__vfs_idle(e->vfs, d->file))
		return;
	if (d->ckpt_conn == NULL && conn_open(e, d, &d->ckpt_conn) != 0)
		return;
	rv = sqlite3_wal_checkpoint_v2(d->ckpt_conn, "main", SQLITE_CHECKPOINT_TRUNCATE, &log,
				       &ckpt);
	if (rv != SQLITE_OK)
		LOGW("engine: %s: checkpoint: %s", d->name, sqlite3_errmsg(d->ckpt_conn));
	else if (core__vfs_wal_frames(e->vfs, d->file) != 0)
		LOGW("engine: %s: checkpoint left %u frames", d->name,
		     core__vfs_wal_frames(e->vfs, d->file));
}

/* ---- Engine --------------------------------------------------------------------------- */

int core_engine_create(const struct core_config *cfg, struct core_replication *repl,
		       struct core_engine **out)
{
	struct core_engine *e;
	char name[64];
	int rv;

	if (cfg->page_size < 512 || cfg->page_size > 65536 ||
	    (cfg->page_size & (cfg->page_size - 1)))
		return ERR_INVALID;
	e = calloc(1, sizeof *e);
	if (e == NULL)
		return ERR_NOMEM;
	e->cfg = *cfg;
	e->repl = repl;
	snprintf(name, sizeof name, "pqlite-%u", vfs_counter++);
	rv = core__vfs_create(name, cfg->mem_cap, &e->vfs);
	if (rv != 0) {
		free(e);
		return rv;
	}
	/* A fresh cluster holds "postgres", created at log index 0 on every node. */
	if (db_add(e, CORE_DEFAULT_DB, 0) == NULL ||
	    core__vfs_create_db(e->vfs, e->dbs->file, cfg->page_size) != 0) {
		core_engine_destroy(e);
		return ERR_NOMEM;
	}
	*out = e;
	return 0;
}

static void dbs_free(struct database *list);

void core_engine_destroy(struct core_engine *e)
{
	dbs_free(e->dbs);
	e->dbs = NULL;
	while (e->proposals != NULL) {
		struct proposal *p = e->proposals;
		e->proposals = p->next;
		p->engine = NULL; /* a late callback must not touch the engine */
	}
	if (e->barrier_req != NULL)
		e->barrier_req->engine = NULL;
	core__vfs_destroy(e->vfs);
	free(e);
}

const char *core_engine_leader_address(struct core_engine *e)
{
	return e->repl->leader_address(e->repl);
}

struct core_replication *core__engine_repl(struct core_engine *e)
{
	return e->repl;
}

void core__engine_set_fn_sqlstate(struct core_engine *e, const char *sqlstate)
{
	snprintf(e->fn_sqlstate, sizeof e->fn_sqlstate, "%s", sqlstate);
}

bool core_engine_is_leader(struct core_engine *e)
{
	return e->leader;
}

bool core_engine_is_ready(struct core_engine *e)
{
	return e->ready;
}

void core_engine_set_leader_listener(struct core_engine *e, core_leader_cb cb, void *arg)
{
	e->leader_cb = cb;
	e->leader_cb_arg = arg;
}

static void session_fail(struct core_session *s, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void session_fail(struct core_session *s, int code, const char *fmt, ...)
{
	va_list ap;
	s->err.code = code;
	s->err.sqlite_code = 0;
	s->err.offset = -1;
	s->err.sqlstate[0] = '\0';
	va_start(ap, fmt);
	vsnprintf(s->err.msg, sizeof s->err.msg, fmt, ap);
	va_end(ap);
}

static void session_sql_error(struct core_session *s, int offset)
{
	s->err.code = ERR_SQL;
	memcpy(s->err.sqlstate, s->engine->fn_sqlstate, sizeof s->err.sqlstate);
	s->engine->fn_sqlstate[0] = '\0';
	s->err.sqlite_code = sqlite3_extended_errcode(s->conn);
	s->err.offset = offset;
	snprintf(s->err.msg, sizeof s->err.msg, "%s", sqlite3_errmsg(s->conn));
}

static int advance(struct core_stmt *st);
static int step_once(struct core_stmt *st);

/* Report the outcome of a pending step. */
static void deliver(struct core_stmt *st, int rc)
{
	if (rc != CORE_ROW && rc != CORE_PENDING)
		st->state = ST_FINISHED;
	if (st->session->active == st)
		st->session->active = NULL;
	st->cb(st, rc, st->arg);
}

static void ready_remove(struct core_engine *e, struct core_stmt *st)
{
	struct core_stmt **pp;
	e->ready_tail = NULL;
	for (pp = &e->ready_head; *pp != NULL;) {
		if (*pp == st)
			*pp = st->next_ready;
		else {
			e->ready_tail = *pp;
			pp = &(*pp)->next_ready;
		}
	}
	st->next_ready = NULL;
}

static void wait_remove(struct database *d, struct core_stmt *st)
{
	struct core_stmt **pp;
	d->wait_tail = NULL;
	for (pp = &d->wait_head; *pp != NULL;) {
		if (*pp == st)
			*pp = st->next_wait;
		else {
			d->wait_tail = *pp;
			pp = &(*pp)->next_wait;
		}
	}
	st->next_wait = NULL;
}

static bool slot_free(struct database *d)
{
	return d->writer == NULL && d->inflight == NULL;
}

/* Hand the writer slot to queued statements while it is free. */
static void db_wake(struct database *d)
{
	while (slot_free(d) && d->wait_head != NULL) {
		struct core_stmt *st = d->wait_head;
		int rc;
		d->wait_head = st->next_wait;
		if (d->wait_head == NULL)
			d->wait_tail = NULL;
		st->next_wait = NULL;
		d->writer = st->session;
		st->session->last_active = st->session->engine->now;
		st->state = ST_RUNNING;
		rc = advance(st);
		if (rc != CORE_PENDING)
			deliver(st, rc);
	}
}

/* Give the slot back when the session's transaction is over and nothing is in flight. */
static void session_release_slot(struct core_session *s)
{
	struct database *d = s->db;
	if (d->writer != s)
		return;
	if (!sqlite3_get_autocommit(s->conn))
		return;
	if (d->inflight != NULL && d->inflight->st != NULL && d->inflight->st->session == s)
		return;
	d->writer = NULL;
	db_wake(d);
}

/* Roll back transactions that sit idle while holding their database's writer slot: every
 * other writer of that database would wait behind them. */
static void expire_idle_transactions(struct core_engine *e)
{
	struct core_session *s;
	uint32_t limit = e->cfg.idle_in_txn_timeout_ms;
	if (limit == 0)
		return;
	for (s = e->sessions; s != NULL; s = s->next) {
		struct database *d = s->db;
		if (s->orphan != NULL)
			continue;
		/* Idle means waiting for the client's next statement, as in PostgreSQL: not
		 * while a statement is alive (running, or paused because the client is slow
		 * to read its rows). */
		if (d->writer != s || s->active != NULL || s->n_stmts > 0 ||
		    !core_session_in_txn(s) || e->now - s->last_active < limit)
			continue;
		sqlite3_exec(s->conn, "ROLLBACK", NULL, NULL, NULL);
		session_fail(s, ERR_TIMEOUT,
			     "transaction rolled back after %u ms idle while holding the write "
			     "lock of database \"%s\"", limit, d->name);
		LOGI("engine: %s", s->err.msg);
		session_release_slot(s);
	}
}

static void group_remove(struct barrier_group *g, struct core_stmt *st);

/* A linearizable read whose barrier did not come in time. Returns true if it expired. */
static bool barrier_expired(struct core_engine *e, struct barrier_group *g,
			    struct core_stmt *st, uint64_t now_ms)
{
	if (st->deadline > now_ms)
		return false;
	group_remove(g, st);
	session_fail(st->session, ERR_TIMEOUT,
		     "no quorum confirmed leadership within %u ms for a linearizable read",
		     e->cfg.apply_timeout_ms);
	deliver(st, ERR_TIMEOUT);
	return true;
}

void core_engine_tick(struct core_engine *e, uint64_t now_ms)
{
	struct database *d;
	struct core_stmt *st;
	bool again = true;

	if (!e->clock_started) {
		/* Sessions opened before the first tick recorded time 0: their idle time
		 * starts now, not at the epoch of the server's monotonic clock. */
		struct core_session *s;
		for (s = e->sessions; s != NULL; s = s->next)
			s->last_active = now_ms;
		e->clock_started = true;
	}
	e->now = now_ms;
	expire_idle_transactions(e);
	while (again) {
		again = false;
		for (st = e->ready_head; st != NULL; st = st->next_ready) {
			if (st->deadline <= now_ms) {
				ready_remove(e, st);
				session_fail(st->session, ERR_TIMEOUT,
					     "no leader became available within %u ms",
					     e->cfg.apply_timeout_ms);
				deliver(st, ERR_TIMEOUT);
				again = true;
				break;
			}
		}
		/* After an expiry the statement may be freed by its callback: restart the scan. */
		for (st = e->bar_inflight.head; st != NULL; st = st->next_barrier)
			if ((again = barrier_expired(e, &e->bar_inflight, st, now_ms)))
				break;
		for (st = e->bar_next.head; st != NULL && !again; st = st->next_barrier)
			if ((again = barrier_expired(e, &e->bar_next, st, now_ms)))
				break;
		for (d = e->dbs; d != NULL && !again; d = d->next) {
			if (d->drop_cb != NULL && d->drop_deadline <= now_ms) {
				core_done_cb cb = d->drop_cb;
				d->drop_cb = NULL;
				cb(d->drop_arg, ERR_INUSE);
				again = true;
				break;
			}
			for (st = d->wait_head; st != NULL; st = st->next_wait) {
				if (st->deadline <= now_ms) {
					wait_remove(d, st);
					session_fail(st->session, ERR_TIMEOUT,
						     "timed out after %u ms waiting for another "
						     "transaction to finish writing to database \"%s\"",
						     e->cfg.writer_timeout_ms, d->name);
					deliver(st, ERR_TIMEOUT);
					again = true;
					break;
				}
			}
		}
	}
}

void core_engine_set_leader(struct core_engine *e, bool leader, bool ready)
{
	bool was_ready = e->leader && e->ready;
	e->leader = leader;
	e->ready = leader && ready;
	if (e->ready && !was_ready) {
		/* Everything waiting for readiness proceeds, in arrival order. */
		while (e->ready_head != NULL) {
			struct core_stmt *st = e->ready_head;
			int rc;
			ready_remove(e, st);
			st->state = ST_NEW;
			rc = advance(st);
			if (rc != CORE_PENDING)
				deliver(st, rc);
		}
	}
	if (!leader) {
		struct database *d;
		struct core_session *s;
		/* Transactions opened while leading cannot commit here any more, and their
		 * write lock would stand in the way of applying the new leader's entries. */
		for (s = e->sessions; s != NULL; s = s->next) {
			if (s->orphan != NULL)
				continue;
			if (s->active != NULL && s->active->state == ST_WAIT_COMMIT)
				continue; /* its commit's outcome arrives through Raft */
			if (core_session_in_txn(s)) {
				sqlite3_exec(s->conn, "ROLLBACK", NULL, NULL, NULL);
				LOGI("engine: rolled back a transaction on \"%s\": leadership lost",
				     s->db->name);
			}
			if (s->db->writer == s && !core_session_in_txn(s))
				s->db->writer = NULL;
		}
		while (e->ready_head != NULL) {
			struct core_stmt *st = e->ready_head;
			ready_remove(e, st);
			session_fail(st->session, ERR_NOTLEADER, "this node is not the leader");
			deliver(st, ERR_NOTLEADER);
		}
		for (d = e->dbs; d != NULL; d = d->next) {
			while (d->wait_head != NULL) {
				struct core_stmt *st = d->wait_head;
				wait_remove(d, st);
				session_fail(st->session, ERR_NOTLEADER,
					     "this node is not the leader");
				deliver(st, ERR_NOTLEADER);
			}
		}
	}
	if (e->leader_cb != NULL)
		e->leader_cb(e->leader_cb_arg, leader, ready);
}

/* ---- Proposals ------------------------------------------------------------------------ */

static void proposal_unlink(struct core_engine *e, struct proposal *p)
{
	struct proposal **pp;
	for (pp = &e->proposals; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			return;
		}
	}
}

static struct proposal *proposal_find(struct core_engine *e, uint64_t index)
{
	struct proposal *p;
	for (p = e->proposals; p != NULL; p = p->next)
		if (p->index == index)
			return p;
	return NULL;
}

/* Encode and propose a command. On 0, *out is in flight and cb will fire. */
static int propose(struct core_engine *e, const struct command *c, core_repl_cb cb,
		   struct proposal *p)
{
	size_t len = cmd_sizeof(c);
	void *buf = e->repl->alloc(e->repl, len);
	int rv;

	if (buf == NULL)
		return ERR_NOMEM;
	cmd_encode(c, buf);
	rv = e->repl->propose(e->repl, buf, len, &p->index, cb, p);
	if (rv != 0) {
		e->repl->free(e->repl, buf);
		return rv;
	}
	p->next = e->proposals;
	e->proposals = p;
	return 0;
}

static int admin_propose(struct core_engine *e, uint8_t type, const char *name,
			 core_done_cb cb, void *arg);

/* Start a waiting DROP DATABASE once nobody uses the database any more. */
static void db_try_pending_drop(struct core_engine *e, struct database *d)
{
	core_done_cb cb = d->drop_cb;
	int rc;
	if (cb == NULL || d->n_sessions > 0 || d->inflight != NULL)
		return;
	d->drop_cb = NULL;
	rc = admin_propose(e, CMD_DROP_DB, d->name, cb, d->drop_arg);
	if (rc != CORE_PENDING)
		cb(d->drop_arg, rc);
}

static void frames_done(void *arg, int status)
{
	struct proposal *p = arg;
	struct core_engine *e = p->engine;
	struct database *d = p->db;
	struct core_stmt *st = p->st;

	if (e == NULL) { /* engine destroyed first */
		free(p);
		return;
	}
	proposal_unlink(e, p);
	if (status == 0 && p->result != 0)
		status = p->result; /* applied, but refused by the FSM */
	if (status != 0) {
		/* Not applied here (yet): release the lock taken on the transaction's behalf.
		 * If another leader commits the entry, it is applied later as a follower's. */
		core__vfs_abort(e->vfs, d->file);
	}
	d->inflight = NULL;
	free(p);
	if (st == NULL) {
		if (d->dropped) {
			db_release(e, d);
			return;
		}
		db_wake(d);
		db_try_pending_drop(e, d);
		return;
	}
	if (status != 0) {
		if (status == ERR_LEADERSHIP_LOST || status == ERR_SHUTDOWN)
			session_fail(st->session, ERR_LEADERSHIP_LOST,
				     "leadership lost while committing: the transaction may or may "
				     "not have been committed");
		else if (status == ERR_NOTFOUND)
			session_fail(st->session, status,
				     "database \"%s\" was dropped: the transaction was not applied",
				     d->name);
		else
			session_fail(st->session, status, "commit failed: %s", err_str(status));
		session_release_slot(st->session);
		deliver(st, st->session->err.code);
		return;
	}
	st->state = ST_RUNNING;
	session_release_slot(st->session);
	deliver(st, st->step_rc);
}

/* ---- Linearizable reads --------------------------------------------------------------- */

static void group_push(struct barrier_group *g, struct core_stmt *st)
{
	st->next_barrier = NULL;
	if (g->tail != NULL)
		g->tail->next_barrier = st;
	else
		g->head = st;
	g->tail = st;
}

static void group_remove(struct barrier_group *g, struct core_stmt *st)
{
	struct core_stmt **pp;
	g->tail = NULL;
	for (pp = &g->head; *pp != NULL;) {
		if (*pp == st) {
			*pp = st->next_barrier;
		} else {
			g->tail = *pp;
			pp = &(*pp)->next_barrier;
		}
	}
	st->next_barrier = NULL;
}

static int barrier_issue(struct core_engine *e);

/* Fail or run every statement of a group (never from inside core_stmt_step). The group
 * moves to the engine's bar_finishing list and statements leave it one at a time, so a
 * callback that closes another waiting session (core_session_close removes it from
 * there) cannot leave a freed statement behind; nested calls just append. */
static void group_finish(struct core_engine *e, struct barrier_group *g, int status)
{
	while (g->head != NULL) {
		struct core_stmt *st = g->head;
		group_remove(g, st);
		st->barrier_status = status;
		group_push(&e->bar_finishing, st);
	}
	if (e->finishing)
		return;
	e->finishing = true;
	while (e->bar_finishing.head != NULL) {
		struct core_stmt *st = e->bar_finishing.head;
		int rc;
		group_remove(&e->bar_finishing, st);
		if (st->barrier_status != 0) {
			session_fail(st->session, ERR_NOTLEADER,
				     "could not confirm leadership for a linearizable read (%s); "
				     "nothing was executed",
				     err_str(st->barrier_status));
			deliver(st, ERR_NOTLEADER);
			continue;
		}
		st->state = ST_RUNNING;
		rc = step_once(st);
		if (rc != CORE_PENDING)
			deliver(st, rc);
	}
	e->finishing = false;
}

static void barrier_done(void *arg, int status)
{
	struct barrier_req *req = arg;
	struct core_engine *e = req->engine;
	struct barrier_group g;
	int rv;
	free(req);
	if (e == NULL)
		return;
	e->barrier_req = NULL;
	e->barrier_pending = false;
	g = e->bar_inflight;
	e->bar_inflight = (struct barrier_group){NULL, NULL};
	/* Those who arrived meanwhile need a barrier of their own. */
	if (e->bar_next.head != NULL && (rv = barrier_issue(e)) != 0) {
		struct barrier_group late = e->bar_next;
		e->bar_next = (struct barrier_group){NULL, NULL};
		group_finish(e, &late, rv);
	}
	group_finish(e, &g, status);
}

/* Put the gathered readers on a new barrier. On error nothing changes. */
static int barrier_issue(struct core_engine *e)
{
	struct barrier_req *req = malloc(sizeof *req);
	int rv;
	if (req == NULL)
		return ERR_NOMEM;
	req->engine = e;
	rv = e->repl->barrier(e->repl, barrier_done, req);
	if (rv != 0) {
		free(req);
		return rv;
	}
	e->barrier_req = req;
	e->barrier_pending = true;
	e->bar_inflight = e->bar_next;
	e->bar_next = (struct barrier_group){NULL, NULL};
	return 0;
}

/* ---- Stepping ------------------------------------------------------------------------- */

struct base_ctx {
	struct core_vfs *vfs;
	const char *file;
};

static const uint8_t *base_page(void *arg, uint32_t pgno)
{
	struct base_ctx *b = arg;
	return core__vfs_base_page(b->vfs, b->file, pgno);
}

/* One sqlite3_step, then replicate what it committed, if anything. */
static int step_once(struct core_stmt *st)
{
	struct core_session *s = st->session;
	struct core_engine *e = s->engine;
	struct database *d = s->db;
	struct core_frames fr;
	struct command cmd;
	struct proposal *p;
	int rc, rv;

	st->session->engine->fn_sqlstate[0] = '\0';
	rc = sqlite3_step(st->stmt);
	if (d->writer != s && sqlite3_txn_state(s->conn, NULL) == SQLITE_TXN_WRITE) {
		/* A statement SQLite calls read-only took the write lock (PRAGMA optimize
		 * does): it would block every writer without holding the writer slot. */
		sqlite3_reset(st->stmt);
		sqlite3_exec(s->conn, "ROLLBACK", NULL, NULL, NULL);
		if (core__vfs_poll(e->vfs, d->file, &fr) == 0 && fr.n != 0) {
			core__vfs_abort(e->vfs, d->file);
			core__frames_close(&fr);
		}
		session_fail(s, ERR_SQL, "statement needs the write lock but was not classified "
					 "as a write; its transaction was rolled back");
		s->err.sqlite_code = SQLITE_BUSY;
		return ERR_SQL;
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		session_sql_error(s, sqlite3_error_offset(s->conn));
		/* SQLite rolled the statement (or transaction) back; nothing to replicate. */
		if (core__vfs_poll(e->vfs, d->file, &fr) == 0 && fr.n != 0) {
			core__vfs_abort(e->vfs, d->file);
			core__frames_close(&fr);
		}
		session_release_slot(s);
		return ERR_SQL;
	}
	st->step_rc = rc == SQLITE_ROW ? CORE_ROW : CORE_DONE;
	if (rc == SQLITE_DONE)
		st->changes = sqlite3_changes64(s->conn);

	rv = core__vfs_poll(e->vfs, d->file, &fr);
	if (rv != 0) {
		session_fail(s, rv, "could not capture the transaction: %s", err_str(rv));
		session_release_slot(s);
		return rv;
	}
	if (fr.n == 0) {
		if (rc == SQLITE_DONE)
			session_release_slot(s);
		return st->step_rc;
	}
	if (d->writer != s) {
		/* Every writing statement takes the slot first. Frames without it would not be
		 * this statement's to propose: refuse them rather than commit someone else's
		 * work under this statement's name. */
		LOGE("engine: %s: a commit without the writer slot; rolled back", d->name);
		core__vfs_abort(e->vfs, d->file);
		core__frames_close(&fr);
		session_fail(s, ERR_BUSY, "internal error: write outside the writer queue");
		return ERR_BUSY;
	}
	p = calloc(1, sizeof *p);
	if (p == NULL) {
		rv = ERR_NOMEM;
		goto abort;
	}
	p->engine = e;
	p->db = d;
	p->st = st;
	memset(&cmd, 0, sizeof cmd);
	cmd.type = CMD_FRAMES;
	snprintf(cmd.db, sizeof cmd.db, "%s", d->name);
	cmd.frames = fr;
	{
		/* Ship small changes as deltas against the committed pages: the state just
		 * before this entry on every node (one transaction in flight per database). */
		struct base_ctx bc = {e->vfs, d->file};
		rv = cmd_set_base(&cmd, base_page, &bc);
	}
	if (rv == 0)
		rv = propose(e, &cmd, frames_done, p);
	cmd_close(&cmd); /* frees the delta plan; the polled frames are freed below */
	core__frames_close(&fr);
	if (rv != 0) {
		free(p);
		core__vfs_abort(e->vfs, d->file);
		if (rv == ERR_NOTLEADER)
			session_fail(s, rv, "cannot commit: this node is not the leader");
		else
			session_fail(s, rv, "cannot commit: %s", err_str(rv));
		session_release_slot(s);
		return rv;
	}
	d->inflight = p;
#ifdef PQ_MUTANT_ACK_BEFORE_COMMIT
	/* Deliberately broken build (meson -Dmutant=ack_before_commit) for the fault
	 * harness: the client hears "committed" as soon as the entry is proposed. */
	p->st = NULL;
	session_release_slot(s);
	return st->step_rc;
#endif
	st->state = ST_WAIT_COMMIT;
	return CORE_PENDING;
abort:
	core__vfs_abort(e->vfs, d->file);
	core__frames_close(&fr);
	session_fail(s, rv, "cannot commit: %s", err_str(rv));
	session_release_slot(s);
	return rv;
}

/* Run a statement from its current state as far as it can go without waiting. */
static const char *skip_space(const char *sql)
{
	while (*sql == ' ' || *sql == '\t' || *sql == '\n' || *sql == '\r')
		sql++;
	return sql;
}

/* ROLLBACK (also ROLLBACK TO) only discards local state: it runs on any node, so that a
 * session can always leave a transaction, even after its node lost leadership. */
static bool is_rollback(sqlite3_stmt *stmt)
{
	const char *sql = skip_space(sqlite3_sql(stmt));
	return sqlite3_strnicmp(sql, "rollback", 8) == 0 &&
	       (sql[8] == 0 || sql[8] == ' ' || sql[8] == ';' || sql[8] == '\t' ||
		sql[8] == '\n' || sql[8] == '\r');
}

/* BEGIN, COMMIT/END, SAVEPOINT, RELEASE: they read nothing, so a linearizable session
 * needs no barrier for them (ROLLBACK never reaches that check). */
static bool is_txn_control(sqlite3_stmt *stmt)
{
	static const char *const words[] = {"begin", "commit", "end", "savepoint", "release"};
	const char *sql = skip_space(sqlite3_sql(stmt));
	size_t i, n;
	for (i = 0; i < sizeof words / sizeof words[0]; i++) {
		n = strlen(words[i]);
		if (sqlite3_strnicmp(sql, words[i], (int)n) == 0 &&
		    (sql[n] == 0 || sql[n] == ' ' || sql[n] == ';' || sql[n] == '\t' ||
		     sql[n] == '\n' || sql[n] == '\r'))
			return true;
	}
	return false;
}

/* Whether a statement needs the writer slot: anything that may write, and BEGIN
 * IMMEDIATE / EXCLUSIVE, which SQLite reports as read-only but which take the write lock. */
static bool needs_slot(sqlite3_stmt *stmt)
{
	const char *sql;
	if (!sqlite3_stmt_readonly(stmt))
		return true;
	sql = skip_space(sqlite3_sql(stmt));
	if (sqlite3_strnicmp(sql, "begin", 5) != 0)
		return false;
	sql = skip_space(sql + 5);
	return sqlite3_strnicmp(sql, "immediate", 9) == 0 ||
	       sqlite3_strnicmp(sql, "exclusive", 9) == 0;
}

static int advance(struct core_stmt *st)
{
	struct core_session *s = st->session;
	struct core_engine *e = s->engine;
	struct database *d = s->db;

	if (st->state == ST_NEW && is_rollback(st->stmt)) {
		st->state = ST_RUNNING;
		return step_once(st);
	}
	if (st->state == ST_NEW && s->read_mode == CORE_READ_STALE && !needs_slot(st->stmt) &&
	    d->writer != s && !d->dropped) {
		/* A stale read: the local copy, whoever leads. */
		st->state = ST_RUNNING;
		return step_once(st);
	}
	if (st->state == ST_NEW) {
		if (d->dropped) {
			session_fail(s, ERR_NOTFOUND, "database \"%s\" has been dropped", d->name);
			return ERR_NOTFOUND;
		}
		if (!e->leader) {
			session_fail(s, ERR_NOTLEADER, "this node is not the leader");
			return ERR_NOTLEADER;
		}
		if (!e->ready) {
			st->state = ST_WAIT_READY;
			st->deadline = e->now + e->cfg.apply_timeout_ms;
			if (e->ready_tail != NULL)
				e->ready_tail->next_ready = st;
			else
				e->ready_head = st;
			e->ready_tail = st;
			return CORE_PENDING;
		}
		st->state = ST_RUNNING;
		if (s->read_mode == CORE_READ_LINEARIZABLE && !needs_slot(st->stmt) &&
		    d->writer != s && !is_txn_control(st->stmt)) {
			/* Wait for a barrier issued after this read arrived. */
			int rv;
			st->state = ST_WAIT_BARRIER;
			st->deadline = e->now + e->cfg.apply_timeout_ms;
			group_push(&e->bar_next, st);
			if (!e->barrier_pending && (rv = barrier_issue(e)) != 0) {
				group_remove(&e->bar_next, st);
				session_fail(s, ERR_NOTLEADER,
					     "could not confirm leadership for a linearizable read "
					     "(%s); nothing was executed",
					     err_str(rv));
				return ERR_NOTLEADER;
			}
			return CORE_PENDING;
		}
		if (needs_slot(st->stmt) && d->writer != s) {
			if (slot_free(d) && d->wait_head == NULL) {
				d->writer = s;
			} else {
				st->state = ST_WAIT_SLOT;
				st->deadline = e->now + e->cfg.writer_timeout_ms;
				if (d->wait_tail != NULL)
					d->wait_tail->next_wait = st;
				else
					d->wait_head = st;
				d->wait_tail = st;
				return CORE_PENDING;
			}
		}
	}
	return step_once(st);
}

int core_stmt_step(struct core_stmt *st, core_step_cb cb, void *arg)
{
	int rc;
	if (st->state == ST_FINISHED) {
		session_fail(st->session, ERR_INVALID, "statement already finished");
		return ERR_INVALID;
	}
	if (st->session->orphan != NULL) {
		session_fail(st->session, ERR_SHUTDOWN, "this node's copy of the database was "
							"replaced by a snapshot from the leader");
		return ERR_SHUTDOWN;
	}
	st->cb = cb;
	st->arg = arg;
	st->session->last_active = st->session->engine->now;
	rc = advance(st);
	if (rc == CORE_PENDING)
		st->session->active = st;
	else if (rc != CORE_ROW)
		st->state = ST_FINISHED;
	return rc;
}

sqlite3_stmt *core_stmt_sqlite(struct core_stmt *st)
{
	return st->stmt;
}

int64_t core_stmt_changes(struct core_stmt *st)
{
	return st->changes;
}

bool core_stmt_readonly(struct core_stmt *st)
{
	return sqlite3_stmt_readonly(st->stmt) != 0;
}

/* A statement can commit when it is finalized or its connection closed (an autocommit
 * INSERT ... RETURNING whose rows were not all read, say, when the client went away).
 * Such a commit was never proposed: roll it back locally, as PostgreSQL rolls back the
 * statement of a client that disconnects. */
static void discard_unreplicated(struct core_engine *e, struct database *d)
{
	struct core_frames fr;
	if (core__vfs_poll(e->vfs, d->file, &fr) == 0 && fr.n != 0) {
		LOGI("engine: %s: discarding a commit made by an abandoned statement", d->name);
		core__vfs_abort(e->vfs, d->file);
		core__frames_close(&fr);
	}
}

void core_stmt_finalize(struct core_stmt *st)
{
	struct core_session *s;
	if (st == NULL)
		return;
	s = st->session;
	sqlite3_finalize(st->stmt);
	free(st);
	s->n_stmts--;
	s->last_active = s->engine->now;
	discard_unreplicated(s->engine, s->db);
	/* Finalizing can end a read transaction; an autocommit session may now give the
	 * slot back. */
	session_release_slot(s);
}

/* ---- Sessions ------------------------------------------------------------------------- */

int core_session_open(struct core_engine *e, const char *name, struct core_session **out)
{
	struct database *d = db_find(e, name);
	struct core_session *s;
	int rv;

	if (d == NULL || d->drop_proposed)
		return ERR_NOTFOUND;
	s = calloc(1, sizeof *s);
	if (s == NULL)
		return ERR_NOMEM;
	s->engine = e;
	s->db = d;
	s->err.offset = -1;
	s->last_active = e->now;
	rv = conn_open(e, d, &s->conn);
	if (rv != 0) {
		free(s);
		return rv;
	}
	d->n_sessions++;
	s->next = e->sessions;
	e->sessions = s;
	*out = s;
	return 0;
}

static void session_unlink(struct core_engine *e, struct core_session *s)
{
	struct core_session **pp;

	for (pp = &e->sessions; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
}

/* An orphan holds nothing of the current state: close its connection, and the replaced
 * generation with the last orphan. */
static void orphan_close(struct core_session *s)
{
	struct core_engine *e = s->engine;
	struct generation *g = s->orphan, **pp;

	if (s->active != NULL) {
		sqlite3_finalize(s->active->stmt);
		free(s->active);
	}
	sqlite3_close_v2(s->conn);
	session_unlink(e, s);
	free(s);
	if (--g->n_orphans > 0)
		return;
	dbs_free(g->dbs);
	core__vfs_destroy(g->vfs);
	for (pp = &e->old_gens; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == g) {
			*pp = g->next;
			break;
		}
	}
	free(g);
}

void core_session_close(struct core_session *s)
{
	struct core_engine *e = s->engine;
	struct database *d = s->db;
	struct core_stmt *st = s->active;

	if (s->orphan != NULL) {
		orphan_close(s);
		return;
	}
	if (st != NULL) {
		switch (st->state) {
		case ST_WAIT_READY:
			ready_remove(e, st);
			break;
		case ST_WAIT_SLOT:
			wait_remove(d, st);
			break;
		case ST_WAIT_BARRIER:
			group_remove(&e->bar_inflight, st);
			group_remove(&e->bar_next, st);
			group_remove(&e->bar_finishing, st);
			break;
		case ST_WAIT_COMMIT:
			/* The commit stays in flight; it no longer has anyone to tell. */
			if (d->inflight != NULL && d->inflight->st == st)
				d->inflight->st = NULL;
			break;
		default:
			break;
		}
		sqlite3_finalize(st->stmt);
		free(st);
		s->active = NULL;
		s->n_stmts--;
	}
	/* Closing rolls back an open transaction; statements not finalized by the caller
	 * are finalized here. */
	sqlite3_close_v2(s->conn);
	s->conn = NULL;
	discard_unreplicated(e, d);
	if (d->writer == s) {
		d->writer = NULL;
		db_wake(d);
	}
	session_unlink(e, s);
	d->n_sessions--;
	free(s);
	if (d->dropped)
		db_release(e, d);
	else
		db_try_pending_drop(e, d);
}

void core_session_set_read_mode(struct core_session *s, enum core_read_mode mode)
{
	s->read_mode = mode;
}

enum core_read_mode core_session_read_mode(struct core_session *s)
{
	return s->read_mode;
}

bool core_session_in_txn(struct core_session *s)
{
	return s->conn != NULL && !sqlite3_get_autocommit(s->conn);
}

const struct core_error *core_session_error(struct core_session *s)
{
	return &s->err;
}

int core_session_prepare(struct core_session *s, const char *sql, int len, const char **tail,
			 struct core_stmt **out)
{
	sqlite3_stmt *stmt = NULL;
	struct core_stmt *st;
	int rc;

	*out = NULL;
	if (s->orphan != NULL) {
		session_fail(s, ERR_SHUTDOWN, "this node's copy of the database was replaced "
					      "by a snapshot from the leader");
		return ERR_SHUTDOWN;
	}
	rc = sqlite3_prepare_v2(s->conn, sql, len, &stmt, tail);
	if (rc != SQLITE_OK) {
		session_sql_error(s, sqlite3_error_offset(s->conn));
		return rc == SQLITE_NOMEM ? ERR_NOMEM : ERR_SQL;
	}
	if (stmt == NULL)
		return 0;
	st = calloc(1, sizeof *st);
	if (st == NULL) {
		sqlite3_finalize(stmt);
		session_fail(s, ERR_NOMEM, "out of memory");
		return ERR_NOMEM;
	}
	st->session = s;
	st->stmt = stmt;
	st->state = ST_NEW;
	s->n_stmts++;
	*out = st;
	return 0;
}

/* ---- CREATE / DROP DATABASE ------------------------------------------------------------- */

static void admin_done(void *arg, int status)
{
	struct proposal *p = arg;
	struct core_engine *e = p->engine;
	int rc;
	if (e == NULL) {
		free(p);
		return;
	}
	proposal_unlink(e, p);
	rc = status != 0 ? status : p->result;
	if (p->admin_type == CMD_DROP_DB) {
		/* Applied: the database is gone. Otherwise it stays open for sessions. */
		struct database *d = db_find(e, p->admin_db);
		if (d != NULL)
			d->drop_proposed = false;
	}
	p->done_cb(p->done_arg, rc);
	free(p);
}

static int admin_propose(struct core_engine *e, uint8_t type, const char *name,
			 core_done_cb cb, void *arg)
{
	struct command c;
	struct proposal *p;
	int rv;

	if (!e->leader || !e->ready)
		return ERR_NOTLEADER;
	p = calloc(1, sizeof *p);
	if (p == NULL)
		return ERR_NOMEM;
	p->engine = e;
	p->done_cb = cb;
	p->done_arg = arg;
	p->admin_type = type;
	snprintf(p->admin_db, sizeof p->admin_db, "%s", name);
	memset(&c, 0, sizeof c);
	c.type = type;
	snprintf(c.db, sizeof c.db, "%s", name);
	rv = propose(e, &c, admin_done, p);
	if (rv != 0) {
		free(p);
		return rv;
	}
	if (type == CMD_DROP_DB) {
		/* From here on no session may start on it: a write proposed after the DROP
		 * would be applied to a database that no longer exists. */
		struct database *d = db_find(e, name);
		if (d != NULL)
			d->drop_proposed = true;
	}
	return CORE_PENDING;
}

int core_database_create(struct core_engine *e, const char *name, core_done_cb cb, void *arg)
{
	if (!valid_db_name(name))
		return ERR_INVALID;
	if (db_find(e, name) != NULL)
		return ERR_EXISTS;
	return admin_propose(e, CMD_CREATE_DB, name, cb, arg);
}

int core_database_drop(struct core_engine *e, const char *name, core_done_cb cb, void *arg)
{
	struct database *d;
	if (!valid_db_name(name))
		return ERR_INVALID;
	d = db_find(e, name);
	if (d == NULL)
		return ERR_NOTFOUND;
	if (d->drop_cb != NULL || d->drop_proposed)
		return ERR_INUSE; /* another DROP is already waiting or in flight */
	if (d->n_sessions > 0 || d->inflight != NULL) {
		if (!e->leader || !e->ready)
			return ERR_NOTLEADER;
		/* Sessions that just disconnected may not be closed yet: wait a little. */
		d->drop_cb = cb;
		d->drop_arg = arg;
		d->drop_deadline = e->now + DROP_WAIT_MS;
		return CORE_PENDING;
	}
	return admin_propose(e, CMD_DROP_DB, name, cb, arg);
}

/* ---- FSM ------------------------------------------------------------------------------ */

void core_fsm_apply(struct core_engine *e, uint64_t index, const void *buf, size_t len)
{
	struct proposal *p = proposal_find(e, index);
	struct command c;
	struct database *d;
	int rv;

	rv = cmd_decode(buf, len, &c);
	if (rv != 0) {
		LOGE("fsm: entry %llu: cannot decode command (%s, %zu bytes): stopping",
		     (unsigned long long)index, err_str(rv), len);
		abort();
	}
	switch (c.type) {
	case CMD_FRAMES:
		/* DROP DATABASE is refused while a commit is in flight on it, so in the log
		 * every FRAMES entry of a database precedes its DROP. */
		d = db_find(e, c.db);
		if (d == NULL) {
			/* The same decision on every node; the proposer learns it failed. */
			LOGW("fsm: entry %llu: frames for unknown database %s: ignored",
			     (unsigned long long)index, c.db);
			if (p != NULL)
				p->result = ERR_NOTFOUND;
			break;
		}
		{
			struct base_ctx bc = {e->vfs, d->file};
			rv = cmd_materialize(&c, base_page, &bc);
		}
		if (rv != 0) {
			LOGE("fsm: entry %llu: cannot rebuild the pages of %s (%s): %s; stopping",
			     (unsigned long long)index, d->name, err_str(rv),
			     rv == ERR_CORRUPT ? "this node's copy diverged from the leader's"
					       : "out of memory");
			abort();
		}
		rv = core__vfs_apply(e->vfs, d->file, &c.frames,
				     p != NULL && p->db == d && d->inflight == p);
		if (rv != 0) {
			LOGE("fsm: entry %llu: apply to %s failed (%s): stopping",
			     (unsigned long long)index, d->name, err_str(rv));
			abort();
		}
		maybe_checkpoint(e, d);
		break;
	case CMD_CREATE_DB:
		if (db_find(e, c.db) != NULL) {
			if (p != NULL)
				p->result = ERR_EXISTS;
			break;
		}
		d = db_add(e, c.db, index);
		if (d == NULL || core__vfs_create_db(e->vfs, d->file, e->cfg.page_size) != 0) {
			LOGE("fsm: entry %llu: out of memory creating database: stopping",
			     (unsigned long long)index);
			abort();
		}
		LOGI("database \"%s\" created", c.db);
		break;
	case CMD_DROP_DB:
		d = db_find(e, c.db);
		if (d == NULL) {
			if (p != NULL)
				p->result = ERR_NOTFOUND;
			break;
		}
		d->dropped = true;
		db_release(e, d);
		LOGI("database \"%s\" dropped", c.db);
		break;
	}
	cmd_close(&c);
}

/* Snapshot format (little-endian):
 *   u32 magic "PQSN" (0x4e535150), u32 format version 1, u32 number of databases D, u32 0,
 *   then D times: u64 creation index, u32 name length L, u32 0, L name bytes zero-padded to
 *   a multiple of 8, and the database image of core__vfs_snapshot_db. */
int core_fsm_snapshot(struct core_engine *e, void **out, size_t *len)
{
	struct buf b;
	struct database *d;
	uint32_t n = 0;
	int rv;

	for (d = e->dbs; d != NULL; d = d->next)
		if (!d->dropped)
			n++;
	buf_init(&b);
	buf_put_u32le(&b, SNAPSHOT_MAGIC);
	buf_put_u32le(&b, SNAPSHOT_VERSION);
	buf_put_u32le(&b, n);
	buf_put_u32le(&b, 0);
	for (d = e->dbs; d != NULL; d = d->next) {
		size_t nl = strlen(d->name);
		if (d->dropped)
			continue;
		buf_put_u64le(&b, d->create_index);
		buf_put_u32le(&b, (uint32_t)nl);
		buf_put_u32le(&b, 0);
		buf_put(&b, d->name, nl);
		buf_put_zeros(&b, ((nl + 7) & ~(size_t)7) - nl);
		rv = core__vfs_snapshot_db(e->vfs, d->file, &b);
		if (rv != 0) {
			buf_close(&b);
			return rv;
		}
	}
	if (b.failed) {
		buf_close(&b);
		return ERR_NOMEM;
	}
	*out = b.data;
	*len = b.len;
	return 0;
}

static void dbs_free(struct database *list)
{
	while (list != NULL) {
		struct database *d = list;
		list = d->next;
		db_close_ckpt(d);
		free(d);
	}
}

/* Restore into a new VFS and swap it in only when the whole snapshot loaded, so a bad
 * snapshot leaves the current state untouched. */
/* Switch to the restored databases. Sessions between statements move to a new
 * connection on the database of the same name; the others (a statement or transaction
 * open, or their database gone) become orphans that fail with ERR_SHUTDOWN and keep the
 * replaced generation alive until they close. */
static int adopt_sessions(struct core_engine *e, struct core_vfs *vfs, struct database *list)
{
	struct generation *g;
	struct core_session *s;
	struct database *d, *old = e->dbs;
	struct core_vfs *old_vfs = e->vfs;
	int n_orphans = 0;

	g = calloc(1, sizeof *g);
	if (g == NULL)
		return ERR_NOMEM;
	e->vfs = vfs;
	e->dbs = list;
	for (s = e->sessions; s != NULL; s = s->next) {
		sqlite3 *conn;
		if (s->orphan != NULL)
			continue;
		d = db_find(e, s->db->name);
		if (d == NULL || s->active != NULL || s->n_stmts > 0 ||
		    core_session_in_txn(s) || conn_open(e, d, &conn) != 0) {
			s->orphan = g;
			n_orphans++;
			continue;
		}
		sqlite3_close_v2(s->conn);
		s->conn = conn;
		s->db->n_sessions--;
		s->db = d;
		d->n_sessions++;
	}
	if (n_orphans == 0) {
		dbs_free(old);
		core__vfs_destroy(old_vfs);
		free(g);
		return 0;
	}
	LOGI("fsm: %d session(s) with a statement or transaction open end with the restore",
	     n_orphans);
	for (d = old; d != NULL; d = d->next)
		d->writer = NULL;
	g->vfs = old_vfs;
	g->dbs = old;
	g->n_orphans = n_orphans;
	g->next = e->old_gens;
	e->old_gens = g;
	return 0;
}

int core_fsm_restore(struct core_engine *e, const void *buf, size_t len)
{
	struct cursor c = {buf, len};
	uint32_t magic, version, n, zero, i;
	struct database *d, *list = NULL;
	struct core_vfs *vfs;
	char vname[64];
	int rv;

	if (!cursor_get_u32le(&c, &magic) || !cursor_get_u32le(&c, &version) ||
	    !cursor_get_u32le(&c, &n) || !cursor_get_u32le(&c, &zero) || magic != SNAPSHOT_MAGIC ||
	    version != SNAPSHOT_VERSION || zero != 0)
		return ERR_CORRUPT;
	for (d = e->dbs; d != NULL; d = d->next) {
		/* Only a leader has commits in flight, and a leader never installs one. */
		if (d->inflight != NULL) {
			LOGE("fsm: cannot restore while a commit on \"%s\" is in flight", d->name);
			return ERR_BUSY;
		}
	}
	snprintf(vname, sizeof vname, "pqlite-%u", vfs_counter++);
	rv = core__vfs_create(vname, e->cfg.mem_cap, &vfs);
	if (rv != 0)
		return rv;
	for (i = 0; i < n; i++) {
		uint64_t index;
		uint32_t nl, z;
		const uint8_t *name;
		char nm[CORE_DB_NAME_MAX + 1];
		if (!cursor_get_u64le(&c, &index) || !cursor_get_u32le(&c, &nl) ||
		    !cursor_get_u32le(&c, &z) || nl == 0 || nl > CORE_DB_NAME_MAX || z != 0 ||
		    !cursor_get_bytes(&c, nl, &name) || !cursor_skip(&c, ((nl + 7) & ~7u) - nl)) {
			rv = ERR_CORRUPT;
			goto err;
		}
		memcpy(nm, name, nl);
		nm[nl] = 0;
		if (memchr(name, 0, nl) != NULL) {
			rv = ERR_CORRUPT;
			goto err;
		}
		d = calloc(1, sizeof *d);
		if (d == NULL) {
			rv = ERR_NOMEM;
			goto err;
		}
		snprintf(d->name, sizeof d->name, "%s", nm);
		snprintf(d->file, sizeof d->file, "%llu-%s", (unsigned long long)index, nm);
		d->create_index = index;
		d->next = list;
		list = d;
		rv = core__vfs_restore_db(vfs, d->file, &c);
		if (rv != 0)
			goto err;
	}
	if (c.len != 0) {
		rv = ERR_CORRUPT;
		goto err;
	}
	rv = adopt_sessions(e, vfs, list);
	if (rv != 0)
		goto err;
	LOGI("fsm: restored %u database(s) from a snapshot", n);
	return 0;
err:
	LOGE("fsm: cannot restore snapshot: %s", err_str(rv));
	dbs_free(list);
	core__vfs_destroy(vfs);
	return rv;
}

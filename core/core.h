/* The replicated SQLite engine: databases held in memory by our VFS, sessions that run SQL
 * on the leader, and the FSM (apply / snapshot / restore) driven by the replicator.
 *
 * Threading: every function here runs on the one loop thread. The core never blocks and
 * includes neither uv.h nor raft.h; time reaches it through core_engine_tick().
 *
 * Ownership: objects returned through `**out` are freed by the matching destroy/close/
 * finalize call. A function that returns CORE_PENDING calls its callback exactly once
 * later; any other return means the callback is never called. */
#ifndef PQ_CORE_CORE_H
#define PQ_CORE_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "../lib/err.h"
#include "replication.h"

/* Non-error results of core_stmt_step (disjoint from ERR_*). */
enum {
	CORE_ROW = 100,     /* a row is available through core_stmt_sqlite() accessors */
	CORE_DONE = 101,    /* the statement finished (and, if it committed, is replicated) */
	CORE_PENDING = 102, /* the callback will report CORE_ROW, CORE_DONE or an error */
};

#define CORE_DEFAULT_DB "postgres"
#define CORE_DB_NAME_MAX 63 /* PostgreSQL's NAMEDATALEN - 1 */

struct core_config {
	uint32_t page_size;           /* 4096 */
	uint32_t checkpoint_threshold;/* WAL frames before a local checkpoint, 1000 */
	uint32_t writer_timeout_ms;   /* how long a writer waits for the database, 10000 */
	uint32_t apply_timeout_ms;    /* how long to wait for a barrier / leadership, 10000 */
	uint64_t mem_cap;             /* bytes of database images per node, 0 = unlimited */
	uint32_t idle_in_txn_timeout_ms; /* a session that holds its database's writer slot
					  * in an idle transaction this long is rolled back,
					  * 60000; 0 = never */
};

void core_config_defaults(struct core_config *c);

struct core_engine;
struct core_session;
struct core_stmt;

/* Create an engine. `repl` must outlive it. A fresh engine holds one empty database,
 * "postgres". Returns 0, ERR_NOMEM or ERR_INVALID. */
int core_engine_create(const struct core_config *cfg, struct core_replication *repl,
		       struct core_engine **out);
/* Destroy; every session must be closed first. */
void core_engine_destroy(struct core_engine *e);

/* Time: the server calls this every ~50 ms with a monotonic clock in ms, and once before
 * it accepts clients (deadlines computed before the first call count from 0). Expired
 * waits (writer queue, barrier gate) fail from here with ERR_TIMEOUT. */
void core_engine_tick(struct core_engine *e, uint64_t now_ms);

/* Leadership, reported by the replicator's monitor. `ready` is true once this node leads
 * and its post-election barrier has been applied; statements wait (up to apply_timeout)
 * for ready while the node is leader-but-not-ready, and fail with ERR_NOTLEADER when it is
 * not the leader at all. On losing leadership every open transaction is rolled back
 * (core_session_in_txn turns false) and queued statements fail with ERR_NOTLEADER. */
void core_engine_set_leader(struct core_engine *e, bool leader, bool ready);

/* Client address of the current leader, or NULL when unknown (known on followers too:
 * every node's address is in the replicated configuration). */
const char *core_engine_leader_address(struct core_engine *e);

/* True while the replicator reports this node as leader (ready or not). */
bool core_engine_is_leader(struct core_engine *e);

/* True once this node leads and its post-election barrier is applied: only then does its
 * state hold every committed write. Until then a statement compiled here could miss
 * tables that exist (prepare before waiting: pgwire runs a gate statement first). */
bool core_engine_is_ready(struct core_engine *e);

/* One listener (pgwire) told after the engine has processed every
 * core_engine_set_leader() call, with the same arguments. NULL to remove. */
typedef void (*core_leader_cb)(void *arg, bool leader, bool ready);
void core_engine_set_leader_listener(struct core_engine *e, core_leader_cb cb, void *arg);

/* ---- FSM, called by the replicator ------------------------------------------------ */

/* Apply one committed command at log `index`. Infallible: a command that does not decode
 * is a bug or corruption and aborts the process (c-raft 0.15 wedges on a failing apply). */
void core_fsm_apply(struct core_engine *e, uint64_t index, const void *buf, size_t len);

/* Encode the whole committed state (every database) into one malloc'ed buffer.
 * Returns 0, ERR_NOMEM, or ERR_BUSY when a checkpoint must not be racing it (never here:
 * the snapshot copies committed pages only). */
int core_fsm_snapshot(struct core_engine *e, void **buf, size_t *len);

/* Replace the whole state with a snapshot. Returns 0 or ERR_CORRUPT / ERR_NOMEM; on
 * error the state is unchanged. Does not take ownership of buf. */
int core_fsm_restore(struct core_engine *e, const void *buf, size_t len);

/* ---- Databases ---------------------------------------------------------------------- */

bool core_database_exists(struct core_engine *e, const char *name);

/* Replicate CREATE DATABASE / DROP DATABASE. On CORE_PENDING cb(arg, status) fires with 0,
 * ERR_EXISTS / ERR_NOTFOUND (decided at apply), ERR_LEADERSHIP_LOST, ERR_TIMEOUT...
 * Synchronous errors: ERR_NOTLEADER, ERR_EXISTS, ERR_NOTFOUND, ERR_INVALID (bad name),
 * ERR_INUSE (another drop of it is waiting). A drop while sessions are connected waits up
 * to 5 s for them to close (as PostgreSQL does) and then fails with ERR_INUSE through cb. */
typedef void (*core_done_cb)(void *arg, int status);
int core_database_create(struct core_engine *e, const char *name, core_done_cb cb, void *arg);
int core_database_drop(struct core_engine *e, const char *name, core_done_cb cb, void *arg);

/* ---- Sessions ----------------------------------------------------------------------- */

/* Open a session on database `name`: ERR_NOTFOUND if it does not exist. */
int core_session_open(struct core_engine *e, const char *name, struct core_session **out);
/* Close: rolls back an open transaction and leaves the writer queue. A pending step is
 * abandoned: its callback never fires (a commit already proposed stays in flight). */
void core_session_close(struct core_session *s);

/* Read consistency of a session (SET pqlite.read_consistency), see docs/design.md:
 *   LEADER        reads run on a ready leader (default);
 *   LINEARIZABLE  each read-only statement also waits for a Raft barrier issued after it
 *                 arrived (concurrent readers share one), so it sees every write
 *                 acknowledged anywhere before it started;
 *   STALE         read-only statements run on the local copy on any node, leader or not. */
enum core_read_mode { CORE_READ_LEADER, CORE_READ_LINEARIZABLE, CORE_READ_STALE };
void core_session_set_read_mode(struct core_session *s, enum core_read_mode mode);
enum core_read_mode core_session_read_mode(struct core_session *s);

/* True while SQLite has an explicit transaction open on this session. A transaction can
 * end without the client asking: on loss of leadership, or when it sat idle holding its
 * database's writer slot past idle_in_txn_timeout_ms (see core_session_error). */
bool core_session_in_txn(struct core_session *s);

/* Error details of the last failing call on this session (or its statements). */
struct core_error {
	int code;         /* ERR_* */
	int sqlite_code;  /* extended SQLite result code when code == ERR_SQL, else 0 */
	int offset;       /* byte offset in the SQL text, or -1 */
	char sqlstate[6]; /* when not empty, the SQLSTATE to report as is (the cluster
			   * functions pqlite_join/remove/transfer set it) */
	char msg[ERR_MSG_LEN];
};
const struct core_error *core_session_error(struct core_session *s);

/* Compile the first statement of sql[0..len). *tail points past it. On success *out is
 * NULL when the text holds only whitespace/comments. Errors: ERR_SQL (syntax, unknown
 * table...; see core_session_error), ERR_NOMEM. */
int core_session_prepare(struct core_session *s, const char *sql, int len, const char **tail,
			 struct core_stmt **out);

typedef void (*core_step_cb)(struct core_stmt *st, int rc, void *arg);

/* Run the statement to its next row or to its end. Returns CORE_ROW, CORE_DONE,
 * CORE_PENDING (waiting for the writer queue, a barrier, leadership readiness, or the
 * commit of its frames; cb then reports the result) or an error:
 *   ERR_SQL           SQLite error (details on the session)
 *   ERR_NOTLEADER     not the leader, nothing proposed: retryable
 *   ERR_LEADERSHIP_LOST  commit proposed, outcome unknown (40003)
 *   ERR_TIMEOUT       writer queue / readiness wait timed out, nothing proposed
 *   ERR_FULL          memory cap exceeded, nothing changed
 * After an error the statement must be finalized. */
int core_stmt_step(struct core_stmt *st, core_step_cb cb, void *arg);

/* The underlying SQLite statement, for column metadata and values (read-only use:
 * sqlite3_column_*; never step, reset or finalize it directly). */
sqlite3_stmt *core_stmt_sqlite(struct core_stmt *st);

/* Rows changed by the finished statement (sqlite3_changes), valid after CORE_DONE. */
int64_t core_stmt_changes(struct core_stmt *st);

/* True when the statement does not write (sqlite3_stmt_readonly). */
bool core_stmt_readonly(struct core_stmt *st);

/* Finalize. Must not be called while a step is pending (CORE_PENDING not yet reported);
 * use core_session_close to abandon a pending step. */
void core_stmt_finalize(struct core_stmt *st);

#endif

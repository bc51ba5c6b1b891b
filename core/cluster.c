/* The cluster as SQL: the read-only relation pqlite_cluster (an eponymous virtual table)
 * and the functions pqlite_join, pqlite_remove and pqlite_transfer, registered on every
 * connection the engine opens. The data and the changes come from the replicator
 * (core/replication.h members / change); nothing here is replicated by itself.
 *
 * A function fails with sqlite3_result_error and records the SQLSTATE the client must
 * see (core__engine_set_fn_sqlstate); the engine attaches it to the session's error. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"

#define MEMBERS_MAX 64

static const char *const role_names[] = {"voter", "standby", "spare"};

/* ---- pqlite_cluster --------------------------------------------------------------- */

enum { COL_ID, COL_RAFT, COL_PG, COL_ROLE, COL_LEADER, COL_APPLIED, COL_LAG };

struct cluster_vtab {
	sqlite3_vtab base;
	struct core_engine *engine;
};

struct cluster_cursor {
	sqlite3_vtab_cursor base;
	struct core_member *m;
	unsigned n;
	unsigned i;
};

static int vt_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
		      sqlite3_vtab **out, char **err)
{
	struct cluster_vtab *vt;
	int rv;

	rv = sqlite3_declare_vtab(db, "CREATE TABLE x(id BIGINT, raft_address TEXT, "
				      "pg_address TEXT, role TEXT, is_leader BOOLEAN, "
				      "applied_index BIGINT, lag BIGINT)");
	if (rv != SQLITE_OK)
		return rv;
	vt = sqlite3_malloc(sizeof *vt);
	if (vt == NULL)
		return SQLITE_NOMEM;
	memset(vt, 0, sizeof *vt);
	vt->engine = aux;
	*out = &vt->base;
	return SQLITE_OK;
}

static int vt_disconnect(sqlite3_vtab *v)
{
	sqlite3_free(v);
	return SQLITE_OK;
}

static int vt_best_index(sqlite3_vtab *v, sqlite3_index_info *info)
{
	info->estimatedCost = 10;
	info->estimatedRows = 5;
	return SQLITE_OK;
}

static int vt_open(sqlite3_vtab *v, sqlite3_vtab_cursor **out)
{
	struct cluster_cursor *c = sqlite3_malloc(sizeof *c);

	if (c == NULL)
		return SQLITE_NOMEM;
	memset(c, 0, sizeof *c);
	*out = &c->base;
	return SQLITE_OK;
}

static int vt_close(sqlite3_vtab_cursor *cur)
{
	struct cluster_cursor *c = (struct cluster_cursor *)cur;

	free(c->m);
	sqlite3_free(c);
	return SQLITE_OK;
}

/* One local row when the replicator reports no membership (a stand-in). */
static unsigned members_of(struct core_engine *e, struct core_member *out, unsigned max)
{
	struct core_replication *r = core__engine_repl(e);

	if (r->members != NULL)
		return r->members(r, out, max);
	return 0;
}

static int vt_filter(sqlite3_vtab_cursor *cur, int idx, const char *idx_str, int argc,
		     sqlite3_value **argv)
{
	struct cluster_cursor *c = (struct cluster_cursor *)cur;
	struct cluster_vtab *vt = (struct cluster_vtab *)cur->pVtab;
	unsigned max = 8, n;

	free(c->m);
	c->m = NULL;
	c->n = c->i = 0;
	for (;;) {
		c->m = calloc(max, sizeof *c->m);
		if (c->m == NULL)
			return SQLITE_NOMEM;
		n = members_of(vt->engine, c->m, max);
		if (n <= max)
			break;
		free(c->m);
		c->m = NULL;
		if (n > MEMBERS_MAX * 16)
			return SQLITE_ERROR;
		max = n;
	}
	c->n = n;
	return SQLITE_OK;
}

static int vt_next(sqlite3_vtab_cursor *cur)
{
	((struct cluster_cursor *)cur)->i++;
	return SQLITE_OK;
}

static int vt_eof(sqlite3_vtab_cursor *cur)
{
	struct cluster_cursor *c = (struct cluster_cursor *)cur;

	return c->i >= c->n;
}

static int vt_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int col)
{
	struct cluster_cursor *c = (struct cluster_cursor *)cur;
	const struct core_member *m = &c->m[c->i];

	switch (col) {
	case COL_ID:
		sqlite3_result_int64(ctx, (sqlite3_int64)m->id);
		break;
	case COL_RAFT:
		sqlite3_result_text(ctx, m->raft_address, -1, SQLITE_TRANSIENT);
		break;
	case COL_PG:
		sqlite3_result_text(ctx, m->pg_address, -1, SQLITE_TRANSIENT);
		break;
	case COL_ROLE:
		sqlite3_result_text(ctx, role_names[m->role], -1, SQLITE_STATIC);
		break;
	case COL_LEADER:
		sqlite3_result_int(ctx, m->is_leader);
		break;
	case COL_APPLIED:
		if (m->applied_index < 0)
			sqlite3_result_null(ctx);
		else
			sqlite3_result_int64(ctx, m->applied_index);
		break;
	case COL_LAG:
		if (m->lag < 0)
			sqlite3_result_null(ctx);
		else
			sqlite3_result_int64(ctx, m->lag);
		break;
	default:
		sqlite3_result_null(ctx);
		break;
	}
	return SQLITE_OK;
}

static int vt_rowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *rowid)
{
	*rowid = ((struct cluster_cursor *)cur)->i + 1;
	return SQLITE_OK;
}

static const sqlite3_module cluster_module = {
	.iVersion = 0,
	.xCreate = NULL, /* eponymous only: no CREATE VIRTUAL TABLE */
	.xConnect = vt_connect,
	.xBestIndex = vt_best_index,
	.xDisconnect = vt_disconnect,
	.xDestroy = vt_disconnect,
	.xOpen = vt_open,
	.xClose = vt_close,
	.xFilter = vt_filter,
	.xNext = vt_next,
	.xEof = vt_eof,
	.xColumn = vt_column,
	.xRowid = vt_rowid,
};

/* ---- Functions -------------------------------------------------------------------- */

static void fn_fail(sqlite3_context *ctx, const char *sqlstate, const char *msg)
{
	core__engine_set_fn_sqlstate(sqlite3_user_data(ctx), sqlstate);
	sqlite3_result_error(ctx, msg, -1);
}

/* The replicator's error -> SQLSTATE (see docs/cluster.md). */
static void fn_change_error(sqlite3_context *ctx, int rv, const char *why)
{
	static const struct {
		int rv;
		const char *sqlstate;
	} map[] = {
		{ERR_NOTLEADER, "25006"}, {ERR_NOTFOUND, "42704"}, {ERR_EXISTS, "42710"},
		{ERR_INVALID, "22023"},   {ERR_INUSE, "55000"},    {ERR_BUSY, "55006"},
		{ERR_NOMEM, "53200"},
	};
	const char *sqlstate = "XX000";
	char msg[ERR_MSG_LEN + 32];
	size_t i;

	for (i = 0; i < sizeof map / sizeof map[0]; i++)
		if (map[i].rv == rv)
			sqlstate = map[i].sqlstate;
	snprintf(msg, sizeof msg, "%s", why[0] != '\0' ? why : err_str(rv));
	fn_fail(ctx, sqlstate, msg);
}

/* A node id argument: a positive integer (0 allowed when zero_ok). */
static bool arg_id(sqlite3_context *ctx, sqlite3_value *v, bool zero_ok, uint64_t *id)
{
	sqlite3_int64 x;

	if (sqlite3_value_type(v) == SQLITE_NULL && zero_ok) {
		*id = 0;
		return true;
	}
	if (sqlite3_value_numeric_type(v) != SQLITE_INTEGER) {
		fn_fail(ctx, "22023", "node id must be an integer");
		return false;
	}
	x = sqlite3_value_int64(v);
	if (x < 0 || (x == 0 && !zero_ok)) {
		fn_fail(ctx, "22023", zero_ok ? "node id must not be negative"
					      : "node id must be a positive integer");
		return false;
	}
	*id = (uint64_t)x;
	return true;
}

static bool arg_address(sqlite3_context *ctx, sqlite3_value *v, const char *what,
			const char **out)
{
	const char *s = (const char *)sqlite3_value_text(v);
	char msg[96];

	if (sqlite3_value_type(v) != SQLITE_TEXT || s == NULL || s[0] == '\0' ||
	    strlen(s) >= CORE_ADDR_MAX || strchr(s, '|') != NULL) {
		snprintf(msg, sizeof msg, "%s must be an address such as 127.0.0.1:7433", what);
		fn_fail(ctx, "22023", msg);
		return false;
	}
	*out = s;
	return true;
}

static int change(sqlite3_context *ctx, enum core_change_op op, uint64_t id, const char *raft,
		  const char *pg, enum core_role *role, uint64_t *id_out)
{
	struct core_replication *r = core__engine_repl(sqlite3_user_data(ctx));
	char why[256] = "";
	int rv;

	if (r->change == NULL) {
		fn_fail(ctx, "0A000", "this node does not support cluster changes");
		return -1;
	}
	rv = r->change(r, op, id, raft, pg, role, id_out, why);
	if (rv != 0) {
		fn_change_error(ctx, rv, why);
		return -1;
	}
	return 0;
}

static void fn_join(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	const char *raft, *pg;
	enum core_role role = CORE_ROLE_SPARE;
	uint64_t id, unused;

	if (!arg_id(ctx, argv[0], false, &id) ||
	    !arg_address(ctx, argv[1], "raft address", &raft) ||
	    !arg_address(ctx, argv[2], "pg address", &pg))
		return;
	if (change(ctx, CORE_CHANGE_JOIN, id, raft, pg, &role, &unused) == 0)
		sqlite3_result_text(ctx, role_names[role], -1, SQLITE_STATIC);
}

static void fn_remove(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	uint64_t id, unused;
	enum core_role role;

	if (!arg_id(ctx, argv[0], false, &id))
		return;
	if (change(ctx, CORE_CHANGE_REMOVE, id, NULL, NULL, &role, &unused) == 0)
		sqlite3_result_int64(ctx, (sqlite3_int64)id);
}

static void fn_transfer(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	uint64_t id = 0, target = 0;
	enum core_role role;

	if (argc == 1 && !arg_id(ctx, argv[0], true, &id))
		return;
	if (change(ctx, CORE_CHANGE_TRANSFER, id, NULL, NULL, &role, &target) == 0)
		sqlite3_result_int64(ctx, (sqlite3_int64)target);
}

int core__cluster_register(sqlite3 *conn, struct core_engine *e)
{
	/* Not deterministic and with side effects: never constant-folded or cached. */
	const int flags = SQLITE_UTF8 | SQLITE_DIRECTONLY;
	int rv;

	rv = sqlite3_create_module_v2(conn, "pqlite_cluster", &cluster_module, e, NULL);
	if (rv == SQLITE_OK)
		rv = sqlite3_create_function_v2(conn, "pqlite_join", 3, flags, e, fn_join, NULL,
						NULL, NULL);
	if (rv == SQLITE_OK)
		rv = sqlite3_create_function_v2(conn, "pqlite_remove", 1, flags, e, fn_remove,
						NULL, NULL, NULL);
	if (rv == SQLITE_OK)
		rv = sqlite3_create_function_v2(conn, "pqlite_transfer", 1, flags, e,
						fn_transfer, NULL, NULL, NULL);
	if (rv == SQLITE_OK)
		rv = sqlite3_create_function_v2(conn, "pqlite_transfer", 0, flags, e,
						fn_transfer, NULL, NULL, NULL);
	return rv;
}

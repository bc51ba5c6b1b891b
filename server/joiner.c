/* The join procedure (see joiner.h): a loop of short blocking exchanges with whichever
 * member answers, each bounded by a timeout and by the stop flag. */
#include "joiner.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../lib/err.h"
#include "../lib/log.h"
#include "../pgwire/client.h"

#define CONNECT_TIMEOUT_MS 5000
#define QUERY_TIMEOUT_MS 30000 /* longer than the server's default apply timeout */
#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 1000
#define SPARE_POLL_MS 500
#define SPARE_REJOIN_MS 10000 /* call pqlite_join again after this long as a spare */
#define SLEEP_SLICE_MS 50
#define MAX_UNKNOWN_ERRORS 5
#define APP_NAME "pqlite-join"

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* errmsg, truncated when needed. */
static void errf(char *errmsg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void errf(char *errmsg, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(errmsg, ERR_MSG_LEN, fmt, ap);
	va_end(ap);
}

static bool stopped(const struct joiner_args *a)
{
	return a->stop != NULL && *a->stop != 0;
}

/* Sleep ms in slices, returning early (false) when the stop flag is set. */
static bool nap(const struct joiner_args *a, int ms)
{
	int64_t end = now_ms() + ms;

	for (;;) {
		struct timespec ts;
		int64_t left;

		if (stopped(a))
			return false;
		left = end - now_ms();
		if (left <= 0)
			return true;
		if (left > SLEEP_SLICE_MS)
			left = SLEEP_SLICE_MS;
		ts.tv_sec = 0;
		ts.tv_nsec = (long)left * 1000000;
		nanosleep(&ts, NULL);
	}
}

/* An address put into SQL between single quotes. */
static bool literal_ok(const char *s)
{
	return s != NULL && strlen(s) < PGC_ADDR_MAX && strchr(s, '\'') == NULL &&
	       strchr(s, '\\') == NULL && pgc_parse_address(s, NULL, 0, NULL);
}

static bool sqlstate_is(const struct pgc_error *e, const char *code)
{
	return strcmp(e->sqlstate, code) == 0;
}

static bool retryable(const struct pgc_error *e)
{
	static const char *const codes[] = {"25006", "57P03", "55006", "40003", "57P01",
					    "08000", "08001", "08003", "08006", "53300"};
	size_t i;

	if (e->sqlstate[0] == 0)
		return true; /* network, timeout or garbage: another member may do better */
	for (i = 0; i < sizeof codes / sizeof codes[0]; i++)
		if (sqlstate_is(e, codes[i]))
			return true;
	return false;
}

struct joiner {
	const struct joiner_args *a;
	struct pgc *conn;
	char target[PGC_ADDR_MAX];
	int backoff_ms;
	char *errmsg;
	char logged[600];    /* the last retry message logged, and when */
	int64_t logged_at;
};

#define RELOG_MS 10000 /* repeat an unchanged retry message this often */

static void disconnect(struct joiner *j)
{
	pgc_close(j->conn);
	j->conn = NULL;
}

/* Run sql on the current target. 0 with *res; or ERR_SHUTDOWN, ERR_INVALID (fatal,
 * errmsg set), or ERR_BUSY: failed for now, the next attempt is set up (target changed
 * and/or backed off). *n_unknown counts this statement's unexpected server errors in a
 * row. */
static int run(struct joiner *j, const char *sql, int *n_unknown, struct pgc_result **res)
{
	char leader[PGC_ADDR_MAX], text[600];
	struct pgc_error e;
	int rv;

	*res = NULL;
	if (j->conn == NULL) {
		rv = pgc_connect_ex(j->target, "postgres", APP_NAME, CONNECT_TIMEOUT_MS, j->a->stop,
				    &j->conn, &e);
		if (rv != 0)
			goto failed;
	}
	rv = pgc_query(j->conn, sql, QUERY_TIMEOUT_MS, res, &e);
	if (rv == 0) {
		*n_unknown = 0;
		j->backoff_ms = BACKOFF_MIN_MS;
		return 0;
	}
failed:
	if (rv == ERR_SHUTDOWN || stopped(j->a))
		return ERR_SHUTDOWN;
	if (e.connection)
		disconnect(j);
	pgc_error_format(&e, text, sizeof text);
	if (pgc_error_leader(&e, leader, sizeof leader)) {
		if (strcmp(leader, j->target) != 0) {
			LOGI("join: %s is not the leader, trying %s", j->target, leader);
			disconnect(j);
			snprintf(j->target, sizeof j->target, "%s", leader);
			return nap(j->a, 50) ? ERR_BUSY : ERR_SHUTDOWN;
		}
	} else if (sqlstate_is(&e, "42710") || sqlstate_is(&e, "22023")) {
		errf(j->errmsg, "the cluster refused to add node %llu: %s",
		     (unsigned long long)j->a->id, text);
		return ERR_INVALID;
	} else if (!retryable(&e)) {
		if (++*n_unknown >= MAX_UNKNOWN_ERRORS) {
			errf(j->errmsg, "cannot join through %s: %s", j->target, text);
			return ERR_INVALID;
		}
	}
	if (strcmp(text, j->logged) != 0 || now_ms() - j->logged_at >= RELOG_MS) {
		LOGI("join: %s: %s; retrying", j->target, text);
		snprintf(j->logged, sizeof j->logged, "%s", text);
		j->logged_at = now_ms();
	}
	/* The leader we were sent to may be gone, or no longer lead: go back to the address
	 * we were given. */
	if ((e.connection || sqlstate_is(&e, "25006")) &&
	    strcmp(j->target, j->a->join_address) != 0) {
		disconnect(j);
		snprintf(j->target, sizeof j->target, "%s", j->a->join_address);
	}
	if (!nap(j->a, j->backoff_ms))
		return ERR_SHUTDOWN;
	j->backoff_ms = j->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : j->backoff_ms * 2;
	return ERR_BUSY;
}

int joiner_run(const struct joiner_args *a, char errmsg[256])
{
	struct joiner j;
	char role_sql[128], join_sql[256];
	int64_t spare_since = 0, joined_at = 0;
	bool logged_spare = false;
	int role_unknown = 0, join_unknown = 0; /* unexpected errors in a row, per statement */
	int rv;

	if (a->join_address == NULL || strlen(a->join_address) >= PGC_ADDR_MAX ||
	    !pgc_parse_address(a->join_address, NULL, 0, NULL)) {
		errf(errmsg, "invalid join address \"%s\"",
		     a->join_address != NULL ? a->join_address : "");
		return ERR_INVALID;
	}
	if (!literal_ok(a->raft_address) || !literal_ok(a->pg_address)) {
		errf(errmsg, "invalid raft or pg address for joining: expected an IPv4 literal "
			     "and a port");
		return ERR_INVALID;
	}
	if (a->id == 0 || a->id > (uint64_t)INT64_MAX) {
		errf(errmsg, "invalid node id %llu", (unsigned long long)a->id);
		return ERR_INVALID;
	}
	if (strcmp(a->join_address, a->pg_address) == 0) {
		snprintf(errmsg, ERR_MSG_LEN,
			 "--join %s is this node's own address: give the address of a member",
			 a->join_address);
		return ERR_INVALID;
	}
	snprintf(role_sql, sizeof role_sql, "SELECT role FROM pqlite_cluster WHERE id = %llu",
		 (unsigned long long)a->id);
	snprintf(join_sql, sizeof join_sql, "SELECT pqlite_join(%llu, '%s', '%s')",
		 (unsigned long long)a->id, a->raft_address, a->pg_address);

	memset(&j, 0, sizeof j);
	j.a = a;
	j.errmsg = errmsg;
	j.backoff_ms = BACKOFF_MIN_MS;
	snprintf(j.target, sizeof j.target, "%s", a->join_address);
	LOGI("join: asking the cluster at %s to add node %llu (raft %s, pg %s)", a->join_address,
	     (unsigned long long)a->id, a->raft_address, a->pg_address);

	for (;;) {
		struct pgc_result *r;
		const char *role;
		bool call_join;

		if (stopped(a)) {
			rv = ERR_SHUTDOWN;
			break;
		}
		rv = run(&j, role_sql, &role_unknown, &r);
		if (rv == ERR_BUSY)
			continue;
		if (rv != 0)
			break;
		role = pgc_result_n_rows(r) > 0 ? pgc_result_value(r, 0, 0) : NULL;
		if (role != NULL && (strcmp(role, "voter") == 0 || strcmp(role, "standby") == 0)) {
			LOGI("join: node %llu is a %s of the cluster", (unsigned long long)a->id,
			     role);
			pgc_result_free(r);
			rv = 0;
			break;
		}
		call_join = role == NULL;
		if (role != NULL) {
			/* 'spare' (or a role this version does not know): the leader promotes it
			 * once it has caught up. */
			int64_t now = now_ms();
			if (spare_since == 0)
				spare_since = joined_at != 0 ? joined_at : now;
			if (!logged_spare) {
				LOGI("join: node %llu is a %s, waiting for the leader to promote it",
				     (unsigned long long)a->id, role);
				logged_spare = true;
			}
			if (now - spare_since > SPARE_REJOIN_MS) {
				LOGI("join: still a %s after %d s, asking again", role,
				     SPARE_REJOIN_MS / 1000);
				call_join = true;
			}
		}
		pgc_result_free(r);
		if (call_join) {
			rv = run(&j, join_sql, &join_unknown, &r);
			if (rv == ERR_BUSY)
				continue;
			if (rv != 0)
				break;
			role = pgc_result_n_rows(r) > 0 ? pgc_result_value(r, 0, 0) : NULL;
			LOGI("join: node %llu added as %s", (unsigned long long)a->id,
			     role != NULL ? role : "(unknown role)");
			pgc_result_free(r);
			joined_at = spare_since = now_ms();
			j.backoff_ms = BACKOFF_MIN_MS;
		}
		if (!nap(a, call_join ? BACKOFF_MIN_MS : SPARE_POLL_MS)) {
			rv = ERR_SHUTDOWN;
			break;
		}
	}
	disconnect(&j);
	if (rv == ERR_SHUTDOWN)
		errf(errmsg, "join of node %llu abandoned: shutting down", (unsigned long long)a->id);
	return rv;
}

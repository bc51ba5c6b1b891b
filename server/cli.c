/* pqlite status, transfer and remove: each reads the relation pqlite_cluster and calls the
 * cluster functions (pqlite_transfer, pqlite_remove) on the leader over the PostgreSQL
 * protocol, following "leader: H:P" hints and retrying transient errors until the
 * command's timeout.
 *
 * Reads run in the default read consistency mode ("leader"), so only the current leader
 * answers them and every view of the cluster read here is the leader's. A follower answers
 * 25006 with the leader's address, which the next attempt connects to. When the target
 * cannot be reached, or knows no leader, the next attempt goes to the next address in the
 * rotation: --host first, then every pg address seen in the last view. */
#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "../lib/err.h"
#include "../pgwire/client.h"

#define DEFAULT_HOST "127.0.0.1:5433"
#define DEFAULT_TIMEOUT_MS 10000
#define MAX_TIMEOUT_MS 86400000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 1000
#define POLL_MS 200
#define RESUBMIT_MS 3000 /* re-issue a transfer/remove that shows no effect after this */
#define MAX_CANDIDATES 16
#define APP_NAME "pqlite-cli"

#define CLUSTER_SQL                                                                         \
	"SELECT id, raft_address, pg_address, role, is_leader, applied_index, lag "         \
	"FROM pqlite_cluster ORDER BY id"
#define CLUSTER_COLS 7

/* One row of pqlite_cluster, as far as the commands need it. */
struct member {
	uint64_t id;
	char pg[PGC_ADDR_MAX];
	bool leader;
};

/* One read of pqlite_cluster. */
struct view {
	struct member *m;
	unsigned n;
	const struct member *leader; /* into m; NULL when no row says is_leader */
};

struct cli {
	FILE *out, *err;
	const char *cmd;
	char host[PGC_ADDR_MAX];
	int timeout_ms;
	int64_t deadline;
	struct pgc *conn;
	char target[PGC_ADDR_MAX];  /* where the next connection goes */
	char known[MAX_CANDIDATES][PGC_ADDR_MAX]; /* --host, then pg addresses seen */
	unsigned n_known, next_known;
	struct pgc_error last;      /* last failure, for the final message */
	bool have_last;
	int backoff_ms;
};

/* Results of one attempt. */
enum { A_OK, A_RETRY, A_FAIL, A_TIMEOUT };

/* ---- Helpers ---------------------------------------------------------------------------- */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t remaining(const struct cli *x)
{
	return x->deadline - now_ms();
}

/* Sleep ms, but never past the deadline. */
static void nap(const struct cli *x, int ms)
{
	int64_t left = remaining(x);
	struct timespec ts;

	if (left <= 0)
		return;
	if (ms > left)
		ms = (int)left;
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (long)(ms % 1000) * 1000000;
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static void say_error(struct cli *x, const struct pgc_error *e)
{
	char text[600];

	pgc_error_format(e, text, sizeof text);
	fprintf(x->err, "pqlite: %s\n", text);
}

static void say_last(struct cli *x)
{
	if (x->have_last) {
		char text[600];

		pgc_error_format(&x->last, text, sizeof text);
		fprintf(x->err, "pqlite: last error: %s\n", text);
	}
}

static bool parse_id(const char *s, bool zero_ok, uint64_t *out)
{
	unsigned long long v;
	char *end;

	if (s == NULL || s[0] < '0' || s[0] > '9')
		return false;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != 0 || v > (unsigned long long)INT64_MAX || (v == 0 && !zero_ok))
		return false;
	*out = v;
	return true;
}

static bool is_true(const char *s)
{
	return s != NULL && (strcasecmp(s, "t") == 0 || strcasecmp(s, "true") == 0 ||
			     strcmp(s, "1") == 0 || strcasecmp(s, "yes") == 0 ||
			     strcasecmp(s, "on") == 0);
}

static bool sqlstate_is(const struct pgc_error *e, const char *code)
{
	return strcmp(e->sqlstate, code) == 0;
}

/* Failures worth another attempt: no leader now, leadership moving, a change in progress,
 * the node going away, or the network. */
static bool transient(int rc, const struct pgc_error *e)
{
	static const char *const codes[] = {"25006", "57P03", "57P01", "55006", "40003",
					    "08000", "08001", "08003", "08006", "53300"};
	size_t i;

	if (e->sqlstate[0] == 0)
		return rc == ERR_IO || rc == ERR_TIMEOUT;
	for (i = 0; i < sizeof codes / sizeof codes[0]; i++)
		if (sqlstate_is(e, codes[i]))
			return true;
	return false;
}

static void add_known(struct cli *x, const char *addr)
{
	unsigned i;

	if (!pgc_parse_address(addr, NULL, 0, NULL))
		return;
	for (i = 0; i < x->n_known; i++)
		if (strcmp(x->known[i], addr) == 0)
			return;
	if (x->n_known < MAX_CANDIDATES)
		snprintf(x->known[x->n_known++], PGC_ADDR_MAX, "%s", addr);
}

static void disconnect(struct cli *x)
{
	pgc_close(x->conn);
	x->conn = NULL;
}

/* Move the next connection to the next address of the rotation. */
static void rotate(struct cli *x)
{
	disconnect(x);
	x->next_known = (x->next_known + 1) % x->n_known;
	snprintf(x->target, sizeof x->target, "%s", x->known[x->next_known]);
}

static void backoff(struct cli *x)
{
	nap(x, x->backoff_ms);
	x->backoff_ms = x->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : x->backoff_ms * 2;
}

/* Run sql once on the current target, connecting first when needed. On A_FAIL and A_RETRY
 * x->last holds the error; A_RETRY has already switched target and/or slept. */
static int attempt(struct cli *x, const char *sql, struct pgc_result **res)
{
	char leader[PGC_ADDR_MAX];
	struct pgc_error e;
	bool at_connect = false;
	int64_t left = remaining(x);
	int rc;

	*res = NULL;
	if (left <= 0)
		return A_TIMEOUT;
	if (x->conn == NULL) {
		at_connect = true;
		rc = pgc_connect(x->target, "postgres", APP_NAME, (int)left, &x->conn, &e);
		if (rc != 0)
			goto failed;
		left = remaining(x);
		if (left <= 0)
			return A_TIMEOUT;
	}
	rc = pgc_query(x->conn, sql, (int)left, res, &e);
	if (rc == 0) {
		x->backoff_ms = BACKOFF_MIN_MS;
		return A_OK;
	}
failed:
	x->last = e;
	x->have_last = true;
	if (e.connection)
		disconnect(x);
	if (rc == ERR_TIMEOUT && remaining(x) <= 0)
		return A_TIMEOUT;
	if (pgc_error_leader(&e, leader, sizeof leader) && strcmp(leader, x->target) != 0) {
		disconnect(x);
		snprintf(x->target, sizeof x->target, "%s", leader);
		add_known(x, leader);
		nap(x, 20);
		return A_RETRY;
	}
	if (!transient(rc, &e))
		return A_FAIL;
	if ((at_connect && e.sqlstate[0] == 0) || sqlstate_is(&e, "25006") ||
	    sqlstate_is(&e, "57P03"))
		rotate(x);
	backoff(x);
	return A_RETRY;
}

static void view_free(struct view *v)
{
	free(v->m);
	v->m = NULL;
	v->n = 0;
	v->leader = NULL;
}

static const struct member *view_find(const struct view *v, uint64_t id)
{
	unsigned i;

	for (i = 0; i < v->n; i++)
		if (v->m[i].id == id)
			return &v->m[i];
	return NULL;
}

/* Fill v from a CLUSTER_SQL result. false (x->last set) when it does not look right. */
static bool view_from(struct cli *x, const struct pgc_result *r, struct view *v)
{
	unsigned i, n = pgc_result_n_rows(r);

	view_free(v);
	if (pgc_result_n_cols(r) != CLUSTER_COLS)
		goto bad;
	v->m = calloc(n ? n : 1, sizeof *v->m);
	if (v->m == NULL)
		goto bad;
	for (i = 0; i < n; i++) {
		struct member *m = &v->m[i];
		const char *pg = pgc_result_value(r, i, 2);

		if (!parse_id(pgc_result_value(r, i, 0), false, &m->id))
			goto bad;
		snprintf(m->pg, sizeof m->pg, "%s", pg != NULL ? pg : "");
		m->leader = is_true(pgc_result_value(r, i, 4));
		if (m->leader)
			v->leader = m;
		if (pg != NULL)
			add_known(x, pg);
	}
	v->n = n;
	return true;
bad:
	view_free(v);
	memset(&x->last, 0, sizeof x->last);
	snprintf(x->last.message, sizeof x->last.message,
		 "unexpected answer from %s to the pqlite_cluster query", x->target);
	x->have_last = true;
	return false;
}

/* Read pqlite_cluster from the leader, retrying until the deadline. A_OK (v is the view),
 * A_FAIL (x->last) or A_TIMEOUT; v is left empty on failure. */
static int read_view(struct cli *x, struct view *v)
{
	for (;;) {
		struct pgc_result *r;
		int a = attempt(x, CLUSTER_SQL, &r);

		if (a == A_RETRY)
			continue;
		if (a != A_OK) {
			view_free(v); /* a view without a leader from an earlier round */
			return a;
		}
		if (!view_from(x, r, v)) {
			pgc_result_free(r);
			return A_FAIL;
		}
		pgc_result_free(r);
		if (v->leader != NULL)
			return A_OK;
		/* A leader that already stepped down in its own view: ask again. */
		backoff(x);
	}
}

/* ---- Leadership transfer ------------------------------------------------------------- */

/* Move leadership away from `from` (to `to`, or anywhere when 0) and wait until the view
 * shows it. On success *v is the new view. Prints the failure and returns 1 otherwise. */
static int move_leader(struct cli *x, uint64_t from, uint64_t to, struct view *v)
{
	char sql[96];
	bool submit = true;
	int64_t submitted_at = 0;

	snprintf(sql, sizeof sql, "SELECT pqlite_transfer(%llu)", (unsigned long long)to);
	for (;;) {
		int a;

		if (submit) {
			struct pgc_result *r;

			a = attempt(x, sql, &r);
			pgc_result_free(r);
			if (a == A_OK) {
				submit = false;
				submitted_at = now_ms();
			} else if (a == A_FAIL) {
				say_error(x, &x->last);
				return 1;
			} else if (a == A_TIMEOUT) {
				break;
			}
		}
		a = read_view(x, v);
		if (a == A_FAIL) {
			say_error(x, &x->last);
			return 1;
		}
		if (a == A_TIMEOUT)
			break;
		if (v->leader->id != from && (to == 0 || v->leader->id == to))
			return 0;
		if (to != 0 && view_find(v, to) == NULL) {
			fprintf(x->err, "pqlite: node %llu is no longer a member of the cluster\n",
				(unsigned long long)to);
			return 1;
		}
		if (!submit && now_ms() - submitted_at >= RESUBMIT_MS)
			submit = true; /* nothing happened: the transfer may have failed */
		if (!submit)
			nap(x, POLL_MS);
	}
	fprintf(x->err, "pqlite: leadership did not move within %d ms\n", x->timeout_ms);
	say_last(x);
	return 1;
}

/* ---- Commands ------------------------------------------------------------------------- */

static const char *shown(const char *s)
{
	return s != NULL ? s : "-";
}

/* Print s padded to width, with control characters replaced. */
static void put_cell(FILE *f, const char *s, int width, bool last)
{
	int n = 0;

	for (; *s != 0; s++, n++)
		fputc((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s, f);
	if (!last)
		fprintf(f, "%*s", width - n + 2, "");
}

static void print_status(struct cli *x, const struct pgc_result *r)
{
	static const char *const head[CLUSTER_COLS] = {"ID",   "RAFT ADDRESS", "PG ADDRESS",
						       "ROLE", "LEADER",       "APPLIED",
						       "LAG"};
	int width[CLUSTER_COLS];
	unsigned i, k, n = pgc_result_n_rows(r);

	for (k = 0; k < CLUSTER_COLS; k++)
		width[k] = (int)strlen(head[k]);
	for (i = 0; i < n; i++)
		for (k = 0; k < CLUSTER_COLS; k++) {
			const char *s = k == 4 ? (is_true(pgc_result_value(r, i, k)) ? "yes" : "")
					       : shown(pgc_result_value(r, i, k));
			size_t len = strlen(s);
			if (len > (size_t)width[k])
				width[k] = len > 200 ? 200 : (int)len;
		}
	for (k = 0; k < CLUSTER_COLS; k++)
		put_cell(x->out, head[k], width[k], k == CLUSTER_COLS - 1);
	fputc('\n', x->out);
	for (i = 0; i < n; i++) {
		for (k = 0; k < CLUSTER_COLS; k++) {
			const char *s = k == 4 ? (is_true(pgc_result_value(r, i, k)) ? "yes" : "")
					       : shown(pgc_result_value(r, i, k));
			/* An empty last cell would leave trailing blanks: LEADER is never last. */
			put_cell(x->out, s, width[k], k == CLUSTER_COLS - 1);
		}
		fputc('\n', x->out);
	}
}

/* status: the leader's view when a leader answers (directly, through a proxying follower,
 * or after a standby follower's 25006 hint); otherwise, when the node answers 25006 or
 * 57P03, its own view (read consistency "stale"). */
static int cmd_status(struct cli *x)
{
	char leader[PGC_ADDR_MAX];
	struct pgc_result *r = NULL;
	struct pgc_error e;
	int64_t left = remaining(x);
	int rc;

	rc = pgc_connect(x->host, "postgres", APP_NAME, (int)left, &x->conn, &e);
	if (rc != 0)
		goto fail;
	left = remaining(x);
	if (left <= 0)
		goto timeout;
	rc = pgc_query(x->conn, CLUSTER_SQL, (int)left, &r, &e);
	if (rc == 0)
		goto print;
	if (e.connection || !transient(rc, &e))
		goto fail;
	if (pgc_error_leader(&e, leader, sizeof leader) && strcmp(leader, x->host) != 0) {
		struct pgc *lc = NULL;
		struct pgc_error le;

		left = remaining(x);
		if (left > 0 &&
		    pgc_connect(leader, "postgres", APP_NAME, (int)left, &lc, &le) == 0 &&
		    (left = remaining(x)) > 0 &&
		    pgc_query(lc, CLUSTER_SQL, (int)left, &r, &le) == 0) {
			pgc_close(lc);
			goto print;
		}
		pgc_close(lc);
	}
	/* No leader answers: show what this node knows. (A follower in proxy mode relays
	 * even this to the leader, and answers 57P03 once none shows up.) */
	left = remaining(x);
	if (left <= 0)
		goto timeout;
	rc = pgc_query(x->conn, "SET pqlite.read_consistency = stale", (int)left, &r, &e);
	pgc_result_free(r);
	r = NULL;
	if (rc != 0)
		goto fail;
	left = remaining(x);
	if (left <= 0)
		goto timeout;
	rc = pgc_query(x->conn, CLUSTER_SQL, (int)left, &r, &e);
	if (rc != 0)
		goto fail;
	fprintf(x->err, "pqlite: no leader answered; showing the view of %s\n", x->host);
print:
	if (pgc_result_n_cols(r) != CLUSTER_COLS) {
		fprintf(x->err, "pqlite: unexpected answer from the server: %u columns\n",
			pgc_result_n_cols(r));
		pgc_result_free(r);
		return 1;
	}
	print_status(x, r);
	pgc_result_free(r);
	return 0;
fail:
	say_error(x, &e);
	if (rc == ERR_TIMEOUT)
		fprintf(x->err, "pqlite: the cluster may have no leader: a follower in proxy mode "
				"answers only through the leader\n");
	return 1;
timeout:
	fprintf(x->err, "pqlite: no answer within %d ms\n", x->timeout_ms);
	return 1;
}

static int cmd_transfer(struct cli *x, uint64_t to)
{
	struct view v = {0};
	uint64_t from;
	int a, rv;

	a = read_view(x, &v);
	if (a != A_OK) {
		if (a == A_TIMEOUT) {
			fprintf(x->err, "pqlite: no leader answered within %d ms\n", x->timeout_ms);
			say_last(x);
		} else {
			say_error(x, &x->last);
		}
		return 1;
	}
	from = v.leader->id;
	if (to != 0 && view_find(&v, to) == NULL) {
		fprintf(x->err, "pqlite: node %llu is not a member of the cluster\n",
			(unsigned long long)to);
		view_free(&v);
		return 1;
	}
	if (to == from) {
		fprintf(x->out, "leader is now node %llu at %s\n", (unsigned long long)from,
			v.leader->pg);
		view_free(&v);
		return 0;
	}
	rv = move_leader(x, from, to, &v);
	if (rv == 0)
		fprintf(x->out, "leader is now node %llu at %s\n",
			(unsigned long long)v.leader->id, v.leader->pg);
	view_free(&v);
	return rv;
}

static int cmd_remove(struct cli *x, uint64_t id)
{
	struct view v = {0};
	struct pgc_error refused; /* 42704 or 55000 from the last submission */
	bool have_refused = false, submit = true;
	int64_t submitted_at = 0;
	char sql[96];
	int a, rv = 1;

	snprintf(sql, sizeof sql, "SELECT pqlite_remove(%llu)", (unsigned long long)id);
	a = read_view(x, &v);
	if (a != A_OK) {
		if (a == A_TIMEOUT) {
			fprintf(x->err, "pqlite: no leader answered within %d ms\n", x->timeout_ms);
			say_last(x);
		} else {
			say_error(x, &x->last);
		}
		return 1;
	}
	if (view_find(&v, id) == NULL) {
		fprintf(x->err, "pqlite: node %llu is not a member of the cluster\n",
			(unsigned long long)id);
		goto out;
	}
	for (;;) {
		if (view_find(&v, id) == NULL) {
			fprintf(x->out, "node %llu removed\n", (unsigned long long)id);
			rv = 0;
			goto out;
		}
		if (v.leader->id == id) {
			if (move_leader(x, id, 0, &v) != 0)
				goto out;
			submit = true;
			continue;
		}
		if (have_refused) {
			/* The leader refused while its view lists the node: report it. */
			say_error(x, &refused);
			goto out;
		}
		if (submit) {
			struct pgc_result *r;

			a = attempt(x, sql, &r);
			pgc_result_free(r);
			if (a == A_OK) {
				submit = false;
				submitted_at = now_ms();
			} else if (a == A_FAIL && (sqlstate_is(&x->last, "42704") ||
						   sqlstate_is(&x->last, "55000"))) {
				/* Gone already, or it became the leader again: the view tells. */
				refused = x->last;
				have_refused = sqlstate_is(&x->last, "42704");
				nap(x, POLL_MS);
			} else if (a == A_FAIL) {
				say_error(x, &x->last);
				goto out;
			} else if (a == A_TIMEOUT) {
				break;
			}
		}
		a = read_view(x, &v);
		if (a == A_FAIL) {
			say_error(x, &x->last);
			goto out;
		}
		if (a == A_TIMEOUT)
			break;
		if (!submit && now_ms() - submitted_at >= RESUBMIT_MS)
			submit = true; /* still listed: the removal may have failed */
		if (!submit && view_find(&v, id) != NULL)
			nap(x, POLL_MS);
	}
	fprintf(x->err, "pqlite: node %llu was not removed within %d ms\n", (unsigned long long)id,
		x->timeout_ms);
	say_last(x);
out:
	view_free(&v);
	return rv;
}

/* ---- Arguments ---------------------------------------------------------------------------- */

static int usage(struct cli *x, FILE *f)
{
	if (strcmp(x->cmd, "status") == 0)
		fprintf(f, "usage: pqlite status [--host HOST:PORT] [--timeout MS]\n"
			   "\n"
			   "Show the members of the cluster as the leader sees them.\n");
	else if (strcmp(x->cmd, "transfer") == 0)
		fprintf(f, "usage: pqlite transfer [--host HOST:PORT] [--timeout MS] [ID]\n"
			   "\n"
			   "Move leadership to node ID, or to another voter when ID is omitted,\n"
			   "and wait until it has moved.\n");
	else
		fprintf(f, "usage: pqlite remove [--host HOST:PORT] [--timeout MS] ID\n"
			   "\n"
			   "Remove node ID from the cluster (moving leadership away first if it\n"
			   "leads) and wait until it is gone.\n");
	fprintf(f, "\n"
		   "  --host HOST:PORT   PostgreSQL address of any member (default %s)\n"
		   "  --timeout MS       give up after MS milliseconds (default %d)\n",
		DEFAULT_HOST, DEFAULT_TIMEOUT_MS);
	return 2;
}

static int usage_error(struct cli *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int usage_error(struct cli *x, const char *fmt, ...)
{
	va_list ap;

	fprintf(x->err, "pqlite %s: ", x->cmd);
	va_start(ap, fmt);
	vfprintf(x->err, fmt, ap);
	va_end(ap);
	fprintf(x->err, "\nTry 'pqlite %s --help'.\n", x->cmd);
	return 2;
}

bool cli_is_command(const char *name)
{
	return name != NULL && (strcmp(name, "status") == 0 || strcmp(name, "remove") == 0 ||
				strcmp(name, "transfer") == 0);
}

int cli_run(int argc, char **argv, FILE *out, FILE *err)
{
	struct cli x;
	const char *id_arg = NULL;
	uint64_t id = 0;
	bool options = true;
	int i, rv;

	memset(&x, 0, sizeof x);
	x.out = out;
	x.err = err;
	x.cmd = argc > 0 && argv[0] != NULL ? argv[0] : "";
	if (!cli_is_command(x.cmd)) {
		fprintf(err, "pqlite: unknown command \"%s\"\n", x.cmd);
		return 2;
	}
	snprintf(x.host, sizeof x.host, "%s", DEFAULT_HOST);
	x.timeout_ms = DEFAULT_TIMEOUT_MS;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *val = NULL;
		bool is_host, is_timeout;

		if (options && strcmp(a, "--") == 0) {
			options = false;
			continue;
		}
		if (options && (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)) {
			usage(&x, out);
			return 0;
		}
		if (!options || a[0] != '-' || a[1] == 0) {
			if (id_arg != NULL)
				return usage_error(&x, "unexpected argument \"%s\"", a);
			id_arg = a;
			continue;
		}
		is_host = strncmp(a, "--host", 6) == 0 && (a[6] == 0 || a[6] == '=');
		is_timeout = strncmp(a, "--timeout", 9) == 0 && (a[9] == 0 || a[9] == '=');
		if (!is_host && !is_timeout)
			return usage_error(&x, "unknown option %s", a);
		val = strchr(a, '=');
		if (val != NULL) {
			val++;
		} else {
			if (i + 1 >= argc)
				return usage_error(&x, "option %s needs a value", a);
			val = argv[++i];
		}
		if (is_host) {
			if (strlen(val) >= sizeof x.host || !pgc_parse_address(val, NULL, 0, NULL))
				return usage_error(&x,
						   "invalid address \"%s\" for --host: expected an "
						   "IPv4 literal and a port, like 127.0.0.1:5433",
						   val);
			snprintf(x.host, sizeof x.host, "%s", val);
		} else {
			uint64_t t;
			if (!parse_id(val, false, &t) || t > MAX_TIMEOUT_MS)
				return usage_error(&x,
						   "invalid value \"%s\" for --timeout: expected "
						   "milliseconds, 1 to %d",
						   val, MAX_TIMEOUT_MS);
			x.timeout_ms = (int)t;
		}
	}
	if (strcmp(x.cmd, "status") == 0 && id_arg != NULL)
		return usage_error(&x, "unexpected argument \"%s\"", id_arg);
	if (strcmp(x.cmd, "remove") == 0 && id_arg == NULL)
		return usage_error(&x, "the id of the node to remove is missing");
	if (id_arg != NULL && !parse_id(id_arg, false, &id))
		return usage_error(&x, "invalid node id \"%s\": expected a positive integer",
				   id_arg);

	x.deadline = now_ms() + x.timeout_ms;
	x.backoff_ms = BACKOFF_MIN_MS;
	snprintf(x.target, sizeof x.target, "%s", x.host);
	add_known(&x, x.host);
	if (strcmp(x.cmd, "status") == 0)
		rv = cmd_status(&x);
	else if (strcmp(x.cmd, "transfer") == 0)
		rv = cmd_transfer(&x, id);
	else
		rv = cmd_remove(&x, id);
	disconnect(&x);
	fflush(out);
	return rv;
}

int cli_main(int argc, char **argv)
{
	return cli_run(argc, argv, stdout, stderr);
}

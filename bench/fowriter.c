/* fowriter: the client side of bench/failover for pqlite (libpq, one connection).
 *
 * A serial writer of autocommit one-row upserts
 *   INSERT INTO failover(k, v) VALUES('<key>', <seq>) ON CONFLICT(k) DO UPDATE SET v = excluded.v
 * sent to a surviving node F (the first address of -a). It paces itself like
 * shared/bench/dqlite_failover.sh's writer: next start = max(previous start + interval,
 * previous end). After WARMUP seconds of successful writes it SIGKILLs the leader (-k PID)
 * itself, in the middle of a gap, so that no write is in flight; recovery = kill -> end of
 * the first successful write. It keeps writing POST seconds after that (stability check),
 * and gives up MAXWAIT seconds after the kill.
 *
 * Where a write goes (a client that follows the server's hints, nothing more):
 *   - F by default. When F proxies sessions to the leader, every write goes through F.
 *   - 25006 with detail "leader: H:P" (F is a follower that does not proxy): the same write
 *     is sent once more, at once, to H:P; later writes stay on H:P while it answers.
 *   - A lost or refused connection to X: the next write goes to F (or, when X is F, to the
 *     next address of -a).
 * Every write that ends in an error counts as failed (its SQLSTATE and message are tallied).
 *
 * Usage: fowriter -a F,H2:P2,H3:P3 -k PID -K KEY [-w WARMUP_S] [-P POST_S] [-M MAXWAIT_S]
 *                 [-i INTERVAL_MS] [-T OP_TIMEOUT_S] [-l LOGFILE]
 * Prints one JSON line. Exit 0 when it recovered, 3 when not, 2 on bad usage / warm-up.
 *
 * Build: cc -O2 -o fowriter fowriter.c $(pkg-config --cflags --libs libpq) */
#include <errno.h>
#include <getopt.h>
#include <libpq-fe.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define MAX_ADDRS 8
#define MAX_ERRKINDS 16

static char *g_addrs[MAX_ADDRS];
static int g_naddrs;
static const char *g_key = "fo";
static double g_warmup = 1.5, g_post = 0.5, g_maxwait = 30, g_optimeout = 20;
static int64_t g_interval_ns = 20 * 1000000LL;
static FILE *g_log;

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_until(int64_t t)
{
	int64_t d = t - now_ns();
	if (d > 0) {
		struct timespec ts = {d / 1000000000LL, d % 1000000000LL};
		nanosleep(&ts, NULL);
	}
}

static void clean(char *s)
{
	char *nl = strchr(s, '\n');
	if (nl != NULL && nl[1] != '\0')
		*nl = '\0'; /* libpq: the first line says it, the rest is advice */
	for (; *s; s++)
		if (*s == '\n' || *s == '"' || *s == '\\' || *s == '\t')
			*s = ' ';
}

struct errkind {
	char text[160];
	int n;
};
static struct errkind g_errs[MAX_ERRKINDS];
static int g_nerrs;

static void tally(const char *full)
{
	char text[sizeof g_errs[0].text];
	memcpy(text, full, sizeof text - 1);
	text[sizeof text - 1] = '\0';
	for (int i = 0; i < g_nerrs; i++)
		if (strcmp(g_errs[i].text, text) == 0) {
			g_errs[i].n++;
			return;
		}
	if (g_nerrs < MAX_ERRKINDS) {
		snprintf(g_errs[g_nerrs].text, sizeof g_errs[g_nerrs].text, "%s", text);
		g_errs[g_nerrs].n = 1;
		g_nerrs++;
	}
}

/* The connection and where it goes. */
static PGconn *g_conn;
static int g_cur = -1;        /* index of g_addrs the connection is to, -1 none */
static int g_next;            /* index to connect to when there is no connection */
static char g_hint[64];       /* "" or the H:P of the last 25006 detail */

static int addr_index(const char *a)
{
	for (int i = 0; i < g_naddrs; i++)
		if (strcmp(g_addrs[i], a) == 0)
			return i;
	if (g_naddrs < MAX_ADDRS) {
		g_addrs[g_naddrs] = strdup(a);
		return g_naddrs++;
	}
	return 0;
}

static void drop_conn(void)
{
	if (g_conn)
		PQfinish(g_conn);
	g_conn = NULL;
	g_cur = -1;
}

/* One statement on address index ai: 0 ok, -1 error (err filled; *conn_lost when the
 * connection failed or was lost; g_hint set on 25006 with a "leader: H:P" detail). */
static int attempt(int ai, const char *sql, char *err, size_t errlen, bool *conn_lost)
{
	*conn_lost = false;
	g_hint[0] = '\0';
	if (g_conn == NULL || g_cur != ai) {
		drop_conn();
		char host[64], *port;
		snprintf(host, sizeof host, "%s", g_addrs[ai]);
		port = strrchr(host, ':');
		if (port == NULL) {
			snprintf(err, errlen, "bad address %s", g_addrs[ai]);
			return -1;
		}
		*port++ = '\0';
		const char *keys[] = {"host", "port", "dbname", "user", "connect_timeout",
				      "application_name", "sslmode", NULL};
		const char *vals[] = {host, port, "postgres", "postgres", "2", "fowriter",
				      "disable", NULL};
		g_conn = PQconnectdbParams(keys, vals, 0);
		if (PQstatus(g_conn) != CONNECTION_OK) {
			snprintf(err, errlen, "connect: %s", PQerrorMessage(g_conn));
			drop_conn();
			*conn_lost = true;
			return -1;
		}
		g_cur = ai;
	}
	if (!PQsendQuery(g_conn, sql)) {
		snprintf(err, errlen, "send: %s", PQerrorMessage(g_conn));
		drop_conn();
		*conn_lost = true;
		return -1;
	}
	int64_t deadline = now_ns() + (int64_t)(g_optimeout * 1e9);
	while (PQisBusy(g_conn)) {
		struct pollfd p = {.fd = PQsocket(g_conn), .events = POLLIN};
		int64_t left = deadline - now_ns();
		if (left <= 0) {
			snprintf(err, errlen, "client: no answer in %.0f s", g_optimeout);
			drop_conn();
			*conn_lost = true;
			return -1;
		}
		int rc = poll(&p, 1, (int)(left / 1000000 + 1));
		if (rc < 0 && errno != EINTR) {
			snprintf(err, errlen, "poll: %s", strerror(errno));
			drop_conn();
			*conn_lost = true;
			return -1;
		}
		if (!PQconsumeInput(g_conn))
			break; /* connection lost: PQgetResult reports it */
	}
	int ok = -1;
	bool got = false;
	PGresult *r;
	err[0] = '\0';
	while ((r = PQgetResult(g_conn)) != NULL) {
		got = true;
		if (PQresultStatus(r) == PGRES_COMMAND_OK && ok == -1 && err[0] == '\0') {
			ok = 0;
		} else if (PQresultStatus(r) != PGRES_COMMAND_OK) {
			const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
			const char *detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
			const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
			ok = -1;
			if (err[0] == '\0')
				snprintf(err, errlen, "%s %s", st ? st : "-",
					 msg ? msg : PQerrorMessage(g_conn));
			if (st && strcmp(st, "25006") == 0 && detail &&
			    strncmp(detail, "leader: ", 8) == 0)
				snprintf(g_hint, sizeof g_hint, "%s", detail + 8);
		}
		PQclear(r);
	}
	if (!got && err[0] == '\0')
		snprintf(err, errlen, "no result: %s", PQerrorMessage(g_conn));
	if (PQstatus(g_conn) == CONNECTION_BAD) {
		if (ok == 0)
			ok = -1;
		if (err[0] == '\0')
			snprintf(err, errlen, "connection lost: %s", PQerrorMessage(g_conn));
		drop_conn();
		*conn_lost = true;
	}
	return ok;
}

struct op {
	int64_t t0, t1;
	bool ok;
	int addr; /* where it ended */
};

int main(int argc, char **argv)
{
	int opt;
	pid_t kill_pid = 0;
	const char *logpath = NULL;
	char *alist = NULL;
	while ((opt = getopt(argc, argv, "a:k:K:w:P:M:i:T:l:")) != -1) {
		switch (opt) {
		case 'a': alist = optarg; break;
		case 'k': kill_pid = (pid_t)atol(optarg); break;
		case 'K': g_key = optarg; break;
		case 'w': g_warmup = atof(optarg); break;
		case 'P': g_post = atof(optarg); break;
		case 'M': g_maxwait = atof(optarg); break;
		case 'i': g_interval_ns = (int64_t)atol(optarg) * 1000000LL; break;
		case 'T': g_optimeout = atof(optarg); break;
		case 'l': logpath = optarg; break;
		default:
			fprintf(stderr, "usage: fowriter -a F,ADDR,... -k PID -K KEY [-w S] [-P S] "
					"[-M S] [-i MS] [-T S] [-l LOG]\n");
			return 2;
		}
	}
	if (alist == NULL || kill_pid <= 1 || g_interval_ns <= 0 || g_maxwait <= 0 ||
	    g_maxwait > 600 || g_warmup > 600 || g_post > 600 || strlen(g_key) > 40) {
		fprintf(stderr, "fowriter: need -a and -k; bad values\n");
		return 2;
	}
	for (char *s = strtok(alist, ","); s && g_naddrs < MAX_ADDRS; s = strtok(NULL, ","))
		g_addrs[g_naddrs++] = s;
	if (logpath && (g_log = fopen(logpath, "w")) == NULL) {
		perror(logpath);
		return 2;
	}

	/* Bounded: at most (warm-up + 30 s) before the kill, MAXWAIT after it, and every op
	 * is bounded by the op timeout; the op buffer covers the worst case at 1 op/interval
	 * plus redirects. */
	size_t cap = 1024, nafter = 0;
	struct op *after = malloc(cap * sizeof *after);
	int64_t t_begin = now_ns(), next_start = t_begin, t_kill = 0;
	struct timespec kill_rt = {0, 0};
	long seq = 0, pre_ok = 0, pre_fail = 0, first_ok = -1;
	int pre_addr = -1;
	char sql[256], err[512];

	for (;;) {
		sleep_until(next_start);
		seq++;
		snprintf(sql, sizeof sql,
			 "INSERT INTO failover(k, v) VALUES('%s', %ld) "
			 "ON CONFLICT(k) DO UPDATE SET v = excluded.v",
			 g_key, seq);
		int want = g_conn != NULL ? g_cur : g_next;
		int64_t t0 = now_ns();
		bool lost;
		int rc = attempt(want, sql, err, sizeof err, &lost);
		int where = want;
		if (rc != 0 && g_hint[0] && strcmp(g_hint, g_addrs[where]) != 0) {
			/* follow the leader hint once, at once */
			where = addr_index(g_hint);
			rc = attempt(where, sql, err, sizeof err, &lost);
		}
		int64_t t1 = now_ns();
		if (rc != 0 && lost) /* next write: F, or after F the next address */
			g_next = where == 0 ? 1 % g_naddrs : 0;
		clean(err);
		if (g_log)
			fprintf(g_log, "%ld %s %.3f %.3f %d %s %s\n", seq, t_kill ? "post" : "pre",
				(double)(t0 - (t_kill ? t_kill : t_begin)) / 1e6,
				(double)(t1 - (t_kill ? t_kill : t_begin)) / 1e6, rc == 0,
				g_addrs[where], rc == 0 ? "ok" : err);
		next_start = t0 + g_interval_ns > t1 ? t0 + g_interval_ns : t1;
		if (t_kill == 0) {
			if (rc == 0) {
				pre_ok++;
				pre_addr = where;
			} else {
				pre_fail++;
			}
			if (rc == 0 && t1 - t_begin >= (int64_t)(g_warmup * 1e9)) {
				sleep_until(t0 + g_interval_ns / 2);
				t_kill = now_ns();
				clock_gettime(CLOCK_REALTIME, &kill_rt);
				if (kill(kill_pid, SIGKILL) != 0) {
					printf("{\"status\": \"kill_failed\", \"error\": \"%s\"}\n",
					       strerror(errno));
					return 2;
				}
			} else if (t1 - t_begin > (int64_t)((g_warmup + 30) * 1e9)) {
				printf("{\"status\": \"no_stable_warmup\", \"warmup_ok\": %ld, "
				       "\"warmup_failed\": %ld, \"error\": \"%s\"}\n",
				       pre_ok, pre_fail, err);
				return 2;
			}
			continue;
		}
		if (nafter == cap) {
			cap *= 2;
			after = realloc(after, cap * sizeof *after);
			if (after == NULL)
				return 1;
		}
		after[nafter++] = (struct op){t0, t1, rc == 0, where};
		if (rc != 0) {
			tally(err);
		}
		if (rc == 0 && first_ok < 0)
			first_ok = (long)nafter - 1;
		if (first_ok >= 0 && t1 - after[first_ok].t1 >= (int64_t)(g_post * 1e9))
			break;
		if (t1 - t_kill >= (int64_t)(g_maxwait * 1e9))
			break;
	}

	long failed_before = 0, failed_post = 0;
	int64_t longest = 0;
	for (size_t i = 0; i < nafter; i++) {
		if (first_ok < 0 || (long)i < first_ok) {
			failed_before += !after[i].ok;
			if (after[i].t1 - after[i].t0 > longest)
				longest = after[i].t1 - after[i].t0;
		} else if ((long)i > first_ok) {
			failed_post += !after[i].ok;
		}
	}
	char errs[2048] = "";
	size_t off = 0;
	for (int i = 0; i < g_nerrs && off < sizeof errs - 200; i++)
		off += (size_t)snprintf(errs + off, sizeof errs - off, "%s%dx %s", i ? "; " : "",
					g_errs[i].n, g_errs[i].text);
	if (first_ok >= 0) {
		struct op *f = &after[first_ok];
		printf("{\"status\": \"ok\", \"kill_unix_ms\": %.0f, \"recovery_ms\": %.0f, \"failed\": %ld, "
		       "\"writes_until_ok\": %ld, \"first_ok_addr\": \"%s\", \"warmup_addr\": \"%s\", "
		       "\"first_write_after_kill_ms\": %.0f, \"longest_write_ms\": %.0f, "
		       "\"after_recovery\": %ld, \"after_recovery_failed\": %ld, "
		       "\"warmup_ok\": %ld, \"warmup_failed\": %ld, \"errors\": \"%s\"}\n",
		       (double)kill_rt.tv_sec * 1e3 + (double)kill_rt.tv_nsec / 1e6,
		       (double)(f->t1 - t_kill) / 1e6, failed_before, first_ok + 1,
		       g_addrs[f->addr], pre_addr >= 0 ? g_addrs[pre_addr] : "",
		       (double)(after[0].t1 - after[0].t0) / 1e6, (double)longest / 1e6,
		       (long)nafter - first_ok - 1, failed_post, pre_ok, pre_fail, errs);
	} else {
		printf("{\"status\": \"no_recovery_within_%.0fs\", \"failed\": %ld, "
		       "\"warmup_ok\": %ld, \"warmup_failed\": %ld, \"errors\": \"%s\"}\n",
		       g_maxwait, failed_before, pre_ok, pre_fail, errs);
	}
	if (g_log)
		fclose(g_log);
	drop_conn();
	free(after);
	return first_ok >= 0 ? 0 : 3;
}

/* kvwrite: dqlite-benchmark's "kvwrite" workload over the PostgreSQL simple query protocol.
 *
 * N client threads, each with its own libpq connection in autocommit, run for D seconds:
 *   INSERT INTO model(key, value) VALUES('<32 random letters>', '<1024 letters>')
 *     ON CONFLICT(key) DO UPDATE SET value = excluded.value
 * with a new random key every time (so it inserts; the table grows) and a value made like
 * go-dqlite's randValue: one random letter x512 followed by 512 random letters. Values are
 * letters only, so the SQL literal needs no escaping. The statement is valid in SQLite and
 * PostgreSQL. Latency = the PQexec call (send, execute, commit, answer), client-side.
 *
 * Prints one JSON line: clients, duration_s, ops, errors, ops_per_s, p50/p99/max/mean ms,
 * the first error message.
 *
 * Usage: kvwrite -h HOST -p PORT [-d DB] [-U USER] [-c CLIENTS] [-t SECONDS] [-s]
 *   -s  (re)create the table first: DROP TABLE IF EXISTS model; CREATE TABLE model(...)
 *
 * Build: cc -O2 -o kvwrite kvwrite.c $(pkg-config --cflags --libs libpq) -lpthread */
#include <errno.h>
#include <getopt.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KEY_LEN 32
#define VALUE_LEN 1024
#define MAX_CLIENTS 256

static const char *g_host = "127.0.0.1";
static const char *g_port = "5433";
static const char *g_db = "postgres";
static const char *g_user = "postgres";
static int g_clients = 1;
static double g_seconds = 10.0;

static pthread_barrier_t g_start;
static double g_t_start; /* set by thread 0 after the barrier */
static double g_t_end;
static pthread_mutex_t g_end_lock = PTHREAD_MUTEX_INITIALIZER;

struct worker {
	int id;
	pthread_t thread;
	uint64_t rng;
	uint64_t *lat_ns;
	size_t n, cap;
	uint64_t errors;
	uint64_t sum_ns;
	char first_error[512];
	int connect_failed;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

static char rand_letter(uint64_t *s)
{
	static const char letters[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
	return letters[xorshift(s) % 52];
}

static PGconn *connect_db(char *err, size_t errlen)
{
	const char *keys[] = {"host", "port", "dbname", "user", "connect_timeout",
			      "application_name", "sslmode", NULL};
	const char *vals[] = {g_host, g_port, g_db, g_user, "10", "kvwrite", "disable", NULL};
	PGconn *c = PQconnectdbParams(keys, vals, 0);
	if (PQstatus(c) != CONNECTION_OK) {
		snprintf(err, errlen, "connect: %s", PQerrorMessage(c));
		PQfinish(c);
		return NULL;
	}
	return c;
}

static void note_error(struct worker *w, PGresult *r, PGconn *c)
{
	w->errors++;
	if (w->first_error[0] == '\0') {
		const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
		snprintf(w->first_error, sizeof w->first_error, "%s %s", state ? state : "-",
			 r ? PQresultErrorMessage(r) : PQerrorMessage(c));
		for (char *p = w->first_error; *p; p++)
			if (*p == '\n' || *p == '"' || *p == '\\')
				*p = ' ';
	}
}

static void *run(void *arg)
{
	struct worker *w = arg;
	char err[512];
	PGconn *c = connect_db(err, sizeof err);
	if (c == NULL) {
		w->connect_failed = 1;
		snprintf(w->first_error, sizeof w->first_error, "%s", err);
		for (char *p = w->first_error; *p; p++)
			if (*p == '\n' || *p == '"' || *p == '\\')
				*p = ' ';
	}
	pthread_barrier_wait(&g_start);
	if (w->id == 0)
		g_t_start = now_s();
	pthread_barrier_wait(&g_start);
	if (c == NULL)
		return NULL;
	double deadline = g_t_start + g_seconds;
	char sql[KEY_LEN + VALUE_LEN + 256];
	static const char head[] = "INSERT INTO model(key, value) VALUES('";
	static const char tail[] = "') ON CONFLICT(key) DO UPDATE SET value = excluded.value";
	while (now_s() < deadline) {
		char *p = sql;
		memcpy(p, head, sizeof head - 1);
		p += sizeof head - 1;
		for (int i = 0; i < KEY_LEN; i++)
			*p++ = rand_letter(&w->rng);
		*p++ = '\'';
		*p++ = ',';
		*p++ = ' ';
		*p++ = '\'';
		char first = rand_letter(&w->rng);
		memset(p, first, VALUE_LEN / 2);
		p += VALUE_LEN / 2;
		for (int i = 0; i < VALUE_LEN / 2; i++)
			*p++ = rand_letter(&w->rng);
		memcpy(p, tail, sizeof tail); /* includes the NUL */

		uint64_t t0 = now_ns();
		PGresult *r = PQexec(c, sql);
		uint64_t dt = now_ns() - t0;
		if (r != NULL && PQresultStatus(r) == PGRES_COMMAND_OK) {
			if (w->n == w->cap) {
				w->cap = w->cap ? w->cap * 2 : 65536;
				w->lat_ns = realloc(w->lat_ns, w->cap * sizeof *w->lat_ns);
				if (w->lat_ns == NULL) {
					fprintf(stderr, "out of memory\n");
					exit(1);
				}
			}
			w->lat_ns[w->n++] = dt;
			w->sum_ns += dt;
		} else {
			note_error(w, r, c);
			if (PQstatus(c) == CONNECTION_BAD) {
				/* bounded: one reset attempt per failed op, and the loop is time-bound */
				usleep(10000);
				PQreset(c);
			}
		}
		PQclear(r);
	}
	double end = now_s();
	pthread_mutex_lock(&g_end_lock);
	if (end > g_t_end)
		g_t_end = end;
	pthread_mutex_unlock(&g_end_lock);
	PQfinish(c);
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile, as bench's pglat.py in shared/bench. */
static double pct_ms(const uint64_t *v, size_t n, double p)
{
	if (n == 0)
		return -1;
	size_t k = (size_t)(p / 100.0 * (double)n + 0.4999999);
	if (k < 1)
		k = 1;
	if (k > n)
		k = n;
	return (double)v[k - 1] / 1e6;
}

static int setup_table(void)
{
	char err[512];
	PGconn *c = connect_db(err, sizeof err);
	if (c == NULL) {
		fprintf(stderr, "kvwrite: %s\n", err);
		return -1;
	}
	const char *stmts[] = {"DROP TABLE IF EXISTS model",
			       "CREATE TABLE model(key TEXT PRIMARY KEY, value TEXT)", NULL};
	for (int i = 0; stmts[i]; i++) {
		PGresult *r = PQexec(c, stmts[i]);
		if (PQresultStatus(r) != PGRES_COMMAND_OK) {
			fprintf(stderr, "kvwrite: %s: %s\n", stmts[i], PQresultErrorMessage(r));
			PQclear(r);
			PQfinish(c);
			return -1;
		}
		PQclear(r);
	}
	PQfinish(c);
	return 0;
}

int main(int argc, char **argv)
{
	int opt, setup = 0;
	while ((opt = getopt(argc, argv, "h:p:d:U:c:t:s")) != -1) {
		switch (opt) {
		case 'h': g_host = optarg; break;
		case 'p': g_port = optarg; break;
		case 'd': g_db = optarg; break;
		case 'U': g_user = optarg; break;
		case 'c': g_clients = atoi(optarg); break;
		case 't': g_seconds = atof(optarg); break;
		case 's': setup = 1; break;
		default:
			fprintf(stderr, "usage: kvwrite -h HOST -p PORT [-d DB] [-U USER] [-c N] [-t S] [-s]\n");
			return 2;
		}
	}
	if (g_clients < 1 || g_clients > MAX_CLIENTS || g_seconds <= 0 || g_seconds > 3600) {
		fprintf(stderr, "kvwrite: bad -c or -t\n");
		return 2;
	}
	if (setup && setup_table() != 0)
		return 1;

	struct worker *ws = calloc((size_t)g_clients, sizeof *ws);
	pthread_barrier_init(&g_start, NULL, (unsigned)g_clients);
	uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	for (int i = 0; i < g_clients; i++) {
		ws[i].id = i;
		ws[i].rng = (seed + 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1)) | 1;
		if (pthread_create(&ws[i].thread, NULL, run, &ws[i]) != 0) {
			fprintf(stderr, "kvwrite: pthread_create failed\n");
			return 1;
		}
	}
	size_t total = 0;
	uint64_t errors = 0, sum_ns = 0;
	int connect_failed = 0;
	const char *first_error = "";
	for (int i = 0; i < g_clients; i++) {
		pthread_join(ws[i].thread, NULL);
		total += ws[i].n;
		errors += ws[i].errors;
		sum_ns += ws[i].sum_ns;
		connect_failed += ws[i].connect_failed;
		if (!first_error[0] && ws[i].first_error[0])
			first_error = ws[i].first_error;
	}
	uint64_t *all = malloc((total ? total : 1) * sizeof *all);
	size_t k = 0;
	for (int i = 0; i < g_clients; i++) {
		memcpy(all + k, ws[i].lat_ns, ws[i].n * sizeof *all);
		k += ws[i].n;
	}
	qsort(all, total, sizeof *all, cmp_u64);
	double elapsed = g_t_end > g_t_start ? g_t_end - g_t_start : g_seconds;
	printf("{\"clients\": %d, \"duration_s\": %.3f, \"ops\": %zu, \"errors\": %llu, "
	       "\"connect_failed\": %d, \"ops_per_s\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, "
	       "\"max_ms\": %.3f, \"mean_ms\": %.3f, \"first_error\": \"%s\"}\n",
	       g_clients, elapsed, total, (unsigned long long)errors, connect_failed,
	       (double)total / elapsed, pct_ms(all, total, 50), pct_ms(all, total, 99),
	       total ? (double)all[total - 1] / 1e6 : -1.0,
	       total ? (double)sum_ns / (double)total / 1e6 : -1.0, first_error);
	return connect_failed == g_clients ? 1 : 0;
}

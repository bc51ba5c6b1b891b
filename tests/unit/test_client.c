/* Unit tests of pgwire/client.c, server/cli.c and server/joiner.c against scripted fake
 * servers: listener threads on 127.0.0.1 (ports 57000-57999) that either play a fixed
 * script per connection (client tests: rows, NULLs, errors, FATAL, garbage, truncation,
 * timeouts) or act as the nodes of a pretend cluster answering the queries the command
 * line and the join procedure send (pqlite_cluster, pqlite_transfer, pqlite_remove,
 * pqlite_join), with leadership changes, step-down FATALs and transient errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../../lib/buf.h"
#include "../../lib/err.h"
#include "../../pgwire/client.h"
#include "../../pgwire/codec.h"
#include "../../server/cli.h"
#include "../../server/joiner.h"
#include "../lib/rng.h"

#define PORT_LO 57000
#define PORT_HI 57999

static uint64_t base_seed;

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

/* ---- Fake server ----------------------------------------------------------------------- */

struct fake;
struct sess {
	bool init;
	bool stale;
	bool was_leader;
};
/* A whole connection, from the StartupMessage on. */
typedef void (*conn_fn)(struct fake *f, int fd);
/* One simple Query; false closes the connection. */
typedef bool (*query_fn)(struct fake *f, int fd, const char *sql, struct sess *s);

struct fake {
	int lfd;
	int port;
	char addr[32];
	pthread_t th;
	atomic_int stop;
	conn_fn conn;   /* NULL: serve_queries */
	query_fn query;
	void *arg;
	atomic_int n_conns;
};

static int next_port;

/* Bind a listening socket on a free port of the allowed range. */
static int listen_in_range(int *port, bool do_listen)
{
	int tries, fd, one = 1;

	if (next_port == 0)
		next_port = PORT_LO + (int)(getpid() % 500) * 2;
	for (tries = 0; tries <= PORT_HI - PORT_LO; tries++) {
		struct sockaddr_in sa;
		int p = next_port++;

		if (next_port > PORT_HI)
			next_port = PORT_LO;
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_true(fd >= 0);
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		memset(&sa, 0, sizeof sa);
		sa.sin_family = AF_INET;
		sa.sin_port = htons((uint16_t)p);
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
		    (!do_listen || listen(fd, 16) == 0)) {
			*port = p;
			return fd;
		}
		close(fd);
	}
	fail_msg("no free port in %d-%d", PORT_LO, PORT_HI);
	return -1;
}

/* Read exactly n bytes; false on EOF, error, or when the fake is stopping. */
static bool srv_read(struct fake *f, int fd, void *p, size_t n)
{
	uint8_t *b = p;

	while (n > 0) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		ssize_t r;

		if (atomic_load(&f->stop))
			return false;
		if (poll(&pf, 1, 50) <= 0)
			continue;
		r = recv(fd, b, n, 0);
		if (r <= 0)
			return false;
		b += r;
		n -= (size_t)r;
	}
	return true;
}

static void srv_write(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n > 0) {
		ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
		if (w <= 0)
			return;
		b += w;
		n -= (size_t)w;
	}
}

static void srv_send(int fd, struct buf *b)
{
	assert_false(b->failed);
	srv_write(fd, b->data, b->len);
	buf_reset(b);
}

/* Wait until the client goes away. */
static void srv_drain(struct fake *f, int fd)
{
	uint8_t c;

	while (srv_read(f, fd, &c, 1))
		;
}

static bool srv_startup(struct fake *f, int fd)
{
	uint8_t head[8], body[1024];
	uint32_t len;

	if (!srv_read(f, fd, head, 8))
		return false;
	len = get_u32be(head);
	if (len < 8 || len - 8 > sizeof body || get_u32be(head + 4) != PGW_PROTOCOL_3_0)
		return false;
	if (!srv_read(f, fd, body, len - 8))
		return false;
	/* user=pqlite must be the first parameter. */
	return len - 8 >= 12 && memcmp(body, "user\0pqlite\0", 12) == 0;
}

/* Read one message; *body is malloc'd and NUL-terminated. */
static bool srv_msg(struct fake *f, int fd, uint8_t *type, char **body)
{
	uint8_t head[5];
	uint32_t len;
	char *b;

	if (!srv_read(f, fd, head, 5))
		return false;
	len = get_u32be(head + 1);
	if (len < 4 || len > (1u << 20))
		return false;
	b = malloc(len - 4 + 1);
	assert_non_null(b);
	if (!srv_read(f, fd, b, len - 4)) {
		free(b);
		return false;
	}
	b[len - 4] = 0;
	*type = head[0];
	*body = b;
	return true;
}

static void put_hello(struct buf *b)
{
	pgw_encode_auth_ok(b);
	pgw_encode_parameter_status(b, "server_version", "16.0");
	pgw_encode_backend_key(b, 42, 4242);
	pgw_encode_ready(b, 'I');
}

static void put_error(struct buf *b, const char *severity, const char *code, const char *msg,
		      const char *detail)
{
	struct pgw_error e = {.severity = severity, .code = code, .message = msg,
			      .detail = detail};
	pgw_encode_error(b, 'E', &e);
}

/* RowDescription, DataRows (vals: n_rows x n_cols, NULL = SQL NULL), CommandComplete. */
static void put_rows(struct buf *b, unsigned n_cols, const char *const *names, unsigned n_rows,
		     const char *const *vals)
{
	struct pgw_column cols[16];
	char tag[32];
	unsigned i, k;

	assert_true(n_cols <= 16);
	for (k = 0; k < n_cols; k++) {
		cols[k].name = names[k];
		cols[k].type_oid = 25;
		cols[k].typlen = -1;
	}
	pgw_encode_row_description(b, n_cols, cols);
	for (i = 0; i < n_rows; i++) {
		size_t m = pgw_datarow_start(b, (uint16_t)n_cols);
		for (k = 0; k < n_cols; k++) {
			const char *v = vals[i * n_cols + k];
			if (v == NULL)
				pgw_datarow_put_null(b);
			else
				pgw_datarow_put(b, v, strlen(v));
		}
		pgw_buf_finish(b, m);
	}
	snprintf(tag, sizeof tag, "SELECT %u", n_rows);
	pgw_encode_command_complete(b, tag);
}

static void serve_queries(struct fake *f, int fd)
{
	struct sess s = {0};
	struct buf b;

	if (!srv_startup(f, fd))
		return;
	buf_init(&b);
	put_hello(&b);
	srv_send(fd, &b);
	buf_close(&b);
	for (;;) {
		uint8_t type;
		char *body;
		bool go_on;

		if (!srv_msg(f, fd, &type, &body))
			return;
		go_on = type == 'Q' && f->query(f, fd, body, &s);
		free(body);
		if (!go_on)
			return;
	}
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;

	while (!atomic_load(&f->stop)) {
		struct pollfd pf = {.fd = f->lfd, .events = POLLIN};
		int fd, one = 1;

		if (poll(&pf, 1, 50) <= 0)
			continue;
		fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		atomic_fetch_add(&f->n_conns, 1);
		if (f->conn != NULL)
			f->conn(f, fd);
		else
			serve_queries(f, fd);
		close(fd);
	}
	return NULL;
}

static void fake_start(struct fake *f, conn_fn conn, query_fn query, void *arg)
{
	memset(f, 0, sizeof *f);
	f->conn = conn;
	f->query = query;
	f->arg = arg;
	f->lfd = listen_in_range(&f->port, true);
	snprintf(f->addr, sizeof f->addr, "127.0.0.1:%d", f->port);
	assert_int_equal(pthread_create(&f->th, NULL, fake_main, f), 0);
}

static void fake_stop(struct fake *f)
{
	atomic_store(&f->stop, 1);
	pthread_join(f->th, NULL);
	close(f->lfd);
}

/* An address where nothing listens. */
static void refused_address(char *addr, size_t len)
{
	int port, fd = listen_in_range(&port, false);

	close(fd);
	snprintf(addr, len, "127.0.0.1:%d", port);
}

/* ---- Scripted connections for the client tests ------------------------------------------ */

static const char *const names3[] = {"id", "name", "note"};
static const char *const vals3[] = {"1", "one", NULL, "2", "", "second"};

static bool q_basic(struct fake *f, int fd, const char *sql, struct sess *s)
{
	struct buf b;

	buf_init(&b);
	if (strcmp(sql, "rows") == 0) {
		put_rows(&b, 3, names3, 2, vals3);
	} else if (strcmp(sql, "error") == 0) {
		put_error(&b, "ERROR", "42P01", "no such table: t", "some detail");
	} else if (strcmp(sql, "two") == 0) {
		static const char *const n1[] = {"a"};
		static const char *const v1[] = {"x"};
		static const char *const n2[] = {"b", "c"};
		static const char *const v2[] = {"y", "z"};
		put_rows(&b, 1, n1, 1, v1);
		put_rows(&b, 2, n2, 1, v2);
	} else if (strcmp(sql, "empty") == 0) {
		pgw_encode_empty_query(&b);
	} else if (strcmp(sql, "notice") == 0) {
		struct pgw_error n = {.severity = "NOTICE", .code = "00000", .message = "hi"};
		pgw_encode_error(&b, 'N', &n);
		pgw_encode_parameter_status(&b, "TimeZone", "UTC");
		pgw_encode_command_complete(&b, "SET");
	} else if (strcmp(sql, "fatal") == 0) {
		put_error(&b, "FATAL", "57P01", "terminating connection", NULL);
		srv_send(fd, &b);
		buf_close(&b);
		return false;
	} else if (strcmp(sql, "error-then-close") == 0) {
		put_error(&b, "ERROR", "40003", "leadership lost", NULL);
		srv_send(fd, &b);
		buf_close(&b);
		return false;
	} else if (strcmp(sql, "silent") == 0) {
		srv_drain(f, fd);
		buf_close(&b);
		return false;
	} else if (strcmp(sql, "many") == 0) {
		static const char *const n1[] = {"i", "v"};
		char iv[16], vv[64];
		const char *row[2] = {iv, vv};
		int i;
		pgw_encode_row_description(&b, 2,
					   (struct pgw_column[]){{"i", 23, 4}, {"v", 25, -1}});
		(void)n1;
		for (i = 0; i < 20000; i++) {
			size_t m = pgw_datarow_start(&b, 2);
			snprintf(iv, sizeof iv, "%d", i);
			snprintf(vv, sizeof vv, "value-%d", i * 7);
			pgw_datarow_put(&b, row[0], strlen(row[0]));
			pgw_datarow_put(&b, row[1], strlen(row[1]));
			pgw_buf_finish(&b, m);
		}
		pgw_encode_command_complete(&b, "SELECT 20000");
	} else {
		put_error(&b, "ERROR", "42601", "syntax error", NULL);
	}
	pgw_encode_ready(&b, 'I');
	srv_send(fd, &b);
	buf_close(&b);
	return true;
}

static void check_rows3(const struct pgc_result *r)
{
	assert_int_equal(pgc_result_n_cols(r), 3);
	assert_int_equal(pgc_result_n_rows(r), 2);
	assert_string_equal(pgc_result_column(r, 0), "id");
	assert_string_equal(pgc_result_column(r, 2), "note");
	assert_null(pgc_result_column(r, 3));
	assert_string_equal(pgc_result_value(r, 0, 0), "1");
	assert_string_equal(pgc_result_value(r, 0, 1), "one");
	assert_null(pgc_result_value(r, 0, 2));
	assert_string_equal(pgc_result_value(r, 1, 1), "");
	assert_string_equal(pgc_result_value(r, 1, 2), "second");
	assert_null(pgc_result_value(r, 2, 0));
	assert_null(pgc_result_value(r, 0, 3));
	assert_string_equal(pgc_result_tag(r), "SELECT 2");
}

static void client_rows_and_nulls(void **state)
{
	struct fake f;
	struct pgc *c;
	struct pgc_result *r;
	struct pgc_error e;

	fake_start(&f, NULL, q_basic, NULL);
	assert_int_equal(pgc_connect(f.addr, "postgres", "test", 2000, &c, &e), 0);
	assert_true(pgc_usable(c));
	assert_string_equal(pgc_address(c), f.addr);
	assert_int_equal(pgc_query(c, "rows", 2000, &r, &e), 0);
	check_rows3(r);
	pgc_result_free(r);

	/* Two statements: the last result set is kept. */
	assert_int_equal(pgc_query(c, "two", 2000, &r, &e), 0);
	assert_int_equal(pgc_result_n_cols(r), 2);
	assert_int_equal(pgc_result_n_rows(r), 1);
	assert_string_equal(pgc_result_column(r, 0), "b");
	assert_string_equal(pgc_result_value(r, 0, 1), "z");
	pgc_result_free(r);

	/* No rows at all; notices and parameter updates are skipped. */
	assert_int_equal(pgc_query(c, "empty", 2000, &r, &e), 0);
	assert_int_equal(pgc_result_n_cols(r), 0);
	assert_int_equal(pgc_result_n_rows(r), 0);
	assert_string_equal(pgc_result_tag(r), "");
	pgc_result_free(r);
	assert_int_equal(pgc_query(c, "notice", 2000, &r, &e), 0);
	assert_string_equal(pgc_result_tag(r), "SET");
	pgc_result_free(r);

	/* Many rows arriving in many reads. */
	assert_int_equal(pgc_query(c, "many", 5000, &r, &e), 0);
	assert_int_equal(pgc_result_n_rows(r), 20000);
	assert_string_equal(pgc_result_value(r, 19999, 0), "19999");
	assert_string_equal(pgc_result_value(r, 12345, 1), "value-86415");
	pgc_result_free(r);
	pgc_close(c);
	fake_stop(&f);
	pgc_close(NULL);
	pgc_result_free(NULL);
}

static void client_error_response(void **state)
{
	struct fake f;
	struct pgc *c;
	struct pgc_result *r = (void *)1;
	struct pgc_error e;
	char text[600];

	fake_start(&f, NULL, q_basic, NULL);
	assert_int_equal(pgc_connect(f.addr, NULL, NULL, 2000, &c, &e), 0);
	assert_int_equal(pgc_query(c, "error", 2000, &r, &e), ERR_SQL);
	assert_null(r);
	assert_string_equal(e.sqlstate, "42P01");
	assert_string_equal(e.severity, "ERROR");
	assert_string_equal(e.message, "no such table: t");
	assert_string_equal(e.detail, "some detail");
	assert_false(e.connection);
	pgc_error_format(&e, text, sizeof text);
	assert_string_equal(text, "42P01: no such table: t (some detail)");
	/* The connection goes on. */
	assert_true(pgc_usable(c));
	assert_int_equal(pgc_query(c, "rows", 2000, &r, &e), 0);
	check_rows3(r);
	pgc_result_free(r);

	/* FATAL: the error is reported and the connection is done. */
	assert_int_equal(pgc_query(c, "fatal", 2000, &r, &e), ERR_SQL);
	assert_string_equal(e.sqlstate, "57P01");
	assert_string_equal(e.severity, "FATAL");
	assert_true(e.connection);
	assert_false(pgc_usable(c));
	assert_int_equal(pgc_query(c, "rows", 2000, &r, &e), ERR_INVALID);
	assert_true(e.connection);
	pgc_close(c);

	/* An ERROR, then the server hangs up: the error is what the caller sees. */
	assert_int_equal(pgc_connect(f.addr, NULL, NULL, 2000, &c, &e), 0);
	assert_int_equal(pgc_query(c, "error-then-close", 2000, &r, &e), ERR_SQL);
	assert_string_equal(e.sqlstate, "40003");
	assert_true(e.connection);
	pgc_close(c);
	fake_stop(&f);
}

static void conn_fatal_at_startup(struct fake *f, int fd)
{
	struct buf b;

	if (!srv_startup(f, fd))
		return;
	buf_init(&b);
	put_error(&b, "FATAL", "3D000", "database \"nope\" does not exist", NULL);
	srv_send(fd, &b);
	buf_close(&b);
}

static void conn_md5(struct fake *f, int fd)
{
	uint8_t msg[] = {'R', 0, 0, 0, 12, 0, 0, 0, 5, 1, 2, 3, 4};

	if (srv_startup(f, fd))
		srv_write(fd, msg, sizeof msg);
	srv_drain(f, fd);
}

static void client_startup_failures(void **state)
{
	struct fake f;
	struct pgc *c = (void *)1;
	struct pgc_error e;
	char addr[32];

	fake_start(&f, conn_fatal_at_startup, NULL, NULL);
	assert_int_equal(pgc_connect(f.addr, "nope", NULL, 2000, &c, &e), ERR_SQL);
	assert_null(c);
	assert_string_equal(e.sqlstate, "3D000");
	assert_string_equal(e.severity, "FATAL");
	assert_true(e.connection);
	fake_stop(&f);

	fake_start(&f, conn_md5, NULL, NULL);
	assert_int_equal(pgc_connect(f.addr, NULL, NULL, 2000, &c, &e), ERR_PROTO);
	assert_non_null(strstr(e.message, "unsupported authentication"));
	assert_string_equal(e.sqlstate, "");
	assert_true(e.connection);
	fake_stop(&f);

	refused_address(addr, sizeof addr);
	assert_int_equal(pgc_connect(addr, NULL, NULL, 2000, &c, &e), ERR_IO);
	assert_non_null(strstr(e.message, "cannot connect"));
	assert_true(e.connection);

	assert_int_equal(pgc_connect("localhost:5433", NULL, NULL, 2000, &c, &e), ERR_INVALID);
	assert_int_equal(pgc_connect("127.0.0.1", NULL, NULL, 2000, &c, &e), ERR_INVALID);
	assert_int_equal(pgc_connect("127.0.0.1:0", NULL, NULL, 2000, &c, &e), ERR_INVALID);
	assert_int_equal(pgc_connect(addr, NULL, NULL, 0, &c, &e), ERR_INVALID);
}

/* Scripted garbage after a valid or no greeting. */
struct script {
	bool hello;         /* send AuthenticationOk .. ReadyForQuery first */
	bool wait_query;    /* then wait for the Query */
	const uint8_t *bytes;
	size_t len;
	bool one_by_one;    /* one send() per byte */
};

static void conn_script(struct fake *f, int fd)
{
	const struct script *s = f->arg;
	struct buf b;
	size_t i;

	if (!srv_startup(f, fd))
		return;
	buf_init(&b);
	if (s->hello) {
		put_hello(&b);
		srv_send(fd, &b);
	}
	if (s->wait_query) {
		uint8_t type;
		char *body;
		if (!srv_msg(f, fd, &type, &body)) {
			buf_close(&b);
			return;
		}
		free(body);
	}
	if (s->one_by_one) {
		for (i = 0; i < s->len; i++) {
			srv_write(fd, s->bytes + i, 1);
			if (i % 16 == 0)
				sleep_ms(1);
		}
	} else {
		srv_write(fd, s->bytes, s->len);
	}
	buf_close(&b);
	shutdown(fd, SHUT_WR);
	srv_drain(f, fd);
}

/* Connect (and query when the script says so); returns the first failure's code. */
static int run_script(struct script *s, struct pgc_error *e)
{
	struct fake f;
	struct pgc *c;
	struct pgc_result *r = NULL;
	int rv;

	fake_start(&f, conn_script, NULL, s);
	rv = pgc_connect(f.addr, NULL, NULL, 2000, &c, e);
	if (rv == 0 && s->wait_query) {
		rv = pgc_query(c, "select 1", 2000, &r, e);
		pgc_result_free(r);
	}
	if (rv == 0 || c != NULL)
		pgc_close(c);
	fake_stop(&f);
	return rv;
}

static void client_garbage(void **state)
{
	static const uint8_t http[] = "HTTP/1.1 400 Bad Request\r\n\r\n";
	static const uint8_t huge[] = {'D', 0x7f, 0xff, 0xff, 0xff, 0, 1};
	static const uint8_t just_over[] = {'D', 0x04, 0x00, 0x00, 0x05, 0, 1};
	static const uint8_t short_len[] = {'Z', 0, 0, 0, 3, 'I'};
	static const uint8_t bad_z[] = {'Z', 0, 0, 0, 5, 'Q'};
	static const uint8_t unknown[] = {'@', 0, 0, 0, 4};
	static const uint8_t row_no_desc[] = {'D', 0, 0, 0, 6, 0, 0};
	/* RowDescription for 1 column, then a DataRow whose field claims 100 bytes. */
	static const uint8_t field_over[] = {'T', 0, 0, 0, 25, 0, 1, 'a', 0, 0, 0, 0, 0, 0, 0,
					     0, 0, 0, 25, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0,
					     0, 'D', 0, 0, 0, 13, 0, 1, 0, 0, 0, 100, 'x', 'y',
					     'z'};
	/* A DataRow with 2 fields under a 1-column description. */
	static const uint8_t count_mismatch[] = {'T', 0, 0, 0, 25, 0, 1, 'a', 0, 0, 0, 0, 0, 0,
						 0, 0, 0, 0, 25, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
						 0, 0, 'D', 0, 0, 0, 14, 0, 2, 0xff, 0xff, 0xff, 0xff,
						 0xff, 0xff, 0xff, 0xff};
	/* A RowDescription whose name has no NUL. */
	static const uint8_t desc_no_nul[] = {'T', 0, 0, 0, 9, 0, 1, 'a', 'b', 'c'};
	/* An ErrorResponse without its final zero byte. */
	static const uint8_t err_unterminated[] = {'E', 0, 0, 0, 12, 'M', 'o', 'o', 'p', 's',
						   0, 'C', 'X'};
	/* Half a message, then EOF. */
	static const uint8_t truncated[] = {'C', 0, 0, 0, 20, 'S', 'E', 'L'};
	struct script s = {0};
	struct pgc_error e;
	const struct {
		bool hello, query;
		const uint8_t *bytes;
		size_t len;
		int rv;
		const char *needle;
	} cases[] = {
		{false, false, http, sizeof http - 1, ERR_PROTO, "invalid length"},
		{true, true, huge, sizeof huge, ERR_PROTO, "invalid length"},
		{true, true, just_over, sizeof just_over, ERR_PROTO, "invalid length"},
		{true, true, short_len, sizeof short_len, ERR_PROTO, "invalid length"},
		{true, true, bad_z, sizeof bad_z, ERR_PROTO, "malformed"},
		{true, true, unknown, sizeof unknown, ERR_PROTO, "unexpected message"},
		{false, false, row_no_desc, sizeof row_no_desc, ERR_PROTO, "unexpected message"},
		{true, true, row_no_desc, sizeof row_no_desc, ERR_PROTO, "without RowDescription"},
		{true, true, field_over, sizeof field_over, ERR_PROTO, "malformed"},
		{true, true, count_mismatch, sizeof count_mismatch, ERR_PROTO, "malformed"},
		{true, true, desc_no_nul, sizeof desc_no_nul, ERR_PROTO, "malformed"},
		{true, true, err_unterminated, sizeof err_unterminated, ERR_PROTO, "malformed"},
		{false, false, err_unterminated, sizeof err_unterminated, ERR_PROTO, "malformed"},
		{true, true, truncated, sizeof truncated, ERR_IO, "closed the connection"},
		{false, false, truncated, 0, ERR_IO, "closed the connection"},
	};
	size_t i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		s.hello = cases[i].hello;
		s.wait_query = cases[i].query;
		s.bytes = cases[i].bytes;
		s.len = cases[i].len;
		s.one_by_one = false;
		assert_int_equal(run_script(&s, &e), cases[i].rv);
		if (strstr(e.message, cases[i].needle) == NULL)
			fail_msg("case %zu: \"%s\" lacks \"%s\"", i, e.message, cases[i].needle);
		assert_true(e.connection);
		assert_string_equal(e.sqlstate, "");
	}
}

/* A valid answer delivered one byte per send(). */
static void client_byte_by_byte(void **state)
{
	struct buf b;
	struct script s = {0};
	struct fake f;
	struct pgc *c;
	struct pgc_result *r;
	struct pgc_error e;

	buf_init(&b);
	put_rows(&b, 3, names3, 2, vals3);
	pgw_encode_ready(&b, 'I');
	s.hello = true;
	s.wait_query = true;
	s.bytes = b.data;
	s.len = b.len;
	s.one_by_one = true;
	fake_start(&f, conn_script, NULL, &s);
	assert_int_equal(pgc_connect(f.addr, NULL, NULL, 2000, &c, &e), 0);
	assert_int_equal(pgc_query(c, "rows", 5000, &r, &e), 0);
	check_rows3(r);
	pgc_result_free(r);
	pgc_close(c);
	fake_stop(&f);
	buf_close(&b);
}

static void conn_silent(struct fake *f, int fd)
{
	srv_drain(f, fd);
}

static void client_timeouts(void **state)
{
	struct fake f;
	struct pgc *c;
	struct pgc_result *r;
	struct pgc_error e;
	volatile int cancel = 1;
	int64_t t0;

	/* Startup never answered. */
	fake_start(&f, conn_silent, NULL, NULL);
	t0 = now_ms();
	assert_int_equal(pgc_connect(f.addr, NULL, NULL, 300, &c, &e), ERR_TIMEOUT);
	assert_true(now_ms() - t0 >= 290);
	assert_true(now_ms() - t0 < 2000);
	assert_non_null(strstr(e.message, "timed out after 300 ms"));
	assert_true(e.connection);

	/* A cancel flag already set ends the wait at once. */
	t0 = now_ms();
	assert_int_equal(pgc_connect_ex(f.addr, NULL, NULL, 5000, &cancel, &c, &e),
			 ERR_SHUTDOWN);
	assert_true(now_ms() - t0 < 1000);
	fake_stop(&f);

	/* A query never answered. */
	fake_start(&f, NULL, q_basic, NULL);
	assert_int_equal(pgc_connect(f.addr, NULL, NULL, 2000, &c, &e), 0);
	t0 = now_ms();
	assert_int_equal(pgc_query(c, "silent", 300, &r, &e), ERR_TIMEOUT);
	assert_true(now_ms() - t0 >= 290);
	assert_true(e.connection);
	assert_false(pgc_usable(c));
	pgc_close(c);
	fake_stop(&f);
}

/* Random and mutated server streams: every outcome is fine except a crash, a hang or an
 * error without a message. */
struct fuzz {
	atomic_int iter;
	uint64_t seed;
};

static void build_valid_stream(struct buf *b)
{
	put_hello(b);
	put_rows(b, 3, names3, 2, vals3);
	put_error(b, "ERROR", "42P01", "no such table", "d");
	pgw_encode_ready(b, 'I');
}

static void conn_fuzz(struct fake *f, int fd)
{
	struct fuzz *z = f->arg;
	int it = atomic_load(&z->iter);
	struct rng r;
	struct buf b;
	size_t n, i;

	rng_init(&r, seed_mix(z->seed, (uint64_t)it));
	if (!srv_startup(f, fd))
		return;
	buf_init(&b);
	if (it % 2 == 0) {
		/* A valid stream with a few bytes flipped and maybe cut short. */
		build_valid_stream(&b);
		n = rng_range(&r, 1, 4);
		for (i = 0; i < n; i++)
			b.data[rng_below(&r, (uint32_t)b.len)] = (uint8_t)rng_next(&r);
		if (rng_chance(&r, 30))
			b.len = rng_below(&r, (uint32_t)b.len);
	} else {
		/* Messages of random types and bodies, with honest or random lengths. */
		static const char types[] = "RSKZTDCEINAv@\x01";
		if (rng_chance(&r, 50))
			put_hello(&b);
		n = rng_range(&r, 1, 8);
		for (i = 0; i < n; i++) {
			uint8_t body[64];
			uint32_t len = rng_below(&r, sizeof body);
			rng_fill(&r, body, len);
			if (rng_chance(&r, 50))
				body[len > 0 ? len - 1 : 0] = 0;
			buf_put_u8(&b, (uint8_t)types[rng_below(&r, sizeof types - 1)]);
			buf_put_u32be(&b, rng_chance(&r, 80) ? len + 4 : (uint32_t)rng_next(&r));
			buf_put(&b, body, len);
		}
	}
	srv_write(fd, b.data, b.len);
	buf_close(&b);
	shutdown(fd, SHUT_WR);
	srv_drain(f, fd);
}

static void client_fuzz(void **state)
{
	struct fuzz z;
	struct fake f;
	int it;

	z.seed = seed_mix(base_seed, 1);
	atomic_store(&z.iter, 0);
	fake_start(&f, conn_fuzz, NULL, &z);
	for (it = 0; it < 400; it++) {
		struct pgc *c;
		struct pgc_result *r = NULL;
		struct pgc_error e;
		int rv;

		atomic_store(&z.iter, it);
		rv = pgc_connect(f.addr, NULL, NULL, 2000, &c, &e);
		if (rv == 0) {
			rv = pgc_query(c, "select 1", 2000, &r, &e);
			if (rv == 0) {
				unsigned i, k;
				for (i = 0; i < pgc_result_n_rows(r); i++)
					for (k = 0; k < pgc_result_n_cols(r); k++)
						(void)pgc_result_value(r, i, k);
				pgc_result_free(r);
			}
			pgc_close(c);
		} else {
			assert_null(c);
		}
		assert_int_not_equal(rv, ERR_TIMEOUT);
		if (rv != 0)
			assert_true(e.message[0] != 0);
		/* Wait for the fake to finish this connection before the next iteration. */
		while (atomic_load(&f.n_conns) < it + 1)
			sleep_ms(1);
	}
	fake_stop(&f);
}

static void client_helpers(void **state)
{
	struct pgc_error e;
	char host[16], addr[PGC_ADDR_MAX], text[600];
	int port;

	assert_true(pgc_parse_address("10.1.2.3:7433", host, sizeof host, &port));
	assert_string_equal(host, "10.1.2.3");
	assert_int_equal(port, 7433);
	assert_false(pgc_parse_address("10.1.2.3:", NULL, 0, NULL));
	assert_false(pgc_parse_address("10.1.2.3:+5", NULL, 0, NULL));
	assert_false(pgc_parse_address("10.1.2.3:65536", NULL, 0, NULL));
	assert_false(pgc_parse_address(":5433", NULL, 0, NULL));
	assert_false(pgc_parse_address("[::1]:5433", NULL, 0, NULL));
	assert_false(pgc_parse_address("host:5433", NULL, 0, NULL));
	assert_false(pgc_parse_address(NULL, NULL, 0, NULL));

	memset(&e, 0, sizeof e);
	strcpy(e.sqlstate, "25006");
	strcpy(e.message, "not the leader");
	strcpy(e.detail, "leader: 127.0.0.1:5434");
	assert_true(pgc_error_leader(&e, addr, sizeof addr));
	assert_string_equal(addr, "127.0.0.1:5434");
	strcpy(e.detail, "no leader is known at the moment");
	assert_false(pgc_error_leader(&e, addr, sizeof addr));
	strcpy(e.detail, "leader: nowhere");
	assert_false(pgc_error_leader(&e, addr, sizeof addr));
	strcpy(e.detail, "leader: 127.0.0.1:5434");
	strcpy(e.sqlstate, "57P03");
	assert_false(pgc_error_leader(&e, addr, sizeof addr));

	pgc_error_format(&e, text, sizeof text);
	assert_string_equal(text, "57P03: not the leader (leader: 127.0.0.1:5434)");
	e.detail[0] = 0;
	pgc_error_format(&e, text, sizeof text);
	assert_string_equal(text, "57P03: not the leader");
	e.sqlstate[0] = 0;
	pgc_error_format(&e, text, sizeof text);
	assert_string_equal(text, "not the leader");
}

/* ---- A pretend cluster for the command line and the join procedure ------------------ */

#define MAX_NODES 6

struct fnode {
	struct fcluster *c;
	int idx;
	uint64_t id;
	char raft[64];
	char pg[64];
	char role[16];
	bool member;
	bool served;        /* has a fake server (pg is its address) */
	int spare_reads;
	struct fake f;
};

struct fcluster {
	pthread_mutex_t mu;
	struct fnode nodes[MAX_NODES];
	int n;
	int leader;          /* index, -1: none */
	int pending_leader;  /* applied at pending_at */
	int64_t pending_at;
	int pending_remove;
	int64_t remove_at;
	bool never_move;     /* transfers are accepted and do nothing */
	int busy_removes;    /* answer 55006 to this many removes first */
	int unavailable;     /* answer 57P03 to this many queries first */
	const char *transfer_code; /* answer transfers with this error */
	const char *join_code;     /* answer joins with this error */
	int promote_after;   /* spare reads before a spare becomes a voter */
	int n_transfers, n_removes, n_joins;
};

static struct fcluster *cl;

static void fc_tick(struct fcluster *c)
{
	int64_t t = now_ms();

	if (c->pending_leader >= 0 && t >= c->pending_at) {
		c->leader = c->pending_leader;
		c->pending_leader = -1;
	}
	if (c->pending_remove >= 0 && t >= c->remove_at) {
		c->nodes[c->pending_remove].member = false;
		c->pending_remove = -1;
	}
}

static struct fnode *fc_find(struct fcluster *c, uint64_t id)
{
	int i;

	for (i = 0; i < c->n; i++)
		if (c->nodes[i].member && c->nodes[i].id == id)
			return &c->nodes[i];
	return NULL;
}

static void put_not_leader(struct fcluster *c, struct buf *b)
{
	char detail[64];

	if (c->leader >= 0)
		snprintf(detail, sizeof detail, "leader: %s", c->nodes[c->leader].pg);
	else
		snprintf(detail, sizeof detail, "no leader is known at the moment");
	put_error(b, "ERROR", "25006", "cannot execute statement: this node is not the leader",
		  detail);
}

static void put_cluster(struct fcluster *c, struct buf *b, const struct fnode *self,
			bool stale)
{
	static const char *const names[] = {"id",        "raft_address",  "pg_address", "role",
					    "is_leader", "applied_index", "lag"};
	const char *vals[MAX_NODES * 7];
	char ids[MAX_NODES][24];
	unsigned n = 0;
	int i;

	for (i = 0; i < c->n; i++) {
		const struct fnode *m = &c->nodes[i];
		const char **v = &vals[n * 7];
		bool me = m == self;

		if (!m->member)
			continue;
		snprintf(ids[n], sizeof ids[n], "%llu", (unsigned long long)m->id);
		v[0] = ids[n];
		v[1] = m->raft;
		v[2] = m->pg;
		v[3] = m->role;
		v[4] = c->leader == i ? "t" : "f";
		v[5] = stale ? (me ? "90" : NULL) : "100";
		v[6] = stale ? NULL : me ? "0" : "3";
		n++;
	}
	put_rows(b, 7, names, n, vals);
}

static bool q_node(struct fake *f, int fd, const char *sql, struct sess *s)
{
	struct fnode *self = f->arg;
	struct fcluster *c = self->c;
	unsigned long long id;
	char raft[64], pg[64];
	bool leader, keep = true;
	struct buf b;

	buf_init(&b);
	pthread_mutex_lock(&c->mu);
	fc_tick(c);
	leader = c->leader == self->idx;
	if (!s->init) {
		s->init = true;
		s->was_leader = leader;
	}
	if (s->was_leader && !leader) {
		/* Proxy-mode step-down: sessions of the old leader end. */
		put_error(&b, "FATAL", "57P01",
			  "terminating connection: this node stopped being the leader", NULL);
		keep = false;
	} else if (c->unavailable > 0) {
		c->unavailable--;
		put_error(&b, "ERROR", "57P03", "timed out waiting for the database", NULL);
	} else if (strcmp(sql, "SET pqlite.read_consistency = stale") == 0) {
		s->stale = true;
		pgw_encode_command_complete(&b, "SET");
	} else if (strncmp(sql, "SELECT id, raft_address", 23) == 0) {
		if (!leader && !s->stale)
			put_not_leader(c, &b);
		else
			put_cluster(c, &b, self, !leader);
	} else if (sscanf(sql, "SELECT role FROM pqlite_cluster WHERE id = %llu", &id) == 1) {
		static const char *const names[] = {"role"};
		struct fnode *m = fc_find(c, id);
		if (!leader) {
			put_not_leader(c, &b);
		} else if (m == NULL) {
			put_rows(&b, 1, names, 0, NULL);
		} else {
			const char *v[1] = {m->role};
			put_rows(&b, 1, names, 1, v);
			if (strcmp(m->role, "spare") == 0 && ++m->spare_reads >= c->promote_after)
				strcpy(m->role, "voter");
		}
	} else if (sscanf(sql, "SELECT pqlite_transfer(%llu)", &id) == 1) {
		static const char *const names[] = {"pqlite_transfer"};
		char t[24];
		const char *v[1] = {t};
		int i, target = -1;

		c->n_transfers++;
		if (!leader) {
			put_not_leader(c, &b);
		} else if (c->transfer_code != NULL) {
			put_error(&b, "ERROR", c->transfer_code, "cannot transfer leadership",
				  "target is not a voter");
		} else {
			for (i = 0; i < c->n && target < 0; i++)
				if (c->nodes[i].member && i != self->idx &&
				    (id == 0 || c->nodes[i].id == id))
					target = i;
			if (target < 0) {
				put_error(&b, "ERROR", "42704", "no such node", NULL);
			} else {
				if (!c->never_move) {
					c->pending_leader = target;
					c->pending_at = now_ms() + 150;
				}
				snprintf(t, sizeof t, "%llu", (unsigned long long)c->nodes[target].id);
				put_rows(&b, 1, names, 1, v);
			}
		}
	} else if (sscanf(sql, "SELECT pqlite_remove(%llu)", &id) == 1) {
		static const char *const names[] = {"pqlite_remove"};
		char t[24];
		const char *v[1] = {t};
		struct fnode *m = fc_find(c, id);

		c->n_removes++;
		if (!leader) {
			put_not_leader(c, &b);
		} else if (m == NULL) {
			put_error(&b, "ERROR", "42704", "no such node", NULL);
		} else if (m == self) {
			put_error(&b, "ERROR", "55000", "the leader cannot remove itself",
				  "transfer leadership first");
		} else if (c->busy_removes > 0) {
			c->busy_removes--;
			put_error(&b, "ERROR", "55006", "another membership change is in progress",
				  NULL);
		} else {
			c->pending_remove = m->idx;
			c->remove_at = now_ms() + 150;
			snprintf(t, sizeof t, "%llu", id);
			put_rows(&b, 1, names, 1, v);
		}
	} else if (sscanf(sql, "SELECT pqlite_join(%llu, '%63[^']', '%63[^']')", &id, raft, pg) ==
		   3) {
		static const char *const names[] = {"pqlite_join"};
		struct fnode *m = fc_find(c, id);

		c->n_joins++;
		if (!leader) {
			put_not_leader(c, &b);
		} else if (c->join_code != NULL) {
			put_error(&b, "ERROR", c->join_code, "address already used by node 1", NULL);
		} else {
			if (m == NULL) {
				assert_true(c->n < MAX_NODES);
				m = &c->nodes[c->n];
				memset(m, 0, sizeof *m);
				m->c = c;
				m->idx = c->n++;
				m->id = id;
				snprintf(m->raft, sizeof m->raft, "%s", raft);
				snprintf(m->pg, sizeof m->pg, "%s", pg);
				strcpy(m->role, "spare");
				m->member = true;
			}
			const char *v[1] = {m->role};
			put_rows(&b, 1, names, 1, v);
		}
	} else {
		put_error(&b, "ERROR", "42601", "syntax error", sql);
	}
	pthread_mutex_unlock(&c->mu);
	if (keep)
		pgw_encode_ready(&b, 'I');
	srv_send(fd, &b);
	buf_close(&b);
	return keep;
}

static int setup_cluster(void **state)
{
	int i;

	cl = calloc(1, sizeof *cl);
	assert_non_null(cl);
	pthread_mutex_init(&cl->mu, NULL);
	cl->n = 3;
	cl->leader = 0;
	cl->pending_leader = -1;
	cl->pending_remove = -1;
	cl->promote_after = 2;
	for (i = 0; i < 3; i++) {
		struct fnode *m = &cl->nodes[i];
		m->c = cl;
		m->idx = i;
		m->id = (uint64_t)i + 1;
		snprintf(m->raft, sizeof m->raft, "127.0.0.1:%d", 7101 + i);
		strcpy(m->role, "voter");
		m->member = true;
		m->served = true;
		fake_start(&m->f, NULL, q_node, m);
		strcpy(m->pg, m->f.addr);
	}
	return 0;
}

static int teardown_cluster(void **state)
{
	int i;

	for (i = 0; i < cl->n; i++)
		if (cl->nodes[i].served)
			fake_stop(&cl->nodes[i].f);
	pthread_mutex_destroy(&cl->mu);
	free(cl);
	cl = NULL;
	return 0;
}

struct cli_out {
	int rc;
	char *out;
	char *err;
	size_t out_len, err_len;
};

static void cli_out_free(struct cli_out *o)
{
	free(o->out);
	free(o->err);
}

/* Run cli_run with the NULL-terminated arguments. */
static void run_cli(struct cli_out *o, ...)
{
	char *argv[16];
	int argc = 0;
	FILE *out, *err;
	va_list ap;

	va_start(ap, o);
	for (;;) {
		char *a = va_arg(ap, char *);
		if (a == NULL)
			break;
		assert_true(argc < 15);
		argv[argc++] = a;
	}
	va_end(ap);
	argv[argc] = NULL;
	out = open_memstream(&o->out, &o->out_len);
	err = open_memstream(&o->err, &o->err_len);
	assert_non_null(out);
	assert_non_null(err);
	o->rc = cli_run(argc, argv, out, err);
	fclose(out);
	fclose(err);
}

static void expect(const struct cli_out *o, int rc, const char *out_needle,
		   const char *err_needle)
{
	if (o->rc != rc || (out_needle != NULL && strstr(o->out, out_needle) == NULL) ||
	    (err_needle != NULL && strstr(o->err, err_needle) == NULL))
		fail_msg("exit %d (expected %d)\n--- stdout:\n%s--- stderr:\n%s", o->rc, rc, o->out,
			 o->err);
}

static void cli_usage(void **state)
{
	static const char *const bad[][5] = {
		{"remove", NULL},
		{"remove", "abc", NULL},
		{"remove", "0", NULL},
		{"remove", "-3", NULL},
		{"remove", "1x", NULL},
		{"remove", "99999999999999999999", NULL},
		{"remove", "1", "2", NULL},
		{"transfer", "--host", "localhost:5433", NULL},
		{"transfer", "--host", "127.0.0.1", NULL},
		{"transfer", "--host", NULL},
		{"transfer", "--timeout", "0", NULL},
		{"transfer", "--timeout=abc", NULL},
		{"status", "--bogus", NULL},
		{"status", "7", NULL},
	};
	struct cli_out o;
	size_t i;

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char *argv[5];
		FILE *out, *err;
		int argc = 0;

		while (bad[i][argc] != NULL) {
			argv[argc] = (char *)bad[i][argc];
			argc++;
		}
		memset(&o, 0, sizeof o);
		out = open_memstream(&o.out, &o.out_len);
		err = open_memstream(&o.err, &o.err_len);
		o.rc = cli_run(argc, argv, out, err);
		fclose(out);
		fclose(err);
		if (o.rc != 2 || o.err[0] == 0)
			fail_msg("case %zu: exit %d, stderr \"%s\"", i, o.rc, o.err);
		cli_out_free(&o);
	}
	run_cli(&o, "status", "--help", NULL);
	expect(&o, 0, "usage: pqlite status", NULL);
	cli_out_free(&o);
	run_cli(&o, "frobnicate", NULL);
	expect(&o, 2, NULL, "unknown command");
	cli_out_free(&o);
	assert_true(cli_is_command("status"));
	assert_true(cli_is_command("remove"));
	assert_true(cli_is_command("transfer"));
	assert_false(cli_is_command("recover"));
	assert_false(cli_is_command(NULL));
}

static void cli_status(void **state)
{
	struct cli_out o;
	char refused[32];

	/* On the leader. */
	run_cli(&o, "status", "--host", cl->nodes[0].pg, NULL);
	expect(&o, 0, "ID  RAFT ADDRESS    PG ADDRESS", NULL);
	assert_non_null(strstr(o.out, "ROLE   LEADER  APPLIED  LAG\n"));
	assert_non_null(strstr(o.out, "1   127.0.0.1:7101"));
	assert_non_null(strstr(o.out, "voter  yes     100      0\n"));
	assert_non_null(strstr(o.out, "voter          100      3\n"));
	assert_string_equal(o.err, "");
	cli_out_free(&o);

	/* On a follower: the leader's view (found through the 25006 hint). */
	run_cli(&o, "status", "--host=", NULL); /* empty address: usage error */
	expect(&o, 2, NULL, "invalid address");
	cli_out_free(&o);
	run_cli(&o, "status", "--host", cl->nodes[2].pg, "--timeout", "3000", NULL);
	expect(&o, 0, "voter  yes     100      0\n", NULL);
	assert_string_equal(o.err, "");
	cli_out_free(&o);

	/* No leader: the follower's own view, NULLs shown as "-". */
	pthread_mutex_lock(&cl->mu);
	cl->leader = -1;
	pthread_mutex_unlock(&cl->mu);
	run_cli(&o, "status", "--host", cl->nodes[1].pg, NULL);
	expect(&o, 0, NULL, "no leader answered");
	assert_non_null(strstr(o.out, "voter          90       -\n"));
	assert_non_null(strstr(o.out, "voter          -        -\n"));
	cli_out_free(&o);

	/* Nobody there. */
	refused_address(refused, sizeof refused);
	run_cli(&o, "status", "--host", refused, NULL);
	expect(&o, 1, NULL, "pqlite: cannot connect to");
	cli_out_free(&o);
}

static void cli_transfer(void **state)
{
	struct cli_out o;
	char want[96];

	/* Anywhere, through the leader, whose session ends with 57P01 when it steps down. */
	run_cli(&o, "transfer", "--host", cl->nodes[0].pg, NULL);
	snprintf(want, sizeof want, "leader is now node 2 at %s\n", cl->nodes[1].pg);
	expect(&o, 0, want, NULL);
	cli_out_free(&o);
	assert_int_equal(cl->leader, 1);

	/* To node 3, asked through node 1, now a follower. */
	run_cli(&o, "transfer", "--host", cl->nodes[0].pg, "3", NULL);
	snprintf(want, sizeof want, "leader is now node 3 at %s\n", cl->nodes[2].pg);
	expect(&o, 0, want, NULL);
	cli_out_free(&o);
	assert_int_equal(cl->leader, 2);

	/* To the node that already leads. */
	run_cli(&o, "transfer", "--host", cl->nodes[0].pg, "3", NULL);
	expect(&o, 0, want, NULL);
	cli_out_free(&o);

	/* Not a member. */
	run_cli(&o, "transfer", "--host", cl->nodes[0].pg, "17", NULL);
	expect(&o, 1, NULL, "node 17 is not a member");
	cli_out_free(&o);

	/* The server refuses: its error as "pqlite: SQLSTATE: message (detail)". */
	cl->transfer_code = "22023";
	run_cli(&o, "transfer", "--host", cl->nodes[0].pg, "1", NULL);
	expect(&o, 1, NULL,
	       "pqlite: 22023: cannot transfer leadership (target is not a voter)\n");
	cli_out_free(&o);
	cl->transfer_code = NULL;

	/* Accepted, but leadership never moves. */
	cl->never_move = true;
	run_cli(&o, "transfer", "--host", cl->nodes[0].pg, "--timeout", "800", NULL);
	expect(&o, 1, NULL, "leadership did not move within 800 ms");
	cli_out_free(&o);
	cl->never_move = false;

	/* A leader that is briefly unavailable (57P03): retried. */
	cl->unavailable = 2;
	run_cli(&o, "transfer", "--host", cl->nodes[1].pg, "1", NULL);
	snprintf(want, sizeof want, "leader is now node 1 at %s\n", cl->nodes[0].pg);
	expect(&o, 0, want, NULL);
	cli_out_free(&o);
}

static void cli_remove(void **state)
{
	struct cli_out o;

	/* A follower, with one "change in progress" first. */
	cl->busy_removes = 1;
	run_cli(&o, "remove", "--host", cl->nodes[1].pg, "3", NULL);
	expect(&o, 0, "node 3 removed\n", NULL);
	cli_out_free(&o);
	assert_false(cl->nodes[2].member);
	assert_int_equal(cl->n_removes, 2);

	/* Gone already. */
	run_cli(&o, "remove", "--host", cl->nodes[1].pg, "3", NULL);
	expect(&o, 1, NULL, "node 3 is not a member");
	cli_out_free(&o);

	/* The leader: leadership moves to node 2 first. */
	run_cli(&o, "remove", "--host", cl->nodes[0].pg, "1", NULL);
	expect(&o, 0, "node 1 removed\n", NULL);
	cli_out_free(&o);
	assert_int_equal(cl->leader, 1);
	assert_false(cl->nodes[0].member);
	assert_true(cl->n_transfers >= 1);
}

static void cli_no_leader_times_out(void **state)
{
	struct cli_out o;
	int64_t t0 = now_ms();

	cl->leader = -1;
	run_cli(&o, "remove", "--host", cl->nodes[1].pg, "--timeout", "700", "3", NULL);
	expect(&o, 1, NULL, "no leader answered within 700 ms");
	assert_non_null(strstr(o.err, "25006"));
	assert_true(now_ms() - t0 < 3000);
	cli_out_free(&o);
}

/* ---- Join ------------------------------------------------------------------------------- */

static void join_through_follower(void **state)
{
	struct joiner_args a = {0};
	char errmsg[256] = "";
	volatile int stop = 0;

	a.join_address = cl->nodes[1].pg;
	a.id = 77;
	a.raft_address = "127.0.0.1:7177";
	a.pg_address = "127.0.0.1:5577";
	a.stop = &stop;
	cl->unavailable = 1;
	assert_int_equal(joiner_run(&a, errmsg), 0);
	assert_int_equal(cl->n_joins, 1);
	assert_non_null(fc_find(cl, 77));
	assert_string_equal(fc_find(cl, 77)->role, "voter");
	assert_string_equal(fc_find(cl, 77)->pg, "127.0.0.1:5577");

	/* Again: already a voter, nothing to do. */
	assert_int_equal(joiner_run(&a, errmsg), 0);
	assert_int_equal(cl->n_joins, 1);
}

static void join_refused(void **state)
{
	struct joiner_args a = {0};
	char errmsg[256] = "";

	a.join_address = cl->nodes[0].pg;
	a.id = 78;
	a.raft_address = "127.0.0.1:7101";
	a.pg_address = "127.0.0.1:5578";
	cl->join_code = "42710";
	assert_int_equal(joiner_run(&a, errmsg), ERR_INVALID);
	assert_non_null(strstr(errmsg, "42710: address already used by node 1"));

	/* Any other error, five times in a row, ends it too. */
	cl->join_code = "XX000";
	a.id = 80;
	assert_int_equal(joiner_run(&a, errmsg), ERR_INVALID);
	assert_non_null(strstr(errmsg, "XX000"));
	assert_int_equal(cl->n_joins, 1 + 5);

	/* Bad arguments are refused before any connection. */
	a.raft_address = "127.0.0.1:71'01";
	assert_int_equal(joiner_run(&a, errmsg), ERR_INVALID);
	a.raft_address = "127.0.0.1:7101";
	a.pg_address = a.join_address;
	assert_int_equal(joiner_run(&a, errmsg), ERR_INVALID);
	a.pg_address = "127.0.0.1:5578";
	a.join_address = "nowhere";
	assert_int_equal(joiner_run(&a, errmsg), ERR_INVALID);
	a.join_address = cl->nodes[0].pg;
	a.id = 0;
	assert_int_equal(joiner_run(&a, errmsg), ERR_INVALID);
}

static volatile int async_stop;

static void *set_stop_later(void *arg)
{
	sleep_ms(400);
	async_stop = 1;
	return NULL;
}

static void join_stop(void **state)
{
	struct joiner_args a = {0};
	char errmsg[256] = "", refused[32];
	struct fake f;
	pthread_t th;
	int64_t t0;

	/* Nothing listens: retried until the stop flag. */
	refused_address(refused, sizeof refused);
	a.join_address = refused;
	a.id = 79;
	a.raft_address = "127.0.0.1:7179";
	a.pg_address = "127.0.0.1:5579";
	a.stop = &async_stop;
	async_stop = 0;
	t0 = now_ms();
	assert_int_equal(pthread_create(&th, NULL, set_stop_later, NULL), 0);
	assert_int_equal(joiner_run(&a, errmsg), ERR_SHUTDOWN);
	assert_true(now_ms() - t0 < 400 + 400);
	pthread_join(th, NULL);

	/* A server that never answers: the stop flag ends the wait within the poll slice. */
	fake_start(&f, conn_silent, NULL, NULL);
	a.join_address = f.addr;
	async_stop = 0;
	t0 = now_ms();
	assert_int_equal(pthread_create(&th, NULL, set_stop_later, NULL), 0);
	assert_int_equal(joiner_run(&a, errmsg), ERR_SHUTDOWN);
	assert_true(now_ms() - t0 < 400 + 400);
	pthread_join(th, NULL);
	fake_stop(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(client_rows_and_nulls),
		cmocka_unit_test(client_error_response),
		cmocka_unit_test(client_startup_failures),
		cmocka_unit_test(client_garbage),
		cmocka_unit_test(client_byte_by_byte),
		cmocka_unit_test(client_timeouts),
		cmocka_unit_test(client_fuzz),
		cmocka_unit_test(client_helpers),
		cmocka_unit_test(cli_usage),
		cmocka_unit_test_setup_teardown(cli_status, setup_cluster, teardown_cluster),
		cmocka_unit_test_setup_teardown(cli_transfer, setup_cluster, teardown_cluster),
		cmocka_unit_test_setup_teardown(cli_remove, setup_cluster, teardown_cluster),
		cmocka_unit_test_setup_teardown(cli_no_leader_times_out, setup_cluster,
						teardown_cluster),
		cmocka_unit_test_setup_teardown(join_through_follower, setup_cluster,
						teardown_cluster),
		cmocka_unit_test_setup_teardown(join_refused, setup_cluster, teardown_cluster),
		cmocka_unit_test(join_stop),
	};

	signal(SIGPIPE, SIG_IGN);
	/* As test_seed(), but printed as a TAP comment. */
	base_seed = 0x636c69656e74ULL;
	if (getenv("PQ_TEST_SEED") != NULL && getenv("PQ_TEST_SEED")[0] != '\0')
		base_seed = strtoull(getenv("PQ_TEST_SEED"), NULL, 0);
	printf("# test_client: seed 0x%" PRIx64 " (replay with PQ_TEST_SEED=0x%" PRIx64 ")\n",
	       base_seed, base_seed);
	fflush(stdout);
	return cmocka_run_group_tests(tests, NULL, NULL);
}

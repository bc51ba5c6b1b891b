/* A small blocking PostgreSQL v3 client over a non-blocking socket (see client.h).
 *
 * Backend messages read (every integer big-endian; len counts itself, not the type):
 *   'R' int32 code (0 = AuthenticationOk)       'S' name\0 value\0 (ignored)
 *   'K' int32 pid, int32 secret                 'Z' byte status (I, T or E)
 *   'T' int16 n, n x {name\0, int32 table, int16 attnum, int32 type, int16 typlen,
 *       int32 typmod, int16 format}
 *   'D' int16 n, n x {int32 len (-1: NULL), len bytes}
 *   'C' tag\0      'I' (empty query)      'E'/'N' {byte field, value\0}... \0
 *   'A' notification, 'v' NegotiateProtocolVersion: ignored. */
#include "client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../lib/buf.h"
#include "../lib/err.h"

#define READ_CHUNK 65536
#define CANCEL_SLICE_MS 100
#define STARTUP_MAX 10000

struct pgc {
	int fd;
	bool broken;
	const volatile int *cancel;
	struct buf in;    /* received bytes; in.data[pos..len) not consumed yet */
	size_t pos;
	size_t pending;   /* bytes of the last returned message, consumed on the next read */
	int timeout_ms;   /* of the current call, for messages */
	uint32_t pid, secret;
	char addr[PGC_ADDR_MAX];
};

struct pgc_result {
	unsigned n_cols;
	unsigned n_rows;
	unsigned cap_rows;
	char **names;     /* n_cols strings */
	char ***rows;     /* rows[i]: one allocation, n_cols pointers then the bytes */
	size_t bytes;     /* held, bounded by PGC_MAX_RESULT_LEN */
	char tag[64];
};

struct msg {
	uint8_t type;
	const uint8_t *body;
	size_t len;
};

/* ---- Errors ----------------------------------------------------------------------------- */

static void clear_error(struct pgc_error *err)
{
	memset(err, 0, sizeof *err);
}

/* A local failure: no SQLSTATE, the connection is unusable. */
static int fail(struct pgc *c, struct pgc_error *err, int rv, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(struct pgc *c, struct pgc_error *err, int rv, const char *fmt, ...)
{
	va_list ap;

	clear_error(err);
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof err->message, fmt, ap);
	va_end(ap);
	err->connection = true;
	if (c != NULL)
		c->broken = true;
	return rv;
}

static void copy_field(char *dst, size_t len, const char *src)
{
	snprintf(dst, len, "%s", src);
}

/* Parse the fields of an ErrorResponse body into err. false when malformed. */
static bool parse_error(const uint8_t *p, size_t len, struct pgc_error *err)
{
	const char *sev_s = NULL, *sev_v = NULL;
	bool terminated = false;
	size_t i = 0;

	clear_error(err);
	while (i < len) {
		uint8_t code = p[i++];
		const uint8_t *nul;
		const char *val;

		if (code == 0) {
			terminated = true;
			break;
		}
		nul = memchr(p + i, 0, len - i);
		if (nul == NULL)
			return false;
		val = (const char *)(p + i);
		switch (code) {
		case 'S':
			sev_s = val;
			break;
		case 'V':
			sev_v = val;
			break;
		case 'C':
			copy_field(err->sqlstate, sizeof err->sqlstate, val);
			break;
		case 'M':
			copy_field(err->message, sizeof err->message, val);
			break;
		case 'D':
			copy_field(err->detail, sizeof err->detail, val);
			break;
		default:
			break;
		}
		i = (size_t)(nul - p) + 1;
	}
	if (!terminated)
		return false; /* no terminating zero byte */
	copy_field(err->severity, sizeof err->severity,
		   sev_v != NULL ? sev_v : sev_s != NULL ? sev_s : "ERROR");
	if (err->message[0] == 0)
		copy_field(err->message, sizeof err->message, "(no message)");
	return true;
}

static bool severity_fatal(const struct pgc_error *err)
{
	return strcmp(err->severity, "FATAL") == 0 || strcmp(err->severity, "PANIC") == 0;
}

/* ---- Time and socket I/O ------------------------------------------------------------- */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool cancelled(const struct pgc *c)
{
	return c->cancel != NULL && *c->cancel != 0;
}

/* Wait until fd is ready for events or the deadline passes. */
static int wait_fd(struct pgc *c, short events, int64_t deadline, const char *what,
		   struct pgc_error *err)
{
	for (;;) {
		struct pollfd p = {.fd = c->fd, .events = events};
		int64_t left;
		int rv;

		if (cancelled(c))
			return fail(c, err, ERR_SHUTDOWN, "cancelled");
		left = deadline - now_ms();
		if (left <= 0)
			return fail(c, err, ERR_TIMEOUT, "timed out after %d ms %s %s", c->timeout_ms,
				    what, c->addr);
		if (c->cancel != NULL && left > CANCEL_SLICE_MS)
			left = CANCEL_SLICE_MS;
		rv = poll(&p, 1, (int)left);
		if (rv < 0) {
			if (errno == EINTR)
				continue;
			return fail(c, err, ERR_IO, "poll: %s", strerror(errno));
		}
		if (rv > 0)
			return 0;
	}
}

static int send_all(struct pgc *c, const uint8_t *p, size_t n, int64_t deadline,
		    struct pgc_error *err)
{
	while (n > 0) {
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
		int rv;

		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return fail(c, err, ERR_IO, "cannot send to %s: %s", c->addr,
				    strerror(errno));
		rv = wait_fd(c, POLLOUT, deadline, "sending to", err);
		if (rv != 0)
			return rv;
	}
	return 0;
}

/* Make at least `need` unconsumed bytes available in c->in. */
static int fill(struct pgc *c, size_t need, int64_t deadline, struct pgc_error *err)
{
	while (c->in.len - c->pos < need) {
		ssize_t r;
		int rv;

		if (c->pos > 0 && (c->pos == c->in.len || c->pos >= c->in.cap / 2)) {
			buf_consume(&c->in, c->pos);
			c->pos = 0;
		}
		if (!buf_reserve(&c->in, READ_CHUNK)) {
			c->in.failed = false;
			return fail(c, err, ERR_NOMEM, "out of memory");
		}
		r = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len, 0);
		if (r > 0) {
			c->in.len += (size_t)r;
			continue;
		}
		if (r == 0)
			return fail(c, err, ERR_IO, "server %s closed the connection unexpectedly",
				    c->addr);
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return fail(c, err, ERR_IO, "cannot receive from %s: %s", c->addr,
				    strerror(errno));
		rv = wait_fd(c, POLLIN, deadline, "waiting for", err);
		if (rv != 0)
			return rv;
	}
	return 0;
}

/* Read the next backend message; m is valid until the next call. */
static int read_msg(struct pgc *c, int64_t deadline, struct msg *m, struct pgc_error *err)
{
	const uint8_t *p;
	uint32_t len;
	int rv;

	c->pos += c->pending;
	c->pending = 0;
	rv = fill(c, 5, deadline, err);
	if (rv != 0)
		return rv;
	p = c->in.data + c->pos;
	len = get_u32be(p + 1);
	if (len < 4 || len - 4 > PGC_MAX_MSG_LEN) {
		if (p[0] >= 0x20 && p[0] < 0x7f)
			return fail(c, err, ERR_PROTO,
				    "protocol error: invalid length %u of message '%c' from %s", len,
				    p[0], c->addr);
		return fail(c, err, ERR_PROTO,
			    "protocol error: invalid length %u of message 0x%02x from %s", len,
			    p[0], c->addr);
	}
	rv = fill(c, 1 + (size_t)len, deadline, err);
	if (rv != 0)
		return rv;
	p = c->in.data + c->pos;
	m->type = p[0];
	m->body = p + 5;
	m->len = (size_t)len - 4;
	c->pending = 1 + (size_t)len;
	return 0;
}

static int unexpected(struct pgc *c, const struct msg *m, const char *when,
		      struct pgc_error *err)
{
	if (m->type >= 0x20 && m->type < 0x7f)
		return fail(c, err, ERR_PROTO, "protocol error: unexpected message '%c' %s from %s",
			    m->type, when, c->addr);
	return fail(c, err, ERR_PROTO, "protocol error: unexpected message 0x%02x %s from %s",
		    m->type, when, c->addr);
}

static int malformed(struct pgc *c, const struct msg *m, struct pgc_error *err)
{
	return fail(c, err, ERR_PROTO, "protocol error: malformed message '%c' from %s",
		    m->type >= 0x20 && m->type < 0x7f ? m->type : '?', c->addr);
}

static bool ready_valid(const struct msg *m)
{
	return m->len == 1 && (m->body[0] == 'I' || m->body[0] == 'T' || m->body[0] == 'E');
}

/* ---- Addresses ------------------------------------------------------------------------ */

bool pgc_parse_address(const char *s, char *host, size_t host_len, int *port)
{
	const char *colon;
	struct in_addr a;
	char h[INET_ADDRSTRLEN];
	char *end;
	long p;

	if (s == NULL)
		return false;
	colon = strrchr(s, ':');
	if (colon == NULL || colon == s || (size_t)(colon - s) >= sizeof h)
		return false;
	memcpy(h, s, (size_t)(colon - s));
	h[colon - s] = 0;
	if (inet_pton(AF_INET, h, &a) != 1)
		return false;
	if (colon[1] < '0' || colon[1] > '9')
		return false;
	errno = 0;
	p = strtol(colon + 1, &end, 10);
	if (errno != 0 || *end != 0 || p < 1 || p > 65535)
		return false;
	if (host != NULL)
		snprintf(host, host_len, "%s", h);
	if (port != NULL)
		*port = (int)p;
	return true;
}

/* ---- Connection ------------------------------------------------------------------------ */

static void put_param(struct buf *b, const char *k, const char *v)
{
	buf_put(b, k, strlen(k) + 1);
	buf_put(b, v, strlen(v) + 1);
}

static int tcp_connect(struct pgc *c, const char *host, int port, int64_t deadline,
		       struct pgc_error *err)
{
	struct sockaddr_in sa;
	int one = 1, soerr = 0, rv;
	socklen_t sl = sizeof soerr;

	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	inet_pton(AF_INET, host, &sa.sin_addr);
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (c->fd < 0)
		return fail(c, err, ERR_IO, "socket: %s", strerror(errno));
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) == 0)
		return 0;
	if (errno != EINPROGRESS && errno != EINTR)
		return fail(c, err, ERR_IO, "cannot connect to %s: %s", c->addr, strerror(errno));
	rv = wait_fd(c, POLLOUT, deadline, "connecting to", err);
	if (rv != 0)
		return rv;
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
		soerr = errno;
	if (soerr != 0)
		return fail(c, err, ERR_IO, "cannot connect to %s: %s", c->addr, strerror(soerr));
	return 0;
}

/* Read the answer to the StartupMessage up to ReadyForQuery. */
static int startup_answer(struct pgc *c, int64_t deadline, struct pgc_error *err)
{
	bool authenticated = false;
	struct pgc_error server_err;
	bool have_server_err = false;
	struct msg m = {0};
	int rv;

	for (;;) {
		rv = read_msg(c, deadline, &m, err);
		if (rv != 0) {
			if (have_server_err && rv == ERR_IO) {
				/* The server said why before hanging up: report that. */
				*err = server_err;
				err->connection = true;
				c->broken = true;
				return ERR_SQL;
			}
			return rv;
		}
		switch (m.type) {
		case 'R': {
			uint32_t code;
			if (m.len < 4)
				return malformed(c, &m, err);
			code = get_u32be(m.body);
			if (code != 0)
				return fail(c, err, ERR_PROTO,
					    "unsupported authentication (method %u) requested by %s",
					    code, c->addr);
			if (m.len != 4)
				return malformed(c, &m, err);
			authenticated = true;
			break;
		}
		case 'K':
			if (m.len != 8)
				return malformed(c, &m, err);
			c->pid = get_u32be(m.body);
			c->secret = get_u32be(m.body + 4);
			break;
		case 'S':
		case 'N':
		case 'v':
			break;
		case 'E': {
			struct pgc_error e;
			if (!parse_error(m.body, m.len, &e))
				return malformed(c, &m, err);
			if (!have_server_err || severity_fatal(&e))
				server_err = e;
			have_server_err = true;
			if (!severity_fatal(&e))
				break; /* an ERROR still ends the startup: wait for the close or
					* ReadyForQuery, keeping the first error */
			*err = server_err;
			err->connection = true;
			c->broken = true;
			return ERR_SQL;
		}
		case 'Z':
			if (!ready_valid(&m))
				return malformed(c, &m, err);
			if (have_server_err) {
				*err = server_err;
				err->connection = true;
				c->broken = true;
				return ERR_SQL;
			}
			if (!authenticated)
				return fail(c, err, ERR_PROTO,
					    "protocol error: ReadyForQuery before authentication from %s",
					    c->addr);
			return 0;
		default:
			return unexpected(c, &m, "during startup", err);
		}
	}
}

int pgc_connect_ex(const char *host_port, const char *dbname, const char *application_name,
		   int timeout_ms, const volatile int *cancel, struct pgc **out,
		   struct pgc_error *err)
{
	char host[INET_ADDRSTRLEN];
	struct buf b;
	struct pgc *c;
	int64_t deadline;
	int port, rv;

	*out = NULL;
	if (host_port == NULL || strlen(host_port) >= PGC_ADDR_MAX ||
	    !pgc_parse_address(host_port, host, sizeof host, &port))
		return fail(NULL, err, ERR_INVALID,
			    "invalid address \"%s\": expected an IPv4 literal and a port, like "
			    "127.0.0.1:5433",
			    host_port != NULL ? host_port : "");
	if (timeout_ms <= 0)
		return fail(NULL, err, ERR_INVALID, "invalid timeout %d ms", timeout_ms);
	if (dbname == NULL)
		dbname = "postgres";
	if (strlen(dbname) > 1000 ||
	    (application_name != NULL && strlen(application_name) > 1000))
		return fail(NULL, err, ERR_INVALID, "database or application name too long");
	deadline = now_ms() + timeout_ms;

	c = calloc(1, sizeof *c);
	if (c == NULL)
		return fail(NULL, err, ERR_NOMEM, "out of memory");
	c->fd = -1;
	c->cancel = cancel;
	c->timeout_ms = timeout_ms;
	buf_init(&c->in);
	snprintf(c->addr, sizeof c->addr, "%s", host_port);

	rv = tcp_connect(c, host, port, deadline, err);
	if (rv != 0)
		goto err_after_alloc;

	buf_init(&b);
	buf_put_u32be(&b, 0);
	buf_put_u32be(&b, 196608u); /* protocol 3.0 */
	put_param(&b, "user", "pqlite");
	put_param(&b, "database", dbname);
	if (application_name != NULL)
		put_param(&b, "application_name", application_name);
	buf_put_u8(&b, 0);
	if (b.failed) {
		buf_close(&b);
		rv = fail(c, err, ERR_NOMEM, "out of memory");
		goto err_after_alloc;
	}
	put_u32be(b.data, (uint32_t)b.len);
	rv = send_all(c, b.data, b.len, deadline, err);
	buf_close(&b);
	if (rv != 0)
		goto err_after_alloc;
	rv = startup_answer(c, deadline, err);
	if (rv != 0)
		goto err_after_alloc;
	*out = c;
	return 0;

err_after_alloc:
	err->connection = true;
	if (c->fd >= 0)
		close(c->fd);
	buf_close(&c->in);
	free(c);
	return rv;
}

int pgc_connect(const char *host_port, const char *dbname, const char *application_name,
		int timeout_ms, struct pgc **out, struct pgc_error *err)
{
	return pgc_connect_ex(host_port, dbname, application_name, timeout_ms, NULL, out, err);
}

void pgc_close(struct pgc *c)
{
	static const uint8_t terminate[5] = {'X', 0, 0, 0, 4};

	if (c == NULL)
		return;
	if (c->fd >= 0) {
		if (!c->broken) {
			ssize_t w = send(c->fd, terminate, sizeof terminate,
					 MSG_NOSIGNAL | MSG_DONTWAIT);
			(void)w;
		}
		close(c->fd);
	}
	buf_close(&c->in);
	free(c);
}

bool pgc_usable(const struct pgc *c)
{
	return c != NULL && !c->broken;
}

const char *pgc_address(const struct pgc *c)
{
	return c->addr;
}

/* ---- Results ---------------------------------------------------------------------------- */

static void result_clear(struct pgc_result *r)
{
	unsigned i;

	for (i = 0; i < r->n_cols && r->names != NULL; i++)
		free(r->names[i]);
	free(r->names);
	for (i = 0; i < r->n_rows; i++)
		free(r->rows[i]);
	free(r->rows);
	r->names = NULL;
	r->rows = NULL;
	r->n_cols = r->n_rows = r->cap_rows = 0;
	r->bytes = 0;
}

void pgc_result_free(struct pgc_result *r)
{
	if (r == NULL)
		return;
	result_clear(r);
	free(r);
}

unsigned pgc_result_n_rows(const struct pgc_result *r)
{
	return r->n_rows;
}

unsigned pgc_result_n_cols(const struct pgc_result *r)
{
	return r->n_cols;
}

const char *pgc_result_column(const struct pgc_result *r, unsigned col)
{
	return col < r->n_cols ? r->names[col] : NULL;
}

const char *pgc_result_value(const struct pgc_result *r, unsigned row, unsigned col)
{
	if (row >= r->n_rows || col >= r->n_cols)
		return NULL;
	return r->rows[row][col];
}

const char *pgc_result_tag(const struct pgc_result *r)
{
	return r->tag;
}

/* RowDescription: replaces whatever an earlier statement of the same query returned. */
static int parse_row_description(struct pgc *c, struct pgc_result *r, const struct msg *m,
				 struct pgc_error *err)
{
	size_t i = 2;
	unsigned n, k;

	result_clear(r);
	if (m->len < 2)
		return malformed(c, m, err);
	n = get_u16be(m->body);
	if (n > 1664) /* PostgreSQL's MaxTupleAttributeNumber */
		return malformed(c, m, err);
	r->names = calloc(n ? n : 1, sizeof *r->names);
	if (r->names == NULL)
		return fail(c, err, ERR_NOMEM, "out of memory");
	r->n_cols = n;
	for (k = 0; k < n; k++) {
		const uint8_t *nul = i < m->len ? memchr(m->body + i, 0, m->len - i) : NULL;
		size_t nlen;

		if (nul == NULL)
			return malformed(c, m, err);
		nlen = (size_t)(nul - (m->body + i));
		if (m->len - i - nlen - 1 < 18)
			return malformed(c, m, err);
		r->names[k] = malloc(nlen + 1);
		if (r->names[k] == NULL)
			return fail(c, err, ERR_NOMEM, "out of memory");
		memcpy(r->names[k], m->body + i, nlen + 1);
		r->bytes += nlen + 1;
		i += nlen + 1 + 18;
	}
	if (i != m->len)
		return malformed(c, m, err);
	return 0;
}

static int parse_data_row(struct pgc *c, struct pgc_result *r, const struct msg *m,
			  struct pgc_error *err)
{
	size_t i = 2, data = 0, size;
	unsigned n, k;
	char **row, *p;

	if (r->names == NULL)
		return fail(c, err, ERR_PROTO, "protocol error: DataRow without RowDescription from %s",
			    c->addr);
	if (m->len < 2 || get_u16be(m->body) != r->n_cols)
		return malformed(c, m, err);
	n = r->n_cols;
	/* First pass: check the layout and size the row. */
	for (k = 0; k < n; k++) {
		uint32_t flen;

		if (m->len - i < 4)
			return malformed(c, m, err);
		flen = get_u32be(m->body + i);
		i += 4;
		if (flen == UINT32_MAX)
			continue;
		if (flen > m->len - i)
			return malformed(c, m, err);
		i += flen;
		data += (size_t)flen + 1;
	}
	if (i != m->len)
		return malformed(c, m, err);
	size = (size_t)n * sizeof(char *) + data;
	if (size > PGC_MAX_RESULT_LEN - r->bytes || r->n_rows == UINT32_MAX)
		return fail(c, err, ERR_PROTO, "result from %s larger than %u bytes", c->addr,
			    PGC_MAX_RESULT_LEN);
	if (r->n_rows == r->cap_rows) {
		unsigned cap = r->cap_rows ? r->cap_rows * 2 : 16;
		char ***rows = realloc(r->rows, (size_t)cap * sizeof *rows);

		if (rows == NULL)
			return fail(c, err, ERR_NOMEM, "out of memory");
		r->rows = rows;
		r->cap_rows = cap;
	}
	row = malloc(size ? size : 1);
	if (row == NULL)
		return fail(c, err, ERR_NOMEM, "out of memory");
	p = (char *)(row + n);
	for (i = 2, k = 0; k < n; k++) {
		uint32_t flen = get_u32be(m->body + i);

		i += 4;
		if (flen == UINT32_MAX) {
			row[k] = NULL;
			continue;
		}
		row[k] = p;
		memcpy(p, m->body + i, flen);
		p[flen] = 0;
		p += flen + 1;
		i += flen;
	}
	r->rows[r->n_rows++] = row;
	r->bytes += size + sizeof(char **);
	return 0;
}

int pgc_query(struct pgc *c, const char *sql, int timeout_ms, struct pgc_result **out,
	      struct pgc_error *err)
{
	struct pgc_error server_err;
	bool have_server_err = false;
	struct pgc_result *r;
	struct buf b;
	int64_t deadline;
	size_t len;
	struct msg m = {0};
	int rv;

	*out = NULL;
	if (c == NULL || c->broken)
		return fail(NULL, err, ERR_INVALID, "the connection is not usable");
	len = strlen(sql);
	if (len > PGC_MAX_MSG_LEN)
		return fail(NULL, err, ERR_INVALID, "query too long");
	if (timeout_ms <= 0)
		return fail(NULL, err, ERR_INVALID, "invalid timeout %d ms", timeout_ms);
	c->timeout_ms = timeout_ms;
	deadline = now_ms() + timeout_ms;

	r = calloc(1, sizeof *r);
	if (r == NULL)
		return fail(c, err, ERR_NOMEM, "out of memory");
	buf_init(&b);
	buf_put_u8(&b, 'Q');
	buf_put_u32be(&b, (uint32_t)(4 + len + 1));
	buf_put(&b, sql, len + 1);
	if (b.failed) {
		buf_close(&b);
		rv = fail(c, err, ERR_NOMEM, "out of memory");
		goto err_after_result;
	}
	rv = send_all(c, b.data, b.len, deadline, err);
	buf_close(&b);
	if (rv != 0)
		goto err_after_result;

	for (;;) {
		rv = read_msg(c, deadline, &m, err);
		if (rv != 0) {
			if (have_server_err && rv == ERR_IO) {
				*err = server_err;
				err->connection = true;
				rv = ERR_SQL;
			}
			goto err_after_result;
		}
		switch (m.type) {
		case 'T':
			rv = parse_row_description(c, r, &m, err);
			break;
		case 'D':
			rv = parse_data_row(c, r, &m, err);
			break;
		case 'C': {
			const uint8_t *nul = memchr(m.body, 0, m.len);
			if (nul == NULL || (size_t)(nul - m.body) != m.len - 1) {
				rv = malformed(c, &m, err);
				break;
			}
			copy_field(r->tag, sizeof r->tag, (const char *)m.body);
			break;
		}
		case 'I':
		case 'N':
		case 'S':
		case 'A':
			break;
		case 'E':
			if (have_server_err) {
				/* Only the first error is reported; a later FATAL still ends the
				 * connection. */
				struct pgc_error later;
				if (!parse_error(m.body, m.len, &later)) {
					rv = malformed(c, &m, err);
					break;
				}
				if (severity_fatal(&later)) {
					*err = server_err;
					err->connection = true;
					c->broken = true;
					rv = ERR_SQL;
				}
				break;
			}
			if (!parse_error(m.body, m.len, &server_err)) {
				rv = malformed(c, &m, err);
				break;
			}
			have_server_err = true;
			if (severity_fatal(&server_err)) {
				*err = server_err;
				err->connection = true;
				c->broken = true;
				rv = ERR_SQL;
			}
			break;
		case 'Z':
			if (!ready_valid(&m)) {
				rv = malformed(c, &m, err);
				break;
			}
			if (have_server_err) {
				*err = server_err;
				err->connection = false;
				rv = ERR_SQL;
				goto err_after_result;
			}
			*out = r;
			return 0;
		default:
			rv = unexpected(c, &m, "in a query answer", err);
			break;
		}
		if (rv != 0)
			goto err_after_result;
	}

err_after_result:
	pgc_result_free(r);
	return rv;
}

/* ---- pqlite conventions ---------------------------------------------------------------- */

bool pgc_error_leader(const struct pgc_error *err, char *addr, size_t len)
{
	static const char prefix[] = "leader: ";
	const char *a;

	if (strcmp(err->sqlstate, "25006") != 0 ||
	    strncmp(err->detail, prefix, sizeof prefix - 1) != 0)
		return false;
	a = err->detail + sizeof prefix - 1;
	if (strlen(a) >= PGC_ADDR_MAX || strlen(a) >= len || !pgc_parse_address(a, NULL, 0, NULL))
		return false;
	snprintf(addr, len, "%s", a);
	return true;
}

void pgc_error_format(const struct pgc_error *err, char *out, size_t len)
{
	if (err->sqlstate[0] != 0 && err->detail[0] != 0)
		snprintf(out, len, "%s: %s (%s)", err->sqlstate, err->message, err->detail);
	else if (err->sqlstate[0] != 0)
		snprintf(out, len, "%s: %s", err->sqlstate, err->message);
	else if (err->detail[0] != 0)
		snprintf(out, len, "%s (%s)", err->message, err->detail);
	else
		snprintf(out, len, "%s", err->message);
}

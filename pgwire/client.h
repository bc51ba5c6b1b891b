/* A small blocking PostgreSQL v3 client (simple Query protocol only, no TLS, no
 * authentication beyond AuthenticationOk) for the pqlite command line and the join
 * procedure; the server must not link libpq.
 *
 * Every call is bounded by its timeout: the socket is non-blocking and every wait is a
 * poll() with the time left. Server input is never trusted: a message longer than
 * PGC_MAX_MSG_LEN, a result holding more than PGC_MAX_RESULT_LEN bytes, or any message
 * that does not parse ends the connection with ERR_PROTO, never with a crash or an
 * unbounded allocation.
 *
 * Not thread-safe per connection; distinct connections may be used by distinct threads. */
#ifndef PQ_PGWIRE_CLIENT_H
#define PQ_PGWIRE_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#define PGC_MAX_MSG_LEN (64u << 20)    /* largest backend message accepted */
#define PGC_MAX_RESULT_LEN (64u << 20) /* largest result kept in memory */
#define PGC_ADDR_MAX 64                /* "255.255.255.255:65535" fits easily */

struct pgc;        /* a connection */
struct pgc_result; /* the rows of one query */

/* What went wrong. Filled by every call that fails; untouched on success.
 * sqlstate and severity are empty ("") for local failures (network, timeout, protocol),
 * and set from the server's ErrorResponse otherwise. */
struct pgc_error {
	char sqlstate[6];
	char severity[16];
	char message[256];
	char detail[256];
	bool connection; /* true: network/protocol failure or a FATAL error, the connection
			  * is unusable (only pgc_close may still be called) */
};

/* Parse an IPv4 literal with a port, "a.b.c.d:port" (port 1..65535). host (16 bytes at
 * least, may be NULL) receives the dotted address, port (may be NULL) the port. */
bool pgc_parse_address(const char *s, char *host, size_t host_len, int *port);

/* Connect to host_port ("a.b.c.d:port"), send a protocol 3.0 StartupMessage (user
 * "pqlite", database dbname or "postgres" when NULL, application_name unless NULL) and
 * wait for ReadyForQuery, all within timeout_ms (> 0).
 * Returns 0 and *out (free with pgc_close), or:
 *   ERR_INVALID  bad address or arguments (err->connection is true, nothing to close)
 *   ERR_IO       connect/read/write failed or the server closed the connection
 *   ERR_TIMEOUT  timeout_ms passed
 *   ERR_PROTO    garbage from the server, or an authentication request other than Ok
 *                ("unsupported authentication")
 *   ERR_SQL      the server answered with an ErrorResponse (usually FATAL): sqlstate,
 *                message and detail are the server's
 *   ERR_NOMEM    out of memory
 *   ERR_SHUTDOWN *cancel became non-zero (pgc_connect_ex only)
 * On failure *out is NULL and err->connection is true. */
int pgc_connect(const char *host_port, const char *dbname, const char *application_name,
		int timeout_ms, struct pgc **out, struct pgc_error *err);

/* The same with a cancel flag: while *cancel is zero nothing changes; once it becomes
 * non-zero, this call and every later call on the connection give up within about
 * 100 ms with ERR_SHUTDOWN ("cancelled"). cancel may be NULL; it must outlive the
 * connection. */
int pgc_connect_ex(const char *host_port, const char *dbname, const char *application_name,
		   int timeout_ms, const volatile int *cancel, struct pgc **out,
		   struct pgc_error *err);

/* Run sql with the simple Query protocol and read everything up to ReadyForQuery, within
 * timeout_ms (> 0). Returns 0 and *out (free with pgc_result_free): the column names of
 * the last RowDescription, its rows, and the last CommandComplete tag. Errors:
 *   ERR_SQL      an ErrorResponse: err holds the first one. When its severity is FATAL or
 *                PANIC, or the connection broke right after it, err->connection is true;
 *                otherwise the rest of the answer was consumed up to ReadyForQuery and
 *                the connection can run the next query.
 *   ERR_IO, ERR_TIMEOUT, ERR_PROTO, ERR_NOMEM, ERR_SHUTDOWN: as for pgc_connect; the
 *                connection is unusable (err->connection is true).
 *   ERR_INVALID  the connection was already unusable, or bad arguments.
 * On failure *out is NULL. */
int pgc_query(struct pgc *c, const char *sql, int timeout_ms, struct pgc_result **out,
	      struct pgc_error *err);

/* Send Terminate (best effort, never blocks), close the socket and free c. NULL is a
 * no-op. */
void pgc_close(struct pgc *c);

/* false once a call reported err->connection. */
bool pgc_usable(const struct pgc *c);

/* The address c was connected to. */
const char *pgc_address(const struct pgc *c);

/* ---- Results ---------------------------------------------------------------------------
 * Strings returned below belong to the result and live until pgc_result_free. */

unsigned pgc_result_n_rows(const struct pgc_result *r);
unsigned pgc_result_n_cols(const struct pgc_result *r);
/* Column name; NULL when col is out of range. */
const char *pgc_result_column(const struct pgc_result *r, unsigned col);
/* Value in text format, NUL-terminated; NULL for SQL NULL or when out of range. */
const char *pgc_result_value(const struct pgc_result *r, unsigned row, unsigned col);
/* CommandComplete tag, e.g. "SELECT 3"; "" when the server sent none. */
const char *pgc_result_tag(const struct pgc_result *r);
/* NULL is a no-op. */
void pgc_result_free(struct pgc_result *r);

/* ---- pqlite conventions ---------------------------------------------------------------- */

/* A pqlite follower's 25006 carries the detail "leader: H:P". If err is that error and
 * the address parses, copy it to addr (len >= PGC_ADDR_MAX) and return true. */
bool pgc_error_leader(const struct pgc_error *err, char *addr, size_t len);

/* Render err for a human: "SQLSTATE: message (detail)" for a server error, "message" for
 * a local one; the detail part only when there is one. */
void pgc_error_format(const struct pgc_error *err, char *out, size_t len);

#endif

/* One PostgreSQL client session: the startup / simple-query state machine between the
 * codec and the core. It reads bytes from its input buffer and appends backend messages
 * to its output buffer; it knows nothing of sockets, so tests can drive it directly.
 *
 * Threading: loop thread only, like the core. */
#ifndef PQ_PGWIRE_SESSION_H
#define PQ_PGWIRE_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/core.h"
#include "../lib/buf.h"

/* Results of pgw_session_process and arguments of the wake callback. */
enum {
	PGW_SESSION_IDLE = 0, /* waiting for more input */
	PGW_SESSION_BUSY,     /* waiting for the core, or for the output to drain below
				 PGW_SESSION_OUT_HIGH; input is buffered meanwhile */
	PGW_SESSION_CLOSE,    /* send what is in the output buffer, then close */
};

/* The session stops producing rows while its output holds this much. */
#define PGW_SESSION_OUT_HIGH (1u << 20)

/* The proxy's upstream connection (a PROXY-mode session on a follower relays to the
 * leader through it). The server implements these; the session calls them from inside
 * its own processing, so none may call back into the session synchronously.
 *   connect  start connecting to "H:P" (an IPv4 literal and a port) and send the bytes of
 *            pgw_session_up_out once connected. Returns 0, or non-zero when the attempt
 *            failed at once. After 0, a failure is reported later through
 *            pgw_session_upstream_closed; received bytes are appended to
 *            pgw_session_up_in, followed by pgw_session_process.
 *   close    drop the current upstream connection; no event about it follows.
 *   timer    call pgw_session_timeout after `ms` (replacing an armed one); 0 disarms.
 *   now      a monotonic clock in milliseconds. */
struct pgw_upstream_ops {
	int (*connect)(void *arg, const char *address);
	void (*close)(void *arg);
	void (*timer)(void *arg, unsigned ms);
	uint64_t (*now)(void *arg);
};

/* Called after asynchronous progress (a core callback), never from inside
 * pgw_session_process: the output may have grown and `status` is as for
 * pgw_session_process. The callee must not destroy the session from inside the call. */
typedef void (*pgw_session_wake_cb)(void *arg, int status);

struct pgw_session_config {
	struct core_engine *engine; /* must outlive the session */
	const char *server_version; /* copied */
	size_t max_msg_len;         /* normal-phase message limit */
	pgw_session_wake_cb wake;
	void *wake_arg;
	int follower_mode;          /* PGW_FOLLOWER_PROXY (0) or PGW_FOLLOWER_STANDBY, pgwire.h */
	unsigned apply_timeout_ms;  /* proxy: how long a message waits for an upstream to the
				     * leader before 57P03; 0 means 10000 */
	const struct pgw_upstream_ops *upstream; /* NULL: never proxy (serve locally) */
	void *upstream_arg;
};

struct pgw_session;

/* Allocate a session in the startup phase. Returns 0 or ERR_NOMEM. */
int pgw_session_create(const struct pgw_session_config *cfg, struct pgw_session **out);

/* Free the session, closing its core session (which abandons a pending step). Safe at any
 * time except from inside the session's own wake callback. */
void pgw_session_destroy(struct pgw_session *s);

/* The buffers: the caller appends received bytes to `in` and sends (and consumes) `out`.
 * Both stay owned by the session. */
struct buf *pgw_session_in(struct pgw_session *s);
struct buf *pgw_session_out(struct pgw_session *s);

/* Consume as much of the input as possible. Returns PGW_SESSION_*. Call again after
 * appending input or draining the output. */
int pgw_session_process(struct pgw_session *s);

/* True once the startup completed (ReadyForQuery sent). */
bool pgw_session_started(const struct pgw_session *s);

/* True when the session relays to the leader (PROXY mode on a follower). */
bool pgw_session_is_proxy(const struct pgw_session *s);

/* ---- Upstream events (proxy sessions; see struct pgw_upstream_ops) -------------------- */

/* The upstream connection's buffers: the server sends (and consumes) up_out once
 * connected, and appends what it receives to up_in. */
struct buf *pgw_session_up_in(struct pgw_session *s);
struct buf *pgw_session_up_out(struct pgw_session *s);

/* True while the server should read from the upstream: false when the client's output is
 * full and a complete upstream message already waits (back-pressure). */
bool pgw_session_upstream_wants_input(const struct pgw_session *s);

/* The upstream connection failed or closed (the server dropped it). Returns as
 * pgw_session_process. */
int pgw_session_upstream_closed(struct pgw_session *s);

/* The timer armed through pgw_upstream_ops.timer fired. Returns as pgw_session_process. */
int pgw_session_timeout(struct pgw_session *s);

/* This node stopped being the leader (PROXY mode): a session served locally ends with
 * FATAL 57P01, at once when idle, or after the ReadyForQuery of its current message
 * (whose statement the core fails with 25006 or 40003, or lets finish). Proxy sessions
 * and sessions still in startup are not affected. Returns as pgw_session_process when
 * the FATAL was sent now; -1 when there is nothing to do now (not affected, or the FATAL
 * follows the current message and is reported like any asynchronous progress). */
int pgw_session_terminate(struct pgw_session *s);

#endif

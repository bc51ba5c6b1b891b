/* One PostgreSQL client session: the startup / simple-query state machine between the
 * codec and the core. It reads bytes from its input buffer and appends backend messages
 * to its output buffer; it knows nothing of sockets, so tests can drive it directly.
 *
 * Threading: loop thread only, like the core. */
#ifndef PQ_PGWIRE_SESSION_H
#define PQ_PGWIRE_SESSION_H

#include <stdbool.h>
#include <stddef.h>

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

#endif

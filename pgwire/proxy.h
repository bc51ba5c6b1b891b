/* The relay of a PROXY-mode session on a follower: client messages go whole to an
 * upstream session on the leader, its answers come back whole, and leader changes are
 * absorbed or reported as docs/pgwire.md describes. Socket-free: the connection is
 * reached through struct pgw_upstream_ops (session.h), bytes through two buffers.
 *
 * Private to pgwire: the session owns one proxy and feeds it; loop thread only. */
#ifndef PQ_PGWIRE_PROXY_H
#define PQ_PGWIRE_PROXY_H

#include <stdbool.h>
#include <stddef.h>

#include "../core/core.h"
#include "../lib/buf.h"
#include "codec.h"
#include "session.h"

/* Largest upstream message relayed (PostgreSQL's own limit for a field is 1 GiB). */
#define PGW_PROXY_MAX_MSG_LEN ((1u << 30) + (1u << 16))

/* Retry pause while no leader is known or the upstream refuses. */
#define PGW_PROXY_BACKOFF_MS 100
#define PGW_PROXY_WATCH_MS 500 /* how often a message in flight checks on its leader */

/* The marker parameter of an upstream StartupMessage: such a session is never proxied
 * again. */
#define PGW_PROXIED_PARAM "pqlite.proxied"

struct pgw_proxy_config {
	struct core_engine *engine;        /* leader address; must outlive the proxy */
	const struct pgw_upstream_ops *ops;
	void *ops_arg;
	unsigned apply_timeout_ms;         /* > 0 */
	const char *user;                  /* copied; required */
	const char *database;              /* copied; required */
	const char *application_name;      /* copied; NULL: not sent upstream */
	const char *client_encoding;       /* copied; NULL: not sent upstream */
};

/* Results of pgw_proxy_message and pgw_proxy_pump. */
enum {
	PGW_PROXY_DONE = 0, /* the message was consumed */
	PGW_PROXY_WAIT,     /* not consumed: offer it again after progress (upstream input,
			     * timeout, upstream closed) */
	PGW_PROXY_CLOSE,    /* the client session must end (its output says why) */
};

struct pgw_proxy;

/* Create a proxy writing its client-bound messages to *client_out (the session's output,
 * which must outlive it). Returns 0 or ERR_NOMEM. */
int pgw_proxy_create(const struct pgw_proxy_config *cfg, struct buf *client_out,
		     struct pgw_proxy **out);

/* Free; drops the upstream connection (ops->close) if there is one. */
void pgw_proxy_destroy(struct pgw_proxy *p);

/* Remember sql (a single SET statement) as if the client had run it successfully: it is
 * replayed on every upstream, the first one included (settings given at startup). */
int pgw_proxy_initial_setting(struct pgw_proxy *p, const char *sql);

/* Handle one complete client message (normal phase, known type). */
int pgw_proxy_message(struct pgw_proxy *p, const struct pgw_msg *m);

/* Relay complete upstream messages to the client while its output is below
 * PGW_SESSION_OUT_HIGH, and act on a lost upstream. Returns PGW_PROXY_DONE or
 * PGW_PROXY_CLOSE. */
int pgw_proxy_pump(struct pgw_proxy *p);

/* Upstream events, see struct pgw_upstream_ops. Both are acted on by the next
 * pgw_proxy_pump / pgw_proxy_message. */
void pgw_proxy_upstream_closed(struct pgw_proxy *p);
void pgw_proxy_timeout(struct pgw_proxy *p);

struct buf *pgw_proxy_up_in(struct pgw_proxy *p);
struct buf *pgw_proxy_up_out(struct pgw_proxy *p);

/* See pgw_session_upstream_wants_input. */
bool pgw_proxy_wants_input(const struct pgw_proxy *p);

/* True while a client message is in flight or waits for an upstream connection. */
bool pgw_proxy_busy(const struct pgw_proxy *p);

#endif

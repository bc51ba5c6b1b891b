/* PostgreSQL protocol v3 front end: a TCP listener whose sessions run SQL through the core.
 * Runs on the loop thread. */
#ifndef PQ_PGWIRE_H
#define PQ_PGWIRE_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "../core/core.h"

#define PGW_STARTUP_MAX_LEN 10000          /* PostgreSQL's limit for the startup packet */
#define PGW_DEFAULT_MAX_MSG_LEN (64u << 20) /* other messages */

/* What a follower does with client sessions (pgw_config.follower_mode). */
enum {
	PGW_FOLLOWER_PROXY = 0, /* relay every session to the leader (default) */
	PGW_FOLLOWER_STANDBY,   /* serve sessions locally: hot-standby reads, writes 25006 */
};

#define PGW_DEFAULT_APPLY_TIMEOUT_MS 10000

struct pgw_config {
	const char *host;       /* IPv4 literal to listen on, "127.0.0.1" */
	int port;               /* 5433 */
	size_t max_msg_len;     /* PGW_DEFAULT_MAX_MSG_LEN */
	const char *server_version; /* reported in ParameterStatus, "15.0 (pqlite ...)" */
	int follower_mode;      /* PGW_FOLLOWER_PROXY */
	unsigned apply_timeout_ms; /* proxy: how long a client message waits for a connection
				    * to the leader before 57P03, 10000 */
};

void pgw_config_defaults(struct pgw_config *c);

struct pgw_server;

/* Bind and listen. The server registers itself as the engine's leader listener
 * (core_engine_set_leader_listener; pgw_server_stop removes it): in PROXY mode it ends the
 * sessions it serves locally when this node stops leading. Returns 0, or ERR_IO /
 * ERR_INVALID with errmsg filled. */
int pgw_server_start(uv_loop_t *loop, struct core_engine *engine, const struct pgw_config *cfg,
		     struct pgw_server **out, char errmsg[ERR_MSG_LEN]);

/* Close the listener and every connection (sessions closed through the core). cb fires
 * when every handle is closed; the server is freed right after cb returns. */
typedef void (*pgw_stop_cb)(void *arg);
void pgw_server_stop(struct pgw_server *srv, pgw_stop_cb cb, void *arg);

#endif

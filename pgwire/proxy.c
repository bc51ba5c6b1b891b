/* The relay of a PROXY-mode session on a follower (see proxy.h and docs/pgwire.md).
 *
 * Upstream connection states (enum up_state) and moves:
 *   NONE --a client message needs the leader--> STARTING (connect + StartupMessage)
 *   NONE --no leader known, or the connect failed at once--> BACKOFF --timer--> STARTING
 *   STARTING --ReadyForQuery--> REPLAY (remembered SETs resent) --their ReadyForQuery--> READY
 *   STARTING, REPLAY --refused (FATAL), closed, timer--> BACKOFF, or NONE with 57P03 for the
 *     waiting message once `deadline` (apply_timeout_ms after the message asked) passed
 *   READY --closed, FATAL--> NONE; what the client is told depends on what was in flight
 *     (upstream_lost) or, for a refusal before anything ran, the Query is sent again.
 *
 * Client side: one Query (or Sync) is in flight at a time, like the local session; later
 * messages wait in the session's input. A message that needs an upstream while there is
 * none stays there too (PGW_PROXY_WAIT) until the upstream is READY or the deadline
 * passed (`give_up`: the message is answered 57P03 when offered again). A Query to be
 * sent on the next upstream without being in the input (a transparent resend, or the rest
 * of a message whose ROLLBACK was answered locally) is kept in `q` with `queued` set.
 *
 * Transaction state as the client sees it: `txn` is the status of the last upstream
 * ReadyForQuery; after losing the upstream with a transaction open, `lost_in_txn` (nothing
 * said yet: the next message gets 08006) and then `local_failed` ('E', served locally until
 * ROLLBACK) take over. */
#include "proxy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/log.h"
#include "lex.h"

#define MAX_SETTINGS 64
#define MAX_SETTINGS_BYTES (64u << 10)
#define ADDR_MAX 64
#define KEEP_CAP (1u << 20) /* buffers larger than this are freed once done with */

#define STATEMENT_LOST_MSG                                                                   \
	"connection to the leader was lost; the outcome of the statement is unknown"
#define TXN_LOST_MSG "connection to the leader was lost; the transaction was rolled back"
#define TXN_FAILED_MSG                                                                       \
	"current transaction is aborted, commands ignored until end of transaction block"

enum up_state {
	UP_NONE,     /* no upstream */
	UP_BACKOFF,  /* waiting for the timer before the next attempt */
	UP_STARTING, /* connecting; StartupMessage queued; reading until ReadyForQuery */
	UP_REPLAY,   /* remembered settings sent; n_replay ReadyForQuery still due */
	UP_READY,    /* relaying */
};

/* A SET that completed outside a transaction, replayed on every new upstream. */
struct setting {
	char *name; /* lower-cased parameter name: a later SET/RESET of it replaces it */
	char *sql;  /* the whole Query text, sent again as is */
};

struct pgw_proxy {
	struct core_engine *engine;
	const struct pgw_upstream_ops *ops;
	void *ops_arg;
	unsigned apply_timeout_ms;
	char *user, *database, *app_name, *client_encoding;
	struct buf *out; /* the client's output */

	/* The upstream connection. */
	struct buf up_in, up_out;
	size_t up_off;        /* bytes of up_in consumed, compacted after each pump */
	enum up_state up;
	bool up_gone;         /* the server reported it closed; up_in may still hold messages */
	char up_addr[ADDR_MAX];
	unsigned n_replay;
	uint64_t deadline;    /* when the message waiting for an upstream gets 57P03 */
	bool give_up;         /* the deadline passed: answer the waiting message 57P03 */

	/* The client's transaction state. */
	char txn;             /* 'I', 'T' or 'E': the last upstream ReadyForQuery */
	bool lost_in_txn;
	bool local_failed;
	bool discard_until_sync;

	/* The message in flight (a Query or a Sync whose ReadyForQuery is due). */
	bool inflight;
	char txn_at_send;     /* txn when it was sent */
	bool relayed;         /* some answer to it reached the client */
	bool error_relayed;   /* an ErrorResponse to it reached the client */
	bool is_setting;      /* a single SET/RESET statement */
	bool queued;          /* q must be sent once an upstream is READY */
	bool resent;          /* q was sent again after a refusal (deadline set then) */
	uint64_t sent_at;     /* when the in-flight message went to the upstream */
	struct buf q;         /* the in-flight Query's frame when sent in state 'I' */

	struct setting *settings;
	unsigned n_settings;
	size_t settings_bytes;

	bool closing;
};

/* ---- Small helpers --------------------------------------------------------------------- */

static uint64_t now_ms(struct pgw_proxy *p)
{
	return p->ops->now(p->ops_arg);
}

static void send_error(struct pgw_proxy *p, const char *code, const char *message,
		       const char *detail, const char *hint)
{
	struct pgw_error e = {"ERROR", code, message, detail, hint, 0};
	pgw_encode_error(p->out, 'E', &e);
}

static bool is_fatal(const char *severity)
{
	return strcmp(severity, "FATAL") == 0 || strcmp(severity, "PANIC") == 0;
}

static bool upstream_active(const struct pgw_proxy *p)
{
	return p->up == UP_STARTING || p->up == UP_REPLAY || p->up == UP_READY;
}

static void buf_release(struct buf *b)
{
	if (b->cap > KEEP_CAP)
		buf_close(b);
	else
		buf_reset(b);
}

static void clear_inflight(struct pgw_proxy *p)
{
	p->inflight = false;
	p->queued = false;
	p->resent = false;
	p->is_setting = false;
	buf_release(&p->q);
}

/* Forget the upstream connection; close it unless the server already did. */
static void drop_upstream(struct pgw_proxy *p)
{
	if (upstream_active(p) && !p->up_gone)
		p->ops->close(p->ops_arg);
	p->up = UP_NONE;
	p->up_gone = false;
	p->up_off = 0;
	p->n_replay = 0;
	buf_release(&p->up_in);
	buf_release(&p->up_out);
}

/* Answer a client message that could not reach the leader in time. */
static void unavailable(struct pgw_proxy *p, uint8_t type)
{
	send_error(p, "57P03", "no leader is available",
		   "No connection to the leader could be established in time.",
		   "Nothing was executed; retry.");
	if (type == 'Q' || type == 'S')
		pgw_encode_ready(p->out, 'I');
	else
		p->discard_until_sync = true; /* an extended-protocol batch: skip to its Sync */
}

/* ---- Settings carried over to a new upstream ---------------------------------------- */

static void setting_remove(struct pgw_proxy *p, const char *name)
{
	unsigned i = 0;

	while (i < p->n_settings) {
		struct setting *st = &p->settings[i];
		if (strcmp(st->name, name) != 0) {
			i++;
			continue;
		}
		p->settings_bytes -= strlen(st->sql) + 1;
		free(st->name);
		free(st->sql);
		memmove(st, st + 1, sizeof(*st) * (p->n_settings - i - 1));
		p->n_settings--;
	}
}

static void settings_clear(struct pgw_proxy *p)
{
	unsigned i;

	for (i = 0; i < p->n_settings; i++) {
		free(p->settings[i].name);
		free(p->settings[i].sql);
	}
	free(p->settings);
	p->settings = NULL;
	p->n_settings = 0;
	p->settings_bytes = 0;
}

/* True when the Query text (sql[len] a writable NUL) is one SET or RESET statement. */
static bool is_setting_query(char *sql, size_t len)
{
	const char *w;
	size_t wl, i = 0;

	if (pgw_count_statements(sql, len, 2) != 1 || !pgw_next_word(sql, len, &i, &w, &wl))
		return false;
	return pgw_eq_nocase(w, wl, "SET") || pgw_eq_nocase(w, wl, "RESET");
}

/* The in-flight Query (in q) was a SET/RESET that succeeded with ReadyForQuery 'I':
 * remember it (SET), forget the parameter (RESET name) or everything (RESET ALL). A SET
 * LOCAL or SET TRANSACTION ended with its (implicit) transaction: nothing to keep. */
static void remember_setting(struct pgw_proxy *p)
{
	char *sql = (char *)p->q.data + 5;
	size_t len = p->q.len - 6, i = 0, j, wl, n = 0, k;
	const char *w;
	char name[128];
	bool reset;
	struct setting *grown;

	pgw_next_word(sql, len, &i, &w, &wl);
	reset = pgw_eq_nocase(w, wl, "RESET");
	name[0] = '\0';
	if (pgw_next_word(sql, len, &i, &w, &wl)) {
		if (!reset &&
		    (pgw_eq_nocase(w, wl, "LOCAL") || pgw_eq_nocase(w, wl, "TRANSACTION")))
			return;
		if (!reset && pgw_eq_nocase(w, wl, "SESSION") &&
		    !pgw_next_word(sql, len, &i, &w, &wl))
			wl = 0;
		/* The name, with its dotted parts ("pqlite.read_consistency"). */
		for (;;) {
			for (k = 0; k < wl && n + 1 < sizeof(name); k++)
				name[n++] = pgw_to_lower(w[k]);
			j = pgw_skip_blank(sql, len, i);
			if (j >= len || sql[j] != '.' || n + 2 >= sizeof(name))
				break;
			i = j + 1;
			if (!pgw_next_word(sql, len, &i, &w, &wl))
				break;
			name[n++] = '.';
		}
		name[n] = '\0';
	}
	if (n == 0) /* a quoted name...: keep the statement under its own text */
		snprintf(name, sizeof(name), "%.*s", (int)(len < 127 ? len : 127), sql);
	if (reset) {
		if (strcmp(name, "all") == 0)
			settings_clear(p);
		else
			setting_remove(p, name); /* a new upstream starts from the default */
		return;
	}
	setting_remove(p, name);
	if (p->n_settings >= MAX_SETTINGS || p->settings_bytes + len + 1 > MAX_SETTINGS_BYTES) {
		LOGW("pgwire: proxy: too many session settings; \"%s\" will not survive a leader "
		     "change", name);
		return;
	}
	grown = realloc(p->settings, sizeof(*grown) * (p->n_settings + 1));
	if (grown == NULL)
		goto oom;
	p->settings = grown;
	grown[p->n_settings].name = strdup(name);
	grown[p->n_settings].sql = strndup(sql, len);
	if (grown[p->n_settings].name == NULL || grown[p->n_settings].sql == NULL) {
		free(grown[p->n_settings].name);
		free(grown[p->n_settings].sql);
		goto oom;
	}
	p->n_settings++;
	p->settings_bytes += len + 1;
	return;
oom:
	LOGW("pgwire: proxy: out of memory; setting \"%s\" will not survive a leader change",
	     name);
}

/* ---- Connecting ----------------------------------------------------------------------- */

static void start_connect(struct pgw_proxy *p);
static bool leader_moved(struct pgw_proxy *p);

/* While connecting: look again after at most a backoff pause, so that a leader that hangs
 * (stopped, partitioned) is left as soon as another one is known. */
static void arm_connect_timer(struct pgw_proxy *p, uint64_t now)
{
	uint64_t left = p->deadline - now;

	p->ops->timer(p->ops_arg, left < PGW_PROXY_BACKOFF_MS ? (unsigned)left
							      : PGW_PROXY_BACKOFF_MS);
}

/* The deadline passed: the waiting message gets 57P03. */
static void give_up(struct pgw_proxy *p)
{
	LOGI("pgwire: proxy: no connection to the leader within %u ms", p->apply_timeout_ms);
	drop_upstream(p);
	p->ops->timer(p->ops_arg, 0);
	if (p->queued) {
		clear_inflight(p);
		unavailable(p, 'Q');
		return;
	}
	p->give_up = true;
}

/* Try again after a pause, unless the deadline passed. */
static void backoff(struct pgw_proxy *p)
{
	uint64_t now = now_ms(p), left;

	if (now >= p->deadline) {
		give_up(p);
		return;
	}
	left = p->deadline - now;
	p->up = UP_BACKOFF;
	p->ops->timer(p->ops_arg, left < PGW_PROXY_BACKOFF_MS ? (unsigned)left
							      : PGW_PROXY_BACKOFF_MS);
}

static void start_connect(struct pgw_proxy *p)
{
	const char *addr = core_engine_leader_address(p->engine);
	const char *kv[10];
	uint64_t now = now_ms(p);
	unsigned n = 0;

	if (now >= p->deadline) {
		give_up(p);
		return;
	}
	if (addr == NULL || strlen(addr) >= sizeof(p->up_addr) ||
	    p->ops->connect(p->ops_arg, addr) != 0) {
		backoff(p);
		return;
	}
	snprintf(p->up_addr, sizeof(p->up_addr), "%s", addr);
	p->up = UP_STARTING;
	p->up_gone = false;
	kv[n++] = "user";
	kv[n++] = p->user;
	kv[n++] = "database";
	kv[n++] = p->database;
	if (p->app_name != NULL) {
		kv[n++] = "application_name";
		kv[n++] = p->app_name;
	}
	if (p->client_encoding != NULL) {
		kv[n++] = "client_encoding";
		kv[n++] = p->client_encoding;
	}
	kv[n++] = PGW_PROXIED_PARAM;
	kv[n++] = "1";
	pgw_encode_startup(&p->up_out, n / 2, kv);
	/* The attempt, handshake and replay included, is bounded by the deadline. */
	arm_connect_timer(p, now);
}

/* A message went to the upstream: watch it, so that a leader that hangs with it (stopped,
 * cut off: its kernel may still acknowledge, so TCP notices nothing) is given up once
 * another leader is known and apply_timeout_ms passed; see pgw_proxy_timeout. */
static void watch_inflight(struct pgw_proxy *p)
{
	p->sent_at = now_ms(p);
	p->ops->timer(p->ops_arg, PGW_PROXY_WATCH_MS);
}

static void upstream_ready(struct pgw_proxy *p)
{
	p->up = UP_READY;
	p->txn = 'I';
	p->ops->timer(p->ops_arg, 0);
	if (p->queued) {
		p->queued = false;
		p->relayed = false;
		p->error_relayed = false;
		buf_put(&p->up_out, p->q.data, p->q.len);
		watch_inflight(p);
	}
}

/* Codes of a startup refusal worth retrying: not the leader (any more), shutting down, no
 * leader or quorum yet, too many connections, connection trouble. */
static bool retryable(const char *code)
{
	return strcmp(code, "25006") == 0 || strncmp(code, "57P0", 4) == 0 ||
	       strcmp(code, "53300") == 0 || strncmp(code, "08", 2) == 0;
}

/* One message of the upstream's startup answer. Returns true when the upstream was
 * dropped (its input is gone). */
static bool startup_message(struct pgw_proxy *p, const struct pgw_msg *m)
{
	struct pgw_error e;
	unsigned i;

	switch (m->type) {
	case 'R':
		if (m->len >= 4 && get_u32be(m->body) == 0)
			return false; /* AuthenticationOk */
		LOGW("pgwire: proxy: the leader %s asks for authentication", p->up_addr);
		break;
	case 'S': /* its ParameterStatus, BackendKeyData...: ours were sent already */
	case 'K':
	case 'N':
	case 'v':
		return false;
	case 'E':
		if (pgw_error_decode(m, &e) != 0) {
			LOGW("pgwire: proxy: malformed ErrorResponse from %s", p->up_addr);
			break;
		}
		if (!retryable(e.code)) {
			/* Refused for good (the database was dropped, ...): end the session. */
			e.severity = "FATAL";
			e.position = 0;
			pgw_encode_error(p->out, 'E', &e);
			p->closing = true;
			drop_upstream(p);
			p->ops->timer(p->ops_arg, 0);
			return true;
		}
		LOGD("pgwire: proxy: %s refused the session: %s %s", p->up_addr, e.code, e.message);
		break;
	case 'Z':
		for (i = 0; i < p->n_settings; i++)
			pgw_encode_query(&p->up_out, p->settings[i].sql);
		p->n_replay = p->n_settings;
		if (p->n_replay == 0)
			upstream_ready(p);
		else
			p->up = UP_REPLAY;
		return false;
	default:
		LOGW("pgwire: proxy: unexpected message '%c' from %s during startup", m->type,
		     p->up_addr);
		break;
	}
	drop_upstream(p);
	backoff(p);
	return true;
}

/* One answer to the replayed settings: all are consumed. */
static bool replay_message(struct pgw_proxy *p, const struct pgw_msg *m)
{
	struct pgw_error e;

	if (m->type == 'Z') {
		if (--p->n_replay == 0)
			upstream_ready(p);
		return false;
	}
	if (m->type != 'E')
		return false;
	if (pgw_error_decode(m, &e) != 0 || is_fatal(e.severity)) {
		drop_upstream(p);
		backoff(p);
		return true;
	}
	LOGW("pgwire: proxy: a session setting failed on the new leader %s: %s", p->up_addr,
	     e.message);
	return false;
}

/* ---- Relaying ----------------------------------------------------------------------- */

/* The upstream went away while READY: tell the client what it must know. */
static void upstream_lost(struct pgw_proxy *p)
{
	char was = p->txn;

	LOGI("pgwire: proxy: lost the connection to the leader %s", p->up_addr);
	drop_upstream(p);
	p->txn = 'I';
	if (p->inflight) {
		/* Nothing more will come for it. An error already relayed ended the message
		 * (PostgreSQL skips the rest of a Query after an error); otherwise its outcome
		 * is unknown. It is never sent again. */
		if (!p->error_relayed)
			send_error(p, "40003", STATEMENT_LOST_MSG, NULL, NULL);
		if (p->txn_at_send == 'T' || p->txn_at_send == 'E') {
			p->local_failed = true;
			pgw_encode_ready(p->out, 'E');
		} else {
			pgw_encode_ready(p->out, 'I');
		}
		clear_inflight(p);
		return;
	}
	if (was == 'T' || was == 'E')
		p->lost_in_txn = true;
}

/* The leader refused the in-flight Query before running any of it: send it to whoever
 * leads now. */
static void resend(struct pgw_proxy *p)
{
	LOGI("pgwire: proxy: %s refused the statement before running it; sending it to the "
	     "new leader", p->up_addr);
	drop_upstream(p);
	if (!p->resent) {
		p->resent = true;
		p->deadline = now_ms(p) + p->apply_timeout_ms;
	}
	p->queued = true;
	p->relayed = false;
	p->error_relayed = false;
	if (leader_moved(p))
		start_connect(p);
	else
		backoff(p); /* no other leader known yet (or a transfer in progress): pause */
}

/* The upstream is unusable (closed or broken). */
static void lose(struct pgw_proxy *p)
{
	if (p->up == UP_READY) {
		upstream_lost(p);
	} else {
		drop_upstream(p);
		backoff(p);
	}
}

/* One upstream message while READY: relay it whole, or act on it. Returns true when the
 * upstream was dropped. */
static bool relay_message(struct pgw_proxy *p, const struct pgw_msg *m, const uint8_t *frame)
{
	struct pgw_error e;
	const char *name, *value;

	switch (m->type) {
	case 'E':
		if (pgw_error_decode(m, &e) != 0) {
			LOGW("pgwire: proxy: malformed ErrorResponse from %s", p->up_addr);
			upstream_lost(p);
			return true;
		}
		if (is_fatal(e.severity)) {
			/* The leader ends the session: deposed (57P01), refusing a statement it
			 * cannot run as a follower (25006), shutting down... */
			if (p->inflight && !p->relayed && p->txn_at_send == 'I' && p->q.len > 0 &&
			    (strcmp(e.code, "57P01") == 0 || strcmp(e.code, "25006") == 0)) {
				resend(p);
				return true;
			}
			LOGI("pgwire: proxy: %s ended the session: %s %s", p->up_addr, e.code,
			     e.message);
			upstream_lost(p);
			return true;
		}
		if (p->inflight)
			p->relayed = p->error_relayed = true;
		break;
	case 'S':
		if (pgw_parameter_status_decode(m, &name, &value) != 0) {
			upstream_lost(p);
			return true;
		}
		/* The session is read-write through the leader, whatever the upstream says. */
		if (strcmp(name, "in_hot_standby") == 0 ||
		    strcmp(name, "default_transaction_read_only") == 0)
			return false;
		break;
	case 'Z':
		if (m->len != 1 || (m->body[0] != 'I' && m->body[0] != 'T' && m->body[0] != 'E')) {
			LOGW("pgwire: proxy: malformed ReadyForQuery from %s", p->up_addr);
			upstream_lost(p);
			return true;
		}
		p->txn = (char)m->body[0];
		if (!p->inflight)
			return false; /* nobody asked for it */
		if (p->is_setting && !p->error_relayed && p->txn == 'I')
			remember_setting(p);
		clear_inflight(p);
		break;
	case 'R': /* startup messages: never the client's business */
	case 'K':
	case 'v':
		return false;
	default:
		if (p->inflight)
			p->relayed = true;
		break;
	}
	buf_put(p->out, frame, m->frame_len);
	return false;
}

int pgw_proxy_pump(struct pgw_proxy *p)
{
	while (!p->closing) {
		if (upstream_active(p) && p->up_off < p->up_in.len) {
			struct buf view;
			struct pgw_msg m;
			const char *reason = NULL;
			bool dropped = false;
			int r;

			view.data = p->up_in.data + p->up_off;
			view.len = p->up_in.len - p->up_off;
			view.cap = view.len;
			view.failed = false;
			r = pgw_frame(&view, PGW_PHASE_BACKEND, PGW_PROXY_MAX_MSG_LEN, &m, &reason);
			if (r == PGW_FRAME_MSG) {
				if (p->up == UP_READY && p->out->len >= PGW_SESSION_OUT_HIGH)
					break; /* resumed once the client's output drains */
				if (p->up == UP_STARTING)
					dropped = startup_message(p, &m);
				else if (p->up == UP_REPLAY)
					dropped = replay_message(p, &m);
				else
					dropped = relay_message(p, &m, view.data);
				if (!dropped)
					p->up_off += m.frame_len;
				continue;
			}
			if (r == PGW_FRAME_MALFORMED) {
				LOGW("pgwire: proxy: bad message from %s: %s", p->up_addr, reason);
				lose(p);
				continue;
			}
		}
		if (upstream_active(p) && p->up_gone) {
			lose(p); /* everything it sent before closing was handled */
			continue;
		}
		break;
	}
	if (p->up_off > 0) {
		buf_consume(&p->up_in, p->up_off);
		p->up_off = 0;
	}
	return p->closing ? PGW_PROXY_CLOSE : PGW_PROXY_DONE;
}

/* ---- Client messages ------------------------------------------------------------------ */

/* Send (or queue for the next upstream) a Query frame built in q, as the client's. */
static void send_queued_query(struct pgw_proxy *p)
{
	p->inflight = true;
	p->txn_at_send = 'I';
	p->relayed = false;
	p->error_relayed = false;
	p->is_setting = false;
	p->resent = false;
	if (p->up == UP_READY) {
		buf_put(&p->up_out, p->q.data, p->q.len);
		watch_inflight(p);
		return;
	}
	p->queued = true;
	if (p->up == UP_NONE) {
		p->deadline = now_ms(p) + p->apply_timeout_ms;
		start_connect(p);
	}
}

/* If the first statement of sql[0..len) ends a transaction block (ROLLBACK, ABORT, but
 * not ROLLBACK TO; and COMMIT, END when commit_ok), return true with *rest at the text
 * after it. sql[len] must be a writable NUL. */
static bool ends_block(char *sql, size_t len, bool commit_ok, size_t *rest)
{
	const char *w;
	size_t wl, i, start, end;

	if (!pgw_split_next(sql, len, 0, &start, &end))
		return false;
	i = start;
	if (!pgw_next_word(sql, end, &i, &w, &wl))
		return false;
	if (pgw_eq_nocase(w, wl, "ROLLBACK") || pgw_eq_nocase(w, wl, "ABORT")) {
		if (pgw_next_word(sql, end, &i, &w, &wl) &&
		    (pgw_eq_nocase(w, wl, "WORK") || pgw_eq_nocase(w, wl, "TRANSACTION")) &&
		    !pgw_next_word(sql, end, &i, &w, &wl))
			wl = 0;
		if (wl > 0 && pgw_eq_nocase(w, wl, "TO"))
			return false;
	} else if (!commit_ok ||
		   (!pgw_eq_nocase(w, wl, "COMMIT") && !pgw_eq_nocase(w, wl, "END"))) {
		return false;
	}
	*rest = end;
	return true;
}

/* A message while the transaction is gone with the upstream: served here. */
static int local_message(struct pgw_proxy *p, const struct pgw_msg *m)
{
	const char *code = p->lost_in_txn ? "08006" : "25P02";
	const char *msg = p->lost_in_txn ? TXN_LOST_MSG : TXN_FAILED_MSG;
	const char *sql, *reason;
	size_t len, rest;

	switch (m->type) {
	case 'H':
		return PGW_PROXY_DONE;
	case 'Q':
		if (pgw_query_decode(m, &sql, &len, &reason) == 0) {
			/* A COMMIT right after the loss must not look like it went through: the
			 * client has seen no error for this transaction yet. */
			char *copy = strndup(sql, len);
			bool end = copy != NULL && ends_block(copy, len, !p->lost_in_txn, &rest);

			if (end) {
				/* What PostgreSQL answers in a failed block; the transaction is
				 * gone already. The rest of the message goes to the leader. */
				p->lost_in_txn = false;
				p->local_failed = false;
				p->discard_until_sync = false;
				p->txn = 'I';
				pgw_encode_command_complete(p->out, "ROLLBACK");
				if (pgw_count_statements(copy + rest, len - rest, 1) == 0) {
					pgw_encode_ready(p->out, 'I');
				} else {
					size_t mk;
					buf_reset(&p->q);
					mk = pgw_buf_start(&p->q, 'Q');
					buf_put(&p->q, copy + rest, len - rest);
					buf_put_u8(&p->q, 0);
					pgw_buf_finish(&p->q, mk);
					if (p->q.failed) {
						buf_reset(&p->q);
						send_error(p, "53200", "out of memory", NULL, NULL);
						pgw_encode_ready(p->out, 'I');
					} else {
						send_queued_query(p);
					}
				}
				free(copy);
				return PGW_PROXY_DONE;
			}
			free(copy);
		}
		send_error(p, code, msg, NULL, NULL);
		pgw_encode_ready(p->out, 'E');
		break;
	case 'S':
		if (p->lost_in_txn)
			send_error(p, code, msg, NULL, NULL);
		p->discard_until_sync = false;
		pgw_encode_ready(p->out, 'E');
		break;
	default:
		if (!p->discard_until_sync) {
			send_error(p, code, msg, NULL, NULL);
			p->discard_until_sync = true;
		}
		break;
	}
	p->lost_in_txn = false;
	p->local_failed = true;
	return PGW_PROXY_DONE;
}

/* True when a leader other than our upstream is known now. */
static bool leader_moved(struct pgw_proxy *p)
{
	const char *addr = core_engine_leader_address(p->engine);
	return addr != NULL && strcmp(addr, p->up_addr) != 0;
}

static int forward(struct pgw_proxy *p, const struct pgw_msg *m)
{
	const uint8_t *frame = m->body - 5; /* type byte and length precede the body */
	const char *sql, *reason;
	size_t len;

	buf_put(&p->up_out, frame, m->frame_len);
	if (m->type != 'Q' && m->type != 'S')
		return PGW_PROXY_DONE; /* extended-protocol messages: answered at Sync */
	clear_inflight(p);
	p->inflight = true;
	p->txn_at_send = p->txn;
	p->relayed = false;
	p->error_relayed = false;
	watch_inflight(p);
	/* Keep a copy of a Query sent outside a transaction: it may be sent again if the
	 * leader refuses it before running anything, and a SET is remembered once done. */
	if (m->type == 'Q' && p->txn == 'I' && pgw_query_decode(m, &sql, &len, &reason) == 0) {
		buf_put(&p->q, frame, m->frame_len);
		if (p->q.failed)
			buf_reset(&p->q);
		else
			p->is_setting = is_setting_query((char *)p->q.data + 5, len);
	}
	return PGW_PROXY_DONE;
}

int pgw_proxy_message(struct pgw_proxy *p, const struct pgw_msg *m)
{
	if (p->closing)
		return PGW_PROXY_CLOSE;
	if (p->inflight)
		return PGW_PROXY_WAIT; /* one message at a time, like a local session */
	if (m->type == 'X') {
		drop_upstream(p);
		p->ops->timer(p->ops_arg, 0);
		p->closing = true;
		return PGW_PROXY_CLOSE;
	}
	if (p->lost_in_txn || p->local_failed)
		return local_message(p, m);
	if (p->discard_until_sync) {
		if (m->type == 'S') {
			p->discard_until_sync = false;
			pgw_encode_ready(p->out, 'I');
		}
		return PGW_PROXY_DONE;
	}
	if (p->give_up) {
		p->give_up = false;
		if (m->type != 'H')
			unavailable(p, m->type);
		return PGW_PROXY_DONE;
	}
	if (p->up == UP_READY && p->txn == 'I' && leader_moved(p)) {
		LOGI("pgwire: proxy: the leader moved from %s; reconnecting", p->up_addr);
		drop_upstream(p);
	}
	if (p->up != UP_READY) {
		if (m->type == 'H')
			return PGW_PROXY_DONE; /* nothing to flush */
		if (p->up == UP_NONE) {
			p->deadline = now_ms(p) + p->apply_timeout_ms;
			start_connect(p);
			if (p->give_up) {
				p->give_up = false;
				unavailable(p, m->type);
				return PGW_PROXY_DONE;
			}
		}
		return PGW_PROXY_WAIT;
	}
	if (p->up_out.len >= PGW_SESSION_OUT_HIGH)
		return PGW_PROXY_WAIT; /* the upstream is not taking what we send: read no more */
	return forward(p, m);
}

/* ---- Public API --------------------------------------------------------------------- */

static char *dup_or_null(const char *s, bool *failed)
{
	char *d;

	if (s == NULL)
		return NULL;
	d = strdup(s);
	if (d == NULL)
		*failed = true;
	return d;
}

int pgw_proxy_create(const struct pgw_proxy_config *cfg, struct buf *client_out,
		     struct pgw_proxy **out)
{
	struct pgw_proxy *p = calloc(1, sizeof(*p));
	bool failed = false;

	if (p == NULL)
		return ERR_NOMEM;
	p->engine = cfg->engine;
	p->ops = cfg->ops;
	p->ops_arg = cfg->ops_arg;
	p->apply_timeout_ms = cfg->apply_timeout_ms;
	p->out = client_out;
	p->user = dup_or_null(cfg->user, &failed);
	p->database = dup_or_null(cfg->database, &failed);
	p->app_name = dup_or_null(cfg->application_name, &failed);
	p->client_encoding = dup_or_null(cfg->client_encoding, &failed);
	buf_init(&p->up_in);
	buf_init(&p->up_out);
	buf_init(&p->q);
	p->up = UP_NONE;
	p->txn = 'I';
	if (failed || p->user == NULL || p->database == NULL) {
		pgw_proxy_destroy(p);
		return ERR_NOMEM;
	}
	*out = p;
	return 0;
}

void pgw_proxy_destroy(struct pgw_proxy *p)
{
	if (upstream_active(p) && !p->up_gone)
		p->ops->close(p->ops_arg);
	buf_close(&p->up_in);
	buf_close(&p->up_out);
	buf_close(&p->q);
	settings_clear(p);
	free(p->user);
	free(p->database);
	free(p->app_name);
	free(p->client_encoding);
	free(p);
}

void pgw_proxy_upstream_closed(struct pgw_proxy *p)
{
	if (upstream_active(p))
		p->up_gone = true;
}

void pgw_proxy_timeout(struct pgw_proxy *p)
{
	uint64_t now = now_ms(p);

	switch (p->up) {
	case UP_BACKOFF:
		start_connect(p);
		break;
	case UP_STARTING:
	case UP_REPLAY:
		if (now >= p->deadline) {
			give_up(p);
		} else if (leader_moved(p)) {
			/* Nothing of the client's was sent on it yet (a queued Query goes once
			 * READY): safe to leave for the new leader. */
			LOGI("pgwire: proxy: the leader moved from %s while connecting; reconnecting",
			     p->up_addr);
			drop_upstream(p);
			start_connect(p);
		} else {
			arm_connect_timer(p, now);
		}
		break;
	case UP_READY:
		if (!p->inflight)
			break; /* a stale timer */
		if (leader_moved(p) && now - p->sent_at >= p->apply_timeout_ms) {
			LOGI("pgwire: proxy: no answer from %s for %u ms while another node leads; "
			     "the statement's outcome is unknown",
			     p->up_addr, p->apply_timeout_ms);
			lose(p);
		} else {
			p->ops->timer(p->ops_arg, PGW_PROXY_WATCH_MS);
		}
		break;
	case UP_NONE:
		break; /* a stale timer */
	}
}

struct buf *pgw_proxy_up_in(struct pgw_proxy *p)
{
	return &p->up_in;
}

struct buf *pgw_proxy_up_out(struct pgw_proxy *p)
{
	return &p->up_out;
}

bool pgw_proxy_wants_input(const struct pgw_proxy *p)
{
	struct buf view;
	struct pgw_msg m;
	const char *reason;

	if (p->closing || !upstream_active(p) || p->up_gone)
		return false;
	if (p->up != UP_READY || p->out->len < PGW_SESSION_OUT_HIGH)
		return true;
	/* The client's output is full: read on only to complete a partial message. */
	view.data = p->up_in.data;
	view.len = p->up_in.len;
	view.cap = view.len;
	view.failed = false;
	return pgw_frame(&view, PGW_PHASE_BACKEND, PGW_PROXY_MAX_MSG_LEN, &m, &reason) ==
	       PGW_FRAME_NEED_MORE;
}

bool pgw_proxy_busy(const struct pgw_proxy *p)
{
	return p->inflight || p->up == UP_BACKOFF || p->up == UP_STARTING || p->up == UP_REPLAY ||
	       p->up_out.len >= PGW_SESSION_OUT_HIGH;
}

int pgw_proxy_initial_setting(struct pgw_proxy *p, const char *sql)
{
	size_t n = strlen(sql);

	buf_reset(&p->q);
	buf_put_u8(&p->q, 'Q');
	buf_put_u32be(&p->q, (uint32_t)(4 + n + 1));
	buf_put(&p->q, sql, n + 1);
	if (p->q.failed) {
		buf_reset(&p->q);
		return ERR_NOMEM;
	}
	remember_setting(p);
	buf_reset(&p->q);
	return 0;
}

/* The TCP side of pgwire: a libuv listener, one connection object per client that moves
 * bytes between its socket and its session, with one write in flight and back-pressure.
 *
 * A connection owns two handles (the TCP stream and a timer: the startup timeout, then
 * the session's proxy timer). It is closed by closing both; the session is destroyed and
 * the memory freed in the last close callback, never inside a session callback.
 *
 * A proxy session (PROXY mode on a follower) also has at most one upstream connection to
 * the leader (struct upstream), opened and closed at the session's request through
 * pgw_upstream_ops. An upstream is a separate allocation: when dropped it is detached
 * from its connection at once (no event about it reaches the session any more) and freed
 * in its own close callback; the server counts them so that pgw_server_stop waits. */
#include "pgwire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/log.h"
#include "session.h"

#define STARTUP_TIMEOUT_MS 60000
#define READ_CHUNK 65536
#define OUT_MAX (4u << 20)       /* stop reading while this much output waits */
#define IN_MAX_BUSY (1u << 20)   /* stop reading while the session is busy and this much
				    input is buffered */
#define KEEP_CAP (1u << 20)      /* buffers larger than this are freed once empty */

struct conn;

struct upstream {
	struct pgw_server *srv;
	struct conn *c;           /* NULL once detached (being closed) */
	uv_tcp_t tcp;
	uv_connect_t creq;
	uv_write_t wreq;
	struct buf wbuf;          /* the bytes of the write in flight */
	bool connected;
	bool writing;
	bool reading;
};

struct conn {
	struct pgw_server *srv;
	struct conn *prev, *next;
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_write_t wreq;
	struct buf wbuf;          /* the bytes of the write in flight */
	struct pgw_session *session;
	struct upstream *up;      /* the proxy's connection to the leader, or NULL */
	int n_handles;            /* handles still open */
	int status;               /* last PGW_SESSION_* */
	bool writing;
	bool reading;
	bool closing;             /* handles are being closed */
	bool close_after_flush;   /* the session asked to close once the output is sent */
	bool startup_done;        /* the startup timer was stopped; the timer is the session's */
};

struct pgw_server {
	uv_loop_t *loop;
	struct core_engine *engine;
	char *host;
	char *server_version;
	int port;
	size_t max_msg_len;
	uv_tcp_t listener;
	bool listener_open;
	int follower_mode;
	unsigned apply_timeout_ms;
	bool was_leader;          /* for the leader listener: the last reported leadership */
	bool listening_leader;    /* the leader listener is registered */
	int n_upstreams;          /* upstream handles not closed yet */
	struct conn *conns;
	bool stopping;
	pgw_stop_cb stop_cb;
	void *stop_arg;
};

void pgw_config_defaults(struct pgw_config *c)
{
	c->host = "127.0.0.1";
	c->port = 5433;
	c->max_msg_len = PGW_DEFAULT_MAX_MSG_LEN;
	c->server_version = "15.0 (pqlite)";
	c->follower_mode = PGW_FOLLOWER_PROXY;
	c->apply_timeout_ms = PGW_DEFAULT_APPLY_TIMEOUT_MS;
}

static void server_free(struct pgw_server *srv)
{
	free(srv->host);
	free(srv->server_version);
	free(srv);
}

/* Finish pgw_server_stop once every handle is closed. */
static void server_maybe_done(struct pgw_server *srv)
{
	pgw_stop_cb cb;
	void *arg;

	if (!srv->stopping || srv->listener_open || srv->conns != NULL || srv->n_upstreams > 0)
		return;
	cb = srv->stop_cb;
	arg = srv->stop_arg;
	if (cb != NULL)
		cb(arg);
	server_free(srv);
}

/* ---- Connections ------------------------------------------------------------------------ */

static void conn_on_close(uv_handle_t *h)
{
	struct conn *c = h->data;
	struct pgw_server *srv = c->srv;

	if (--c->n_handles > 0)
		return;
	if (c->session != NULL)
		pgw_session_destroy(c->session);
	buf_close(&c->wbuf);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	free(c);
	server_maybe_done(srv);
}

static void up_drop(struct conn *c);

static void conn_close(struct conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	c->reading = false;
	up_drop(c); /* the session's own close request, later, finds nothing */
	uv_close((uv_handle_t *)&c->tcp, conn_on_close);
	uv_close((uv_handle_t *)&c->timer, conn_on_close);
}

static void conn_after(struct conn *c, int status);
static void up_update(struct conn *c);

static void conn_on_write(uv_write_t *req, int status)
{
	struct conn *c = req->data;

	c->writing = false;
	if (c->wbuf.cap > KEEP_CAP)
		buf_close(&c->wbuf);
	else
		buf_reset(&c->wbuf);
	if (c->closing)
		return;
	if (status < 0) {
		LOGD("pgwire: write failed: %s", uv_strerror(status));
		conn_close(c);
		return;
	}
	/* The output drained: a session suspended on its output can go on. */
	conn_after(c, pgw_session_process(c->session));
}

/* Start a write of the session's pending output, unless one is in flight. */
static void conn_flush(struct conn *c)
{
	struct buf *out = pgw_session_out(c->session);
	struct buf tmp;
	uv_buf_t b;
	int rv;

	if (c->writing || c->closing)
		return;
	if (out->failed) {
		conn_close(c);
		return;
	}
	if (out->len == 0) {
		if (c->close_after_flush)
			conn_close(c);
		return;
	}
	/* Swap buffers: the session keeps appending to an empty one meanwhile. */
	tmp = *out;
	*out = c->wbuf;
	c->wbuf = tmp;
	b = uv_buf_init((char *)c->wbuf.data, (unsigned)c->wbuf.len);
	c->wreq.data = c;
	rv = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, conn_on_write);
	if (rv != 0) {
		LOGD("pgwire: write: %s", uv_strerror(rv));
		conn_close(c);
		return;
	}
	c->writing = true;
}

static void conn_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct conn *c = h->data;
	struct buf *in = pgw_session_in(c->session);

	if (!buf_reserve(in, READ_CHUNK)) {
		*b = uv_buf_init(NULL, 0); /* the read callback gets UV_ENOBUFS */
		return;
	}
	*b = uv_buf_init((char *)in->data + in->len, (unsigned)(in->cap - in->len));
}

static void conn_on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b)
{
	struct conn *c = stream->data;
	struct buf *in;

	if (c->closing)
		return;
	if (nread < 0) {
		if (nread != UV_EOF)
			LOGD("pgwire: read: %s", uv_strerror((int)nread));
		conn_close(c);
		return;
	}
	if (nread == 0)
		return;
	in = pgw_session_in(c->session);
	in->len += (size_t)nread;
	conn_after(c, pgw_session_process(c->session));
}

/* Start or stop reading according to the buffers (back-pressure). */
static void conn_update_reading(struct conn *c)
{
	struct buf *in = pgw_session_in(c->session);
	struct buf *out = pgw_session_out(c->session);
	bool want;
	int rv;

	want = !c->closing && !c->close_after_flush && out->len + c->wbuf.len < OUT_MAX &&
	       !(c->status == PGW_SESSION_BUSY && in->len >= IN_MAX_BUSY);
	if (want == c->reading)
		return;
	if (want) {
		rv = uv_read_start((uv_stream_t *)&c->tcp, conn_on_alloc, conn_on_read);
		if (rv != 0) {
			LOGD("pgwire: read start: %s", uv_strerror(rv));
			conn_close(c);
			return;
		}
	} else {
		uv_read_stop((uv_stream_t *)&c->tcp);
	}
	c->reading = want;
}

/* After each processing round: flush, handle close requests, adjust reading. */
static void conn_after(struct conn *c, int status)
{
	struct buf *in;

	if (c->closing)
		return;
	c->status = status;
	if (!c->startup_done && pgw_session_started(c->session)) {
		uv_timer_stop(&c->timer);
		c->startup_done = true;
	}
	if (status == PGW_SESSION_CLOSE)
		c->close_after_flush = true;
	in = pgw_session_in(c->session);
	if (in->len == 0 && in->cap > KEEP_CAP)
		buf_close(in);
	conn_flush(c);
	if (c->closing)
		return;
	conn_update_reading(c);
	up_update(c);
}

static void conn_on_wake(void *arg, int status)
{
	conn_after(arg, status);
}

static void conn_on_timeout(uv_timer_t *t)
{
	struct conn *c = t->data;

	if (c->closing)
		return;
	if (!pgw_session_started(c->session)) {
		LOGI("pgwire: closing a connection that did not complete startup in time");
		conn_close(c);
		return;
	}
	conn_after(c, pgw_session_timeout(c->session)); /* the proxy's timer */
}

/* ---- Upstream connections (proxy sessions) ------------------------------------------- */

static void up_on_close(uv_handle_t *h)
{
	struct upstream *up = h->data;
	struct pgw_server *srv = up->srv;

	buf_close(&up->wbuf);
	free(up);
	srv->n_upstreams--;
	server_maybe_done(srv);
}

/* Detach the connection's upstream, if any, and close it. */
static void up_drop(struct conn *c)
{
	struct upstream *up = c->up;

	if (up == NULL)
		return;
	c->up = NULL;
	up->c = NULL; /* its pending callbacks (ECANCELED) find no connection */
	uv_close((uv_handle_t *)&up->tcp, up_on_close);
}

/* The upstream failed or closed: drop it and tell the session. */
static void up_fail(struct upstream *up)
{
	struct conn *c = up->c;

	up_drop(c);
	conn_after(c, pgw_session_upstream_closed(c->session));
}

static void up_on_write(uv_write_t *req, int status)
{
	struct upstream *up = req->data;
	struct conn *c = up->c;

	up->writing = false;
	if (up->wbuf.cap > KEEP_CAP)
		buf_close(&up->wbuf);
	else
		buf_reset(&up->wbuf);
	if (c == NULL)
		return;
	if (status < 0) {
		LOGD("pgwire: proxy: write: %s", uv_strerror(status));
		up_fail(up);
		return;
	}
	up_update(c); /* the next write: what the session queued meanwhile */
	/* A session that stopped taking client messages while the upstream's output was full
	 * goes on (the connection stays allocated until its close callback). */
	if (!c->closing)
		conn_after(c, pgw_session_process(c->session));
}

static void up_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct upstream *up = h->data;
	struct buf *in = up->c != NULL ? pgw_session_up_in(up->c->session) : NULL;

	if (in == NULL || !buf_reserve(in, READ_CHUNK)) {
		*b = uv_buf_init(NULL, 0); /* the read callback gets UV_ENOBUFS */
		return;
	}
	*b = uv_buf_init((char *)in->data + in->len, (unsigned)(in->cap - in->len));
}

static void up_on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b)
{
	struct upstream *up = stream->data;
	struct conn *c = up->c;

	if (c == NULL)
		return;
	if (nread < 0) {
		if (nread != UV_EOF)
			LOGD("pgwire: proxy: read: %s", uv_strerror((int)nread));
		up_fail(up);
		return;
	}
	if (nread == 0)
		return;
	pgw_session_up_in(c->session)->len += (size_t)nread;
	conn_after(c, pgw_session_process(c->session));
}

/* Send the session's pending upstream bytes and start or stop reading (back-pressure:
 * the upstream is read only while the client's output has room). */
static void up_update(struct conn *c)
{
	struct upstream *up = c->up;
	struct buf *out, *cout, tmp;
	uv_buf_t b;
	bool want;
	int rv;

	if (up == NULL || !up->connected || c->closing)
		return;
	out = pgw_session_up_out(c->session);
	if (out == NULL)
		return;
	if (out->failed) {
		LOGW("pgwire: proxy: out of memory on an upstream buffer");
		up_fail(up);
		return;
	}
	if (!up->writing && out->len > 0) {
		tmp = *out;
		*out = up->wbuf;
		up->wbuf = tmp;
		b = uv_buf_init((char *)up->wbuf.data, (unsigned)up->wbuf.len);
		up->wreq.data = up;
		rv = uv_write(&up->wreq, (uv_stream_t *)&up->tcp, &b, 1, up_on_write);
		if (rv != 0) {
			LOGD("pgwire: proxy: write: %s", uv_strerror(rv));
			up_fail(up);
			return;
		}
		up->writing = true;
	}
	cout = pgw_session_out(c->session);
	want = pgw_session_upstream_wants_input(c->session) && cout->len + c->wbuf.len < OUT_MAX;
	if (want == up->reading)
		return;
	if (want) {
		rv = uv_read_start((uv_stream_t *)&up->tcp, up_on_alloc, up_on_read);
		if (rv != 0) {
			LOGD("pgwire: proxy: read start: %s", uv_strerror(rv));
			up_fail(up);
			return;
		}
	} else {
		uv_read_stop((uv_stream_t *)&up->tcp);
	}
	up->reading = want;
}

static void up_on_connect(uv_connect_t *req, int status)
{
	struct upstream *up = req->data;

	if (up->c == NULL)
		return; /* dropped meanwhile */
	if (status < 0) {
		LOGD("pgwire: proxy: connect: %s", uv_strerror(status));
		up_fail(up);
		return;
	}
	up->connected = true;
	uv_tcp_nodelay(&up->tcp, 1);
	uv_tcp_keepalive(&up->tcp, 1, 10); /* notice a leader that vanished mid-statement */
	up_update(up->c);
}

/* Parse "a.b.c.d:port". */
static bool parse_address(const char *address, struct sockaddr_in *sa)
{
	const char *colon = strrchr(address, ':');
	char host[16], *end;
	long port;

	if (colon == NULL || colon == address || (size_t)(colon - address) >= sizeof(host))
		return false;
	memcpy(host, address, (size_t)(colon - address));
	host[colon - address] = '\0';
	port = strtol(colon + 1, &end, 10);
	if (*end != '\0' || end == colon + 1 || port <= 0 || port > 65535)
		return false;
	return uv_ip4_addr(host, (int)port, sa) == 0;
}

static int op_connect(void *arg, const char *address)
{
	struct conn *c = arg;
	struct pgw_server *srv = c->srv;
	struct sockaddr_in sa;
	struct upstream *up;
	int rv;

	if (c->closing)
		return ERR_SHUTDOWN;
	up_drop(c); /* never two at once */
	if (!parse_address(address, &sa)) {
		LOGW("pgwire: proxy: bad leader address \"%s\"", address);
		return ERR_INVALID;
	}
	up = calloc(1, sizeof(*up));
	if (up == NULL)
		return ERR_NOMEM;
	up->srv = srv;
	buf_init(&up->wbuf);
	rv = uv_tcp_init(srv->loop, &up->tcp);
	if (rv != 0) {
		free(up);
		return ERR_IO;
	}
	up->tcp.data = up;
	srv->n_upstreams++;
	up->creq.data = up;
	rv = uv_tcp_connect(&up->creq, &up->tcp, (const struct sockaddr *)&sa, up_on_connect);
	if (rv != 0) {
		LOGD("pgwire: proxy: connect to %s: %s", address, uv_strerror(rv));
		uv_close((uv_handle_t *)&up->tcp, up_on_close);
		return ERR_IO;
	}
	up->c = c;
	c->up = up;
	return 0;
}

static void op_close(void *arg)
{
	up_drop(arg);
}

static void op_timer(void *arg, unsigned ms)
{
	struct conn *c = arg;

	if (c->closing)
		return;
	c->startup_done = true; /* the startup is over: the timer is the session's now */
	if (ms == 0)
		uv_timer_stop(&c->timer);
	else
		uv_timer_start(&c->timer, conn_on_timeout, ms, 0);
}

static uint64_t op_now(void *arg)
{
	struct conn *c = arg;
	return uv_now(c->srv->loop);
}

static const struct pgw_upstream_ops upstream_ops = {op_connect, op_close, op_timer, op_now};

static void on_connection(uv_stream_t *server, int status)
{
	struct pgw_server *srv = server->data;
	struct pgw_session_config scfg;
	struct conn *c;
	int rv;

	if (status < 0) {
		LOGW("pgwire: accept: %s", uv_strerror(status));
		return;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		goto err;
	c->srv = srv;
	buf_init(&c->wbuf);
	memset(&scfg, 0, sizeof(scfg));
	scfg.engine = srv->engine;
	scfg.server_version = srv->server_version;
	scfg.max_msg_len = srv->max_msg_len;
	scfg.wake = conn_on_wake;
	scfg.wake_arg = c;
	scfg.follower_mode = srv->follower_mode;
	scfg.apply_timeout_ms = srv->apply_timeout_ms;
	scfg.upstream = &upstream_ops;
	scfg.upstream_arg = c;
	if (pgw_session_create(&scfg, &c->session) != 0)
		goto err_after_alloc;
	rv = uv_tcp_init(srv->loop, &c->tcp);
	if (rv != 0)
		goto err_after_session;
	c->tcp.data = c;
	c->n_handles = 1;
	/* From here on the connection is released through conn_close. */
	c->next = srv->conns;
	if (srv->conns != NULL)
		srv->conns->prev = c;
	srv->conns = c;
	rv = uv_timer_init(srv->loop, &c->timer);
	if (rv != 0) {
		/* Only the TCP handle exists: close it alone. */
		c->closing = true;
		uv_close((uv_handle_t *)&c->tcp, conn_on_close);
		goto err_accept;
	}
	c->timer.data = c;
	c->n_handles = 2;
	rv = uv_accept(server, (uv_stream_t *)&c->tcp);
	if (rv != 0) {
		conn_close(c);
		goto err_accept;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	uv_timer_start(&c->timer, conn_on_timeout, STARTUP_TIMEOUT_MS, 0);
	conn_update_reading(c);
	return;

err_after_session:
	pgw_session_destroy(c->session);
err_after_alloc:
	free(c);
err:
	LOGW("pgwire: out of resources for a new connection");
	return;
err_accept:
	LOGW("pgwire: could not accept a connection: %s", uv_strerror(rv));
}

/* ---- Server --------------------------------------------------------------------------- */

/* The engine's leader listener. In PROXY mode a node that stops leading ends the sessions
 * it serves itself (clients reconnect, possibly through a follower's proxy); proxy
 * sessions are not affected. */
static void on_leader(void *arg, bool leader, bool ready)
{
	struct pgw_server *srv = arg;
	bool was = srv->was_leader;
	struct conn *c;

	srv->was_leader = leader;
	if (!was || leader || srv->follower_mode != PGW_FOLLOWER_PROXY || srv->stopping)
		return;
	LOGI("pgwire: no longer the leader: ending the sessions served here");
	/* conn_after may start closing a connection; it stays in the list until its close
	 * callback, so the walk is safe. */
	for (c = srv->conns; c != NULL; c = c->next) {
		int status;
		if (c->closing)
			continue;
		status = pgw_session_terminate(c->session);
		if (status >= 0)
			conn_after(c, status);
	}
}

int pgw_server_start(uv_loop_t *loop, struct core_engine *engine, const struct pgw_config *cfg,
		     struct pgw_server **out, char errmsg[ERR_MSG_LEN])
{
	struct pgw_server *srv;
	struct sockaddr_in addr;
	int rv;

	if (cfg->host == NULL || cfg->port <= 0 || cfg->port > 65535) {
		snprintf(errmsg, ERR_MSG_LEN, "pgwire: invalid listen address");
		return ERR_INVALID;
	}
	rv = uv_ip4_addr(cfg->host, cfg->port, &addr);
	if (rv != 0) {
		snprintf(errmsg, ERR_MSG_LEN, "pgwire: invalid IPv4 address \"%s\"", cfg->host);
		return ERR_INVALID;
	}
	srv = calloc(1, sizeof(*srv));
	if (srv == NULL)
		goto err_nomem;
	srv->loop = loop;
	srv->engine = engine;
	srv->port = cfg->port;
	srv->max_msg_len = cfg->max_msg_len != 0 ? cfg->max_msg_len : PGW_DEFAULT_MAX_MSG_LEN;
	srv->follower_mode = cfg->follower_mode;
	srv->apply_timeout_ms = cfg->apply_timeout_ms != 0 ? cfg->apply_timeout_ms
							   : PGW_DEFAULT_APPLY_TIMEOUT_MS;
	srv->host = strdup(cfg->host);
	srv->server_version = strdup(cfg->server_version != NULL ? cfg->server_version : "15.0");
	if (srv->host == NULL || srv->server_version == NULL)
		goto err_after_alloc;
	rv = uv_tcp_init(loop, &srv->listener);
	if (rv != 0) {
		snprintf(errmsg, ERR_MSG_LEN, "pgwire: tcp init: %s", uv_strerror(rv));
		server_free(srv);
		return ERR_IO;
	}
	srv->listener.data = srv;
	srv->listener_open = true;
	rv = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&addr, 0);
	if (rv == 0)
		rv = uv_listen((uv_stream_t *)&srv->listener, 128, on_connection);
	if (rv != 0) {
		snprintf(errmsg, ERR_MSG_LEN, "pgwire: listen on %s:%d: %s", cfg->host, cfg->port,
			 uv_strerror(rv));
		/* The handle must be closed before the memory goes: freed from its callback. */
		pgw_server_stop(srv, NULL, NULL);
		return ERR_IO;
	}
	LOGI("pgwire: listening on %s:%d", cfg->host, cfg->port);
	srv->was_leader = core_engine_is_leader(engine);
	core_engine_set_leader_listener(engine, on_leader, srv);
	srv->listening_leader = true;
	*out = srv;
	return 0;

err_after_alloc:
	server_free(srv);
err_nomem:
	snprintf(errmsg, ERR_MSG_LEN, "pgwire: out of memory");
	return ERR_NOMEM;
}

static void listener_on_close(uv_handle_t *h)
{
	struct pgw_server *srv = h->data;

	srv->listener_open = false;
	server_maybe_done(srv);
}

void pgw_server_stop(struct pgw_server *srv, pgw_stop_cb cb, void *arg)
{
	struct conn *c;

	srv->stopping = true;
	srv->stop_cb = cb;
	srv->stop_arg = arg;
	if (srv->listening_leader) {
		core_engine_set_leader_listener(srv->engine, NULL, NULL);
		srv->listening_leader = false;
	}
	if (srv->listener_open && !uv_is_closing((uv_handle_t *)&srv->listener))
		uv_close((uv_handle_t *)&srv->listener, listener_on_close);
	for (c = srv->conns; c != NULL; c = c->next)
		conn_close(c);
}

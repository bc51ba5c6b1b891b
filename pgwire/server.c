/* The TCP side of pgwire: a libuv listener, one connection object per client that moves
 * bytes between its socket and its session, with one write in flight and back-pressure.
 *
 * A connection owns two handles (the TCP stream and a startup timer). It is closed by
 * closing both; the session is destroyed and the memory freed in the last close callback,
 * never inside a session callback. */
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

struct conn {
	struct pgw_server *srv;
	struct conn *prev, *next;
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_write_t wreq;
	struct buf wbuf;          /* the bytes of the write in flight */
	struct pgw_session *session;
	int n_handles;            /* handles still open */
	int status;               /* last PGW_SESSION_* */
	bool writing;
	bool reading;
	bool closing;             /* handles are being closed */
	bool close_after_flush;   /* the session asked to close once the output is sent */
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

	if (!srv->stopping || srv->listener_open || srv->conns != NULL)
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

static void conn_close(struct conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	c->reading = false;
	uv_close((uv_handle_t *)&c->tcp, conn_on_close);
	uv_close((uv_handle_t *)&c->timer, conn_on_close);
}

static void conn_after(struct conn *c, int status);

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
	if (pgw_session_started(c->session))
		uv_timer_stop(&c->timer);
	if (status == PGW_SESSION_CLOSE)
		c->close_after_flush = true;
	in = pgw_session_in(c->session);
	if (in->len == 0 && in->cap > KEEP_CAP)
		buf_close(in);
	conn_flush(c);
	if (c->closing)
		return;
	conn_update_reading(c);
}

static void conn_on_wake(void *arg, int status)
{
	conn_after(arg, status);
}

static void conn_on_timeout(uv_timer_t *t)
{
	struct conn *c = t->data;

	if (!pgw_session_started(c->session)) {
		LOGI("pgwire: closing a connection that did not complete startup in time");
		conn_close(c);
	}
}

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
	scfg.engine = srv->engine;
	scfg.server_version = srv->server_version;
	scfg.max_msg_len = srv->max_msg_len;
	scfg.wake = conn_on_wake;
	scfg.wake_arg = c;
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
	if (srv->listener_open && !uv_is_closing((uv_handle_t *)&srv->listener))
		uv_close((uv_handle_t *)&srv->listener, listener_on_close);
	for (c = srv->conns; c != NULL; c = c->next)
		conn_close(c);
}

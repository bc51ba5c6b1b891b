/* pqlite server: parses the command line, then wires the engine (core/), Raft (raft_glue/)
 * and the PostgreSQL listener (pgwire/) onto one libuv loop, and shuts them down in order
 * on SIGTERM or SIGINT. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "../core/core.h"
#include "../lib/log.h"
#include "../pgwire/pgwire.h"
#include "../raft_glue/raft_glue.h"
#include "cli.h"
#include "joiner.h"

#define TICK_MS 50

/* c-raft's close callback carries only the node; there is one server per process. */
static struct server *the_server;

struct options {
	const char *data;
	char listen[64];
	char raft[64];
	char listen_host[INET_ADDRSTRLEN];
	int listen_port;
	unsigned snapshot_threshold;
	unsigned snapshot_trailing;
	bool trailing_set;
	unsigned apply_timeout_ms;
	unsigned idle_txn_timeout_ms;
	unsigned election_timeout_ms;
	uint64_t mem_cap;
	size_t max_msg_len;
	char join[64];          /* "" unless --join */
	bool standby;           /* --follower-mode standby */
};

struct server {
	uv_loop_t loop;
	uv_signal_t sigterm, sigint;
	uv_timer_t tick;
	struct rg_node *node;
	struct core_engine *engine;
	struct pgw_server *pgw;
	bool stopping;
	int lock_fd;
	/* --join on a new node: the join procedure runs on its own thread (blocking client
	 * calls) and reports through `joined`. */
	uv_thread_t joiner;
	bool joiner_started;
	volatile int joiner_stop;
	int joiner_rv;
	char joiner_err[256];
	struct joiner_args joiner_args;
	uv_async_t joined;
	bool exit_failure;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: pqlite [options]\n"
		"\n"
		"A replicated SQLite server that speaks the PostgreSQL protocol.\n"
		"\n"
		"  --data DIR                 data directory (default ./data); created if missing\n"
		"  --listen HOST:PORT         PostgreSQL address (default 127.0.0.1:5433)\n"
		"  --raft HOST:PORT           Raft address, IPv4 literal (default 127.0.0.1:7433)\n"
		"  --join HOST:PORT           join the cluster of the member with this PostgreSQL\n"
		"                             address (only when the data directory is new)\n"
		"  --follower-mode MODE       proxy (default): sessions on a follower are relayed to\n"
		"                             the leader; standby: a follower serves reads itself\n"
		"                             and refuses writes (hot standby)\n"
		"  --snapshot-threshold N     log entries between snapshots (default 8192)\n"
		"  --snapshot-trailing N      entries kept after a snapshot (default 8192, and at\n"
		"                             least the threshold)\n"
		"  --apply-timeout MS         how long a statement waits for a leader or the\n"
		"                             writer queue (default 10000)\n"
		"  --idle-in-transaction-timeout MS\n"
		"                             roll back a transaction idle this long while it holds\n"
		"                             its database's write lock (default 60000, 0 = never)\n"
		"  --election-timeout MS      Raft election timeout (default 1000)\n"
		"  --memory-limit BYTES       cap on database images held in memory (default 0 = none)\n"
		"  --max-message-size BYTES   largest protocol message accepted (default 67108864)\n"
		"  --log-level LEVEL          debug, info, warn or error (default info)\n"
		"  --help                     show this help\n"
		"\n"
		"Cluster administration (see docs/cluster.md):\n"
		"  pqlite status   [--host HOST:PORT] [--timeout MS]\n"
		"  pqlite remove   [--host HOST:PORT] [--timeout MS] ID\n"
		"  pqlite transfer [--host HOST:PORT] [--timeout MS] [ID]\n"
		"  pqlite recover  [--data DIR] [--listen HOST:PORT] [--raft HOST:PORT]\n"
		"                  offline, after a lost quorum: make this stopped node the only\n"
		"                  voter of its cluster\n");
}

/* Parse "a.b.c.d:port" (IPv4 literal). */
static bool parse_address(const char *s, char *host, size_t host_len, int *port)
{
	const char *colon = strrchr(s, ':');
	struct in_addr a;
	char h[INET_ADDRSTRLEN];
	char *end;
	long p;

	if (colon == NULL || (size_t)(colon - s) >= sizeof h || colon == s)
		return false;
	memcpy(h, s, (size_t)(colon - s));
	h[colon - s] = 0;
	if (inet_pton(AF_INET, h, &a) != 1)
		return false;
	errno = 0;
	p = strtol(colon + 1, &end, 10);
	if (errno != 0 || *end != 0 || end == colon + 1 || p < 1 || p > 65535)
		return false;
	if (host != NULL)
		snprintf(host, host_len, "%s", h);
	if (port != NULL)
		*port = (int)p;
	return true;
}

static bool parse_uint(const char *s, unsigned long long max, unsigned long long *out)
{
	char *end;
	unsigned long long v;
	if (*s == 0 || *s == '-')
		return false;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != 0 || v > max)
		return false;
	*out = v;
	return true;
}

static int parse_options(int argc, char **argv, struct options *o)
{
	enum { O_DATA = 1, O_LISTEN, O_RAFT, O_THRESH, O_TRAIL, O_APPLY, O_IDLE, O_ELECT, O_MEM,
	       O_MSG, O_LOG, O_HELP, O_JOIN, O_FMODE };
	static const struct option longopts[] = {
		{"data", required_argument, NULL, O_DATA},
		{"listen", required_argument, NULL, O_LISTEN},
		{"raft", required_argument, NULL, O_RAFT},
		{"snapshot-threshold", required_argument, NULL, O_THRESH},
		{"snapshot-trailing", required_argument, NULL, O_TRAIL},
		{"apply-timeout", required_argument, NULL, O_APPLY},
		{"idle-in-transaction-timeout", required_argument, NULL, O_IDLE},
		{"election-timeout", required_argument, NULL, O_ELECT},
		{"memory-limit", required_argument, NULL, O_MEM},
		{"max-message-size", required_argument, NULL, O_MSG},
		{"log-level", required_argument, NULL, O_LOG},
		{"help", no_argument, NULL, O_HELP},
		{"join", required_argument, NULL, O_JOIN},
		{"follower-mode", required_argument, NULL, O_FMODE},
		{NULL, 0, NULL, 0},
	};
	unsigned long long v;
	int c;

	memset(o, 0, sizeof *o);
	o->data = "./data";
	snprintf(o->listen, sizeof o->listen, "127.0.0.1:5433");
	snprintf(o->raft, sizeof o->raft, "127.0.0.1:7433");
	o->snapshot_threshold = 8192;
	o->snapshot_trailing = 8192;
	o->apply_timeout_ms = 10000;
	o->idle_txn_timeout_ms = 60000;
	o->election_timeout_ms = 1000;
	o->mem_cap = 0;
	o->max_msg_len = PGW_DEFAULT_MAX_MSG_LEN;

	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case O_DATA:
			if (optarg[0] == 0)
				goto bad_value;
			o->data = optarg;
			break;
		case O_LISTEN:
		case O_RAFT:
		case O_JOIN:
			if (strlen(optarg) >= sizeof o->listen ||
			    !parse_address(optarg, NULL, 0, NULL)) {
				fprintf(stderr,
					"pqlite: invalid address \"%s\" for --%s: expected an IPv4 "
					"literal and a port, like 127.0.0.1:5433\n",
					optarg,
					c == O_LISTEN ? "listen" : c == O_RAFT ? "raft" : "join");
				return 2;
			}
			snprintf(c == O_LISTEN ? o->listen : c == O_RAFT ? o->raft : o->join,
				 sizeof o->listen, "%s", optarg);
			break;
		case O_FMODE:
			if (strcmp(optarg, "proxy") == 0)
				o->standby = false;
			else if (strcmp(optarg, "standby") == 0)
				o->standby = true;
			else
				goto bad_value;
			break;
		case O_THRESH:
			if (!parse_uint(optarg, UINT_MAX, &v) || v < 1)
				goto bad_value;
			o->snapshot_threshold = (unsigned)v;
			break;
		case O_TRAIL:
			if (!parse_uint(optarg, UINT_MAX, &v))
				goto bad_value;
			o->snapshot_trailing = (unsigned)v;
			o->trailing_set = true;
			break;
		case O_APPLY:
			if (!parse_uint(optarg, 3600000, &v) || v < 1)
				goto bad_value;
			o->apply_timeout_ms = (unsigned)v;
			break;
		case O_IDLE:
			if (!parse_uint(optarg, 86400000, &v))
				goto bad_value;
			o->idle_txn_timeout_ms = (unsigned)v;
			break;
		case O_ELECT:
			if (!parse_uint(optarg, 60000, &v) || v < 100)
				goto bad_value;
			o->election_timeout_ms = (unsigned)v;
			break;
		case O_MEM:
			if (!parse_uint(optarg, UINT64_MAX, &v))
				goto bad_value;
			o->mem_cap = v;
			break;
		case O_MSG:
			if (!parse_uint(optarg, 1u << 30, &v) || v < 1024)
				goto bad_value;
			o->max_msg_len = (size_t)v;
			break;
		case O_LOG:
			if (strcmp(optarg, "debug") == 0)
				log_level = LOG_DEBUG;
			else if (strcmp(optarg, "info") == 0)
				log_level = LOG_INFO;
			else if (strcmp(optarg, "warn") == 0)
				log_level = LOG_WARN;
			else if (strcmp(optarg, "error") == 0)
				log_level = LOG_ERROR;
			else
				goto bad_value;
			break;
		case O_HELP:
		case 'h':
			usage(stdout);
			return 1;
		case '?':
		default:
			if (optopt != 0)
				fprintf(stderr, "pqlite: option %s needs a value or is unknown\n",
					argv[optind - 1]);
			else
				fprintf(stderr, "pqlite: unknown option %s\n", argv[optind - 1]);
			fprintf(stderr, "Try 'pqlite --help'.\n");
			return 2;
		}
		continue;
	bad_value:
		fprintf(stderr, "pqlite: invalid value \"%s\" for %s\n", optarg,
			argv[optind - 1][0] == '-' ? argv[optind - 1] : argv[optind - 2]);
		return 2;
	}
	if (optind < argc) {
		fprintf(stderr, "pqlite: unexpected argument \"%s\"\nTry 'pqlite --help'.\n",
			argv[optind]);
		return 2;
	}
	if (o->snapshot_trailing < o->snapshot_threshold) {
		if (o->trailing_set) {
			fprintf(stderr,
				"pqlite: --snapshot-trailing (%u) must be at least "
				"--snapshot-threshold (%u)\n",
				o->snapshot_trailing, o->snapshot_threshold);
			return 2;
		}
		o->snapshot_trailing = o->snapshot_threshold;
	}
	parse_address(o->listen, o->listen_host, sizeof o->listen_host, &o->listen_port);
	return 0;
}

/* Create the data directory if needed, check it is usable, and lock it so that two
 * servers never share one. */
static int prepare_data_dir(const char *dir, int *lock_fd)
{
	struct stat st;
	char path[PATH_MAX];
	int fd;

	if (stat(dir, &st) != 0) {
		if (errno != ENOENT || mkdir(dir, 0700) != 0) {
			fprintf(stderr, "pqlite: cannot create data directory \"%s\": %s\n", dir,
				strerror(errno));
			return 1;
		}
	} else if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "pqlite: data directory \"%s\" is not a directory\n", dir);
		return 1;
	}
	if (access(dir, R_OK | W_OK | X_OK) != 0) {
		fprintf(stderr, "pqlite: data directory \"%s\" is not writable: %s\n", dir,
			strerror(errno));
		return 1;
	}
	if (snprintf(path, sizeof path, "%s/LOCK", dir) >= (int)sizeof path) {
		fprintf(stderr, "pqlite: data directory path is too long\n");
		return 1;
	}
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		fprintf(stderr, "pqlite: cannot open %s: %s\n", path, strerror(errno));
		return 1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		fprintf(stderr,
			"pqlite: data directory \"%s\" is in use by another pqlite process\n", dir);
		close(fd);
		return 1;
	}
	*lock_fd = fd;
	return 0;
}

/* c-raft 0.15 reports a busy Raft port only as "I/O error": probe it first so the user
 * gets the real reason. Returns 0 or errno. */
static int probe_bind(const char *addr)
{
	char host[INET_ADDRSTRLEN];
	struct sockaddr_in sa;
	int port, fd, one = 1, rv = 0;

	if (!parse_address(addr, host, sizeof host, &port))
		return EINVAL;
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	inet_pton(AF_INET, host, &sa.sin_addr);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
		rv = errno;
	close(fd);
	return rv;
}

static void on_tick(uv_timer_t *t)
{
	struct server *s = t->data;
	core_engine_tick(s->engine, uv_now(&s->loop));
}

static void on_handle_closed(uv_handle_t *h)
{
}

static void finish_stop(struct server *s)
{
	if (s->joiner_started) {
		s->joiner_stop = 1;
		uv_thread_join(&s->joiner);
		s->joiner_started = false;
	}
	uv_close((uv_handle_t *)&s->joined, on_handle_closed);
	uv_close((uv_handle_t *)&s->tick, on_handle_closed);
	uv_close((uv_handle_t *)&s->sigterm, on_handle_closed);
	uv_close((uv_handle_t *)&s->sigint, on_handle_closed);
}


static void raft_stopped(struct rg_node *n)
{
	LOGI("raft stopped");
	finish_stop(the_server);
}

static void pgw_stopped(void *arg)
{
	struct server *s = arg;
	s->pgw = NULL;
	LOGI("client listener stopped");
	rg_node_stop(s->node, raft_stopped);
}

/* A leader hands leadership over first (bounded by about an election timeout), so that
 * the cluster does not wait for an election; then clients, then Raft. */
static void handover_done(struct rg_node *n)
{
	struct server *s = the_server;

	if (s->pgw != NULL)
		pgw_server_stop(s->pgw, pgw_stopped, s);
	else
		rg_node_stop(s->node, raft_stopped);
}

static void on_signal(uv_signal_t *sig, int signum)
{
	struct server *s = sig->data;
	if (s->stopping) {
		LOGW("second signal: exiting now");
		exit(1);
	}
	s->stopping = true;
	LOGI("received %s: shutting down", signum == SIGTERM ? "SIGTERM" : "SIGINT");
	s->joiner_stop = 1;
	rg_node_handover(s->node, handover_done);
}

static void joiner_thread(void *arg)
{
	struct server *s = arg;

	s->joiner_rv = joiner_run(&s->joiner_args, s->joiner_err);
	uv_async_send(&s->joined);
}

/* The join procedure ended: joined, refused for good (stop the node), or stopped. */
static void on_joined(uv_async_t *a)
{
	struct server *s = a->data;

	if (!s->joiner_started)
		return;
	uv_thread_join(&s->joiner);
	s->joiner_started = false;
	if (s->joiner_rv == 0) {
		LOGI("joined the cluster");
		return;
	}
	if (s->joiner_rv == ERR_SHUTDOWN || s->stopping)
		return;
	LOGE("cannot join the cluster of %s: %s", s->joiner_args.join_address, s->joiner_err);
	s->exit_failure = true;
	s->stopping = true;
	handover_done(s->node);
}

/* pqlite recover: offline, on the most advanced survivor of a lost quorum. */
static int recover_main(int argc, char **argv)
{
	struct options o;
	char errmsg[ERR_MSG_LEN] = "";
	struct stat st;
	int rv, lock_fd;

	rv = parse_options(argc, argv, &o);
	if (rv == 1)
		return 0;
	if (rv != 0)
		return rv;
	if (stat(o.data, &st) != 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "pqlite: recover: no data directory \"%s\"\n", o.data);
		return 1;
	}
	if (prepare_data_dir(o.data, &lock_fd) != 0)
		return 1;
	rv = rg_recover(o.data, o.raft, o.listen, errmsg);
	close(lock_fd);
	if (rv != 0) {
		fprintf(stderr, "pqlite: recover: %s\n", errmsg);
		return 1;
	}
	printf("recovered: this node (raft %s, pg %s) is now the only voter of its cluster.\n"
	       "Start it normally, then add the other nodes again with --join after emptying "
	       "their data directories (see docs/cluster.md).\n",
	       o.raft, o.listen);
	return 0;
}

int main(int argc, char **argv)
{
	struct options o;
	struct server s;
	struct core_config ccfg;
	struct rg_config rcfg;
	struct pgw_config pcfg;
	char errmsg[ERR_MSG_LEN] = "";
	int rv;

	if (argc > 1 && strcmp(argv[1], "recover") == 0)
		return recover_main(argc - 1, argv + 1);
	if (argc > 1 && cli_is_command(argv[1])) {
		signal(SIGPIPE, SIG_IGN);
		return cli_main(argc - 1, argv + 1);
	}
	rv = parse_options(argc, argv, &o);
	if (rv == 1)
		return 0; /* --help */
	if (rv != 0)
		return rv;
	memset(&s, 0, sizeof s);
	the_server = &s;
	if (prepare_data_dir(o.data, &s.lock_fd) != 0)
		return 1;
	rv = probe_bind(o.raft);
	if (rv != 0) {
		fprintf(stderr, "pqlite: cannot use raft address %s: %s\n", o.raft, strerror(rv));
		close(s.lock_fd);
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	uv_loop_init(&s.loop);

	rg_config_defaults(&rcfg);
	rcfg.data_dir = o.data;
	rcfg.raft_address = o.raft;
	rcfg.pg_address = o.listen;
	rcfg.snapshot_threshold = o.snapshot_threshold;
	rcfg.snapshot_trailing = o.snapshot_trailing;
	rcfg.election_timeout_ms = o.election_timeout_ms;
	rcfg.join = o.join[0] != '\0';
	rv = rg_node_create(&s.loop, &rcfg, &s.node, errmsg);
	if (rv != 0) {
		fprintf(stderr, "pqlite: %s\n", errmsg);
		goto err_after_loop;
	}
	core_config_defaults(&ccfg);
	ccfg.apply_timeout_ms = o.apply_timeout_ms;
	ccfg.writer_timeout_ms = o.apply_timeout_ms;
	ccfg.mem_cap = o.mem_cap;
	ccfg.idle_in_txn_timeout_ms = o.idle_txn_timeout_ms;
	rv = core_engine_create(&ccfg, rg_node_replication(s.node), &s.engine);
	if (rv != 0) {
		fprintf(stderr, "pqlite: cannot create the engine: %s\n", err_str(rv));
		goto err_after_node;
	}
	uv_timer_init(&s.loop, &s.tick);
	uv_async_init(&s.loop, &s.joined, on_joined);
	s.joined.data = &s;
	uv_signal_init(&s.loop, &s.sigterm);
	uv_signal_init(&s.loop, &s.sigint);
	/* Start the engine's clock before any session can open: idle and wait times are
	 * measured against it. */
	core_engine_tick(s.engine, uv_now(&s.loop));
	rv = rg_node_start(s.node, s.engine, errmsg);
	if (rv != 0) {
		fprintf(stderr, "pqlite: cannot start raft: %s\n", errmsg);
		goto err_stop;
	}
	pgw_config_defaults(&pcfg);
	pcfg.host = o.listen_host;
	pcfg.port = o.listen_port;
	pcfg.max_msg_len = o.max_msg_len;
	pcfg.follower_mode = o.standby ? PGW_FOLLOWER_STANDBY : PGW_FOLLOWER_PROXY;
	pcfg.apply_timeout_ms = o.apply_timeout_ms;
	rv = pgw_server_start(&s.loop, s.engine, &pcfg, &s.pgw, errmsg);
	if (rv != 0) {
		fprintf(stderr, "pqlite: cannot listen on %s: %s\n", o.listen, errmsg);
		s.pgw = NULL;
		goto err_stop;
	}

	s.tick.data = &s;
	uv_timer_start(&s.tick, on_tick, TICK_MS, TICK_MS);
	s.sigterm.data = &s;
	s.sigint.data = &s;
	uv_signal_start(&s.sigterm, on_signal, SIGTERM);
	uv_signal_start(&s.sigint, on_signal, SIGINT);

	LOGI("node %llu: data in %s, raft on %s", (unsigned long long)rg_node_id(s.node), o.data,
	     o.raft);
	if (o.join[0] != '\0' && !rg_node_has_configuration(s.node)) {
		LOGI("joining the cluster of %s", o.join);
		s.joiner_args.join_address = o.join;
		s.joiner_args.id = rg_node_id(s.node);
		s.joiner_args.raft_address = o.raft;
		s.joiner_args.pg_address = o.listen;
		s.joiner_args.stop = &s.joiner_stop;
		if (uv_thread_create(&s.joiner, joiner_thread, &s) != 0) {
			fprintf(stderr, "pqlite: cannot start the join thread\n");
			goto err_stop_listener;
		}
		s.joiner_started = true;
	} else if (o.join[0] != '\0') {
		LOGI("already a cluster member: --join %s ignored", o.join);
	}
	LOGI("listening on %s; connect with: psql -h %s -p %d -U postgres postgres", o.listen,
	     o.listen_host, o.listen_port);

	uv_run(&s.loop, UV_RUN_DEFAULT);
	rv = s.exit_failure ? 1 : 0;
	goto out;

err_stop_listener:
	s.stopping = true;
	pgw_server_stop(s.pgw, pgw_stopped, &s);
	uv_run(&s.loop, UV_RUN_DEFAULT);
	rv = 1;
	goto out;

err_stop:
	/* Startup failed after Raft was set up: stop it the orderly way, so that nothing is
	 * left half-written and every handle is closed. */
	s.stopping = true;
	rg_node_stop(s.node, raft_stopped);
	uv_run(&s.loop, UV_RUN_DEFAULT);
	rv = 1;
out:
	core_engine_destroy(s.engine);
err_after_node:
	rg_node_destroy(s.node);
err_after_loop:
	if (uv_loop_close(&s.loop) != 0)
		LOGW("loop closed with handles still open");
	close(s.lock_fd);
	if (rv == 0)
		LOGI("stopped");
	return rv == 0 ? 0 : 1;
}

/* c-raft 0.15 + raft_uv behind core/replication.h: node identity, storage under
 * DATA_DIR/raft, TCP transport, bootstrap / restart, the FSM adapter, the leadership
 * monitor with its post-election barrier, and the fail-stop wrapper around local Raft
 * writes. docs/raft.md explains every setting and rule implemented here.
 *
 * Lifecycle of a node (every call on the loop thread):
 *
 *   rg_node_create  -> CREATED   identity read or generated, DATA_DIR/raft created
 *   rg_node_start   -> RUNNING   (or FAILED: start returned an error)
 *   rg_node_stop    -> STOPPING  monitor closed, raft_close in flight
 *   close callbacks -> STOPPED   the user's stop callback has fired
 *   rg_node_destroy              allowed in CREATED (start never called) and STOPPED
 *
 * After a failed rg_node_start the caller still calls rg_node_stop and waits for its
 * callback: c-raft may hold resources that only raft_close (asynchronous) releases. */
#include "raft_glue.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <raft.h>
#include <raft/uv.h>

#include "../lib/err.h"
#include "../lib/log.h"

#define RG_DEFAULT_SNAPSHOT_THRESHOLD 8192u
#define RG_DEFAULT_SNAPSHOT_TRAILING 8192u
#define RG_DEFAULT_ELECTION_TIMEOUT_MS 1000u
#define RG_MIN_ELECTION_TIMEOUT_MS 10u /* the heartbeat (a tenth) must be at least 1 ms */

/* raft_uv log segment size. 32 MiB: four times the 8 MiB default, so segments fill and
 * close (each close stalls the loop for tens of ms in io_destroy) a quarter as often,
 * while the preallocated open segments raft_uv keeps ready stay around 100 MiB of disk
 * and the startup scan of open segments stays short. A multiple of every block size. */
#define RG_SEGMENT_SIZE (32u * 1024u * 1024u)

#define RG_MAX_VOTERS 5           /* nodes beyond this many voters are standbys */
#define RG_PROMOTE_RETRY_MS 1000u /* after a failed promotion */
#define RG_ADDR_SEP '|'           /* "RAFT|PG": the address a server has inside Raft */

#define RG_NODE_ID_FILE "node-id"
#define RG_NODE_ID_TMP "node-id.tmp"
#define RG_RAFT_DIR "raft"

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

enum rg_state {
	RG_CREATED,
	RG_RUNNING,
	RG_FAILED,
	RG_STOPPING,
	RG_STOPPED,
};

struct rg_node {
	uv_loop_t *loop;
	enum rg_state state;

	/* Configuration, copied. */
	char *data_dir;
	char *raft_dir;
	char *raft_address;
	char *pg_address;
	unsigned snapshot_threshold;
	unsigned snapshot_trailing;
	unsigned election_timeout_ms;
	uint64_t id;

	struct core_replication port;
	struct core_engine *engine;

	char *address;           /* "RAFT|PG": this node's address inside Raft */
	bool join;               /* fresh directory: wait to be added, do not bootstrap */
	char leader_pg[CORE_ADDR_MAX]; /* buffer behind port_leader_address */

	/* Membership: the change this node submitted as leader, and when to try the next
	 * promotion of a spare / standby. */
	struct raft_change change_req;
	bool change_inflight;
	uint64_t promote_after;   /* uv_now() before which no promotion is attempted */

	/* Pass-through transport (TCP_NODELAY, "RAFT|PG" addresses) around raft_uv_tcp. */
	struct raft_uv_transport outer;
	raft_uv_accept_cb accept_cb;
	bool outer_closing;
	raft_uv_transport_close_cb outer_close_cb;

	/* Leadership hand-over before stopping. */
	struct raft_transfer transfer_req;
	bool transfer_inflight;
	rg_handover_cb handover_cb;

	/* c-raft objects, and which of them were initialised (for the cleanup path). */
	struct raft_uv_transport transport;
	struct raft_io io;
	struct raft_fsm fsm;
	struct raft raft;
	bool transport_inited;
	bool io_inited;
	bool raft_inited;
	bool raft_started;

	/* The raft_uv methods replaced by the fail-stop wrappers. */
	int (*io_append)(struct raft_io *io, struct raft_io_append *req,
			 const struct raft_entry entries[], unsigned n, raft_io_append_cb cb);
	int (*io_truncate)(struct raft_io *io, raft_index index);
	int (*io_snapshot_put)(struct raft_io *io, unsigned trailing,
			       struct raft_io_snapshot_put *req, const struct raft_snapshot *snapshot,
			       raft_io_snapshot_put_cb cb);
	int (*io_set_term)(struct raft_io *io, raft_term term);
	int (*io_set_vote)(struct raft_io *io, raft_id server_id);

	/* Leadership monitor and what it last reported to the engine. */
	uv_prepare_t monitor;
	bool monitor_inited;
	int last_state;          /* raft_state() seen at the previous loop iteration */
	bool leader;             /* reported leader=true to the engine */
	bool ready;              /* reported ready=true to the engine */
	raft_term leader_term;   /* term of the leadership reported */
	bool barrier_inflight;   /* the post-election barrier of leader_term is pending */
	bool barrier_warned;     /* a failed barrier submission was logged this term */

	/* FSM adapter bookkeeping. */
	uint64_t fsm_last_index; /* last index passed to core_fsm_apply, 0 = unknown */
	raft_index applied_hint; /* highest index known applied, see applied_index() */
	void *snapshot_data;     /* core's buffer lent to raft until snapshot_finalize */

	/* Stop sequence. */
	rg_stop_cb stop_cb;
	bool raft_closed;
	bool monitor_closed;
};

/* A proposal or barrier of the replication port. Allocated apart from everything the
 * engine owns (it may free its objects while the request is pending) and freed in the
 * callback. */
struct rg_request {
	union {
		struct raft_apply apply;
		struct raft_barrier barrier;
	};
	struct rg_node *node;
	core_repl_cb cb;
	void *arg;
};

/* The barrier submitted when this node becomes leader. */
struct rg_lead_barrier {
	struct raft_barrier req;
	struct rg_node *node;
	raft_term term;
};

/* Wrapped asynchronous raft_io requests: ours goes to raft_uv, the original is completed
 * from our callback once the status has been checked. */
struct rg_append {
	struct raft_io_append req;
	struct rg_node *node;
	struct raft_io_append *orig;
	raft_io_append_cb orig_cb;
	unsigned n_entries;
};

struct rg_snapshot_put {
	struct raft_io_snapshot_put req;
	struct rg_node *node;
	struct raft_io_snapshot_put *orig;
	raft_io_snapshot_put_cb orig_cb;
	raft_index index;
};

/* ---- Helpers --------------------------------------------------------------------- */

static const char *state_name(int state)
{
	switch (state) {
	case RAFT_UNAVAILABLE:
		return "unavailable";
	case RAFT_FOLLOWER:
		return "follower";
	case RAFT_CANDIDATE:
		return "candidate";
	case RAFT_LEADER:
		return "leader";
	default:
		return "unknown";
	}
}

/* Name of a raft error code: 0.15's raft_strerror() has no text for some of them
 * (RAFT_NOSPACE reads "unknown error"). */
static const char *raft_code_name(int rv)
{
	static const char *const names[] = {
		[RAFT_NOMEM] = "RAFT_NOMEM",
		[RAFT_BADID] = "RAFT_BADID",
		[RAFT_DUPLICATEID] = "RAFT_DUPLICATEID",
		[RAFT_DUPLICATEADDRESS] = "RAFT_DUPLICATEADDRESS",
		[RAFT_BADROLE] = "RAFT_BADROLE",
		[RAFT_MALFORMED] = "RAFT_MALFORMED",
		[RAFT_NOTLEADER] = "RAFT_NOTLEADER",
		[RAFT_LEADERSHIPLOST] = "RAFT_LEADERSHIPLOST",
		[RAFT_SHUTDOWN] = "RAFT_SHUTDOWN",
		[RAFT_CANTBOOTSTRAP] = "RAFT_CANTBOOTSTRAP",
		[RAFT_CANTCHANGE] = "RAFT_CANTCHANGE",
		[RAFT_CORRUPT] = "RAFT_CORRUPT",
		[RAFT_CANCELED] = "RAFT_CANCELED",
		[RAFT_NAMETOOLONG] = "RAFT_NAMETOOLONG",
		[RAFT_TOOBIG] = "RAFT_TOOBIG",
		[RAFT_NOCONNECTION] = "RAFT_NOCONNECTION",
		[RAFT_BUSY] = "RAFT_BUSY",
		[RAFT_IOERR] = "RAFT_IOERR",
		[RAFT_NOTFOUND] = "RAFT_NOTFOUND",
		[RAFT_INVALID] = "RAFT_INVALID",
		[RAFT_UNAUTHORIZED] = "RAFT_UNAUTHORIZED",
		[RAFT_NOSPACE] = "RAFT_NOSPACE",
		[RAFT_TOOMANY] = "RAFT_TOOMANY",
	};

	if (rv > 0 && (size_t)rv < sizeof names / sizeof names[0] && names[rv] != NULL)
		return names[rv];
	return "unknown raft error";
}

/* The most specific message c-raft left for a failed call. */
static const char *raft_why(struct rg_node *n, int rv)
{
	if (n->raft_inited && raft_errmsg(&n->raft)[0] != '\0')
		return raft_errmsg(&n->raft);
	if (n->io.errmsg[0] != '\0')
		return n->io.errmsg;
	if (n->transport.errmsg[0] != '\0')
		return n->transport.errmsg;
	return raft_strerror(rv);
}

/* Log, flush and abort: the fail-stop exit. */
__attribute__((noreturn, format(printf, 1, 2))) static void fail_stop(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	LOGE("raft: FAIL-STOP: %s; aborting so that this node cannot diverge", msg);
	fflush(stdout);
	fflush(stderr);
	abort();
}

/* Fill an ERR_MSG_LEN message buffer; long paths are cut, never overflowed. */
__attribute__((format(printf, 2, 3))) static void errf(char errmsg[ERR_MSG_LEN],
							const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(errmsg, ERR_MSG_LEN, fmt, ap);
	va_end(ap);
}

static char *join_path(const char *dir, const char *name)
{
	size_t len = strlen(dir) + 1 + strlen(name) + 1;
	char *p = malloc(len);

	if (p != NULL)
		snprintf(p, len, "%s/%s", dir, name);
	return p;
}

/* fsync a directory so that entries created or renamed in it are durable. */
static int fsync_dir(const char *dir, char errmsg[ERR_MSG_LEN])
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0) {
		errf(errmsg, "open directory %s: %s", dir, strerror(errno));
		return ERR_IO;
	}
	if (fsync(fd) != 0) {
		errf(errmsg, "fsync directory %s: %s", dir, strerror(errno));
		close(fd);
		return ERR_IO;
	}
	close(fd);
	return 0;
}

/* ---- Identity (DATA_DIR/node-id) ---------------------------------------------------- */

/* Parse "DECIMAL\n": digits only, no sign or spaces, non-zero, fits in 63 bits. */
static int parse_node_id(const char *text, size_t len, uint64_t *id)
{
	uint64_t v = 0;
	size_t i;

	if (len < 2 || text[len - 1] != '\n')
		return ERR_INVALID;
	for (i = 0; i < len - 1; i++) {
		unsigned d;

		if (text[i] < '0' || text[i] > '9')
			return ERR_INVALID;
		d = (unsigned)(text[i] - '0');
		if (v > ((uint64_t)INT64_MAX - d) / 10)
			return ERR_INVALID;
		v = v * 10 + d;
	}
	if (v == 0)
		return ERR_INVALID;
	*id = v;
	return 0;
}

static int read_node_id(const char *path, uint64_t *id, char errmsg[ERR_MSG_LEN])
{
	char text[32];
	ssize_t got;
	size_t len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		errf(errmsg, "open %s: %s", path, strerror(errno));
		return ERR_IO;
	}
	for (;;) {
		got = read(fd, text + len, sizeof text - len);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		len += (size_t)got;
		if (len == sizeof text)
			break;
	}
	if (got < 0) {
		errf(errmsg, "read %s: %s", path, strerror(errno));
		close(fd);
		return ERR_IO;
	}
	close(fd);
	if (len == sizeof text || parse_node_id(text, len, id) != 0) {
		snprintf(errmsg, ERR_MSG_LEN,
			 "%s is malformed: expected a non-zero decimal node id and a newline", path);
		return ERR_INVALID;
	}
	return 0;
}

/* Write the id to a temporary file, fsync it, rename it over node-id, fsync the dir. */
static int write_node_id(const char *data_dir, uint64_t id, char errmsg[ERR_MSG_LEN])
{
	char text[32];
	char *tmp = join_path(data_dir, RG_NODE_ID_TMP);
	char *path = join_path(data_dir, RG_NODE_ID_FILE);
	size_t len, off = 0;
	int fd = -1;
	int rv;

	if (tmp == NULL || path == NULL) {
		errf(errmsg, "out of memory");
		rv = ERR_NOMEM;
		goto out;
	}
	len = (size_t)snprintf(text, sizeof text, "%" PRIu64 "\n", id);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		errf(errmsg, "create %s: %s", tmp, strerror(errno));
		rv = ERR_IO;
		goto out;
	}
	while (off < len) {
		ssize_t put = write(fd, text + off, len - off);

		if (put < 0 && errno == EINTR)
			continue;
		if (put < 0) {
			errf(errmsg, "write %s: %s", tmp, strerror(errno));
			rv = ERR_IO;
			goto out;
		}
		off += (size_t)put;
	}
	if (fsync(fd) != 0) {
		errf(errmsg, "fsync %s: %s", tmp, strerror(errno));
		rv = ERR_IO;
		goto out;
	}
	if (close(fd) != 0) {
		fd = -1;
		errf(errmsg, "close %s: %s", tmp, strerror(errno));
		rv = ERR_IO;
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) != 0) {
		errf(errmsg, "rename %s to %s: %s", tmp, path, strerror(errno));
		rv = ERR_IO;
		goto out;
	}
	rv = fsync_dir(data_dir, errmsg);
out:
	if (fd >= 0)
		close(fd);
	free(tmp);
	free(path);
	return rv;
}

/* A random id: 8 bytes from getrandom, cut to 63 bits (so it is a positive int8 wherever
 * it is shown through SQL), never zero (c-raft reserves 0). */
static int generate_node_id(uint64_t *id, char errmsg[ERR_MSG_LEN])
{
	uint64_t v = 0;

	while (v == 0) {
		size_t off = 0;

		while (off < sizeof v) {
			ssize_t got = getrandom((char *)&v + off, sizeof v - off, 0);

			if (got < 0 && errno == EINTR)
				continue;
			if (got < 0) {
				errf(errmsg, "getrandom: %s", strerror(errno));
				return ERR_IO;
			}
			off += (size_t)got;
		}
		v &= (uint64_t)INT64_MAX;
	}
	*id = v;
	return 0;
}

/* True when dir exists and holds at least one entry besides . and .. */
static bool dir_has_entries(const char *dir)
{
	struct dirent *e;
	bool found = false;
	DIR *d = opendir(dir);

	if (d == NULL)
		return false;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
			found = true;
			break;
		}
	}
	closedir(d);
	return found;
}


/* ---- Addresses ---------------------------------------------------------------------- */

/* Inside Raft each server's address is "RAFT_HOST:PORT|PG_HOST:PORT", so every node learns
 * every client address from the replicated configuration (and a follower its leader's
 * from the handshake). State written before the cluster work holds the Raft address
 * alone: its pg part reads as "". */
static void split_address(const char *addr, char raft[CORE_ADDR_MAX], char pg[CORE_ADDR_MAX])
{
	const char *sep = addr != NULL ? strchr(addr, RG_ADDR_SEP) : NULL;
	size_t len;

	raft[0] = pg[0] = '\0';
	if (addr == NULL)
		return;
	len = sep != NULL ? (size_t)(sep - addr) : strlen(addr);
	if (len >= CORE_ADDR_MAX)
		len = CORE_ADDR_MAX - 1;
	memcpy(raft, addr, len);
	raft[len] = '\0';
	if (sep != NULL)
		snprintf(pg, CORE_ADDR_MAX, "%s", sep + 1);
}

static char *compose_address(const char *raft, const char *pg)
{
	size_t len = strlen(raft) + 1 + strlen(pg) + 1;
	char *s = malloc(len);

	if (s != NULL)
		snprintf(s, len, "%s%c%s", raft, RG_ADDR_SEP, pg);
	return s;
}

/* "a.b.c.d:port" with a port in 1..65535. */
static bool valid_address(const char *s)
{
	unsigned a, b, c, d, port;
	char tail;

	if (s == NULL || strlen(s) >= CORE_ADDR_MAX)
		return false;
	if (sscanf(s, "%3u.%3u.%3u.%3u:%5u%c", &a, &b, &c, &d, &port, &tail) != 5)
		return false;
	return a < 256 && b < 256 && c < 256 && d < 256 && port >= 1 && port <= 65535;
}

/* ---- Configuration and creation ----------------------------------------------------- */

void rg_config_defaults(struct rg_config *c)
{
	memset(c, 0, sizeof *c);
	c->snapshot_threshold = RG_DEFAULT_SNAPSHOT_THRESHOLD;
	c->snapshot_trailing = RG_DEFAULT_SNAPSHOT_TRAILING;
	c->election_timeout_ms = RG_DEFAULT_ELECTION_TIMEOUT_MS;
}

static int check_config(const struct rg_config *cfg, char errmsg[ERR_MSG_LEN])
{
	struct stat st;

	if (cfg->data_dir == NULL || cfg->data_dir[0] == '\0') {
		errf(errmsg, "no data directory given");
		return ERR_INVALID;
	}
	if (cfg->raft_address == NULL || cfg->raft_address[0] == '\0') {
		errf(errmsg, "no raft address given");
		return ERR_INVALID;
	}
	if (cfg->pg_address == NULL || cfg->pg_address[0] == '\0') {
		errf(errmsg, "no client (pg) address given");
		return ERR_INVALID;
	}
	if (!valid_address(cfg->raft_address) || !valid_address(cfg->pg_address)) {
		errf(errmsg, "addresses must be IPv4 literals with a port (raft %s, pg %s)",
		     cfg->raft_address, cfg->pg_address);
		return ERR_INVALID;
	}
	if (cfg->election_timeout_ms != 0 && cfg->election_timeout_ms < RG_MIN_ELECTION_TIMEOUT_MS) {
		errf(errmsg, "election timeout %u ms is below the minimum of %u ms",
			 cfg->election_timeout_ms, RG_MIN_ELECTION_TIMEOUT_MS);
		return ERR_INVALID;
	}
	{
		unsigned threshold = cfg->snapshot_threshold ? cfg->snapshot_threshold
							     : RG_DEFAULT_SNAPSHOT_THRESHOLD;
		unsigned trailing = cfg->snapshot_trailing ? cfg->snapshot_trailing
							   : RG_DEFAULT_SNAPSHOT_TRAILING;
		if (trailing < threshold) {
			snprintf(errmsg, ERR_MSG_LEN,
				 "snapshot trailing (%u) must be at least the snapshot threshold (%u)",
				 trailing, threshold);
			return ERR_INVALID;
		}
	}
	if (stat(cfg->data_dir, &st) != 0) {
		errf(errmsg, "data directory %s: %s", cfg->data_dir, strerror(errno));
		return errno == ENOENT ? ERR_INVALID : ERR_IO;
	}
	if (!S_ISDIR(st.st_mode)) {
		errf(errmsg, "data directory %s is not a directory", cfg->data_dir);
		return ERR_INVALID;
	}
	if (access(cfg->data_dir, W_OK | X_OK) != 0) {
		errf(errmsg, "data directory %s is not writable: %s", cfg->data_dir,
			 strerror(errno));
		return ERR_IO;
	}
	return 0;
}

/* Read DATA_DIR/node-id, or generate and persist it when the directory is new. */
static int load_identity(struct rg_node *n, char errmsg[ERR_MSG_LEN])
{
	char *path = join_path(n->data_dir, RG_NODE_ID_FILE);
	int rv;

	if (path == NULL) {
		errf(errmsg, "out of memory");
		return ERR_NOMEM;
	}
	if (access(path, F_OK) == 0) {
		rv = read_node_id(path, &n->id, errmsg);
		free(path);
		return rv;
	}
	if (errno != ENOENT) {
		errf(errmsg, "%s: %s", path, strerror(errno));
		free(path);
		return ERR_IO;
	}
	free(path);
	/* Raft state without an identity: a new id would make this log claim to be another
	 * server's. Refuse rather than guess. */
	if (dir_has_entries(n->raft_dir)) {
		snprintf(errmsg, ERR_MSG_LEN,
			 "%s holds raft state but %s/%s is missing: refusing to invent a new identity",
			 n->raft_dir, n->data_dir, RG_NODE_ID_FILE);
		return ERR_INVALID;
	}
	rv = generate_node_id(&n->id, errmsg);
	if (rv != 0)
		return rv;
	rv = write_node_id(n->data_dir, n->id, errmsg);
	if (rv != 0)
		return rv;
	LOGI("raft: new node id %" PRIu64 " written to %s/%s", n->id, n->data_dir, RG_NODE_ID_FILE);
	return 0;
}

static int make_raft_dir(struct rg_node *n, char errmsg[ERR_MSG_LEN])
{
	struct stat st;

	if (mkdir(n->raft_dir, 0755) == 0)
		return fsync_dir(n->data_dir, errmsg);
	if (errno != EEXIST) {
		errf(errmsg, "create %s: %s", n->raft_dir, strerror(errno));
		return ERR_IO;
	}
	if (stat(n->raft_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		errf(errmsg, "%s exists and is not a directory", n->raft_dir);
		return ERR_INVALID;
	}
	return 0;
}

static void port_init(struct rg_node *n);

int rg_node_create(uv_loop_t *loop, const struct rg_config *cfg, struct rg_node **out,
		   char errmsg[ERR_MSG_LEN])
{
	struct rg_node *n;
	int rv;

	errmsg[0] = '\0';
	rv = check_config(cfg, errmsg);
	if (rv != 0)
		return rv;
	n = calloc(1, sizeof *n);
	if (n == NULL)
		goto err_nomem;
	n->loop = loop;
	n->state = RG_CREATED;
	n->snapshot_threshold = cfg->snapshot_threshold ? cfg->snapshot_threshold
						       : RG_DEFAULT_SNAPSHOT_THRESHOLD;
	n->snapshot_trailing = cfg->snapshot_trailing ? cfg->snapshot_trailing
						     : RG_DEFAULT_SNAPSHOT_TRAILING;
	n->election_timeout_ms = cfg->election_timeout_ms ? cfg->election_timeout_ms
							 : RG_DEFAULT_ELECTION_TIMEOUT_MS;
	n->data_dir = strdup(cfg->data_dir);
	n->raft_address = strdup(cfg->raft_address);
	n->pg_address = strdup(cfg->pg_address);
	if (n->data_dir == NULL || n->raft_address == NULL || n->pg_address == NULL)
		goto err_nomem_after_alloc;
	n->address = compose_address(n->raft_address, n->pg_address);
	if (n->address == NULL)
		goto err_nomem_after_alloc;
	n->join = cfg->join;
	n->raft_dir = join_path(n->data_dir, RG_RAFT_DIR);
	if (n->raft_dir == NULL)
		goto err_nomem_after_alloc;
	rv = load_identity(n, errmsg);
	if (rv != 0)
		goto err_after_alloc;
	rv = make_raft_dir(n, errmsg);
	if (rv != 0)
		goto err_after_alloc;
	port_init(n);
	LOGI("raft: node %" PRIu64 " at %s, data in %s", n->id, n->raft_address, n->raft_dir);
	*out = n;
	return 0;

err_nomem_after_alloc:
	errf(errmsg, "out of memory");
	rv = ERR_NOMEM;
err_after_alloc:
	free(n->data_dir);
	free(n->raft_dir);
	free(n->address);
	free(n->raft_address);
	free(n->pg_address);
	free(n);
	return rv;
err_nomem:
	errf(errmsg, "out of memory");
	return ERR_NOMEM;
}

uint64_t rg_node_id(struct rg_node *n)
{
	return n->id;
}

/* ---- Replication port ------------------------------------------------------------- */

/* Highest index applied locally. 0.15 raises raft_last_applied() only after an entry's
 * apply and request callback have run (see fsm_apply), so inside those callbacks, and
 * in whatever the engine does from them, raft_last_applied() is one behind. The entries
 * whose callbacks we saw succeed are applied: take the larger of the two. */
static raft_index applied_index(struct rg_node *n)
{
	raft_index applied = raft_last_applied(&n->raft);

	return applied > n->applied_hint ? applied : n->applied_hint;
}

static void note_applied(struct rg_node *n, raft_index index)
{
	if (index > n->applied_hint)
		n->applied_hint = index;
}

static bool node_running(struct rg_node *n)
{
	return n->state == RG_RUNNING;
}

/* Leading, and able to take requests. 0.15's step-down (convertClearLeader) frees the
 * replication progress array, then fires every pending request callback with
 * RAFT_LEADERSHIPLOST while raft_state() still says RAFT_LEADER: a raft_apply made from
 * such a callback (the engine hands the database to its next writer) passes the state
 * check and then crashes on the freed array (seen under partitions in the fault
 * harness). So a NULL progress array means "not leading". */
static bool leading(struct rg_node *n)
{
	return node_running(n) && raft_state(&n->raft) == RAFT_LEADER &&
	       n->raft.leader_state.progress != NULL;
}

static void *port_alloc(struct core_replication *r, size_t len)
{
	(void)r;
	return raft_malloc(len);
}

static void port_free(struct core_replication *r, void *buf)
{
	(void)r;
	raft_free(buf);
}

/* Synchronous raft_apply / raft_barrier error -> ERR_*. Nothing was appended. */
static int map_submit_error(int rv)
{
	switch (rv) {
	case RAFT_NOTLEADER:
	case RAFT_LEADERSHIPLOST:
		return ERR_NOTLEADER;
	case RAFT_NOMEM:
		return ERR_NOMEM;
	default:
		return ERR_IO;
	}
}

/* Request callback status -> ERR_*, as core/replication.h defines them. */
static int map_cb_status(int status)
{
	switch (status) {
	case 0:
		return 0;
	case RAFT_LEADERSHIPLOST:
		return ERR_LEADERSHIP_LOST;
	case RAFT_SHUTDOWN:
		return ERR_SHUTDOWN;
	case RAFT_NOSPACE:
	case RAFT_IOERR:
		return ERR_IO;
	default:
		/* The entry may still be committed by someone: say "unknown". */
		LOGW("raft: request completed with unexpected status %s", raft_code_name(status));
		return ERR_LEADERSHIP_LOST;
	}
}

static void port_apply_cb(struct raft_apply *req, int status, void *result)
{
	struct rg_request *rq = container_of(req, struct rg_request, apply);
	core_repl_cb cb = rq->cb;
	void *arg = rq->arg;

	(void)result;
	if (status == 0)
		note_applied(rq->node, req->index);
	free(rq);
	cb(arg, map_cb_status(status));
}

static int port_propose(struct core_replication *r, void *buf, size_t len, uint64_t *index,
			core_repl_cb cb, void *arg)
{
	struct rg_node *n = r->data;
	struct raft_buffer b;
	struct rg_request *rq;
	int rv;

	if (len == 0 || len % 8 != 0) {
		LOGE("raft: refusing to propose an entry of %zu bytes (not a positive multiple of 8)",
		     len);
		return ERR_INVALID;
	}
	if (!leading(n))
		return ERR_NOTLEADER;
	rq = malloc(sizeof *rq);
	if (rq == NULL)
		return ERR_NOMEM;
	rq->node = n;
	rq->cb = cb;
	rq->arg = arg;
	b.base = buf;
	b.len = len;
	rv = raft_apply(&n->raft, &rq->apply, &b, 1, port_apply_cb);
	if (rv != 0) {
		free(rq);
		if (rv != RAFT_NOTLEADER)
			LOGW("raft: apply: %s", raft_errmsg(&n->raft));
		return map_submit_error(rv);
	}
	*index = rq->apply.index;
	return 0;
}

static void port_barrier_cb(struct raft_barrier *req, int status)
{
	struct rg_request *rq = container_of(req, struct rg_request, barrier);
	core_repl_cb cb = rq->cb;
	void *arg = rq->arg;

	if (status == 0)
		note_applied(rq->node, req->index);
	free(rq);
	cb(arg, map_cb_status(status));
}

static int port_barrier(struct core_replication *r, core_repl_cb cb, void *arg)
{
	struct rg_node *n = r->data;
	struct rg_request *rq;
	int rv;

	if (!leading(n))
		return ERR_NOTLEADER;
	rq = malloc(sizeof *rq);
	if (rq == NULL)
		return ERR_NOMEM;
	rq->node = n;
	rq->cb = cb;
	rq->arg = arg;
	rv = raft_barrier(&n->raft, &rq->barrier, port_barrier_cb);
	if (rv != 0) {
		free(rq);
		if (rv != RAFT_NOTLEADER)
			LOGW("raft: barrier: %s", raft_errmsg(&n->raft));
		return map_submit_error(rv);
	}
	return 0;
}

static bool port_is_leader(struct core_replication *r)
{
	struct rg_node *n = r->data;

	return leading(n);
}

static bool port_needs_barrier(struct core_replication *r)
{
	struct rg_node *n = r->data;

	if (!node_running(n))
		return false;
	return applied_index(n) < raft_last_index(&n->raft);
}

static const char *port_leader_address(struct core_replication *r)
{
	struct rg_node *n = r->data;
	char raft[CORE_ADDR_MAX];
	const char *addr = NULL;
	raft_id id = 0;

	if (!node_running(n))
		return NULL;
	raft_leader(&n->raft, &id, &addr);
	if (id == 0)
		return NULL;
	if (id == n->id)
		return n->pg_address;
	split_address(addr, raft, n->leader_pg);
	return n->leader_pg[0] != '\0' ? n->leader_pg : NULL;
}

static enum core_role core_role_of(int role)
{
	switch (role) {
	case RAFT_VOTER:
		return CORE_ROLE_VOTER;
	case RAFT_STANDBY:
		return CORE_ROLE_STANDBY;
	default:
		return CORE_ROLE_SPARE;
	}
}

static unsigned port_members(struct core_replication *r, struct core_member *out, unsigned max)
{
	struct rg_node *n = r->data;
	const struct raft_configuration *c = &n->raft.configuration;
	const char *laddr = NULL;
	raft_id lid = 0;
	bool lead;
	raft_index last, applied;
	unsigned i;

	if (!node_running(n))
		return 0;
	raft_leader(&n->raft, &lid, &laddr);
	lead = leading(n);
	last = raft_last_index(&n->raft);
	applied = applied_index(n);
	for (i = 0; i < c->n && i < max; i++) {
		const struct raft_server *srv = &c->servers[i];
		struct core_member *m = &out[i];

		m->id = srv->id;
		split_address(srv->address, m->raft_address, m->pg_address);
		if (srv->id == n->id && m->pg_address[0] == '\0')
			snprintf(m->pg_address, sizeof m->pg_address, "%s", n->pg_address);
		m->role = core_role_of(srv->role);
		m->is_leader = srv->id == lid;
		m->applied_index = -1;
		m->lag = -1;
		if (srv->id == n->id) {
			m->applied_index = (int64_t)applied;
			if (lead)
				m->lag = (int64_t)(last - applied);
			else
				m->lag = n->raft.commit_index > applied
						 ? (int64_t)(n->raft.commit_index - applied)
						 : 0;
		} else if (lead) {
			raft_index match = n->raft.leader_state.progress[i].match_index;
			m->applied_index = (int64_t)match;
			m->lag = last > match ? (int64_t)(last - match) : 0;
		}
	}
	return c->n;
}

static const struct raft_server *find_server(struct rg_node *n, raft_id id)
{
	const struct raft_configuration *c = &n->raft.configuration;
	unsigned i;

	for (i = 0; i < c->n; i++)
		if (c->servers[i].id == id)
			return &c->servers[i];
	return NULL;
}

static int map_change_error(struct rg_node *n, int rv, char errmsg[256])
{
	switch (rv) {
	case RAFT_NOTLEADER:
	case RAFT_LEADERSHIPLOST:
		snprintf(errmsg, 256, "this node is not the leader");
		return ERR_NOTLEADER;
	case RAFT_CANTCHANGE:
		snprintf(errmsg, 256, "another membership change is in progress; retry later");
		return ERR_BUSY;
	case RAFT_DUPLICATEID:
	case RAFT_DUPLICATEADDRESS:
		snprintf(errmsg, 256, "the node id or address is already a member");
		return ERR_EXISTS;
	case RAFT_NOTFOUND:
		snprintf(errmsg, 256, "no such node, or no other voter");
		return ERR_NOTFOUND;
	case RAFT_BADID:
	case RAFT_BADROLE:
		snprintf(errmsg, 256, "%s", raft_errmsg(&n->raft));
		return ERR_INVALID;
	case RAFT_NOMEM:
		snprintf(errmsg, 256, "out of memory");
		return ERR_NOMEM;
	default:
		snprintf(errmsg, 256, "%s (%s)", raft_errmsg(&n->raft), raft_code_name(rv));
		return ERR_IO;
	}
}

static void change_cb(struct raft_change *req, int status)
{
	struct rg_node *n = req->data;

	n->change_inflight = false;
	if (status != 0) {
		LOGI("raft: membership change failed: %s", raft_code_name(status));
		n->promote_after = uv_now(n->loop) + RG_PROMOTE_RETRY_MS;
		return;
	}
	LOGI("raft: membership change committed (%u servers)", n->raft.configuration.n);
}

static void transfer_cb(struct raft_transfer *req)
{
	struct rg_node *n = req->data;
	rg_handover_cb cb = n->handover_cb;
	const char *addr = NULL;
	raft_id lid = 0;

	n->transfer_inflight = false;
	raft_leader(&n->raft, &lid, &addr);
	if (lid == req->id)
		LOGI("raft: leadership transferred to node %llu", (unsigned long long)lid);
	else
		LOGI("raft: leadership transfer to node %llu did not complete (leader %llu)",
		     (unsigned long long)req->id, (unsigned long long)lid);
	if (cb != NULL) {
		n->handover_cb = NULL;
		cb(n);
	}
}

static int change_join(struct rg_node *n, uint64_t id, const char *raft, const char *pg,
		       enum core_role *role, char errmsg[256])
{
	const struct raft_configuration *c = &n->raft.configuration;
	const struct raft_server *srv;
	char *addr;
	unsigned i;
	int rv;

	if (!valid_address(raft) || !valid_address(pg)) {
		snprintf(errmsg, 256, "addresses must be IPv4 literals with a port");
		return ERR_INVALID;
	}
	addr = compose_address(raft, pg);
	if (addr == NULL)
		return ERR_NOMEM;
	srv = find_server(n, id);
	if (srv != NULL) {
		rv = strcmp(srv->address, addr) == 0 ? 0 : ERR_EXISTS;
		if (rv != 0)
			snprintf(errmsg, 256, "node %llu is already a member with address %s",
				 (unsigned long long)id, srv->address);
		else
			*role = core_role_of(srv->role);
		free(addr);
		return rv;
	}
	for (i = 0; i < c->n; i++) {
		char r2[CORE_ADDR_MAX], p2[CORE_ADDR_MAX];
		split_address(c->servers[i].address, r2, p2);
		if (strcmp(r2, raft) == 0 || strcmp(p2, pg) == 0) {
			snprintf(errmsg, 256,
				 "address %s is used by node %llu: a node that lost its data "
				 "directory must be removed first (pqlite remove %llu)",
				 strcmp(r2, raft) == 0 ? raft : pg,
				 (unsigned long long)c->servers[i].id,
				 (unsigned long long)c->servers[i].id);
			free(addr);
			return ERR_EXISTS;
		}
	}
	if (n->change_inflight) {
		free(addr);
		snprintf(errmsg, 256, "another membership change is in progress; retry later");
		return ERR_BUSY;
	}
	n->change_req.data = n;
	rv = raft_add(&n->raft, &n->change_req, id, addr, change_cb);
	free(addr);
	if (rv != 0)
		return map_change_error(n, rv, errmsg);
	n->change_inflight = true;
	n->promote_after = 0;
	*role = CORE_ROLE_SPARE;
	LOGI("raft: adding node %llu (raft %s, pg %s) as spare", (unsigned long long)id, raft,
	     pg);
	return 0;
}

static int change_remove(struct rg_node *n, uint64_t id, char errmsg[256])
{
	int rv;

	if (find_server(n, id) == NULL) {
		snprintf(errmsg, 256, "node %llu is not a member", (unsigned long long)id);
		return ERR_NOTFOUND;
	}
	if (id == n->id) {
		snprintf(errmsg, 256,
			 "node %llu is the leader: transfer leadership first (pqlite transfer)",
			 (unsigned long long)id);
		return ERR_INUSE;
	}
	if (n->change_inflight) {
		snprintf(errmsg, 256, "another membership change is in progress; retry later");
		return ERR_BUSY;
	}
	n->change_req.data = n;
	rv = raft_remove(&n->raft, &n->change_req, id, change_cb);
	if (rv != 0)
		return map_change_error(n, rv, errmsg);
	n->change_inflight = true;
	LOGI("raft: removing node %llu", (unsigned long long)id);
	return 0;
}

static int change_transfer(struct rg_node *n, uint64_t id, uint64_t *target, char errmsg[256])
{
	const struct raft_server *srv;
	int rv;

	if (n->transfer_inflight) {
		snprintf(errmsg, 256, "a leadership transfer is in progress; retry later");
		return ERR_BUSY;
	}
	if (id == n->id) {
		snprintf(errmsg, 256, "node %llu is already the leader", (unsigned long long)id);
		return ERR_INVALID;
	}
	if (id != 0) {
		srv = find_server(n, id);
		if (srv == NULL) {
			snprintf(errmsg, 256, "node %llu is not a member", (unsigned long long)id);
			return ERR_NOTFOUND;
		}
		if (srv->role != RAFT_VOTER) {
			snprintf(errmsg, 256, "node %llu is not a voter", (unsigned long long)id);
			return ERR_INVALID;
		}
	}
	n->transfer_req.data = n;
	rv = raft_transfer(&n->raft, &n->transfer_req, id, transfer_cb);
	if (rv == RAFT_NOTFOUND) {
		snprintf(errmsg, 256, "there is no other voter to transfer leadership to");
		return ERR_NOTFOUND;
	}
	if (rv != 0)
		return map_change_error(n, rv, errmsg);
	n->transfer_inflight = true;
	*target = n->transfer_req.id;
	LOGI("raft: transferring leadership to node %llu", (unsigned long long)*target);
	return 0;
}

static int port_change(struct core_replication *r, enum core_change_op op, uint64_t id,
		       const char *raft, const char *pg, enum core_role *role, uint64_t *id_out,
		       char errmsg[256])
{
	struct rg_node *n = r->data;

	errmsg[0] = '\0';
	if (!leading(n)) {
		snprintf(errmsg, 256, "this node is not the leader");
		return ERR_NOTLEADER;
	}
	switch (op) {
	case CORE_CHANGE_JOIN:
		return change_join(n, id, raft, pg, role, errmsg);
	case CORE_CHANGE_REMOVE:
		return change_remove(n, id, errmsg);
	case CORE_CHANGE_TRANSFER:
		return change_transfer(n, id, id_out, errmsg);
	}
	return ERR_INVALID;
}

static void port_init(struct rg_node *n)
{
	n->port.data = n;
	n->port.alloc = port_alloc;
	n->port.free = port_free;
	n->port.propose = port_propose;
	n->port.barrier = port_barrier;
	n->port.is_leader = port_is_leader;
	n->port.needs_barrier = port_needs_barrier;
	n->port.leader_address = port_leader_address;
	n->port.members = port_members;
	n->port.change = port_change;
}

struct core_replication *rg_node_replication(struct rg_node *n)
{
	return &n->port;
}

/* ---- FSM adapter ---------------------------------------------------------------------- */

/* raft_fsm.apply in 0.15 is not told the index of the entry. In 0.15's replicationApply
 * (src/replication.c) the loop runs `for (index = r->last_applied + 1; index <=
 * r->commit_index; index++)`, calls applyCommand(r, index, &entry->buf) -- which calls
 * fsm->apply and then the raft_apply callback -- and only afterwards sets
 * `r->last_applied = index`. So while fsm->apply runs, raft_last_applied() returns
 * index - 1, and the entry's index is raft_last_applied() + 1. (0.17.1 moved the update
 * before the callback; the derivation below is for 0.15 only.) The checks below catch a
 * library whose behaviour differs: indexes must increase and never pass commit_index. */
static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
	struct rg_node *n = container_of(fsm, struct rg_node, fsm);
	uint64_t index = (uint64_t)raft_last_applied(&n->raft) + 1;

	if (index <= n->fsm_last_index || index > n->raft.commit_index)
		fail_stop("apply index derivation is broken: derived %" PRIu64
			  " after %" PRIu64 " with commit index %llu (not c-raft 0.15?)",
			  index, n->fsm_last_index, n->raft.commit_index);
	n->fsm_last_index = index;
	core_fsm_apply(n->engine, index, buf->base, buf->len);
#ifdef PQ_MUTANT_APPLY_TWICE
	/* Deliberately broken build (meson -Dmutant=apply_twice) for the fault harness. */
	core_fsm_apply(n->engine, index, buf->base, buf->len);
#endif
	note_applied(n, index);
	*result = NULL;
	return 0;
}

/* Zero copy: core's malloc'ed buffer is lent to raft and freed in snapshot_finalize.
 * With version 2 and snapshot_finalize set, 0.15 (takeSnapshotClose in
 * src/replication.c) never frees snapshot buffers itself: it calls snapshot_finalize
 * once the snapshot is written, whether or not the write succeeded. */
static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
	struct rg_node *n = container_of(fsm, struct rg_node, fsm);
	struct raft_buffer *arr;
	void *data;
	size_t len;
	int rv;

	if (n->snapshot_data != NULL) {
		LOGW("raft: snapshot requested while one is still outstanding");
		return RAFT_BUSY;
	}
	rv = core_fsm_snapshot(n->engine, &data, &len);
	if (rv == ERR_BUSY)
		return RAFT_BUSY;
	if (rv != 0) {
		LOGW("raft: snapshot at index %llu failed: %s", raft_last_applied(&n->raft),
		     err_str(rv));
		return rv == ERR_NOMEM ? RAFT_NOMEM : RAFT_IOERR;
	}
	arr = raft_malloc(sizeof *arr);
	if (arr == NULL) {
		free(data);
		return RAFT_NOMEM;
	}
	arr[0].base = data;
	arr[0].len = len;
	*bufs = arr;
	*n_bufs = 1;
	n->snapshot_data = data;
	LOGD("raft: snapshot at index %llu, %zu bytes", raft_last_applied(&n->raft), len);
	return 0;
}

static int fsm_snapshot_finalize(struct raft_fsm *fsm, struct raft_buffer *bufs[],
				 unsigned *n_bufs)
{
	struct rg_node *n = container_of(fsm, struct rg_node, fsm);

	if (*bufs != NULL) {
		if (*n_bufs != 1 || (*bufs)[0].base != n->snapshot_data)
			fail_stop("snapshot_finalize got buffers snapshot did not hand out");
		free((*bufs)[0].base);
		raft_free(*bufs);
	}
	*bufs = NULL;
	*n_bufs = 0;
	n->snapshot_data = NULL;
	return 0;
}

/* On success the buffer is ours (0.15's snapshotRestore and raft_start free only the
 * bufs array after a successful restore); on failure raft frees it. A restore that fails
 * while running (a snapshot installed from the leader: 0.15 has already replaced the
 * log on disk with it) would leave the state and the log disagreeing: fail-stop. At
 * start the error is returned and raft_start fails. */
static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
	struct rg_node *n = container_of(fsm, struct rg_node, fsm);
	int rv;

	rv = core_fsm_restore(n->engine, buf->base, buf->len);
	if (rv != 0) {
		if (n->raft_started)
			fail_stop("restore of an installed snapshot (%zu bytes) failed: %s",
				  buf->len, err_str(rv));
		LOGE("raft: restore of the stored snapshot (%zu bytes) failed: %s", buf->len,
		     err_str(rv));
		return rv == ERR_NOMEM ? RAFT_NOMEM : RAFT_CORRUPT;
	}
	LOGI("raft: restored a snapshot of %zu bytes", buf->len);
	raft_free(buf->base);
	buf->base = NULL;
	buf->len = 0;
	/* The snapshot's index is not given to restore: the next apply is not checked
	 * against the previous one. */
	n->fsm_last_index = 0;
	return 0;
}

/* ---- Fail-stop wrapper around local Raft writes ------------------------------------ */

/* 0.15 keeps leading after its own append fails and reuses the index (canonical/raft
 * #320): every local write error ends the process instead. RAFT_CANCELED while stopping
 * is the normal way raft_uv completes in-flight writes on close. */
static void check_entries(const struct raft_entry entries[], unsigned n)
{
	unsigned i;

	for (i = 0; i < n; i++)
		if (entries[i].type == RAFT_COMMAND && entries[i].buf.len % 8 != 0)
			fail_stop("appending a command entry of %zu bytes, not a multiple of 8: "
				  "raft_uv 0.15 would corrupt the segment",
				  entries[i].buf.len);
}

static void append_cb(struct raft_io_append *req, int status)
{
	struct rg_append *w = container_of(req, struct rg_append, req);
	struct rg_node *n = w->node;
	struct raft_io_append *orig = w->orig;
	raft_io_append_cb cb = w->orig_cb;

#ifdef PQ_MUTANT_IGNORE_WRITE_ERRORS
	/* Deliberately broken build (meson -Dmutant=ignore_write_errors) for the fault
	 * harness: a failed append is reported as written, so a follower acknowledges
	 * entries it never stored. */
	if (status != 0 && !(status == RAFT_CANCELED && n->state == RG_STOPPING)) {
		LOGW("raft: mutant: ignoring a failed append: %s", raft_code_name(status));
		status = 0;
	}
#endif
	if (status != 0 && !(status == RAFT_CANCELED && n->state == RG_STOPPING))
		fail_stop("raft log append of %u entries failed: %s (%s)", w->n_entries,
			  raft_code_name(status), n->io.errmsg);
	free(w);
	cb(orig, status);
}

static int wrap_append(struct raft_io *io, struct raft_io_append *req,
		       const struct raft_entry entries[], unsigned n_entries, raft_io_append_cb cb)
{
	struct rg_node *n = container_of(io, struct rg_node, io);
	struct rg_append *w;
	int rv;

	check_entries(entries, n_entries);
	w = malloc(sizeof *w);
	if (w == NULL)
		fail_stop("raft log append: out of memory");
	w->node = n;
	w->orig = req;
	w->orig_cb = cb;
	w->n_entries = n_entries;
	req->cb = cb; /* what an implementation does with the request it is given */
	rv = n->io_append(io, &w->req, entries, n_entries, append_cb);
	if (rv != 0)
		fail_stop("raft log append of %u entries failed to start: %s (%s)", n_entries,
			  raft_code_name(rv), io->errmsg);
	return 0;
}

static int wrap_truncate(struct raft_io *io, raft_index index)
{
	struct rg_node *n = container_of(io, struct rg_node, io);
	int rv;

	LOGI("raft: truncating the local log from index %llu", index);
	rv = n->io_truncate(io, index);
	if (rv != 0)
		fail_stop("raft log truncate at index %llu failed: %s (%s)", index,
			  raft_code_name(rv), io->errmsg);
	return 0;
}

static void snapshot_put_cb(struct raft_io_snapshot_put *req, int status)
{
	struct rg_snapshot_put *w = container_of(req, struct rg_snapshot_put, req);
	struct rg_node *n = w->node;
	struct raft_io_snapshot_put *orig = w->orig;
	raft_io_snapshot_put_cb cb = w->orig_cb;

	if (status != 0 && !(status == RAFT_CANCELED && n->state == RG_STOPPING))
		fail_stop("storing the snapshot at index %llu failed: %s (%s)", w->index,
			  raft_code_name(status), n->io.errmsg);
	free(w);
	cb(orig, status);
}

static int wrap_snapshot_put(struct raft_io *io, unsigned trailing,
			     struct raft_io_snapshot_put *req, const struct raft_snapshot *snapshot,
			     raft_io_snapshot_put_cb cb)
{
	struct rg_node *n = container_of(io, struct rg_node, io);
	struct rg_snapshot_put *w;
	int rv;

	w = malloc(sizeof *w);
	if (w == NULL)
		fail_stop("storing a snapshot: out of memory");
	w->node = n;
	w->orig = req;
	w->orig_cb = cb;
	w->index = snapshot->index;
	req->cb = cb;
	rv = n->io_snapshot_put(io, trailing, &w->req, snapshot, snapshot_put_cb);
	if (rv != 0)
		fail_stop("storing the snapshot at index %llu failed to start: %s (%s)",
			  snapshot->index, raft_code_name(rv), io->errmsg);
	return 0;
}

#ifdef PQ_MUTANT_SKIP_PERSIST_TERM
/* Deliberately broken build (meson -Dmutant=skip_persist_term) for the fault harness:
 * term and vote are never written, so a restarted node may vote twice in a term. */
static int skip_set_term(struct raft_io *io, raft_term term)
{
	return 0;
}

static int skip_set_vote(struct raft_io *io, raft_id server_id)
{
	return 0;
}
#endif

/* Term and vote go to the metadata file synchronously. When that write fails, 0.15 moves
 * the node to RAFT_UNAVAILABLE: it then sits there answering nothing and logging nothing
 * (found by the fault harness: ENOSPC on a follower's metadata write while it voted).
 * Fail-stop instead, like every other local write error. */
static int wrap_set_term(struct raft_io *io, raft_term term)
{
	struct rg_node *n = container_of(io, struct rg_node, io);
	int rv = n->io_set_term(io, term);

	if (rv != 0)
		fail_stop("persisting term %llu failed: %s (%s)", (unsigned long long)term,
			  raft_code_name(rv), n->io.errmsg);
	return 0;
}

static int wrap_set_vote(struct raft_io *io, raft_id server_id)
{
	struct rg_node *n = container_of(io, struct rg_node, io);
	int rv = n->io_set_vote(io, server_id);

	if (rv != 0)
		fail_stop("persisting the vote for node %llu failed: %s (%s)",
			  (unsigned long long)server_id, raft_code_name(rv), n->io.errmsg);
	return 0;
}

static void install_fail_stop(struct rg_node *n)
{
#ifdef PQ_MUTANT_SKIP_PERSIST_TERM
	n->io.set_term = skip_set_term;
	n->io.set_vote = skip_set_vote;
#endif
	n->io_append = n->io.append;
	n->io_truncate = n->io.truncate;
	n->io_snapshot_put = n->io.snapshot_put;
	n->io_set_term = n->io.set_term;
	n->io_set_vote = n->io.set_vote;
	n->io.append = wrap_append;
	n->io.truncate = wrap_truncate;
	n->io.snapshot_put = wrap_snapshot_put;
	n->io.set_term = wrap_set_term;
	n->io.set_vote = wrap_set_vote;
}

/* ---- Leadership monitor ---------------------------------------------------------------- */

static void lead_barrier_cb(struct raft_barrier *req, int status)
{
	struct rg_lead_barrier *lb = container_of(req, struct rg_lead_barrier, req);
	struct rg_node *n = lb->node;
	raft_term term = lb->term;
	raft_index index = req->index;

	free(lb);
	if (n->barrier_inflight && n->leader_term == term)
		n->barrier_inflight = false;
	if (status != 0) {
		LOGI("raft: post-election barrier of term %llu failed: %s", term,
		     raft_code_name(status));
		return;
	}
	if (n->state != RG_RUNNING || !n->leader || n->ready || n->leader_term != term ||
	    raft_state(&n->raft) != RAFT_LEADER || n->raft.current_term != term)
		return;
	note_applied(n, index);
	n->ready = true;
	LOGI("raft: leader ready in term %llu: barrier at index %llu applied", term, index);
	core_engine_set_leader(n->engine, true, true);
}

/* Submit the post-election barrier: 0.15 may count replicas to commit entries of earlier
 * terms and appends nothing on election, so no statement may run before an entry of our
 * own term is committed and everything before it applied. */
static void submit_lead_barrier(struct rg_node *n)
{
	struct rg_lead_barrier *lb;
	int rv;

	lb = malloc(sizeof *lb);
	if (lb == NULL) {
		rv = RAFT_NOMEM;
		goto err;
	}
	lb->node = n;
	lb->term = n->leader_term;
	rv = raft_barrier(&n->raft, &lb->req, lead_barrier_cb);
	if (rv != 0) {
		free(lb);
		goto err;
	}
	n->barrier_inflight = true;
	return;
err:
	/* Retried at the next loop iteration while we are still leader of this term. */
	if (!n->barrier_warned)
		LOGW("raft: post-election barrier of term %llu not submitted: %s (retrying)",
		     n->leader_term, raft_code_name(rv));
	n->barrier_warned = true;
}

/* Promote one spare (a node that joined) to voter, or to standby when RG_MAX_VOTERS vote
 * already; or a standby to voter when voters are missing. 0.15's raft_assign to voter
 * first catches the node up in rounds, then appends the new configuration. The state to
 * act on is the configuration itself, so a new leader finishes what the old one began. */
static void maybe_promote(struct rg_node *n)
{
	const struct raft_configuration *c = &n->raft.configuration;
	unsigned i, voters = 0;
	int rv;

	if (n->raft.configuration_uncommitted_index != 0)
		return;
	for (i = 0; i < c->n; i++)
		if (c->servers[i].role == RAFT_VOTER)
			voters++;
	for (i = 0; i < c->n; i++) {
		const struct raft_server *srv = &c->servers[i];
		int role;

		if (srv->role == RAFT_SPARE)
			role = voters < RG_MAX_VOTERS ? RAFT_VOTER : RAFT_STANDBY;
		else if (srv->role == RAFT_STANDBY && voters < RG_MAX_VOTERS)
			role = RAFT_VOTER;
		else
			continue;
		n->change_req.data = n;
		rv = raft_assign(&n->raft, &n->change_req, srv->id, role, change_cb);
		if (rv != 0) {
			LOGD("raft: promoting node %llu: %s", (unsigned long long)srv->id,
			     raft_code_name(rv));
			n->promote_after = uv_now(n->loop) + RG_PROMOTE_RETRY_MS;
			return;
		}
		n->change_inflight = true;
		LOGI("raft: promoting node %llu to %s", (unsigned long long)srv->id,
		     role == RAFT_VOTER ? "voter" : "standby");
		return;
	}
}

static void monitor_cb(uv_prepare_t *h)
{
	struct rg_node *n = h->data;
	int state;
	raft_term term;

	if (n->state != RG_RUNNING)
		return;
	state = raft_state(&n->raft);
	term = n->raft.current_term;
	if (state != n->last_state) {
		LOGD("raft: %s -> %s in term %llu", state_name(n->last_state), state_name(state),
		     term);
		n->last_state = state;
	}
	if (n->leader && (state != RAFT_LEADER || term != n->leader_term)) {
		LOGI("raft: lost leadership of term %llu (now %s in term %llu)", n->leader_term,
		     state_name(state), term);
		n->leader = false;
		n->ready = false;
		n->barrier_inflight = false;
		core_engine_set_leader(n->engine, false, false);
		/* The engine may have called us: look again. */
		if (n->state != RG_RUNNING)
			return;
		state = raft_state(&n->raft);
		term = n->raft.current_term;
	}
	if (!n->leader && state == RAFT_LEADER) {
		LOGI("raft: became leader in term %llu (last index %llu, applied %llu)", term,
		     raft_last_index(&n->raft), raft_last_applied(&n->raft));
		n->leader = true;
		n->ready = false;
		n->leader_term = term;
		n->barrier_inflight = false;
		n->barrier_warned = false;
		core_engine_set_leader(n->engine, true, false);
		if (n->state != RG_RUNNING || raft_state(&n->raft) != RAFT_LEADER ||
		    n->raft.current_term != term)
			return; /* seen again at the next iteration */
	}
	if (n->leader && !n->ready && !n->barrier_inflight)
		submit_lead_barrier(n);
	if (n->leader && n->ready && !n->change_inflight && uv_now(n->loop) >= n->promote_after)
		maybe_promote(n);
}

/* ---- Pass-through transport ------------------------------------------------------- */

/* Around raft_uv_tcp, with the public API only: sets TCP_NODELAY on every connection
 * (0.15 never does; Nagle plus delayed ACKs stall pipelined appends for ~40 ms) and
 * strips the pg part from "RAFT|PG" addresses before connecting. The inner transport is
 * initialised with the full address, which is what it sends in its handshake, so a
 * follower learns its leader's client address too; it binds to the Raft part
 * (raft_uv_tcp_set_bind_address). */
struct rg_connect {
	struct raft_uv_connect req;
	struct raft_uv_connect *orig;
};

static struct rg_node *outer_node(struct raft_uv_transport *t)
{
	return container_of(t, struct rg_node, outer);
}

static void copy_errmsg(struct rg_node *n)
{
	memcpy(n->outer.errmsg, n->transport.errmsg, sizeof n->outer.errmsg);
}

static int tr_init(struct raft_uv_transport *t, raft_id id, const char *address)
{
	struct rg_node *n = outer_node(t);
	int rv = n->transport.init(&n->transport, id, address);

	if (rv != 0)
		copy_errmsg(n);
	return rv;
}

static void tr_accept(struct raft_uv_transport *inner, raft_id id, const char *address,
		      struct uv_stream_s *stream)
{
	struct rg_node *n = container_of(inner, struct rg_node, transport);

	uv_tcp_nodelay((uv_tcp_t *)stream, 1);
	n->accept_cb(&n->outer, id, address, stream);
}

static int tr_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
	struct rg_node *n = outer_node(t);
	int rv;

	n->accept_cb = cb;
	rv = n->transport.listen(&n->transport, tr_accept);
	if (rv != 0)
		copy_errmsg(n);
	return rv;
}

static void tr_connect_cb(struct raft_uv_connect *req, struct uv_stream_s *stream, int status)
{
	struct rg_connect *c = container_of(req, struct rg_connect, req);
	struct raft_uv_connect *orig = c->orig;

	free(c);
	if (status == 0)
		uv_tcp_nodelay((uv_tcp_t *)stream, 1);
	orig->cb(orig, stream, status);
}

static int tr_connect(struct raft_uv_transport *t, struct raft_uv_connect *req, raft_id id,
		      const char *address, raft_uv_connect_cb cb)
{
	struct rg_node *n = outer_node(t);
	char raft[CORE_ADDR_MAX], pg[CORE_ADDR_MAX];
	struct rg_connect *c;
	int rv;

	c = malloc(sizeof *c);
	if (c == NULL)
		return RAFT_NOMEM;
	c->orig = req;
	req->cb = cb;
	c->req.data = NULL;
	split_address(address, raft, pg);
	rv = n->transport.connect(&n->transport, &c->req, id, raft, tr_connect_cb);
	if (rv != 0) {
		free(c);
		copy_errmsg(n);
	}
	return rv;
}

static void tr_close_cb(struct raft_uv_transport *inner)
{
	struct rg_node *n = container_of(inner, struct rg_node, transport);

	if (n->outer_close_cb != NULL)
		n->outer_close_cb(&n->outer);
}

static void tr_close(struct raft_uv_transport *t, raft_uv_transport_close_cb cb)
{
	struct rg_node *n = outer_node(t);

	n->outer_close_cb = cb;
	n->transport.close(&n->transport, tr_close_cb);
}

static void outer_init(struct rg_node *n)
{
	memset(&n->outer, 0, sizeof n->outer);
	n->outer.impl = n;
	n->outer.init = tr_init;
	n->outer.listen = tr_listen;
	n->outer.connect = tr_connect;
	n->outer.close = tr_close;
}

/* ---- Start -------------------------------------------------------------------------- */

/* Bootstrap a one-voter configuration (this node) unless the directory holds raft state:
 * raft_bootstrap then fails with RAFT_CANTBOOTSTRAP, which means "existing". */
static int bootstrap_if_fresh(struct rg_node *n, char errmsg[ERR_MSG_LEN])
{
	struct raft_configuration conf;
	int rv;

	raft_configuration_init(&conf);
	rv = raft_configuration_add(&conf, n->id, n->address, RAFT_VOTER);
	if (rv != 0) {
		errf(errmsg, "raft: configuration: %s", raft_strerror(rv));
		raft_configuration_close(&conf);
		return rv == RAFT_NOMEM ? ERR_NOMEM : ERR_INVALID;
	}
	rv = raft_bootstrap(&n->raft, &conf);
	raft_configuration_close(&conf);
	if (rv == RAFT_CANTBOOTSTRAP) {
		LOGI("raft: existing state in %s, restarting from it", n->raft_dir);
		return 0;
	}
	if (rv != 0) {
		errf(errmsg, "raft: bootstrap: %s (%s)", raft_why(n, rv), raft_code_name(rv));
		return ERR_IO;
	}
	LOGI("raft: bootstrapped a one-node cluster: node %" PRIu64 " at %s", n->id,
	     n->raft_address);
	return 0;
}

/* Transport, storage, FSM and raft_init with our settings; nothing started. */
static int setup_raft(struct rg_node *n, char errmsg[ERR_MSG_LEN])
{
	int rv;

	uv_prepare_init(n->loop, &n->monitor);
	n->monitor.data = n;
	n->monitor_inited = true;

	rv = raft_uv_tcp_init(&n->transport, n->loop);
	if (rv != 0) {
		errf(errmsg, "raft: tcp transport: %s", raft_why(n, rv));
		return rv == RAFT_NOMEM ? ERR_NOMEM : ERR_IO;
	}
	n->transport_inited = true;
	rv = raft_uv_tcp_set_bind_address(&n->transport, n->raft_address);
	if (rv != 0) {
		errf(errmsg, "raft: bind address %s: %s", n->raft_address, raft_strerror(rv));
		return ERR_INVALID;
	}
	outer_init(n);

	rv = raft_uv_init(&n->io, n->loop, n->raft_dir, &n->outer);
	if (rv != 0) {
		errf(errmsg, "raft: storage in %s: %s", n->raft_dir, raft_why(n, rv));
		return rv == RAFT_NOMEM ? ERR_NOMEM : ERR_IO;
	}
	n->io_inited = true;
	raft_uv_set_auto_recovery(&n->io, false);
	raft_uv_set_segment_size(&n->io, RG_SEGMENT_SIZE);
	install_fail_stop(n);

	n->fsm.version = 2;
	n->fsm.data = n;
	n->fsm.apply = fsm_apply;
	n->fsm.snapshot = fsm_snapshot;
	n->fsm.snapshot_finalize = fsm_snapshot_finalize;
	n->fsm.restore = fsm_restore;
	n->fsm.snapshot_async = NULL;

	rv = raft_init(&n->raft, &n->io, &n->fsm, n->id, n->address);
	if (rv != 0) {
		errf(errmsg, "raft: init: %s (%s)", raft_why(n, rv), raft_code_name(rv));
		return rv == RAFT_NOMEM ? ERR_NOMEM : ERR_IO;
	}
	n->raft_inited = true;
	n->raft.data = n;
	raft_set_election_timeout(&n->raft, n->election_timeout_ms);
	raft_set_heartbeat_timeout(&n->raft, n->election_timeout_ms / 10);
	raft_set_pre_vote(&n->raft, true);
	raft_set_snapshot_threshold(&n->raft, n->snapshot_threshold);
	raft_set_snapshot_trailing(&n->raft, n->snapshot_trailing);
	/* A promotion to voter catches the node up in rounds; bound how long a dead or
	 * slow spare can hold the one membership change c-raft allows at a time. */
	raft_set_max_catch_up_rounds(&n->raft, 10);
	/* 0.15 drops an InstallSnapshot that arrives while the follower takes its own
	 * snapshot, without a reply; the leader resends only after this timeout (default
	 * 30 s, seen as a 30 s catch-up stall). The whole snapshot is one message here. */
	raft_set_install_snapshot_timeout(&n->raft, n->election_timeout_ms * 5 > 5000
							    ? n->election_timeout_ms * 5
							    : 5000);
	raft_set_max_catch_up_round_duration(&n->raft, n->election_timeout_ms);
	return 0;
}

/* Warn when this node's addresses in the replicated configuration differ from the
 * command line: the other nodes keep using the configured ones. */
static void check_own_address(struct rg_node *n)
{
	const struct raft_server *srv = find_server(n, n->id);

	if (srv != NULL && strcmp(srv->address, n->address) != 0)
		LOGW("raft: this node is in the cluster configuration as \"%s\", not \"%s\": the "
		     "other nodes use the configured addresses (remove the node and join it "
		     "again to change them)",
		     srv->address, n->address);
}

int rg_node_start(struct rg_node *n, struct core_engine *engine, char errmsg[ERR_MSG_LEN])
{
	int rv;

	errmsg[0] = '\0';
	if (n->state != RG_CREATED) {
		errf(errmsg, "raft: node already started");
		return ERR_INVALID;
	}
	n->engine = engine;
	n->state = RG_FAILED; /* until the end of this function */

	rv = setup_raft(n, errmsg);
	if (rv != 0)
		return rv;
	if (!n->join) {
		rv = bootstrap_if_fresh(n, errmsg);
		if (rv != 0)
			return rv;
	}

	rv = raft_start(&n->raft);
	if (rv != 0) {
		errf(errmsg, "raft: start on %s: %s (%s)", n->raft_address, raft_why(n, rv),
		     raft_code_name(rv));
		return rv == RAFT_NOMEM ? ERR_NOMEM : ERR_IO;
	}
	n->raft_started = true;
	n->state = RG_RUNNING;
	n->last_state = RAFT_UNAVAILABLE;
	check_own_address(n);
	LOGI("raft: started node %" PRIu64 " (election timeout %u ms, heartbeat %u ms, "
	     "snapshot threshold %u, trailing %u, segments %u MiB); last index %llu, %u "
	     "server(s) in the configuration",
	     n->id, n->election_timeout_ms, n->election_timeout_ms / 10, n->snapshot_threshold,
	     n->snapshot_trailing, RG_SEGMENT_SIZE >> 20, raft_last_index(&n->raft),
	     n->raft.configuration.n);
	uv_prepare_start(&n->monitor, monitor_cb);
	return 0;
}

bool rg_node_has_configuration(struct rg_node *n)
{
	return n->raft_started && n->raft.configuration.n > 0;
}

void rg_node_handover(struct rg_node *n, rg_handover_cb cb)
{
	int rv;

	if (!leading(n)) {
		cb(n);
		return;
	}
	if (n->transfer_inflight) {
		n->handover_cb = cb; /* a transfer is already under way */
		return;
	}
	n->transfer_req.data = n;
	rv = raft_transfer(&n->raft, &n->transfer_req, 0, transfer_cb);
	if (rv != 0) {
		LOGI("raft: no leadership hand-over before stopping: %s", raft_code_name(rv));
		cb(n);
		return;
	}
	LOGI("raft: handing leadership over to node %llu before stopping",
	     (unsigned long long)n->transfer_req.id);
	n->transfer_inflight = true;
	n->handover_cb = cb;
}

/* ---- Stop and destroy ------------------------------------------------------------- */

static void maybe_stopped(struct rg_node *n)
{
	if (n->state != RG_STOPPING || !n->raft_closed || !n->monitor_closed)
		return;
	n->state = RG_STOPPED;
	LOGI("raft: node %" PRIu64 " stopped", n->id);
	if (n->stop_cb != NULL)
		n->stop_cb(n);
}

/* raft_close has closed raft_uv's handles and the transport's (uvClose waits for them);
 * what is left is the memory of io and transport, which 0.15 releases only through
 * raft_uv_close / raft_uv_tcp_close. */
static void raft_closed_cb(struct raft *r)
{
	struct rg_node *n = container_of(r, struct rg_node, raft);

	raft_uv_close(&n->io);
	n->io_inited = false;
	raft_uv_tcp_close(&n->transport);
	n->transport_inited = false;
	n->raft_closed = true;
	maybe_stopped(n);
}

static void close_raft(struct rg_node *n)
{
	if (n->raft_inited) {
		/* Pending requests complete with RAFT_LEADERSHIPLOST from inside raft_close;
		 * in-flight writes with RAFT_CANCELED, which the wrappers let through now. */
		raft_close(&n->raft, raft_closed_cb);
		return;
	}
	/* raft_init never succeeded: only memory to release. */
	if (n->io_inited) {
		raft_uv_close(&n->io);
		n->io_inited = false;
	}
	if (n->transport_inited) {
		raft_uv_tcp_close(&n->transport);
		n->transport_inited = false;
	}
	n->raft_closed = true;
	maybe_stopped(n);
}

/* raft_close runs from here, in the loop's close phase, never from the caller's stack:
 * rg_node_stop may be called from inside a raft callback (an apply, a request
 * callback), and 0.15 crashes when closed from within the completion of a log write
 * (uvAliveSegmentWriteCb finalizes the segment that uvAppendClose has just finalized:
 * the writer is closed twice and libuv asserts in uv_poll_stop). */
static void monitor_close_cb(uv_handle_t *h)
{
	struct rg_node *n = h->data;

	n->monitor_closed = true;
	close_raft(n);
}

void rg_node_stop(struct rg_node *n, rg_stop_cb cb)
{
	if (n->state == RG_STOPPING || n->state == RG_STOPPED) {
		LOGW("raft: node already stopping");
		return;
	}
	if (n->state == RG_CREATED) {
		/* Never started: nothing to close. */
		n->state = RG_STOPPED;
		if (cb != NULL)
			cb(n);
		return;
	}
	LOGI("raft: stopping node %" PRIu64, n->id);
	n->state = RG_STOPPING;
	n->stop_cb = cb;
	if (n->leader) {
		n->leader = false;
		n->ready = false;
		LOGI("raft: giving up leadership of term %llu (stopping)", n->leader_term);
		core_engine_set_leader(n->engine, false, false);
	}
	uv_prepare_stop(&n->monitor);
	uv_close((uv_handle_t *)&n->monitor, monitor_close_cb);
}

void rg_node_destroy(struct rg_node *n)
{
	if (n == NULL)
		return;
	if (n->state != RG_CREATED && n->state != RG_STOPPED)
		fail_stop("rg_node_destroy on a node that is not stopped (state %d)", n->state);
	free(n->data_dir);
	free(n->raft_dir);
	free(n->address);
	free(n->raft_address);
	free(n->pg_address);
	free(n);
}

/* ---- Offline recovery ------------------------------------------------------------------ */

static void recover_stopped(struct rg_node *n)
{
	(void)n;
}

int rg_recover(const char *data_dir, const char *raft_address, const char *pg_address,
	       char errmsg[ERR_MSG_LEN])
{
	struct raft_configuration conf;
	struct rg_config cfg;
	struct rg_node *n = NULL;
	uv_loop_t loop;
	char *raft_dir, *id_path;
	bool has_state, has_id;
	int rv;

	errmsg[0] = '\0';
	raft_dir = join_path(data_dir, RG_RAFT_DIR);
	id_path = join_path(data_dir, RG_NODE_ID_FILE);
	if (raft_dir == NULL || id_path == NULL) {
		free(raft_dir);
		free(id_path);
		errf(errmsg, "out of memory");
		return ERR_NOMEM;
	}
	has_state = dir_has_entries(raft_dir);
	has_id = access(id_path, F_OK) == 0;
	free(raft_dir);
	free(id_path);
	if (!has_state || !has_id) {
		errf(errmsg, "%s holds no raft state of a pqlite node: nothing to recover",
		     data_dir);
		return ERR_INVALID;
	}
	if (uv_loop_init(&loop) != 0) {
		errf(errmsg, "cannot create an event loop");
		return ERR_NOMEM;
	}
	rg_config_defaults(&cfg);
	cfg.data_dir = data_dir;
	cfg.raft_address = raft_address;
	cfg.pg_address = pg_address;
	rv = rg_node_create(&loop, &cfg, &n, errmsg);
	if (rv != 0) {
		uv_loop_close(&loop);
		return rv;
	}
	n->state = RG_FAILED; /* set up, never started: rg_node_stop closes it */
	rv = setup_raft(n, errmsg);
	if (rv == 0) {
		raft_configuration_init(&conf);
		rv = raft_configuration_add(&conf, n->id, n->address, RAFT_VOTER);
		if (rv == 0)
			rv = raft_recover(&n->raft, &conf);
		raft_configuration_close(&conf);
		if (rv != 0) {
			errf(errmsg, "raft: recover: %s (%s)", raft_why(n, rv), raft_code_name(rv));
			rv = ERR_IO;
		} else {
			LOGI("raft: recovered: node %" PRIu64 " (%s) is now the only voter", n->id,
			     n->address);
		}
	}
	rg_node_stop(n, recover_stopped);
	uv_run(&loop, UV_RUN_DEFAULT);
	rg_node_destroy(n);
	uv_loop_close(&loop);
	return rv;
}

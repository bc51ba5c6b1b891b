/* c-raft 0.15 + raft_uv behind core/replication.h: storage under the data directory, TCP
 * transport, bootstrap / restart, leadership monitor, barrier on election, fail-stop
 * wrapper around local raft writes. The only module that includes raft.h. */
#ifndef PQ_RAFT_GLUE_H
#define PQ_RAFT_GLUE_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "../core/core.h"

struct rg_config {
	const char *data_dir;      /* must exist; raft files go to DATA_DIR/raft */
	const char *raft_address;  /* "a.b.c.d:port" (IPv4 literal) */
	const char *pg_address;    /* this node's client address, reported as leader address */
	unsigned snapshot_threshold; /* entries between snapshots, default 1024 (0: default) */
	unsigned snapshot_trailing;  /* entries kept after a snapshot, default 8192 (0: default);
				      * must be >= snapshot_threshold */
	unsigned election_timeout_ms;/* default 2000; heartbeat is a tenth */
	bool join;                   /* with a fresh directory: start with no configuration
				      * and wait to be added (pqlite_join through a member)
				      * instead of bootstrapping a new cluster */
};

void rg_config_defaults(struct rg_config *c);

struct rg_node;

/* Allocate a node and read or create its identity (DATA_DIR/node-id, generated once).
 * No I/O on the loop yet. Returns 0 or ERR_IO/ERR_NOMEM/ERR_INVALID with errmsg filled. */
int rg_node_create(uv_loop_t *loop, const struct rg_config *cfg, struct rg_node **out,
		   char errmsg[ERR_MSG_LEN]);

/* The replication port the engine must be created with. Valid until rg_node_destroy. */
struct core_replication *rg_node_replication(struct rg_node *n);

/* Start Raft with the engine as FSM: bootstrap a one-node cluster when the directory is
 * fresh, else restart from log and snapshots; start the leadership monitor (which calls
 * core_engine_set_leader, possibly from inside Raft's apply loop). Returns 0 or an error
 * with errmsg filled; after an error the caller still calls rg_node_stop and waits for
 * its callback before rg_node_destroy. Until started (and after stopping), propose and
 * barrier return ERR_NOTLEADER. */
int rg_node_start(struct rg_node *n, struct core_engine *engine, char errmsg[ERR_MSG_LEN]);

/* Stop asynchronously: raft_close (deferred to a later loop turn, never from the caller's
 * stack: c-raft 0.15 crashes when closed from inside a write completion), then the io and
 * transport. cb fires once every handle is closed (synchronously for a node never
 * started); then rg_node_destroy may be called. Pending proposals complete with
 * ERR_SHUTDOWN or ERR_LEADERSHIP_LOST. */
typedef void (*rg_stop_cb)(struct rg_node *n);
void rg_node_stop(struct rg_node *n, rg_stop_cb cb);
void rg_node_destroy(struct rg_node *n);

uint64_t rg_node_id(struct rg_node *n);

/* True when the node has raft state: it was bootstrapped or has been added to a
 * cluster (valid after rg_node_start). A joining node without it must be added. */
bool rg_node_has_configuration(struct rg_node *n);

/* Before stopping a leader: transfer leadership to another voter and call cb once the
 * transfer completed or failed (at most about an election timeout later), or right away
 * (synchronously) when this node does not lead or has no voter to hand over to. */
typedef void (*rg_handover_cb)(struct rg_node *n);
void rg_node_handover(struct rg_node *n, rg_handover_cb cb);

/* Offline recovery from a lost quorum (pqlite recover): on a stopped node's data
 * directory, append a configuration with this node as the only voter, so it can start
 * alone; see docs/cluster.md. raft_address and pg_address are this node's addresses.
 * Returns 0 or an error with errmsg filled. */
int rg_recover(const char *data_dir, const char *raft_address, const char *pg_address,
	       char errmsg[ERR_MSG_LEN]);

#endif

/* The port the core needs from consensus. core/ owns this interface; raft_glue/ fills it
 * with c-raft, unit tests with an in-process stand-in. Everything runs on one thread. */
#ifndef PQ_CORE_REPLICATION_H
#define PQ_CORE_REPLICATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct core_replication;

/* Cluster membership as the replicator sees it (the pqlite_cluster relation). */
enum core_role { CORE_ROLE_VOTER, CORE_ROLE_STANDBY, CORE_ROLE_SPARE };

#define CORE_ADDR_MAX 64 /* "255.255.255.255:65535" fits with room to spare */

struct core_member {
	uint64_t id;
	char raft_address[CORE_ADDR_MAX];
	char pg_address[CORE_ADDR_MAX];
	enum core_role role;
	bool is_leader;
	int64_t applied_index; /* -1 when unknown */
	int64_t lag;           /* entries behind the leader's last index, -1 when unknown */
};

/* Membership and leadership changes, see core_replication.change. */
enum core_change_op { CORE_CHANGE_JOIN, CORE_CHANGE_REMOVE, CORE_CHANGE_TRANSFER };

/* Called once a proposal or barrier is done. status is 0 when the entry was committed and
 * applied locally (core_fsm_apply already ran for it), ERR_LEADERSHIP_LOST when the outcome
 * is unknown, ERR_SHUTDOWN on close, ERR_IO on a local write error. May be called
 * synchronously from inside another replication call (c-raft fires every pending callback
 * on step-down), never from inside the propose/barrier call that registered it. */
typedef void (*core_repl_cb)(void *arg, int status);

struct core_replication {
	void *data; /* the implementation's own */

	/* Allocate a buffer that `propose` can take ownership of (raft_malloc for c-raft). */
	void *(*alloc)(struct core_replication *r, size_t len);
	void (*free)(struct core_replication *r, void *buf);

	/* Propose one command. `len` is a multiple of 8 and `buf` came from `alloc`.
	 * On 0 the buffer is owned by the replicator, *index is the log index the entry will
	 * have, and cb fires exactly once later. On error (ERR_NOTLEADER: nothing proposed,
	 * safe to retry; ERR_NOMEM; ERR_IO) the caller keeps the buffer and cb never fires. */
	int (*propose)(struct core_replication *r, void *buf, size_t len, uint64_t *index,
		       core_repl_cb cb, void *arg);

	/* Append a barrier; cb fires once every entry before it is applied.
	 * Errors as for propose. */
	int (*barrier)(struct core_replication *r, core_repl_cb cb, void *arg);

	/* True when this node is the leader. */
	bool (*is_leader)(struct core_replication *r);

	/* True when the local log holds entries not yet applied (a barrier is needed before
	 * a statement can be trusted to see every committed write). */
	bool (*needs_barrier)(struct core_replication *r);

	/* Client-facing (PostgreSQL) address of the current leader, or NULL if unknown. */
	const char *(*leader_address)(struct core_replication *r);

	/* Optional (NULL: a one-node stand-in). Copy up to `max` members into out and
	 * return how many there are (may exceed max: call again with more room). */
	unsigned (*members)(struct core_replication *r, struct core_member *out, unsigned max);

	/* Optional. Submit a change on the leader; it completes asynchronously (the caller
	 * polls `members`). JOIN adds node `id` with the two addresses as a spare (the
	 * replicator promotes it once it caught up) and is idempotent for the same id and
	 * addresses; *role reports the node's role after the call. REMOVE removes `id`.
	 * TRANSFER hands leadership to `id` (0: any voter) and sets *id_out to the target.
	 * Returns 0, ERR_NOTLEADER, ERR_NOTFOUND (no such node / no voter to transfer to),
	 * ERR_EXISTS (an address belongs to another id), ERR_INVALID (bad argument),
	 * ERR_INUSE (the leader cannot remove itself), ERR_BUSY (another change is in
	 * progress), ERR_NOMEM. errmsg says why. */
	int (*change)(struct core_replication *r, enum core_change_op op, uint64_t id,
		      const char *raft_address, const char *pg_address, enum core_role *role,
		      uint64_t *id_out, char errmsg[256]);
};

#endif

/* The port the core needs from consensus. core/ owns this interface; raft_glue/ fills it
 * with c-raft, unit tests with an in-process stand-in. Everything runs on one thread. */
#ifndef PQ_CORE_REPLICATION_H
#define PQ_CORE_REPLICATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct core_replication;

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
};

#endif

/* A stand-in for core/replication.h in unit tests: proposals and barriers queue up in order
 * and the test decides when they commit (fake_repl_run: core_fsm_apply on the engine, and
 * on a mirror engine playing a follower, then the callback) or fail (fake_repl_lose_leadership:
 * the outcome-unknown callbacks of a step-down). Include after cmocka.h. */
#ifndef PQ_TESTS_FAKE_REPL_H
#define PQ_TESTS_FAKE_REPL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

#define FAKE_REPL_MAX 256

struct fake_entry {
	void *buf;
	size_t len;
	uint64_t index;
	core_repl_cb cb;
	void *arg;
	bool barrier;
};

struct fake_repl {
	struct core_replication r;
	struct core_engine *engine; /* FSM to apply to */
	struct core_engine *mirror; /* a follower's FSM, applied too (may be NULL) */
	struct fake_entry q[FAKE_REPL_MAX];
	int n;
	uint64_t last_index;
	bool leader;
	bool barriers_fail;         /* barrier() refuses (a node that cannot confirm) */
	int n_barriers;             /* barriers issued */
	const char *leader_addr;
};

static inline void *fake_repl_alloc(struct core_replication *r, size_t len)
{
	return malloc(len);
}

static inline void fake_repl_free(struct core_replication *r, void *b)
{
	free(b);
}

static inline int fake_repl_propose(struct core_replication *r, void *buf, size_t len,
				    uint64_t *index, core_repl_cb cb, void *arg)
{
	struct fake_repl *f = (struct fake_repl *)r;
	if (!f->leader)
		return ERR_NOTLEADER;
	assert_true(len % 8 == 0);
	assert_true(f->n < FAKE_REPL_MAX);
	f->q[f->n++] = (struct fake_entry){buf, len, ++f->last_index, cb, arg, false};
	*index = f->last_index;
	return 0;
}

static inline int fake_repl_barrier(struct core_replication *r, core_repl_cb cb, void *arg)
{
	struct fake_repl *f = (struct fake_repl *)r;
	if (!f->leader || f->barriers_fail)
		return ERR_NOTLEADER;
	assert_true(f->n < FAKE_REPL_MAX);
	f->n_barriers++;
	f->q[f->n++] = (struct fake_entry){NULL, 0, ++f->last_index, cb, arg, true};
	return 0;
}

static inline bool fake_repl_is_leader(struct core_replication *r)
{
	return ((struct fake_repl *)r)->leader;
}

static inline bool fake_repl_needs_barrier(struct core_replication *r)
{
	return ((struct fake_repl *)r)->n > 0;
}

static inline const char *fake_repl_leader_address(struct core_replication *r)
{
	return ((struct fake_repl *)r)->leader_addr;
}

/* A leader with nothing queued; set engine (and mirror) before running. */
static inline void fake_repl_init(struct fake_repl *f)
{
	memset(f, 0, sizeof *f);
	f->r.alloc = fake_repl_alloc;
	f->r.free = fake_repl_free;
	f->r.propose = fake_repl_propose;
	f->r.barrier = fake_repl_barrier;
	f->r.is_leader = fake_repl_is_leader;
	f->r.needs_barrier = fake_repl_needs_barrier;
	f->r.leader_address = fake_repl_leader_address;
	f->leader = true;
	f->leader_addr = "127.0.0.1:5433";
}

/* Commit and apply every queued entry in order, including those queued meanwhile. */
static inline void fake_repl_run(struct fake_repl *f)
{
	while (f->n > 0) {
		struct fake_entry e = f->q[0];
		memmove(f->q, f->q + 1, sizeof f->q[0] * (size_t)(f->n - 1));
		f->n--;
		if (!e.barrier) {
			core_fsm_apply(f->engine, e.index, e.buf, e.len);
			if (f->mirror != NULL)
				core_fsm_apply(f->mirror, e.index, e.buf, e.len);
			free(e.buf);
		}
		e.cb(e.arg, 0);
	}
}

/* Step down: every queued entry's outcome becomes unknown. The engine is not told (the
 * caller calls core_engine_set_leader when the test wants it). */
static inline void fake_repl_lose_leadership(struct fake_repl *f)
{
	f->leader = false;
	while (f->n > 0) {
		struct fake_entry e = f->q[--f->n];
		free(e.buf);
		e.cb(e.arg, ERR_LEADERSHIP_LOST);
	}
}

#endif

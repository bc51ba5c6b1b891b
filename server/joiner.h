/* The join procedure of a new node (--join): ask a running cluster, over the PostgreSQL
 * protocol, to add this node, and wait until it is a voter or a standby. Blocking; the
 * server runs it on a background thread. */
#ifndef PQ_SERVER_JOINER_H
#define PQ_SERVER_JOINER_H

#include <stdint.h>

struct joiner_args {
	const char *join_address; /* PostgreSQL address of any member, "a.b.c.d:port" */
	uint64_t id;              /* this node's id, 1..INT64_MAX */
	const char *raft_address; /* this node's Raft address */
	const char *pg_address;   /* this node's PostgreSQL address */
	const volatile int *stop; /* non-zero: give up and return quickly (NULL: never) */
};

/* Join the cluster reachable at a->join_address. Loops until this node's row in
 * pqlite_cluster says 'voter' or 'standby': connects (following "leader: H:P" hints, and
 * going back to join_address when the leader cannot be reached), reads the role, calls
 * pqlite_join when there is no row (and again when the node stays 'spare' for more than
 * about 10 s), backing off 250-1000 ms between failed attempts and checking *a->stop at
 * least every 200 ms. Progress is logged with LOGI.
 *
 * Returns 0 once joined; ERR_SHUTDOWN when *stop became non-zero; ERR_INVALID (with the
 * reason in errmsg) for bad arguments, or when the cluster refuses for good: 42710 (an
 * address is used by another node id), 22023 (bad argument), or any other unexpected
 * server error five times in a row. Connection failures and 25006, 57P03, 55006, 40003,
 * 57P01 are retried forever. errmsg is written only on failure. a's strings are only
 * read during the call. */
int joiner_run(const struct joiner_args *a, char errmsg[256]);

#endif

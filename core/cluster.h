/* Internal to core/: the cluster relation and functions (cluster.c), and the two engine
 * accessors they need. */
#ifndef PQ_CORE_CLUSTER_H
#define PQ_CORE_CLUSTER_H

#include <sqlite3.h>

#include "core.h"

/* Register pqlite_cluster, pqlite_join, pqlite_remove and pqlite_transfer on conn. */
int core__cluster_register(sqlite3 *conn, struct core_engine *e);

struct core_replication *core__engine_repl(struct core_engine *e);

/* Record the SQLSTATE of the error a cluster function is about to raise; the engine
 * attaches it to the session error of the failing statement. */
void core__engine_set_fn_sqlstate(struct core_engine *e, const char *sqlstate);

#endif

/* The cluster administration subcommands of the pqlite binary: status, transfer, remove.
 * They talk to a running node over the PostgreSQL protocol (pgwire/client.h). */
#ifndef PQ_SERVER_CLI_H
#define PQ_SERVER_CLI_H

#include <stdbool.h>
#include <stdio.h>

/* True when name is a subcommand cli_main handles ("status", "remove", "transfer"). */
bool cli_is_command(const char *name);

/* Run the subcommand argv[0] ("status", "remove" or "transfer") with its arguments
 * argv[1..argc). Prints results on stdout and errors on stderr. Returns the process exit
 * code: 0 success, 1 failure (a message on stderr), 2 usage error. Does not touch getopt's
 * global state. SIGPIPE should be ignored by the caller (sockets use MSG_NOSIGNAL anyway).
 *
 *   pqlite status   [--host H:P] [--timeout MS]
 *   pqlite transfer [--host H:P] [--timeout MS] [ID]
 *   pqlite remove   [--host H:P] [--timeout MS] ID
 *
 * --host defaults to 127.0.0.1:5433, --timeout (whole command) to 10000 ms. */
int cli_main(int argc, char **argv);

/* cli_main writing to the given streams instead of stdout and stderr (tests). */
int cli_run(int argc, char **argv, FILE *out, FILE *err);

#endif

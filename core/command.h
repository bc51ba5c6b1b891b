/* Raft entry formats of pqlite (byte by byte in docs/formats.md). Little-endian, format
 * version first, every encoded command padded with zeros to a multiple of 8 bytes. */
#ifndef PQ_CORE_COMMAND_H
#define PQ_CORE_COMMAND_H

#include <stddef.h>
#include <stdint.h>

#include "vfs.h"

#define CMD_FORMAT_VERSION 1

enum {
	CMD_FRAMES = 1,    /* one write transaction's pages for one database */
	CMD_CREATE_DB = 2, /* create an empty database */
	CMD_DROP_DB = 3,   /* drop a database */
};

struct command {
	uint8_t type;
	char db[64];              /* NUL-terminated database name, at most 63 bytes */
	struct core_frames frames;/* CMD_FRAMES only; pages point into the decoded buffer */
};

/* Exact encoded size of a command (a multiple of 8). */
size_t cmd_sizeof(const struct command *c);
/* Encode into buf, which has cmd_sizeof(c) bytes. */
void cmd_encode(const struct command *c, void *buf);
/* Decode buf[0..len). Returns 0 or ERR_CORRUPT (truncated, bad version or type, bad
 * name, bad page size, trailing garbage, non-zero padding) or ERR_NOMEM. On success free
 * with cmd_close; page images point into buf, which must outlive the command. */
int cmd_decode(const void *buf, size_t len, struct command *c);
void cmd_close(struct command *c);

#endif

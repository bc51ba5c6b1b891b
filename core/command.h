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

/* Where a page's base version comes from when encoding or materializing deltas: the
 * committed image of page `pgno`, or NULL for a page that holds only zeros (beyond the
 * database's end). */
typedef const uint8_t *(*cmd_base_fn)(void *ctx, uint32_t pgno);

struct cmd_delta; /* internal: one page encoded as byte runs against its base */

struct command {
	uint8_t type;
	char db[64];              /* NUL-terminated database name, at most 63 bytes */
	struct core_frames frames;/* CMD_FRAMES: full page images (see cmd_materialize) */
	/* Private: delta encoding, set by cmd_set_base or cmd_decode. */
	uint32_t n_delta;
	uint8_t *kinds;           /* per page: 0 full image, 1 delta */
	struct cmd_delta *deltas; /* per page (used where kinds[i] == 1) */
	uint8_t *owned_pages;     /* images built by cmd_materialize */
};

/* Encode pages that changed little as deltas against their base versions (see
 * docs/formats.md). Pages that would not shrink by half stay full images. Call before
 * cmd_sizeof/cmd_encode; without it every page is sent whole. Returns 0 or ERR_NOMEM. */
int cmd_set_base(struct command *c, cmd_base_fn base, void *ctx);

/* Exact encoded size of a command (a multiple of 8). */
size_t cmd_sizeof(const struct command *c);
/* Encode into buf, which has cmd_sizeof(c) bytes. */
void cmd_encode(const struct command *c, void *buf);
/* Decode buf[0..len). Returns 0 or ERR_CORRUPT (truncated, bad version or type, bad
 * name, bad page size, bad runs, trailing garbage, non-zero padding) or ERR_NOMEM. On
 * success free with cmd_close; full page images point into buf, which must outlive the
 * command. Delta-encoded pages have frames.pages[i] == NULL until cmd_materialize. */
int cmd_decode(const void *buf, size_t len, struct command *c);
/* Rebuild delta-encoded pages from their base versions. Returns 0, ERR_NOMEM, or
 * ERR_CORRUPT when a base differs from the one the proposer encoded against (its hash
 * does not match: this node's state diverged). A no-op when nothing is delta-encoded. */
int cmd_materialize(struct command *c, cmd_base_fn base, void *ctx);
void cmd_close(struct command *c);

#endif

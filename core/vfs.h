/* In-memory SQLite VFS that captures the WAL frames of each write transaction and hides
 * them from readers until they are applied (see docs/design.md, "VFS").
 *
 * Each database is one object keyed by its file name: the main file as an array of pages,
 * the WAL (header, committed frames, pending frames of the transaction being written) and
 * the shared-memory regions with SQLite's 8 lock slots. Single-threaded. */
#ifndef PQ_CORE_VFS_H
#define PQ_CORE_VFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../lib/buf.h"

struct core_vfs;

/* The frames of one write transaction. Polled frames own their page buffers (freed by
 * core__frames_close); frames to apply may point at someone else's memory. */
struct core_frames {
	uint32_t page_size;
	uint32_t n;           /* number of pages */
	uint32_t commit_size; /* database size in pages after the transaction */
	uint32_t *pgnos;      /* n page numbers */
	const uint8_t **pages;/* n page images of page_size bytes */
	bool owned;           /* pgnos/pages (and the images) were allocated by poll */
};

void core__frames_close(struct core_frames *f);

/* Create and register (sqlite3_vfs_register, not default) a VFS named `name`, which must
 * stay unique in the process. mem_cap (0 = none) bounds the sum of its databases' sizes
 * (pages x page size): a write that would grow them past it fails with SQLITE_FULL. WAL
 * copies of pages are transient (checkpoints free them) and not counted, so a database at
 * the cap can still delete and checkpoint. Returns 0 or ERR_NOMEM/ERR_EXISTS. */
int core__vfs_create(const char *name, uint64_t mem_cap, struct core_vfs **out);
void core__vfs_destroy(struct core_vfs *v);  /* unregisters; no connection may be open */
const char *core__vfs_name(struct core_vfs *v);

/* After every sqlite3_step on a connection writing to database `db`: if the connection
 * just finished writing a transaction (its last pending frame carries a commit marker),
 * move its frames to *out, re-take the WAL write lock on its behalf and hide the frames from
 * new readers. *out gets n == 0 when there is nothing to replicate. Returns 0, or ERR_NOMEM
 * (the transaction is then aborted as by core__vfs_abort). */
int core__vfs_poll(struct core_vfs *v, const char *db, struct core_frames *out);

/* Apply committed frames to database `db` (created if missing, with the frames' page size).
 * `originator` is true on the node whose poll produced them: the write lock taken by poll
 * is released and the wal-index header SQLite wrote is published. Elsewhere the wal-index
 * is invalidated so readers rebuild it. Returns 0 or ERR_NOMEM / ERR_CORRUPT. */
int core__vfs_apply(struct core_vfs *v, const char *db, const struct core_frames *f,
		    bool originator);

/* Abandon a polled transaction: release the write lock; the committed state is unchanged. */
void core__vfs_abort(struct core_vfs *v, const char *db);

/* The committed image of page `pgno` of `db` (the latest committed WAL frame for it, else
 * the main file's page), or NULL when the page lies beyond the database's committed size
 * (it then counts as all zeros) or the database does not exist. Valid until the next
 * apply, checkpoint or restore. This is the base of the delta encoding (command.h). */
const uint8_t *core__vfs_base_page(struct core_vfs *v, const char *db, uint32_t pgno);

/* Number of committed frames in the WAL of `db` (0 if no such database). */
uint32_t core__vfs_wal_frames(struct core_vfs *v, const char *db);

/* True when no connection holds any shm lock or has an unfinished transaction on `db`,
 * so a checkpoint can run. */
bool core__vfs_idle(struct core_vfs *v, const char *db);

/* Append the committed image of `db` (main file pages and committed WAL frames) to out, in
 * the snapshot format of docs/formats.md. Returns 0 or ERR_NOTFOUND / ERR_NOMEM. */
int core__vfs_snapshot_db(struct core_vfs *v, const char *db, struct buf *out);

/* Replace (or create) `db` from a snapshot image read from c. No connection may have the
 * database open (else ERR_BUSY). Returns 0 or ERR_CORRUPT / ERR_NOMEM / ERR_BUSY. */
int core__vfs_restore_db(struct core_vfs *v, const char *db, struct cursor *c);

/* Create an empty database `db` (deterministic page 1, WAL mode). Returns 0, ERR_EXISTS or
 * ERR_NOMEM. Connections may also create one implicitly by opening with SQLITE_OPEN_CREATE
 * (page size 4096). */
int core__vfs_create_db(struct core_vfs *v, const char *db, uint32_t page_size);

/* Number of open main-file handles on `db`. */
int core__vfs_open_count(struct core_vfs *v, const char *db);

/* Forget `db` and free its memory. No connection may have it open. */
void core__vfs_delete_db(struct core_vfs *v, const char *db);

/* Bytes of page data held by all databases of this VFS. */
uint64_t core__vfs_mem_used(struct core_vfs *v);

#endif

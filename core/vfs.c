/* In-memory SQLite VFS that captures each write transaction's WAL frames (see vfs.h).
 *
 * Model of one database (struct vdb):
 *   - main file: an array of page buffers (n_pages of page_size bytes);
 *   - WAL: the 32-byte WAL header, the committed frames, and the pending frames that the one
 *     writing connection has written since its transaction began (spilled or committed but
 *     not yet polled). The reported WAL size counts committed frames only, so readers that
 *     rebuild the wal-index never see pending frames; the writer reads them back through
 *     xRead, which serves both;
 *   - shared memory: 32 KiB regions standing in for the -shm file and SQLite's 8 lock slots
 *     (0 write, 1 checkpoint, 2 recover, 3-7 read marks) as shared counters and an
 *     exclusive owner.
 *
 * A new database starts with a deterministic page 1 (an empty database whose header already
 * says WAL, bytes 18/19 = 2), so that `PRAGMA journal_mode=WAL` writes nothing and every
 * node starts from the same bytes: the main file is only ever written by local checkpoints.
 *
 * Commit sequence on the originating node: SQLite writes the frames (the last with a
 * non-zero "database size" commit field), updates the wal-index header and releases lock
 * slot 0. core__vfs_poll, called right after that sqlite3_step, takes the pending frames,
 * re-takes slot 0 on behalf of the transaction and rewrites the wal-index header to describe
 * only the committed frames (saving SQLite's header). core__vfs_apply then appends the
 * frames as committed (checksums recomputed locally, salts from the local WAL header) and
 * restores the saved header, which describes exactly those bytes. On other nodes apply
 * appends the same way and invalidates the wal-index header so readers rebuild it from the
 * WAL (SQLite's recovery, which validates every checksum).
 *
 * Single-threaded: only the loop thread calls SQLite on these files. */
#include "vfs.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/err.h"
#include "../lib/log.h"

#define WAL_HDR_SIZE 32
#define FRAME_HDR_SIZE 24
#define WAL_MAGIC 0x377f0682u
#define WAL_VERSION 3007000u
#define SHM_REGION_SIZE 32768
#define SHM_NLOCK 8
#define IDX_HDR_SIZE 48 /* one copy of the wal-index header */
#define DEFAULT_PAGE_SIZE 4096

/* The owner of an exclusive shm lock taken on behalf of a polled transaction. */
#define OWNER_TXN ((void *)1)

struct frame {
	uint8_t hdr[FRAME_HDR_SIZE];
	uint8_t *page;
};

struct vdb {
	char *name;
	struct core_vfs *vfs;
	struct vdb *next;
	uint32_t page_size;
	/* Main file. */
	uint8_t **pages;
	uint32_t n_pages;
	/* WAL. */
	uint8_t wal_hdr[WAL_HDR_SIZE];
	bool has_wal_hdr;
	struct frame *frames; /* committed, then pending: n_committed + n_pending used */
	uint32_t n_committed;
	uint32_t n_pending;
	uint32_t cap_frames;
	/* Shared memory. */
	uint8_t **regions;
	int n_regions;
	unsigned shared[SHM_NLOCK];
	void *excl[SHM_NLOCK]; /* owning file, OWNER_TXN, or NULL */
	/* A polled transaction in flight. */
	bool polled;
	uint32_t polled_base;                  /* n_committed at poll time */
	uint8_t saved_idx_hdr[IDX_HDR_SIZE];   /* SQLite's header describing the transaction */
	int n_open;                            /* open main-file handles */
};

struct core_vfs {
	sqlite3_vfs base;
	sqlite3_vfs *unix_vfs;
	char *name;
	struct vdb *dbs;
	uint64_t mem_cap;
	uint64_t mem_used;
};

enum { FILE_MAIN = 1, FILE_WAL, FILE_SCRATCH };

struct vfile {
	sqlite3_file base;
	int type;
	struct vdb *db;
	/* Locks held by this handle (main files only). */
	unsigned shared_mask;
	unsigned excl_mask;
	bool shm_mapped;
	/* Scratch files (rollback journals, which WAL mode should never use). */
	uint8_t *scratch;
	size_t scratch_len;
};

/* ---- Helpers ------------------------------------------------------------------------ */

static uint32_t get32be(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void put32be(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* SQLite's WAL checksum over n bytes (a multiple of 8), chained from s[0..1]. `big` selects
 * big-endian words (WAL magic with its low bit set), else little-endian. */
static void wal_checksum(bool big, const uint8_t *p, size_t n, uint32_t s[2])
{
	uint32_t s1 = s[0], s2 = s[1];
	size_t i;
	for (i = 0; i < n; i += 8) {
		uint32_t x0, x1;
		if (big) {
			x0 = get32be(p + i);
			x1 = get32be(p + i + 4);
		} else {
			x0 = (uint32_t)p[i] | ((uint32_t)p[i + 1] << 8) | ((uint32_t)p[i + 2] << 16) |
			     ((uint32_t)p[i + 3] << 24);
			x1 = (uint32_t)p[i + 4] | ((uint32_t)p[i + 5] << 8) |
			     ((uint32_t)p[i + 6] << 16) | ((uint32_t)p[i + 7] << 24);
		}
		s1 += x0 + s2;
		s2 += x1 + s1;
	}
	s[0] = s1;
	s[1] = s2;
}

/* The wal-index header checksum, native byte order, over its first 40 bytes. */
static void idx_hdr_checksum(uint8_t *h)
{
	uint32_t s1 = 0, s2 = 0, x[10];
	int i;
	memcpy(x, h, 40);
	for (i = 0; i < 10; i += 2) {
		s1 += x[i] + s2;
		s2 += x[i + 1] + s1;
	}
	memcpy(h + 40, &s1, 4);
	memcpy(h + 44, &s2, 4);
}

/* Committed size of a database in bytes. */
static uint64_t db_size(const struct vdb *d)
{
	uint32_t pages = d->n_pages;
	if (d->n_committed > 0)
		pages = get32be(d->frames[d->n_committed - 1].hdr + 4);
	return (uint64_t)pages * d->page_size;
}

/* Would database d holding page `pgno` take the node's databases past the cap? The cap
 * bounds database sizes, not the transient WAL copies (checkpoints bound those), so a
 * full database can still delete, and checkpoints always run. */
static bool over_cap(const struct vdb *d, uint32_t pgno)
{
	const struct vdb *o;
	uint64_t total = (uint64_t)pgno * d->page_size;
	if (d->vfs->mem_cap == 0)
		return false;
	for (o = d->vfs->dbs; o != NULL; o = o->next)
		if (o != d)
			total += db_size(o);
	return total > d->vfs->mem_cap;
}

static void mem_release(struct core_vfs *v, uint64_t n)
{
	v->mem_used = n > v->mem_used ? 0 : v->mem_used - n;
}

static struct vdb *db_lookup(struct core_vfs *v, const char *name)
{
	struct vdb *d;
	for (d = v->dbs; d != NULL; d = d->next)
		if (strcmp(d->name, name) == 0)
			return d;
	return NULL;
}

/* If `name` is "<db>-wal" for an existing database, return it. */
static struct vdb *db_lookup_wal(struct core_vfs *v, const char *name)
{
	size_t n = strlen(name);
	char *base;
	struct vdb *d;
	if (n <= 4 || strcmp(name + n - 4, "-wal") != 0)
		return NULL;
	base = strndup(name, n - 4);
	if (base == NULL)
		return NULL;
	d = db_lookup(v, base);
	free(base);
	return d;
}

/* Write page 1 of an empty WAL-mode database with the given page size. Deterministic, so
 * every node creates the same bytes. */
static void init_page1(uint8_t *p, uint32_t page_size)
{
	memset(p, 0, page_size);
	memcpy(p, "SQLite format 3", 16);
	p[16] = (uint8_t)((page_size >> 8) & 0xff);
	p[17] = (uint8_t)((page_size >> 16) & 0xff);
	p[18] = 2; /* write version: WAL */
	p[19] = 2; /* read version: WAL */
	p[20] = 0;
	p[21] = 64;
	p[22] = 32;
	p[23] = 32;
	put32be(p + 24, 1);       /* file change counter */
	put32be(p + 28, 1);       /* database size in pages */
	put32be(p + 92, 1);       /* version-valid-for = change counter */
	put32be(p + 96, 3040001); /* fixed, so that all nodes agree */
	p[100] = 0x0d;            /* leaf table b-tree page, no cells */
	p[105] = (uint8_t)((page_size >> 8) & 0xff);
	p[106] = (uint8_t)(page_size & 0xff);
}

static struct vdb *db_create(struct core_vfs *v, const char *name, uint32_t page_size,
			     bool with_page1)
{
	struct vdb *d = calloc(1, sizeof *d);
	if (d == NULL)
		return NULL;
	d->name = strdup(name);
	if (d->name == NULL)
		goto err;
	d->vfs = v;
	d->page_size = page_size;
	if (with_page1) {
		d->pages = malloc(sizeof *d->pages);
		if (d->pages == NULL || (d->pages[0] = malloc(page_size)) == NULL) {
			free(d->pages);
			goto err;
		}
		v->mem_used += page_size;
		init_page1(d->pages[0], page_size);
		d->n_pages = 1;
	}
	d->next = v->dbs;
	v->dbs = d;
	return d;
err:
	free(d->name);
	free(d);
	return NULL;
}

static void wal_clear(struct vdb *d)
{
	uint32_t i;
	for (i = 0; i < d->n_committed + d->n_pending; i++) {
		free(d->frames[i].page);
		mem_release(d->vfs, d->page_size);
	}
	d->n_committed = 0;
	d->n_pending = 0;
	d->has_wal_hdr = false;
	memset(d->wal_hdr, 0, sizeof d->wal_hdr);
}

static void pending_clear(struct vdb *d)
{
	uint32_t i;
	for (i = d->n_committed; i < d->n_committed + d->n_pending; i++) {
		free(d->frames[i].page);
		d->frames[i].page = NULL;
		mem_release(d->vfs, d->page_size);
	}
	d->n_pending = 0;
}

static void main_truncate(struct vdb *d, uint32_t n)
{
	uint32_t i;
	for (i = n; i < d->n_pages; i++) {
		free(d->pages[i]);
		mem_release(d->vfs, d->page_size);
	}
	if (n < d->n_pages)
		d->n_pages = n;
}

static void db_free_contents(struct vdb *d)
{
	int i;
	wal_clear(d);
	free(d->frames);
	d->frames = NULL;
	d->cap_frames = 0;
	main_truncate(d, 0);
	free(d->pages);
	d->pages = NULL;
	for (i = 0; i < d->n_regions; i++)
		free(d->regions[i]);
	free(d->regions);
	d->regions = NULL;
	d->n_regions = 0;
}

static void db_destroy(struct core_vfs *v, struct vdb *d)
{
	struct vdb **pp;
	for (pp = &v->dbs; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == d) {
			*pp = d->next;
			break;
		}
	}
	db_free_contents(d);
	free(d->name);
	free(d);
}

/* Make room for `extra` more frame slots. */
static bool frames_reserve(struct vdb *d, uint32_t extra)
{
	uint64_t need = (uint64_t)d->n_committed + d->n_pending + extra, cap;
	struct frame *f;
	if (need <= d->cap_frames)
		return true;
	if (need > UINT32_MAX / 2)
		return false;
	cap = d->cap_frames ? d->cap_frames : 64;
	while (cap < need)
		cap *= 2;
	f = realloc(d->frames, sizeof *f * cap);
	if (f == NULL)
		return false;
	d->frames = f;
	d->cap_frames = (uint32_t)cap;
	return true;
}

static bool frames_grow(struct vdb *d)
{
	return frames_reserve(d, 1);
}

/* ---- Main file ---------------------------------------------------------------------- */

static int main_read(struct vdb *d, uint8_t *buf, int amt, sqlite3_int64 off)
{
	int done = 0;
	while (done < amt) {
		uint64_t pos = (uint64_t)off + (uint64_t)done;
		uint64_t pgno = pos / d->page_size;
		uint32_t in = (uint32_t)(pos % d->page_size);
		int n = (int)(d->page_size - in);
		if (n > amt - done)
			n = amt - done;
		if (pgno >= d->n_pages) {
			memset(buf + done, 0, (size_t)(amt - done));
			return SQLITE_IOERR_SHORT_READ;
		}
		memcpy(buf + done, d->pages[pgno] + in, (size_t)n);
		done += n;
	}
	return SQLITE_OK;
}

static int main_write(struct vdb *d, const uint8_t *buf, int amt, sqlite3_int64 off)
{
	int done = 0;
	while (done < amt) {
		uint64_t pos = (uint64_t)off + (uint64_t)done;
		uint64_t pgno = pos / d->page_size;
		uint32_t in = (uint32_t)(pos % d->page_size);
		int n = (int)(d->page_size - in);
		if (n > amt - done)
			n = amt - done;
		if (pgno >= UINT32_MAX)
			return SQLITE_FULL;
		while (d->n_pages <= pgno) {
			uint8_t **pages = realloc(d->pages, sizeof *pages * (d->n_pages + 1));
			if (pages == NULL)
				return SQLITE_NOMEM;
			d->pages = pages;
			/* Only checkpoints write the main file, and they must always be able to
			 * run (they free the WAL right after): not subject to the cap. */
			pages[d->n_pages] = calloc(1, d->page_size);
			if (pages[d->n_pages] == NULL)
				return SQLITE_NOMEM;
			d->vfs->mem_used += d->page_size;
			d->n_pages++;
		}
		memcpy(d->pages[pgno] + in, buf + done, (size_t)n);
		done += n;
	}
	return SQLITE_OK;
}

/* ---- WAL file ----------------------------------------------------------------------- */

static uint64_t frame_size(const struct vdb *d)
{
	return FRAME_HDR_SIZE + (uint64_t)d->page_size;
}

/* Read from the WAL image: header, then committed and pending frames. */
static int wal_read(struct vdb *d, uint8_t *buf, int amt, sqlite3_int64 off)
{
	int done = 0;
	uint32_t total = d->n_committed + d->n_pending;
	while (done < amt) {
		uint64_t pos = (uint64_t)off + (uint64_t)done;
		int n;
		if (pos < WAL_HDR_SIZE) {
			if (!d->has_wal_hdr)
				goto short_read;
			n = (int)(WAL_HDR_SIZE - pos);
			if (n > amt - done)
				n = amt - done;
			memcpy(buf + done, d->wal_hdr + pos, (size_t)n);
		} else {
			uint64_t idx = (pos - WAL_HDR_SIZE) / frame_size(d);
			uint64_t in = (pos - WAL_HDR_SIZE) % frame_size(d);
			struct frame *f;
			if (idx >= total)
				goto short_read;
			f = &d->frames[idx];
			if (in < FRAME_HDR_SIZE) {
				n = (int)(FRAME_HDR_SIZE - in);
				if (n > amt - done)
					n = amt - done;
				memcpy(buf + done, f->hdr + in, (size_t)n);
			} else {
				n = (int)(frame_size(d) - in);
				if (n > amt - done)
					n = amt - done;
				if (f->page == NULL)
					goto short_read;
				memcpy(buf + done, f->page + (in - FRAME_HDR_SIZE), (size_t)n);
			}
		}
		done += n;
	}
	return SQLITE_OK;
short_read:
	memset(buf + done, 0, (size_t)(amt - done));
	return SQLITE_IOERR_SHORT_READ;
}

static int wal_write(struct vdb *d, const uint8_t *buf, int amt, sqlite3_int64 off)
{
	uint64_t idx, in;
	uint32_t total = d->n_committed + d->n_pending;
	struct frame *f;

	if (off == 0 && amt == WAL_HDR_SIZE) {
		/* SQLite writes the header only when it (re)starts the log at frame 1: the log
		 * is empty, or a checkpoint copied every committed frame into the main file, and
		 * any pending frames were undone (ROLLBACK TO a savepoint taken on an empty
		 * log). */
		if (d->polled)
			return SQLITE_IOERR_WRITE;
		wal_clear(d);
		memcpy(d->wal_hdr, buf, WAL_HDR_SIZE);
		d->has_wal_hdr = true;
		if (get32be(d->wal_hdr + 8) != 0 && get32be(d->wal_hdr + 8) != d->page_size &&
		    !(d->page_size == 65536 && get32be(d->wal_hdr + 8) == 1))
			return SQLITE_IOERR_WRITE;
		return SQLITE_OK;
	}
	if (off < WAL_HDR_SIZE || !d->has_wal_hdr)
		return SQLITE_IOERR_WRITE;
	idx = ((uint64_t)off - WAL_HDR_SIZE) / frame_size(d);
	in = ((uint64_t)off - WAL_HDR_SIZE) % frame_size(d);
	if (idx < d->n_committed || idx > total)
		return SQLITE_IOERR_WRITE;
	if (in == 0 && amt == FRAME_HDR_SIZE) {
		if (over_cap(d, get32be(buf)) || over_cap(d, get32be(buf + 4)))
			return SQLITE_FULL;
		if (idx == total) {
			if (!frames_grow(d))
				return SQLITE_NOMEM;
			f = &d->frames[idx];
			f->page = calloc(1, d->page_size);
			if (f->page == NULL)
				return SQLITE_NOMEM;
			d->vfs->mem_used += d->page_size;
			d->n_pending++;
		}
		memcpy(d->frames[idx].hdr, buf, FRAME_HDR_SIZE);
		return SQLITE_OK;
	}
	if (in == FRAME_HDR_SIZE && (uint64_t)amt == d->page_size && idx < total) {
		memcpy(d->frames[idx].page, buf, d->page_size);
		return SQLITE_OK;
	}
	return SQLITE_IOERR_WRITE;
}

static sqlite3_int64 wal_size(const struct vdb *d)
{
	if (!d->has_wal_hdr)
		return 0;
	return (sqlite3_int64)(WAL_HDR_SIZE + frame_size(d) * d->n_committed);
}

static int wal_truncate(struct vdb *d, sqlite3_int64 size)
{
	uint32_t keep, i;
	if (d->n_pending != 0)
		return SQLITE_IOERR_TRUNCATE;
	if (size == 0) {
		wal_clear(d);
		return SQLITE_OK;
	}
	if (size < WAL_HDR_SIZE)
		return SQLITE_IOERR_TRUNCATE;
	keep = (uint32_t)(((uint64_t)size - WAL_HDR_SIZE) / frame_size(d));
	for (i = keep; i < d->n_committed; i++) {
		free(d->frames[i].page);
		mem_release(d->vfs, d->page_size);
	}
	if (keep < d->n_committed)
		d->n_committed = keep;
	return SQLITE_OK;
}

/* Create the WAL header that apply needs when the local WAL has none. */
static void wal_hdr_init(struct vdb *d)
{
	uint32_t s[2] = {0, 0}, salt[2];
	sqlite3_randomness(sizeof salt, salt);
	put32be(d->wal_hdr + 0, WAL_MAGIC);
	put32be(d->wal_hdr + 4, WAL_VERSION);
	put32be(d->wal_hdr + 8, d->page_size == 65536 ? 1 : d->page_size);
	put32be(d->wal_hdr + 12, 0);
	put32be(d->wal_hdr + 16, salt[0]);
	put32be(d->wal_hdr + 20, salt[1]);
	wal_checksum(false, d->wal_hdr, 24, s);
	put32be(d->wal_hdr + 24, s[0]);
	put32be(d->wal_hdr + 28, s[1]);
	d->has_wal_hdr = true;
}

/* The running checksum at the end of the committed frames. */
static void wal_last_checksum(const struct vdb *d, uint32_t s[2])
{
	const uint8_t *p;
	if (d->n_committed == 0)
		p = d->wal_hdr + 24;
	else
		p = d->frames[d->n_committed - 1].hdr + 16;
	s[0] = get32be(p);
	s[1] = get32be(p + 4);
}

/* Append one committed frame (taking ownership of `page`), computing its header. */
static void wal_append_committed(struct vdb *d, uint32_t pgno, uint32_t commit, uint8_t *page)
{
	struct frame *f = &d->frames[d->n_committed];
	bool big = (get32be(d->wal_hdr) & 1) != 0;
	uint32_t s[2];

	wal_last_checksum(d, s);
	put32be(f->hdr + 0, pgno);
	put32be(f->hdr + 4, commit);
	memcpy(f->hdr + 8, d->wal_hdr + 16, 8); /* salts */
	wal_checksum(big, f->hdr, 8, s);
	wal_checksum(big, page, d->page_size, s);
	put32be(f->hdr + 16, s[0]);
	put32be(f->hdr + 20, s[1]);
	f->page = page;
	d->n_committed++;
}

/* ---- Shared memory -------------------------------------------------------------------- */

static uint8_t *idx_hdr(struct vdb *d)
{
	return d->n_regions > 0 ? d->regions[0] : NULL;
}

/* Make the wal-index header invalid so the next reader runs recovery from the WAL. */
static void idx_invalidate(struct vdb *d)
{
	uint8_t *h = idx_hdr(d);
	if (h != NULL)
		memset(h, 0, 2 * IDX_HDR_SIZE);
}

/* Rewrite both copies of the wal-index header from `h` (48 bytes, checksum recomputed). */
static void idx_publish(struct vdb *d, uint8_t *h)
{
	uint8_t *shm = idx_hdr(d);
	idx_hdr_checksum(h);
	if (shm != NULL) {
		memcpy(shm + IDX_HDR_SIZE, h, IDX_HDR_SIZE);
		memcpy(shm, h, IDX_HDR_SIZE);
	}
}

/* Describe only the committed frames in the wal-index header (SQLite's header is saved). */
static void idx_hide_pending(struct vdb *d)
{
	uint8_t *shm = idx_hdr(d), h[IDX_HDR_SIZE];
	uint32_t mx = d->n_committed, npage, ck[2];

	if (shm == NULL)
		return;
	memcpy(d->saved_idx_hdr, shm, IDX_HDR_SIZE);
	memcpy(h, shm, IDX_HDR_SIZE);
	if (mx > 0)
		npage = get32be(d->frames[mx - 1].hdr + 4);
	else
		npage = d->n_pages;
	/* Committed frames always end with a commit frame, so npage is non-zero. */
	if (d->has_wal_hdr)
		wal_last_checksum(d, ck);
	else
		ck[0] = ck[1] = 0;
	memcpy(h + 16, &mx, 4);
	memcpy(h + 20, &npage, 4);
	memcpy(h + 24, ck, 8);
	idx_publish(d, h);
}

/* ---- sqlite3_io_methods --------------------------------------------------------------- */

static int vf_close(sqlite3_file *file)
{
	struct vfile *f = (struct vfile *)file;
	if (f->type == FILE_MAIN && f->db != NULL) {
		int i;
		for (i = 0; i < SHM_NLOCK; i++) {
			if (f->shared_mask & (1u << i))
				f->db->shared[i]--;
			if (f->excl_mask & (1u << i))
				f->db->excl[i] = NULL;
		}
		f->db->n_open--;
	}
	free(f->scratch);
	return SQLITE_OK;
}

static int vf_read(sqlite3_file *file, void *buf, int amt, sqlite3_int64 off)
{
	struct vfile *f = (struct vfile *)file;
	switch (f->type) {
	case FILE_MAIN:
		return main_read(f->db, buf, amt, off);
	case FILE_WAL:
		return wal_read(f->db, buf, amt, off);
	default:
		if ((uint64_t)off >= f->scratch_len) {
			memset(buf, 0, (size_t)amt);
			return SQLITE_IOERR_SHORT_READ;
		}
		if ((uint64_t)off + (uint64_t)amt > f->scratch_len) {
			size_t n = f->scratch_len - (size_t)off;
			memcpy(buf, f->scratch + off, n);
			memset((uint8_t *)buf + n, 0, (size_t)amt - n);
			return SQLITE_IOERR_SHORT_READ;
		}
		memcpy(buf, f->scratch + off, (size_t)amt);
		return SQLITE_OK;
	}
}

static int vf_write(sqlite3_file *file, const void *buf, int amt, sqlite3_int64 off)
{
	struct vfile *f = (struct vfile *)file;
	switch (f->type) {
	case FILE_MAIN:
		return main_write(f->db, buf, amt, off);
	case FILE_WAL:
		return wal_write(f->db, buf, amt, off);
	default: {
		size_t end = (size_t)off + (size_t)amt;
		if (end > f->scratch_len) {
			uint8_t *p = realloc(f->scratch, end);
			if (p == NULL)
				return SQLITE_NOMEM;
			memset(p + f->scratch_len, 0, end - f->scratch_len);
			f->scratch = p;
			f->scratch_len = end;
		}
		memcpy(f->scratch + off, buf, (size_t)amt);
		return SQLITE_OK;
	}
	}
}

static int vf_truncate(sqlite3_file *file, sqlite3_int64 size)
{
	struct vfile *f = (struct vfile *)file;
	switch (f->type) {
	case FILE_MAIN:
		if (size % f->db->page_size != 0)
			return SQLITE_IOERR_TRUNCATE;
		main_truncate(f->db, (uint32_t)(size / f->db->page_size));
		return SQLITE_OK;
	case FILE_WAL:
		return wal_truncate(f->db, size);
	default:
		if ((size_t)size < f->scratch_len)
			f->scratch_len = (size_t)size;
		return SQLITE_OK;
	}
}

static int vf_sync(sqlite3_file *file, int flags)
{
	return SQLITE_OK; /* durability is the Raft log's job */
}

static int vf_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
	struct vfile *f = (struct vfile *)file;
	switch (f->type) {
	case FILE_MAIN:
		*size = (sqlite3_int64)f->db->n_pages * f->db->page_size;
		break;
	case FILE_WAL:
		*size = wal_size(f->db);
		break;
	default:
		*size = (sqlite3_int64)f->scratch_len;
	}
	return SQLITE_OK;
}

static int vf_lock(sqlite3_file *file, int level)
{
	return SQLITE_OK;
}

static int vf_unlock(sqlite3_file *file, int level)
{
	return SQLITE_OK;
}

static int vf_check_reserved(sqlite3_file *file, int *out)
{
	*out = 0;
	return SQLITE_OK;
}

static int vf_file_control(sqlite3_file *file, int op, void *arg)
{
	switch (op) {
	case SQLITE_FCNTL_PERSIST_WAL:
		*(int *)arg = 1; /* the WAL must survive the last connection */
		return SQLITE_OK;
	case SQLITE_FCNTL_PRAGMA: {
		char **a = arg;
		/* Defence in depth behind the engine's authorizer: the page size and the
		 * journal mode are fixed. */
		if (a[1] != NULL && a[2] != NULL &&
		    (sqlite3_stricmp(a[1], "page_size") == 0 ||
		     (sqlite3_stricmp(a[1], "journal_mode") == 0 &&
		      sqlite3_stricmp(a[2], "wal") != 0))) {
			a[0] = sqlite3_mprintf("pqlite: %s cannot be changed", a[1]);
			return SQLITE_ERROR;
		}
		return SQLITE_NOTFOUND;
	}
	default:
		return SQLITE_NOTFOUND;
	}
}

static int vf_sector_size(sqlite3_file *file)
{
	return 0;
}

static int vf_device_characteristics(sqlite3_file *file)
{
	return 0;
}

static int vf_shm_map(sqlite3_file *file, int region, int size, int extend, void volatile **pp)
{
	struct vfile *f = (struct vfile *)file;
	struct vdb *d = f->db;

	if (f->type != FILE_MAIN || size != SHM_REGION_SIZE)
		return SQLITE_IOERR_SHMMAP;
	if (region < d->n_regions) {
		*pp = d->regions[region];
	} else if (!extend) {
		*pp = NULL;
	} else {
		uint8_t **r;
		if (region != d->n_regions)
			return SQLITE_IOERR_SHMMAP;
		r = realloc(d->regions, sizeof *r * (size_t)(region + 1));
		if (r == NULL)
			return SQLITE_NOMEM;
		d->regions = r;
		r[region] = calloc(1, SHM_REGION_SIZE);
		if (r[region] == NULL)
			return SQLITE_NOMEM;
		d->n_regions++;
		*pp = r[region];
	}
	f->shm_mapped = true;
	return SQLITE_OK;
}

/* Number of pending frames up to and including the last commit frame, 0 if none. Frames
 * after it were left behind by ROLLBACK TO a savepoint and belong to nobody. */
static uint32_t pending_commit_len(const struct vdb *d)
{
	uint32_t i;
	for (i = d->n_pending; i > 0; i--)
		if (get32be(d->frames[d->n_committed + i - 1].hdr + 4) != 0)
			return i;
	return 0;
}

/* Drop pending frames past `keep`. */
static void pending_truncate(struct vdb *d, uint32_t keep)
{
	uint32_t i;
	for (i = keep; i < d->n_pending; i++) {
		free(d->frames[d->n_committed + i].page);
		d->frames[d->n_committed + i].page = NULL;
		mem_release(d->vfs, d->page_size);
	}
	if (keep < d->n_pending)
		d->n_pending = keep;
}

/* When the write lock is released, pending frames with no commit frame among them belong
 * to a rolled-back transaction; after a commit frame they are leftovers. Drop both. */
static void write_lock_released(struct vdb *d)
{
	pending_truncate(d, pending_commit_len(d));
}

static int vf_shm_lock(sqlite3_file *file, int ofst, int n, int flags)
{
	struct vfile *f = (struct vfile *)file;
	struct vdb *d = f->db;
	int i;

	if (ofst < 0 || n < 1 || ofst + n > SHM_NLOCK)
		return SQLITE_IOERR_SHMLOCK;
	if (flags & SQLITE_SHM_UNLOCK) {
		for (i = ofst; i < ofst + n; i++) {
			unsigned bit = 1u << i;
			if (f->shared_mask & bit) {
				d->shared[i]--;
				f->shared_mask &= ~bit;
			}
			if (f->excl_mask & bit) {
				d->excl[i] = NULL;
				f->excl_mask &= ~bit;
				if (i == 0)
					write_lock_released(d);
			}
		}
		return SQLITE_OK;
	}
	if (flags & SQLITE_SHM_SHARED) {
		for (i = ofst; i < ofst + n; i++) {
			if (f->shared_mask & (1u << i))
				continue;
			if (d->excl[i] != NULL && d->excl[i] != (void *)f)
				return SQLITE_BUSY;
		}
		for (i = ofst; i < ofst + n; i++) {
			if (!(f->shared_mask & (1u << i))) {
				d->shared[i]++;
				f->shared_mask |= 1u << i;
			}
		}
		return SQLITE_OK;
	}
	/* Exclusive. */
	for (i = ofst; i < ofst + n; i++) {
		unsigned mine = (f->shared_mask >> i) & 1u;
		if (d->excl[i] != NULL && d->excl[i] != (void *)f)
			return SQLITE_BUSY;
		if (d->shared[i] > mine)
			return SQLITE_BUSY;
	}
	for (i = ofst; i < ofst + n; i++) {
		d->excl[i] = f;
		f->excl_mask |= 1u << i;
	}
	return SQLITE_OK;
}

static void vf_shm_barrier(sqlite3_file *file)
{
}

static int vf_shm_unmap(sqlite3_file *file, int delete_flag)
{
	struct vfile *f = (struct vfile *)file;
	int i;
	for (i = 0; i < SHM_NLOCK; i++) {
		if (f->shared_mask & (1u << i))
			f->db->shared[i]--;
		if (f->excl_mask & (1u << i))
			f->db->excl[i] = NULL;
	}
	f->shared_mask = 0;
	f->excl_mask = 0;
	f->shm_mapped = false;
	/* Regions stay: other connections and later opens reuse the wal-index. */
	return SQLITE_OK;
}

static const sqlite3_io_methods vfile_methods = {
	.iVersion = 2,
	.xClose = vf_close,
	.xRead = vf_read,
	.xWrite = vf_write,
	.xTruncate = vf_truncate,
	.xSync = vf_sync,
	.xFileSize = vf_file_size,
	.xLock = vf_lock,
	.xUnlock = vf_unlock,
	.xCheckReservedLock = vf_check_reserved,
	.xFileControl = vf_file_control,
	.xSectorSize = vf_sector_size,
	.xDeviceCharacteristics = vf_device_characteristics,
	.xShmMap = vf_shm_map,
	.xShmLock = vf_shm_lock,
	.xShmBarrier = vf_shm_barrier,
	.xShmUnmap = vf_shm_unmap,
};

/* ---- sqlite3_vfs ---------------------------------------------------------------------- */

static int v_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags,
		  int *out_flags)
{
	struct core_vfs *v = (struct core_vfs *)vfs;
	struct vfile *f = (struct vfile *)file;
	struct vdb *d;

	if (name == NULL || (flags & (SQLITE_OPEN_TEMP_DB | SQLITE_OPEN_TEMP_JOURNAL |
				      SQLITE_OPEN_TRANSIENT_DB | SQLITE_OPEN_SUBJOURNAL)))
		return v->unix_vfs->xOpen(v->unix_vfs, name, file, flags, out_flags);

	memset(f, 0, sizeof *f);
	if (flags & SQLITE_OPEN_MAIN_DB) {
		d = db_lookup(v, name);
		if (d == NULL) {
			if (!(flags & SQLITE_OPEN_CREATE))
				return SQLITE_CANTOPEN;
			d = db_create(v, name, DEFAULT_PAGE_SIZE, true);
			if (d == NULL)
				return SQLITE_NOMEM;
		}
		f->type = FILE_MAIN;
		f->db = d;
		d->n_open++;
	} else if (flags & SQLITE_OPEN_WAL) {
		d = db_lookup_wal(v, name);
		if (d == NULL)
			return SQLITE_CANTOPEN;
		f->type = FILE_WAL;
		f->db = d;
	} else {
		/* Rollback and super journals: WAL mode should never need one. */
		f->type = FILE_SCRATCH;
	}
	f->base.pMethods = &vfile_methods;
	if (out_flags != NULL)
		*out_flags = flags;
	return SQLITE_OK;
}

static int v_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
	return SQLITE_OK; /* the WAL persists; journals are scratch */
}

static int v_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
	struct core_vfs *v = (struct core_vfs *)vfs;
	*out = db_lookup(v, name) != NULL || db_lookup_wal(v, name) != NULL;
	return SQLITE_OK;
}

static int v_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
	if ((int)strlen(name) + 1 > n)
		return SQLITE_CANTOPEN;
	strcpy(out, name);
	return SQLITE_OK;
}

static int v_randomness(sqlite3_vfs *vfs, int n, char *out)
{
	struct core_vfs *v = (struct core_vfs *)vfs;
	return v->unix_vfs->xRandomness(v->unix_vfs, n, out);
}

static int v_sleep(sqlite3_vfs *vfs, int us)
{
	/* Never block the loop thread: nobody else can release a lock while we sleep. */
	return us;
}

static int v_current_time(sqlite3_vfs *vfs, double *out)
{
	struct core_vfs *v = (struct core_vfs *)vfs;
	return v->unix_vfs->xCurrentTime(v->unix_vfs, out);
}

static int v_current_time64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
	struct core_vfs *v = (struct core_vfs *)vfs;
	return v->unix_vfs->xCurrentTimeInt64(v->unix_vfs, out);
}

static int v_last_error(sqlite3_vfs *vfs, int n, char *out)
{
	return 0;
}

/* ---- Public API ----------------------------------------------------------------------- */

int core__vfs_create(const char *name, uint64_t mem_cap, struct core_vfs **out)
{
	struct core_vfs *v;
	sqlite3_vfs *unix_vfs = sqlite3_vfs_find("unix");
	int rv;

	if (unix_vfs == NULL)
		return ERR_INVALID;
	if (sqlite3_vfs_find(name) != NULL)
		return ERR_EXISTS;
	v = calloc(1, sizeof *v);
	if (v == NULL)
		return ERR_NOMEM;
	v->name = strdup(name);
	if (v->name == NULL) {
		free(v);
		return ERR_NOMEM;
	}
	v->unix_vfs = unix_vfs;
	v->mem_cap = mem_cap;
	v->base.iVersion = 2;
	v->base.szOsFile = (int)sizeof(struct vfile);
	if (unix_vfs->szOsFile > v->base.szOsFile)
		v->base.szOsFile = unix_vfs->szOsFile;
	v->base.mxPathname = 512;
	v->base.zName = v->name;
	v->base.xOpen = v_open;
	v->base.xDelete = v_delete;
	v->base.xAccess = v_access;
	v->base.xFullPathname = v_full_pathname;
	v->base.xRandomness = v_randomness;
	v->base.xSleep = v_sleep;
	v->base.xCurrentTime = v_current_time;
	v->base.xGetLastError = v_last_error;
	v->base.xCurrentTimeInt64 = v_current_time64;
	rv = sqlite3_vfs_register(&v->base, 0);
	if (rv != SQLITE_OK) {
		free(v->name);
		free(v);
		return ERR_NOMEM;
	}
	*out = v;
	return 0;
}

void core__vfs_destroy(struct core_vfs *v)
{
	sqlite3_vfs_unregister(&v->base);
	while (v->dbs != NULL)
		db_destroy(v, v->dbs);
	free(v->name);
	free(v);
}

const char *core__vfs_name(struct core_vfs *v)
{
	return v->name;
}

void core__frames_close(struct core_frames *f)
{
	uint32_t i;
	if (f->owned) {
		for (i = 0; i < f->n; i++)
			free((void *)f->pages[i]);
		free(f->pgnos);
		free((void *)f->pages);
	}
	memset(f, 0, sizeof *f);
}

int core__vfs_poll(struct core_vfs *v, const char *db, struct core_frames *out)
{
	struct vdb *d = db_lookup(v, db);
	struct frame *last;
	uint32_t i;

	memset(out, 0, sizeof *out);
	if (d == NULL || d->n_pending == 0 || d->polled)
		return 0;
	if (d->excl[0] != NULL)
		return 0; /* the writer still holds the lock: not finished yet */
	pending_truncate(d, pending_commit_len(d));
	if (d->n_pending == 0)
		return 0;
	last = &d->frames[d->n_committed + d->n_pending - 1];

	out->pgnos = malloc(sizeof *out->pgnos * d->n_pending);
	out->pages = malloc(sizeof *out->pages * d->n_pending);
	if (out->pgnos == NULL || out->pages == NULL) {
		free(out->pgnos);
		free((void *)out->pages);
		memset(out, 0, sizeof *out);
		pending_clear(d);
		idx_hide_pending(d);
		return ERR_NOMEM;
	}
	out->owned = true;
	out->page_size = d->page_size;
	out->n = d->n_pending;
	out->commit_size = get32be(last->hdr + 4);
	for (i = 0; i < d->n_pending; i++) {
		struct frame *f = &d->frames[d->n_committed + i];
		out->pgnos[i] = get32be(f->hdr);
		out->pages[i] = f->page; /* ownership moves to out */
		f->page = NULL;
		/* The page memory stays accounted until the frames are applied or dropped:
		 * release it here and let apply reserve its own copy. */
		mem_release(v, d->page_size);
	}
	d->n_pending = 0;
	/* Hold the write lock on behalf of the transaction and hide its frames. */
	d->excl[0] = OWNER_TXN;
	d->polled = true;
	d->polled_base = d->n_committed;
	idx_hide_pending(d);
	return 0;
}

void core__vfs_abort(struct core_vfs *v, const char *db)
{
	struct vdb *d = db_lookup(v, db);
	if (d == NULL || !d->polled)
		return;
	d->polled = false;
	if (d->excl[0] == OWNER_TXN)
		d->excl[0] = NULL;
	/* The shm header already describes the committed state. If the aborted transaction
	 * had (re)written the WAL header over an empty log, that header stays: harmless, since
	 * the next writer starting at frame 1 writes a new one. */
}

int core__vfs_apply(struct core_vfs *v, const char *db, const struct core_frames *fr,
		    bool originator)
{
	struct vdb *d = db_lookup(v, db);
	uint8_t **copies;
	uint32_t i;

	if (fr->n == 0 || fr->commit_size == 0)
		return ERR_CORRUPT;
	for (i = 0; i < fr->n; i++)
		if (fr->pgnos[i] == 0)
			return ERR_CORRUPT;
	if (d == NULL) {
		d = db_create(v, db, fr->page_size, true);
		if (d == NULL)
			return ERR_NOMEM;
	}
	if (fr->page_size != d->page_size)
		return ERR_CORRUPT;
	if (originator && (!d->polled || d->polled_base != d->n_committed)) {
		LOGW("vfs: %s: frames applied as originator without a matching poll", db);
		originator = false;
	}
	/* Reserve everything first: apply must not fail half-way. */
	copies = calloc(fr->n, sizeof *copies);
	if (copies == NULL)
		return ERR_NOMEM;
	for (i = 0; i < fr->n; i++) {
		copies[i] = malloc(d->page_size);
		if (copies[i] == NULL)
			goto nomem;
		memcpy(copies[i], fr->pages[i], d->page_size);
	}
	if (!frames_reserve(d, fr->n))
		goto nomem;
	/* Pending frames of a transaction being written locally sit after the committed
	 * ones; they are rare here (the writer queue runs one transaction at a time) but
	 * must not be overwritten. */
	if (d->n_pending != 0) {
		LOGW("vfs: %s: apply while a local transaction is being written", db);
		pending_clear(d);
	}
	if (!d->has_wal_hdr)
		wal_hdr_init(d);
	v->mem_used += (uint64_t)fr->n * d->page_size; /* apply is never refused by the cap */
	for (i = 0; i < fr->n; i++)
		wal_append_committed(d, fr->pgnos[i], i == fr->n - 1 ? fr->commit_size : 0,
				     copies[i]);
	free(copies);

	if (originator) {
		/* SQLite's own header describes these frames; the checksum chain is taken from
		 * our frames (SQLite 3.40 can compute a wrong one after ROLLBACK TO, see
		 * write_lock_released). */
		uint8_t h[IDX_HDR_SIZE];
		uint32_t mx, ck[2];
		memcpy(h, d->saved_idx_hdr, IDX_HDR_SIZE);
		memcpy(&mx, h + 16, 4);
		if (mx == d->n_committed && idx_hdr(d) != NULL) {
			wal_last_checksum(d, ck);
			memcpy(h + 24, ck, 8);
			idx_publish(d, h);
		} else {
			idx_invalidate(d);
		}
	} else {
		idx_invalidate(d);
	}
	if (d->polled) {
		d->polled = false;
		if (d->excl[0] == OWNER_TXN)
			d->excl[0] = NULL;
	}
	return 0;
nomem:
	for (i = 0; i < fr->n; i++)
		free(copies[i]);
	free(copies);
	return ERR_NOMEM;
}

const uint8_t *core__vfs_base_page(struct core_vfs *v, const char *db, uint32_t pgno)
{
	struct vdb *d = db_lookup(v, db);
	uint32_t i;
	if (d == NULL || pgno == 0 || (uint64_t)pgno * d->page_size > db_size(d))
		return NULL;
	for (i = d->n_committed; i > 0; i--)
		if (get32be(d->frames[i - 1].hdr) == pgno)
			return d->frames[i - 1].page;
	return pgno <= d->n_pages ? d->pages[pgno - 1] : NULL;
}

uint32_t core__vfs_wal_frames(struct core_vfs *v, const char *db)
{
	struct vdb *d = db_lookup(v, db);
	return d != NULL ? d->n_committed : 0;
}

bool core__vfs_idle(struct core_vfs *v, const char *db)
{
	struct vdb *d = db_lookup(v, db);
	int i;
	if (d == NULL)
		return true;
	if (d->polled || d->n_pending != 0)
		return false;
	for (i = 0; i < SHM_NLOCK; i++)
		if (d->shared[i] != 0 || d->excl[i] != NULL)
			return false;
	return true;
}

/* Snapshot image of one database (little-endian):
 *   u32 page size, u32 main-file pages M, u32 committed WAL frames F, u32 flags (bit 0: WAL
 *   header present), 32 bytes WAL header (zeros if absent), M pages, then F x (u32 page
 *   number, u32 commit field, page). Frame checksums are recomputed on restore. */
int core__vfs_snapshot_db(struct core_vfs *v, const char *db, struct buf *out)
{
	struct vdb *d = db_lookup(v, db);
	uint32_t i;

	if (d == NULL)
		return ERR_NOTFOUND;
	buf_put_u32le(out, d->page_size);
	buf_put_u32le(out, d->n_pages);
	buf_put_u32le(out, d->n_committed);
	buf_put_u32le(out, d->has_wal_hdr ? 1 : 0);
	buf_put(out, d->wal_hdr, WAL_HDR_SIZE);
	for (i = 0; i < d->n_pages; i++)
		buf_put(out, d->pages[i], d->page_size);
	for (i = 0; i < d->n_committed; i++) {
		buf_put_u32le(out, get32be(d->frames[i].hdr));
		buf_put_u32le(out, get32be(d->frames[i].hdr + 4));
		buf_put(out, d->frames[i].page, d->page_size);
	}
	return out->failed ? ERR_NOMEM : 0;
}

int core__vfs_restore_db(struct core_vfs *v, const char *db, struct cursor *c)
{
	uint32_t page_size, n_pages, n_frames, flags, i;
	const uint8_t *hdr, *p;
	struct vdb *d, *old;
	struct cursor probe;

	if (!cursor_get_u32le(c, &page_size) || !cursor_get_u32le(c, &n_pages) ||
	    !cursor_get_u32le(c, &n_frames) || !cursor_get_u32le(c, &flags) ||
	    !cursor_get_bytes(c, WAL_HDR_SIZE, &hdr))
		return ERR_CORRUPT;
	if (page_size < 512 || page_size > 65536 || (page_size & (page_size - 1)) || flags > 1)
		return ERR_CORRUPT;
	if (n_frames > 0 && !(flags & 1))
		return ERR_CORRUPT;
	/* Check the sizes before allocating anything. */
	probe = *c;
	if ((uint64_t)n_pages * page_size + (uint64_t)n_frames * (8 + page_size) > probe.len)
		return ERR_CORRUPT;

	d = calloc(1, sizeof *d);
	if (d == NULL || (d->name = strdup(db)) == NULL) {
		free(d);
		return ERR_NOMEM;
	}
	d->vfs = v;
	d->page_size = page_size;
	if (n_pages > 0 && (d->pages = calloc(n_pages, sizeof *d->pages)) == NULL)
		goto nomem;
	for (i = 0; i < n_pages; i++) {
		cursor_get_bytes(c, page_size, &p);
		if ((d->pages[i] = malloc(page_size)) == NULL)
			goto nomem;
		memcpy(d->pages[i], p, page_size);
		d->n_pages++;
		v->mem_used += page_size;
	}
	if (flags & 1) {
		memcpy(d->wal_hdr, hdr, WAL_HDR_SIZE);
		d->has_wal_hdr = true;
		if (get32be(hdr) != WAL_MAGIC && get32be(hdr) != (WAL_MAGIC | 1))
			goto corrupt;
	}
	for (i = 0; i < n_frames; i++) {
		uint32_t pgno, commit;
		uint8_t *page;
		cursor_get_u32le(c, &pgno);
		cursor_get_u32le(c, &commit);
		cursor_get_bytes(c, page_size, &p);
		if (pgno == 0)
			goto corrupt;
		if (!frames_grow(d) || (page = malloc(page_size)) == NULL)
			goto nomem;
		memcpy(page, p, page_size);
		wal_append_committed(d, pgno, commit, page);
		v->mem_used += page_size;
	}
	if (n_frames > 0 && get32be(d->frames[n_frames - 1].hdr + 4) == 0)
		goto corrupt; /* the WAL must end with a commit frame */

	old = db_lookup(v, db);
	if (old != NULL && old->n_open > 0)
		goto busy;
	if (old != NULL) {
		/* Keep the shm regions of the old image, invalidated, in case SQLite still has
		 * them mapped; everything else is replaced. */
		d->regions = old->regions;
		d->n_regions = old->n_regions;
		old->regions = NULL;
		old->n_regions = 0;
		db_destroy(v, old);
	}
	d->next = v->dbs;
	v->dbs = d;
	idx_invalidate(d);
	return 0;
busy:
	db_free_contents(d);
	free(d->name);
	free(d);
	return ERR_BUSY;
corrupt:
	db_free_contents(d);
	free(d->name);
	free(d);
	return ERR_CORRUPT;
nomem:
	db_free_contents(d);
	free(d->name);
	free(d);
	return ERR_NOMEM;
}

int core__vfs_create_db(struct core_vfs *v, const char *db, uint32_t page_size)
{
	if (db_lookup(v, db) != NULL)
		return ERR_EXISTS;
	return db_create(v, db, page_size, true) != NULL ? 0 : ERR_NOMEM;
}

int core__vfs_open_count(struct core_vfs *v, const char *db)
{
	struct vdb *d = db_lookup(v, db);
	return d != NULL ? d->n_open : 0;
}

void core__vfs_delete_db(struct core_vfs *v, const char *db)
{
	struct vdb *d = db_lookup(v, db);
	if (d != NULL)
		db_destroy(v, d);
}

uint64_t core__vfs_mem_used(struct core_vfs *v)
{
	return v->mem_used;
}

/* Encoding of pqlite's Raft entries.
 *
 * Every command starts with an 8-byte header, then the database name, then a type-specific
 * body; all integers little-endian; the whole entry is zero-padded to a multiple of 8 bytes
 * (c-raft 0.15 requires it and does not check):
 *
 *   0  u8   format version (CMD_FORMAT_VERSION = 1)
 *   1  u8   type: 1 FRAMES, 2 CREATE_DB, 3 DROP_DB
 *   2  u8   L, length of the database name (1..63)
 *   3  u8   0
 *   4  u32  0 (reserved)
 *   8  L bytes of name (UTF-8, no NUL), zero-padded to a multiple of 8
 *
 * FRAMES body (at offset 8 + pad8(L)):
 *   0  u32  page size (power of two, 512..65536)
 *   4  u32  n, number of pages (>= 1)
 *   8  u32  commit size: database size in pages after the transaction (>= 1)
 *  12  u32  D, number of delta-encoded pages (0..n)
 *  16  n x u32 page numbers (each >= 1), zero-padded to a multiple of 8
 *      if D > 0: n x u8 kinds (0 full image, 1 delta; exactly D ones), zero-padded to 8
 *      the full images (page-size bytes each), in page order
 *      the deltas, in page order, each: u64 hash of the base page, u32 R runs, u32 B
 *      bytes of data, R x (u32 offset, u32 length) sorted, disjoint, inside the page,
 *      lengths >= 1 and summing to B (R = 0: the page is unchanged); then the B bytes,
 *      zero-padded to a multiple of 8.
 *
 * A delta rebuilds a page from its base version: the committed image of that page just
 * before this entry (all zeros beyond the database's end), identical on every node since
 * entries of a database apply in log order. The hash makes a divergent base an error.
 *
 * CREATE_DB and DROP_DB have no body. Decoding rejects anything that is not exactly this:
 * wrong version or type, short buffer, non-zero reserved or padding bytes, trailing bytes. */
#include "command.h"

#include <stdlib.h>
#include <string.h>

#include "../lib/buf.h"
#include "../lib/err.h"

#define PAD8(n) (((n) + 7u) & ~(size_t)7u)

struct cmd_delta {
	uint64_t hash;
	uint32_t n_runs;
	uint32_t data_len;
	uint32_t *runs;      /* n_runs x (offset, length) */
	const uint8_t *data; /* decode: the run bytes in the buffer; encode: unused */
};

static const uint8_t zero_page[65536];

/* A fast, non-cryptographic 64-bit hash of a page (detects divergence, not attacks). */
static uint64_t page_hash(const uint8_t *p, uint32_t n)
{
	uint64_t h = 0x243f6a8885a308d3ull ^ n, w;
	uint32_t i;
	for (i = 0; i + 8 <= n; i += 8) {
		memcpy(&w, p + i, 8);
		h ^= w;
		h *= 0x9e3779b97f4a7c15ull;
		h ^= h >> 29;
	}
	return h;
}

static size_t name_len(const struct command *c)
{
	return strnlen(c->db, sizeof c->db);
}

static size_t delta_size(const struct cmd_delta *d)
{
	return 16 + (size_t)d->n_runs * 8 + PAD8(d->data_len);
}

static void deltas_free(struct command *c)
{
	uint32_t i;
	if (c->deltas != NULL)
		for (i = 0; i < c->frames.n; i++)
			free(c->deltas[i].runs);
	free(c->deltas);
	free(c->kinds);
	c->deltas = NULL;
	c->kinds = NULL;
	c->n_delta = 0;
}

/* Byte runs where page differs from base; runs closer than 16 bytes are merged (a run
 * costs 8 bytes of header). Returns false if the delta would not be worth it. */
static bool compute_runs(const uint8_t *page, const uint8_t *base, uint32_t size,
			 struct cmd_delta *d)
{
	uint32_t cap = 16, i = 0, budget = size / 2;
	d->n_runs = 0;
	d->data_len = 0;
	d->runs = malloc(sizeof *d->runs * 2 * cap);
	if (d->runs == NULL)
		return false;
	while (i < size) {
		uint32_t start, end;
		uint64_t a, b;
		/* Skip equal 8-byte words quickly: most of a page is unchanged. */
		if ((i & 7) == 0 && i + 8 <= size) {
			memcpy(&a, page + i, 8);
			memcpy(&b, base + i, 8);
			if (a == b) {
				i += 8;
				continue;
			}
		}
		if (page[i] == base[i]) {
			i++;
			continue;
		}
		start = i;
		end = i + 1;
		for (i = end; i < size; i++) {
			if (page[i] != base[i])
				end = i + 1;
			else if (i - end >= 16)
				break;
		}
		if (d->n_runs == cap) {
			uint32_t *r = realloc(d->runs, sizeof *r * 2 * cap * 2);
			if (r == NULL)
				return false;
			d->runs = r;
			cap *= 2;
		}
		d->runs[2 * d->n_runs] = start;
		d->runs[2 * d->n_runs + 1] = end - start;
		d->n_runs++;
		d->data_len += end - start;
		if (delta_size(d) > budget)
			return false;
		i = end;
	}
	return true;
}

int cmd_set_base(struct command *c, cmd_base_fn base, void *ctx)
{
	struct core_frames *f = &c->frames;
	uint32_t i;

	deltas_free(c);
	if (c->type != CMD_FRAMES || f->n == 0)
		return 0;
	c->kinds = calloc(f->n, 1);
	c->deltas = calloc(f->n, sizeof *c->deltas);
	if (c->kinds == NULL || c->deltas == NULL) {
		deltas_free(c);
		return ERR_NOMEM;
	}
	for (i = 0; i < f->n; i++) {
		const uint8_t *b = base(ctx, f->pgnos[i]);
		struct cmd_delta *d = &c->deltas[i];
		if (b == NULL)
			b = zero_page;
		if (compute_runs(f->pages[i], b, f->page_size, d)) {
			d->hash = page_hash(b, f->page_size);
			c->kinds[i] = 1;
			c->n_delta++;
		} else {
			free(d->runs);
			d->runs = NULL;
		}
	}
	return 0;
}

size_t cmd_sizeof(const struct command *c)
{
	size_t n = 8 + PAD8(name_len(c));
	uint32_t i;
	if (c->type == CMD_FRAMES) {
		n += 16;
		n += PAD8((size_t)c->frames.n * 4);
		if (c->n_delta > 0)
			n += PAD8(c->frames.n);
		for (i = 0; i < c->frames.n; i++)
			n += c->n_delta > 0 && c->kinds[i] ? delta_size(&c->deltas[i])
							   : c->frames.page_size;
	}
	return PAD8(n);
}

static void put32(uint8_t **p, uint32_t v)
{
	(*p)[0] = (uint8_t)v;
	(*p)[1] = (uint8_t)(v >> 8);
	(*p)[2] = (uint8_t)(v >> 16);
	(*p)[3] = (uint8_t)(v >> 24);
	*p += 4;
}

static uint8_t *align8(uint8_t *start, uint8_t *p)
{
	return start + PAD8((size_t)(p - start));
}

void cmd_encode(const struct command *c, void *buf)
{
	size_t total = cmd_sizeof(c), len = name_len(c);
	uint8_t *start = buf, *p = buf;
	uint32_t i, r;

	memset(buf, 0, total);
	p[0] = CMD_FORMAT_VERSION;
	p[1] = c->type;
	p[2] = (uint8_t)len;
	p += 8;
	memcpy(p, c->db, len);
	p += PAD8(len);
	if (c->type != CMD_FRAMES)
		return;
	put32(&p, c->frames.page_size);
	put32(&p, c->frames.n);
	put32(&p, c->frames.commit_size);
	put32(&p, c->n_delta);
	for (i = 0; i < c->frames.n; i++)
		put32(&p, c->frames.pgnos[i]);
	p = align8(start, p);
	if (c->n_delta > 0) {
		memcpy(p, c->kinds, c->frames.n);
		p = align8(start, p + c->frames.n);
	}
	for (i = 0; i < c->frames.n; i++) {
		if (c->n_delta > 0 && c->kinds[i])
			continue;
		memcpy(p, c->frames.pages[i], c->frames.page_size);
		p += c->frames.page_size;
	}
	for (i = 0; c->n_delta > 0 && i < c->frames.n; i++) {
		const struct cmd_delta *d = &c->deltas[i];
		if (!c->kinds[i])
			continue;
		put32(&p, (uint32_t)d->hash);
		put32(&p, (uint32_t)(d->hash >> 32));
		put32(&p, d->n_runs);
		put32(&p, d->data_len);
		for (r = 0; r < 2 * d->n_runs; r++)
			put32(&p, d->runs[r]);
		for (r = 0; r < d->n_runs; r++) {
			memcpy(p, c->frames.pages[i] + d->runs[2 * r], d->runs[2 * r + 1]);
			p += d->runs[2 * r + 1];
		}
		p = align8(start, p);
	}
}

static bool all_zero(const uint8_t *p, size_t n)
{
	size_t i;
	for (i = 0; i < n; i++)
		if (p[i] != 0)
			return false;
	return true;
}

static bool get_pad(struct cursor *cur, size_t used)
{
	const uint8_t *pad;
	size_t n = PAD8(used) - used;
	return cursor_get_bytes(cur, n, &pad) && all_zero(pad, n);
}

/* Parse one delta record for a page of `size` bytes. */
static bool decode_delta(struct cursor *cur, uint32_t size, struct cmd_delta *d)
{
	uint32_t lo, hi, r, end = 0;
	uint64_t sum = 0;
	if (!cursor_get_u32le(cur, &lo) || !cursor_get_u32le(cur, &hi) ||
	    !cursor_get_u32le(cur, &d->n_runs) || !cursor_get_u32le(cur, &d->data_len))
		return false;
	d->hash = (uint64_t)lo | ((uint64_t)hi << 32);
	if (d->n_runs > size || d->data_len > size ||
	    (uint64_t)d->n_runs * 8 > cur->len)
		return false;
	d->runs = malloc(sizeof *d->runs * 2 * (d->n_runs + 1)); /* none: page unchanged */
	if (d->runs == NULL)
		return false;
	for (r = 0; r < d->n_runs; r++) {
		uint32_t off, len;
		cursor_get_u32le(cur, &off);
		cursor_get_u32le(cur, &len);
		if (len == 0 || off < end || off > size || len > size - off)
			return false;
		end = off + len;
		sum += len;
		d->runs[2 * r] = off;
		d->runs[2 * r + 1] = len;
	}
	if (sum != d->data_len || !cursor_get_bytes(cur, d->data_len, &d->data))
		return false;
	return get_pad(cur, d->data_len);
}

int cmd_decode(const void *buf, size_t len, struct command *c)
{
	struct cursor cur = {buf, len};
	const uint8_t *hdr, *name, *kinds;
	uint32_t i, n_ones = 0;
	size_t nlen;

	memset(c, 0, sizeof *c);
	if (len % 8 != 0 || !cursor_get_bytes(&cur, 8, &hdr))
		return ERR_CORRUPT;
	if (hdr[0] != CMD_FORMAT_VERSION || hdr[3] != 0 || !all_zero(hdr + 4, 4))
		return ERR_CORRUPT;
	c->type = hdr[1];
	if (c->type != CMD_FRAMES && c->type != CMD_CREATE_DB && c->type != CMD_DROP_DB)
		return ERR_CORRUPT;
	nlen = hdr[2];
	if (nlen == 0 || nlen >= sizeof c->db)
		return ERR_CORRUPT;
	if (!cursor_get_bytes(&cur, nlen, &name) || memchr(name, 0, nlen) != NULL)
		return ERR_CORRUPT;
	if (!get_pad(&cur, nlen))
		return ERR_CORRUPT;
	memcpy(c->db, name, nlen);
	c->db[nlen] = 0;

	if (c->type == CMD_FRAMES) {
		struct core_frames *f = &c->frames;
		if (!cursor_get_u32le(&cur, &f->page_size) || !cursor_get_u32le(&cur, &f->n) ||
		    !cursor_get_u32le(&cur, &f->commit_size) || !cursor_get_u32le(&cur, &c->n_delta))
			return ERR_CORRUPT;
		if (f->n == 0 || f->commit_size == 0 || c->n_delta > f->n)
			return ERR_CORRUPT;
		if (f->page_size < 512 || f->page_size > 65536 || (f->page_size & (f->page_size - 1)))
			return ERR_CORRUPT;
		/* Bound n by what the buffer can hold before allocating anything: every page
		 * takes at least 4 + 16 bytes (a delta record) or 4 + page size. */
		if ((uint64_t)f->n * 20 > cur.len ||
		    (uint64_t)(f->n - c->n_delta) * (4 + f->page_size) > cur.len)
			return ERR_CORRUPT;
		f->pgnos = malloc(sizeof *f->pgnos * f->n);
		f->pages = calloc(f->n, sizeof *f->pages);
		if (f->pgnos == NULL || f->pages == NULL) {
			cmd_close(c);
			return ERR_NOMEM;
		}
		for (i = 0; i < f->n; i++) {
			cursor_get_u32le(&cur, &f->pgnos[i]);
			if (f->pgnos[i] == 0)
				goto corrupt;
		}
		if (!get_pad(&cur, (size_t)f->n * 4))
			goto corrupt;
		if (c->n_delta > 0) {
			if (!cursor_get_bytes(&cur, f->n, &kinds) || !get_pad(&cur, f->n))
				goto corrupt;
			c->kinds = malloc(f->n);
			c->deltas = calloc(f->n, sizeof *c->deltas);
			if (c->kinds == NULL || c->deltas == NULL) {
				cmd_close(c);
				return ERR_NOMEM;
			}
			for (i = 0; i < f->n; i++) {
				if (kinds[i] > 1)
					goto corrupt;
				c->kinds[i] = kinds[i];
				n_ones += kinds[i];
			}
			if (n_ones != c->n_delta)
				goto corrupt;
		}
		for (i = 0; i < f->n; i++) {
			if (c->n_delta > 0 && c->kinds[i])
				continue;
			if (!cursor_get_bytes(&cur, f->page_size, &f->pages[i]))
				goto corrupt;
		}
		for (i = 0; c->n_delta > 0 && i < f->n; i++)
			if (c->kinds[i] && !decode_delta(&cur, f->page_size, &c->deltas[i]))
				goto corrupt;
		f->owned = false;
	}
	if (cur.len != 0)
		goto corrupt;
	return 0;
corrupt:
	cmd_close(c);
	return ERR_CORRUPT;
}

int cmd_materialize(struct command *c, cmd_base_fn base, void *ctx)
{
	struct core_frames *f = &c->frames;
	uint32_t i, r, k = 0;

	if (c->type != CMD_FRAMES || c->n_delta == 0 || c->owned_pages != NULL)
		return 0;
	c->owned_pages = malloc((size_t)c->n_delta * f->page_size);
	if (c->owned_pages == NULL)
		return ERR_NOMEM;
	for (i = 0; i < f->n; i++) {
		const struct cmd_delta *d = &c->deltas[i];
		const uint8_t *b, *src;
		uint8_t *page;
		if (!c->kinds[i])
			continue;
		b = base(ctx, f->pgnos[i]);
		if (b == NULL)
			b = zero_page;
		if (page_hash(b, f->page_size) != d->hash)
			return ERR_CORRUPT;
		page = c->owned_pages + (size_t)k++ * f->page_size;
		memcpy(page, b, f->page_size);
		src = d->data;
		for (r = 0; r < d->n_runs; r++) {
			memcpy(page + d->runs[2 * r], src, d->runs[2 * r + 1]);
			src += d->runs[2 * r + 1];
		}
		f->pages[i] = page;
	}
	return 0;
}

void cmd_close(struct command *c)
{
	deltas_free(c);
	free(c->owned_pages);
	c->owned_pages = NULL;
	if (c->type == CMD_FRAMES && !c->frames.owned) {
		free(c->frames.pgnos);
		free((void *)c->frames.pages);
		c->frames.pgnos = NULL;
		c->frames.pages = NULL;
	}
}

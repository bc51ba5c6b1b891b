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
 *  12  u32  0 (reserved)
 *  16  n x u32 page numbers (each >= 1), zero-padded to a multiple of 8
 *      n x page-size bytes of page images, in the same order
 *
 * CREATE_DB and DROP_DB have no body. Decoding rejects anything that is not exactly this:
 * wrong version or type, short buffer, non-zero reserved or padding bytes, trailing bytes. */
#include "command.h"

#include <stdlib.h>
#include <string.h>

#include "../lib/buf.h"
#include "../lib/err.h"

#define PAD8(n) (((n) + 7u) & ~(size_t)7u)

static size_t name_len(const struct command *c)
{
	return strnlen(c->db, sizeof c->db);
}

size_t cmd_sizeof(const struct command *c)
{
	size_t n = 8 + PAD8(name_len(c));
	if (c->type == CMD_FRAMES) {
		n += 16;
		n += PAD8((size_t)c->frames.n * 4);
		n += (size_t)c->frames.n * c->frames.page_size;
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

void cmd_encode(const struct command *c, void *buf)
{
	size_t total = cmd_sizeof(c), len = name_len(c);
	uint8_t *start = buf, *p = buf;
	uint32_t i;

	memset(buf, 0, total);
	p[0] = CMD_FORMAT_VERSION;
	p[1] = c->type;
	p[2] = (uint8_t)len;
	p += 8;
	memcpy(p, c->db, len);
	p += PAD8(len);
	if (c->type == CMD_FRAMES) {
		put32(&p, c->frames.page_size);
		put32(&p, c->frames.n);
		put32(&p, c->frames.commit_size);
		put32(&p, 0);
		for (i = 0; i < c->frames.n; i++)
			put32(&p, c->frames.pgnos[i]);
		p = start + (size_t)(p - start + 7) / 8 * 8;
		for (i = 0; i < c->frames.n; i++) {
			memcpy(p, c->frames.pages[i], c->frames.page_size);
			p += c->frames.page_size;
		}
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

int cmd_decode(const void *buf, size_t len, struct command *c)
{
	struct cursor cur = {buf, len};
	const uint8_t *hdr, *name, *pad;
	uint32_t reserved, i;
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
	if (!cursor_get_bytes(&cur, PAD8(nlen) - nlen, &pad) || !all_zero(pad, PAD8(nlen) - nlen))
		return ERR_CORRUPT;
	memcpy(c->db, name, nlen);
	c->db[nlen] = 0;

	if (c->type == CMD_FRAMES) {
		struct core_frames *f = &c->frames;
		if (!cursor_get_u32le(&cur, &f->page_size) || !cursor_get_u32le(&cur, &f->n) ||
		    !cursor_get_u32le(&cur, &f->commit_size) || !cursor_get_u32le(&cur, &reserved))
			return ERR_CORRUPT;
		if (reserved != 0 || f->n == 0 || f->commit_size == 0)
			return ERR_CORRUPT;
		if (f->page_size < 512 || f->page_size > 65536 || (f->page_size & (f->page_size - 1)))
			return ERR_CORRUPT;
		/* Bound n by what the buffer can hold before allocating anything. */
		if ((uint64_t)f->n * (4 + f->page_size) > cur.len)
			return ERR_CORRUPT;
		f->pgnos = malloc(sizeof *f->pgnos * f->n);
		f->pages = malloc(sizeof *f->pages * f->n);
		if (f->pgnos == NULL || f->pages == NULL) {
			cmd_close(c);
			return ERR_NOMEM;
		}
		for (i = 0; i < f->n; i++) {
			cursor_get_u32le(&cur, &f->pgnos[i]);
			if (f->pgnos[i] == 0)
				goto corrupt;
		}
		nlen = PAD8((size_t)f->n * 4) - (size_t)f->n * 4;
		if (!cursor_get_bytes(&cur, nlen, &pad) || !all_zero(pad, nlen))
			goto corrupt;
		for (i = 0; i < f->n; i++)
			if (!cursor_get_bytes(&cur, f->page_size, &f->pages[i]))
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

void cmd_close(struct command *c)
{
	if (c->type == CMD_FRAMES && !c->frames.owned) {
		free(c->frames.pgnos);
		free((void *)c->frames.pages);
		c->frames.pgnos = NULL;
		c->frames.pages = NULL;
	}
}

/* Growable byte buffer and bounded cursor (see buf.h). */
#include "buf.h"

#include <stdlib.h>
#include <string.h>

void buf_init(struct buf *b)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->failed = false;
}

void buf_close(struct buf *b)
{
	free(b->data);
	buf_init(b);
}

void buf_reset(struct buf *b)
{
	b->len = 0;
	b->failed = false;
}

bool buf_reserve(struct buf *b, size_t extra)
{
	size_t need, cap;
	uint8_t *p;

	if (b->failed)
		return false;
	if (extra > SIZE_MAX - b->len)
		goto fail;
	need = b->len + extra;
	if (need <= b->cap)
		return true;
	cap = b->cap ? b->cap : 256;
	while (cap < need) {
		if (cap > SIZE_MAX / 2) {
			cap = need;
			break;
		}
		cap *= 2;
	}
	p = realloc(b->data, cap);
	if (p == NULL)
		goto fail;
	b->data = p;
	b->cap = cap;
	return true;
fail:
	b->failed = true;
	return false;
}

void buf_put(struct buf *b, const void *p, size_t n)
{
	if (n == 0 || !buf_reserve(b, n))
		return;
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

void buf_put_u8(struct buf *b, uint8_t v)
{
	buf_put(b, &v, 1);
}

void buf_put_u16be(struct buf *b, uint16_t v)
{
	uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
	buf_put(b, x, 2);
}

void buf_put_u32be(struct buf *b, uint32_t v)
{
	uint8_t x[4];
	put_u32be(x, v);
	buf_put(b, x, 4);
}

void buf_put_u16le(struct buf *b, uint16_t v)
{
	uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
	buf_put(b, x, 2);
}

void buf_put_u32le(struct buf *b, uint32_t v)
{
	uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
	buf_put(b, x, 4);
}

void buf_put_u64le(struct buf *b, uint64_t v)
{
	buf_put_u32le(b, (uint32_t)v);
	buf_put_u32le(b, (uint32_t)(v >> 32));
}

void buf_put_zeros(struct buf *b, size_t n)
{
	if (n == 0 || !buf_reserve(b, n))
		return;
	memset(b->data + b->len, 0, n);
	b->len += n;
}

void buf_consume(struct buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
}

bool cursor_get_bytes(struct cursor *c, size_t n, const uint8_t **out)
{
	if (c->len < n)
		return false;
	*out = c->p;
	c->p += n;
	c->len -= n;
	return true;
}

bool cursor_skip(struct cursor *c, size_t n)
{
	const uint8_t *p;
	return cursor_get_bytes(c, n, &p);
}

bool cursor_get_u8(struct cursor *c, uint8_t *v)
{
	const uint8_t *p;
	if (!cursor_get_bytes(c, 1, &p))
		return false;
	*v = p[0];
	return true;
}

bool cursor_get_u16le(struct cursor *c, uint16_t *v)
{
	const uint8_t *p;
	if (!cursor_get_bytes(c, 2, &p))
		return false;
	*v = (uint16_t)(p[0] | (p[1] << 8));
	return true;
}

bool cursor_get_u32le(struct cursor *c, uint32_t *v)
{
	const uint8_t *p;
	if (!cursor_get_bytes(c, 4, &p))
		return false;
	*v = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
	return true;
}

bool cursor_get_u64le(struct cursor *c, uint64_t *v)
{
	uint32_t lo, hi;
	if (!cursor_get_u32le(c, &lo) || !cursor_get_u32le(c, &hi))
		return false;
	*v = (uint64_t)lo | ((uint64_t)hi << 32);
	return true;
}

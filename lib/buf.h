/* A growable byte buffer with a sticky failure flag, and a bounded read cursor. */
#ifndef PQ_LIB_BUF_H
#define PQ_LIB_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Writers append; any allocation failure sets `failed` and later puts are no-ops,
 * so callers check once, before using the bytes. */
struct buf {
	uint8_t *data;
	size_t len;
	size_t cap;
	bool failed;
};

void buf_init(struct buf *b);
void buf_close(struct buf *b);            /* frees data */
void buf_reset(struct buf *b);            /* len = 0, failed = false, keeps memory */
bool buf_reserve(struct buf *b, size_t extra); /* false (and failed) on OOM */
void buf_put(struct buf *b, const void *p, size_t n);
void buf_put_u8(struct buf *b, uint8_t v);
void buf_put_u16be(struct buf *b, uint16_t v);
void buf_put_u32be(struct buf *b, uint32_t v);
void buf_put_u16le(struct buf *b, uint16_t v);
void buf_put_u32le(struct buf *b, uint32_t v);
void buf_put_u64le(struct buf *b, uint64_t v);
void buf_put_zeros(struct buf *b, size_t n);
/* Remove the first n bytes (n <= len). */
void buf_consume(struct buf *b, size_t n);

/* A read cursor over [p, p+len). Getters return false when fewer bytes remain than
 * asked for, and never read past the end. */
struct cursor {
	const uint8_t *p;
	size_t len;
};

bool cursor_get_u8(struct cursor *c, uint8_t *v);
bool cursor_get_u16le(struct cursor *c, uint16_t *v);
bool cursor_get_u32le(struct cursor *c, uint32_t *v);
bool cursor_get_u64le(struct cursor *c, uint64_t *v);
bool cursor_get_bytes(struct cursor *c, size_t n, const uint8_t **out);
bool cursor_skip(struct cursor *c, size_t n);

/* Little/big-endian helpers on raw memory. */
static inline uint32_t get_u32be(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline void put_u32be(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}
static inline uint16_t get_u16be(const uint8_t *p)
{
	return (uint16_t)(((uint16_t)p[0] << 8) | p[1]);
}

#endif

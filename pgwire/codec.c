/* PostgreSQL v3 framing, frontend decoders and backend builders (layouts in codec.h). */
#include "codec.h"

#include <stdio.h>
#include <string.h>

#include "../lib/err.h"

/* ---- Framing -------------------------------------------------------------------------- */

/* Message types a frontend may send after startup (protocol 3.0). */
#define FRONTEND_TYPES "BCDEFHPQSXcdfp"

int pgw_frame(const struct buf *in, enum pgw_phase phase, size_t max_len, struct pgw_msg *out,
	      const char **reason)
{
	const uint8_t *p = in->data;
	size_t have = in->len;
	size_t head; /* bytes before the length field */
	uint32_t len;

	head = phase == PGW_PHASE_STARTUP ? 0 : 1;
	if (phase == PGW_PHASE_NORMAL && have >= 1 &&
	    (p[0] == 0 || strchr(FRONTEND_TYPES, p[0]) == NULL)) {
		/* As PostgreSQL: an unknown type is fatal as soon as its byte arrives, without
		 * waiting for a body whose length nobody can trust. */
		out->type = p[0];
		out->body = p;
		out->len = 0;
		out->frame_len = 1;
		return PGW_FRAME_MSG;
	}
	if (have < head + 4)
		return PGW_FRAME_NEED_MORE;
	len = get_u32be(p + head);
	if (phase == PGW_PHASE_STARTUP) {
		/* The length counts itself and the int32 code. */
		if (len < 8 || len > PGW_CODEC_STARTUP_MAX_LEN) {
			*reason = "invalid length of startup packet";
			return PGW_FRAME_MALFORMED;
		}
	} else {
		if (len < 4 || (size_t)len > max_len) {
			*reason = "invalid message length";
			return PGW_FRAME_MALFORMED;
		}
	}
	/* head + len cannot overflow: len < 2^32 and size_t is at least 64 bits here, or
	 * max_len already bounded it. */
	if (have - head < len)
		return PGW_FRAME_NEED_MORE;
	out->type = head ? p[0] : 0;
	out->body = p + head + 4;
	out->len = (size_t)len - 4;
	out->frame_len = head + (size_t)len;
	return PGW_FRAME_MSG;
}

/* ---- Decoders --------------------------------------------------------------------------- */

int pgw_startup_decode(const struct pgw_msg *m, struct pgw_startup *out, const char **reason)
{
	struct cursor c = {m->body, m->len};
	const uint8_t *p;
	uint32_t code;

	memset(out, 0, sizeof(*out));
	if (!cursor_get_bytes(&c, 4, &p))
		goto bad_length;
	code = get_u32be(p);
	out->code = code;
	switch (code) {
	case PGW_CODE_SSL:
	case PGW_CODE_GSSENC:
		if (c.len != 0)
			goto bad_length;
		out->kind = code == PGW_CODE_SSL ? PGW_STARTUP_SSL : PGW_STARTUP_GSSENC;
		return 0;
	case PGW_CODE_CANCEL:
		if (c.len != 8)
			goto bad_length;
		out->kind = PGW_STARTUP_CANCEL;
		out->pid = get_u32be(c.p);
		out->secret = get_u32be(c.p + 4);
		return 0;
	default:
		break;
	}
	out->kind = PGW_STARTUP_MESSAGE;
	out->major = (uint16_t)(code >> 16);
	out->minor = (uint16_t)code;
	out->params = (const char *)c.p;
	out->params_len = c.len;
	out->params_pos = 0;
	/* Check the layout: pairs of NUL-terminated strings, then a single final NUL. */
	for (;;) {
		const uint8_t *nul;
		int i;

		if (c.len == 0)
			goto bad_layout; /* the terminator is missing */
		if (c.p[0] == 0) {
			if (c.len != 1)
				goto bad_layout; /* bytes after the terminator */
			return 0;
		}
		for (i = 0; i < 2; i++) { /* key, then value */
			nul = memchr(c.p, 0, c.len);
			if (nul == NULL)
				goto bad_layout;
			cursor_skip(&c, (size_t)(nul - c.p) + 1);
		}
	}
bad_layout:
	*reason = "invalid startup packet layout: expected terminator as last byte";
	return ERR_PROTO;
bad_length:
	*reason = "invalid length of startup packet";
	return ERR_PROTO;
}

bool pgw_startup_next_param(struct pgw_startup *s, const char **key, const char **value)
{
	const char *p = s->params + s->params_pos;
	size_t klen, vlen;

	/* pgw_startup_decode validated the layout, so every string below is terminated
	 * inside params; the checks only guard against misuse. */
	if (s->params == NULL || s->params_pos >= s->params_len || p[0] == '\0')
		return false;
	klen = strnlen(p, s->params_len - s->params_pos);
	if (s->params_pos + klen + 1 >= s->params_len)
		return false;
	vlen = strnlen(p + klen + 1, s->params_len - s->params_pos - klen - 1);
	*key = p;
	*value = p + klen + 1;
	s->params_pos += klen + 1 + vlen + 1;
	return true;
}

int pgw_query_decode(const struct pgw_msg *m, const char **sql, size_t *len, const char **reason)
{
	const uint8_t *nul;

	if (m->len == 0)
		goto bad;
	nul = memchr(m->body, 0, m->len);
	if (nul != m->body + m->len - 1)
		goto bad;
	*sql = (const char *)m->body;
	*len = m->len - 1;
	return 0;
bad:
	*reason = "invalid string in message";
	return ERR_PROTO;
}

int pgw_error_decode(const struct pgw_msg *m, struct pgw_error *out)
{
	const char *p = (const char *)m->body, *sev_s = NULL, *sev_v = NULL;
	size_t left = m->len;

	memset(out, 0, sizeof(*out));
	out->code = "";
	out->message = "";
	for (;;) {
		char code;
		size_t n;

		if (left == 0)
			return ERR_PROTO; /* the terminator is missing */
		code = *p++;
		left--;
		if (code == 0)
			break;
		n = strnlen(p, left);
		if (n == left)
			return ERR_PROTO; /* unterminated string */
		switch (code) {
		case 'S': sev_s = p; break;
		case 'V': sev_v = p; break;
		case 'C': out->code = p; break;
		case 'M': out->message = p; break;
		case 'D': out->detail = p; break;
		case 'H': out->hint = p; break;
		default: break;
		}
		p += n + 1;
		left -= n + 1;
	}
	if (left != 0)
		return ERR_PROTO; /* bytes after the terminator */
	out->severity = sev_v != NULL ? sev_v : sev_s != NULL ? sev_s : "";
	return 0;
}

int pgw_parameter_status_decode(const struct pgw_msg *m, const char **name, const char **value)
{
	const char *p = (const char *)m->body;
	size_t n1, n2;

	n1 = strnlen(p, m->len);
	if (n1 == m->len)
		return ERR_PROTO;
	n2 = strnlen(p + n1 + 1, m->len - n1 - 1);
	if (n1 + 1 + n2 != m->len - 1)
		return ERR_PROTO; /* unterminated, or bytes after the value */
	*name = p;
	*value = p + n1 + 1;
	return 0;
}

int pgw_terminate_decode(const struct pgw_msg *m, const char **reason)
{
	if (m->len != 0) {
		*reason = "invalid message format";
		return ERR_PROTO;
	}
	return 0;
}

/* ---- Builders --------------------------------------------------------------------------- */

size_t pgw_buf_start(struct buf *b, uint8_t type)
{
	size_t mark;

	buf_put_u8(b, type);
	mark = b->len;
	buf_put_u32be(b, 0); /* patched by pgw_buf_finish */
	return mark;
}

void pgw_buf_put_i16(struct buf *b, int16_t v)
{
	buf_put_u16be(b, (uint16_t)v);
}

void pgw_buf_put_i32(struct buf *b, int32_t v)
{
	buf_put_u32be(b, (uint32_t)v);
}

void pgw_buf_put_str(struct buf *b, const char *s)
{
	buf_put(b, s, strlen(s) + 1);
}

void pgw_buf_put_bytes(struct buf *b, const void *p, size_t n)
{
	buf_put(b, p, n);
}

void pgw_buf_finish(struct buf *b, size_t mark)
{
	size_t len;

	if (b->failed)
		return;
	if (mark + 4 > b->len) { /* misuse: the mark is not from this buffer */
		b->failed = true;
		return;
	}
	len = b->len - mark;
	if (len > INT32_MAX) {
		b->failed = true;
		return;
	}
	put_u32be(b->data + mark, (uint32_t)len);
}

void pgw_encode_startup(struct buf *b, unsigned n, const char *const *kv)
{
	size_t mark = b->len;
	unsigned i;

	buf_put_u32be(b, 0); /* patched below: the length counts itself */
	buf_put_u32be(b, PGW_PROTOCOL_3_0);
	for (i = 0; i < 2 * n; i++)
		pgw_buf_put_str(b, kv[i]);
	buf_put_u8(b, 0);
	if (!b->failed)
		put_u32be(b->data + mark, (uint32_t)(b->len - mark));
}

void pgw_encode_query(struct buf *b, const char *sql)
{
	size_t m = pgw_buf_start(b, 'Q');
	pgw_buf_put_str(b, sql);
	pgw_buf_finish(b, m);
}

void pgw_encode_auth_ok(struct buf *b)
{
	size_t m = pgw_buf_start(b, 'R');
	pgw_buf_put_i32(b, 0);
	pgw_buf_finish(b, m);
}

void pgw_encode_parameter_status(struct buf *b, const char *name, const char *value)
{
	size_t m = pgw_buf_start(b, 'S');
	pgw_buf_put_str(b, name);
	pgw_buf_put_str(b, value);
	pgw_buf_finish(b, m);
}

void pgw_encode_backend_key(struct buf *b, uint32_t pid, uint32_t secret)
{
	size_t m = pgw_buf_start(b, 'K');
	buf_put_u32be(b, pid);
	buf_put_u32be(b, secret);
	pgw_buf_finish(b, m);
}

void pgw_encode_ready(struct buf *b, char status)
{
	size_t m = pgw_buf_start(b, 'Z');
	buf_put_u8(b, (uint8_t)status);
	pgw_buf_finish(b, m);
}

void pgw_encode_row_description(struct buf *b, unsigned n, const struct pgw_column *cols)
{
	size_t m = pgw_buf_start(b, 'T');
	unsigned i;

	if (n > INT16_MAX) {
		b->failed = true;
		return;
	}
	pgw_buf_put_i16(b, (int16_t)n);
	for (i = 0; i < n; i++) {
		pgw_buf_put_str(b, cols[i].name);
		pgw_buf_put_i32(b, 0);  /* table OID */
		pgw_buf_put_i16(b, 0);  /* attribute number */
		buf_put_u32be(b, cols[i].type_oid);
		pgw_buf_put_i16(b, cols[i].typlen);
		pgw_buf_put_i32(b, -1); /* type modifier */
		pgw_buf_put_i16(b, 0);  /* text format */
	}
	pgw_buf_finish(b, m);
}

void pgw_encode_command_complete(struct buf *b, const char *tag)
{
	size_t m = pgw_buf_start(b, 'C');
	pgw_buf_put_str(b, tag);
	pgw_buf_finish(b, m);
}

void pgw_encode_empty_query(struct buf *b)
{
	size_t m = pgw_buf_start(b, 'I');
	pgw_buf_finish(b, m);
}

static void put_field(struct buf *b, char code, const char *value)
{
	buf_put_u8(b, (uint8_t)code);
	pgw_buf_put_str(b, value);
}

void pgw_encode_error(struct buf *b, uint8_t type, const struct pgw_error *e)
{
	size_t m = pgw_buf_start(b, type);

	put_field(b, 'S', e->severity);
	put_field(b, 'V', e->severity);
	put_field(b, 'C', e->code);
	put_field(b, 'M', e->message);
	if (e->detail != NULL)
		put_field(b, 'D', e->detail);
	if (e->hint != NULL)
		put_field(b, 'H', e->hint);
	if (e->position > 0) {
		char pos[16];
		snprintf(pos, sizeof(pos), "%d", e->position);
		put_field(b, 'P', pos);
	}
	buf_put_u8(b, 0);
	pgw_buf_finish(b, m);
}

void pgw_encode_negotiate_version(struct buf *b, uint32_t minor, unsigned n_options,
				  const char *const *options)
{
	size_t m = pgw_buf_start(b, 'v');
	unsigned i;

	buf_put_u32be(b, minor);
	buf_put_u32be(b, n_options);
	for (i = 0; i < n_options; i++)
		pgw_buf_put_str(b, options[i]);
	pgw_buf_finish(b, m);
}

size_t pgw_datarow_start(struct buf *b, uint16_t n_fields)
{
	size_t m = pgw_buf_start(b, 'D');
	buf_put_u16be(b, n_fields);
	return m;
}

void pgw_datarow_put_null(struct buf *b)
{
	pgw_buf_put_i32(b, -1);
}

void pgw_datarow_put(struct buf *b, const void *p, size_t n)
{
	if (n > INT32_MAX) {
		b->failed = true;
		return;
	}
	buf_put_u32be(b, (uint32_t)n);
	buf_put(b, p, n);
}

size_t pgw_datarow_field_begin(struct buf *b)
{
	size_t mark = b->len;
	buf_put_u32be(b, 0);
	return mark;
}

void pgw_datarow_field_end(struct buf *b, size_t field_mark)
{
	size_t n;

	if (b->failed)
		return;
	if (field_mark + 4 > b->len) {
		b->failed = true;
		return;
	}
	n = b->len - field_mark - 4;
	if (n > INT32_MAX) {
		b->failed = true;
		return;
	}
	put_u32be(b->data + field_mark, (uint32_t)n);
}

/* PostgreSQL protocol v3 message framing, decoding and building: bytes in, bytes out, no
 * sockets and no session state.
 *
 * Frame layouts (every integer big-endian):
 *   startup phase:  int32 len (counts itself) | int32 code | body...      len in [8, 10000]
 *   normal phase:   byte type | int32 len (counts itself, not the type) | body...
 *                   len in [4, max_len]
 * A startup code is (major << 16 | minor) for a StartupMessage, or one of the request
 * codes below. A StartupMessage body after the code is a list of NUL-terminated
 * key/value pairs ended by one more NUL. */
#ifndef PQ_PGWIRE_CODEC_H
#define PQ_PGWIRE_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../lib/buf.h"

/* Same value as PGW_STARTUP_MAX_LEN in pgwire.h (checked in session.c); repeated here so
 * that the codec needs neither uv.h nor core.h. */
#define PGW_CODEC_STARTUP_MAX_LEN 10000

#define PGW_PROTOCOL_3_0 196608u     /* 3 << 16 */
#define PGW_CODE_CANCEL 80877102u    /* 1234 << 16 | 5678 */
#define PGW_CODE_SSL 80877103u       /* 1234 << 16 | 5679 */
#define PGW_CODE_GSSENC 80877104u    /* 1234 << 16 | 5680 */

enum pgw_phase {
	PGW_PHASE_STARTUP, /* no type byte */
	PGW_PHASE_NORMAL,  /* type byte + length, from a frontend: unknown types rejected */
	PGW_PHASE_BACKEND, /* type byte + length, from a backend (the proxy's upstream): any
			    * type byte is framed by its length */
};

/* Results of pgw_frame. */
enum {
	PGW_FRAME_MSG = 0,   /* *out holds one complete message */
	PGW_FRAME_NEED_MORE, /* not enough bytes yet; nothing consumed */
	PGW_FRAME_MALFORMED, /* the stream is broken; *reason says why */
};

/* One framed message. body points into the input buffer and is valid until the caller
 * consumes or appends to it. */
struct pgw_msg {
	uint8_t type;       /* message type byte; 0 in the startup phase */
	const uint8_t *body;/* after the length field (startup: starts with the int32 code) */
	size_t len;         /* bytes in body */
	size_t frame_len;   /* bytes the whole message occupies in the input */
};

/* Split the first message off in[0..len). max_len bounds the length field in the normal
 * phase (PGW_CODEC_STARTUP_MAX_LEN applies in the startup phase). Never reads past in->len.
 * On PGW_FRAME_MALFORMED, *reason is a static string. The caller consumes
 * out->frame_len bytes once it is done with the message. In the normal phase a type byte
 * that no frontend message has is returned at once as a message with no body (the caller
 * must end the connection: its length cannot be trusted); frame_len is then 1. */
int pgw_frame(const struct buf *in, enum pgw_phase phase, size_t max_len, struct pgw_msg *out,
	      const char **reason);

/* ---- Frontend message decoders: 0, or ERR_PROTO with *reason a static string ---------- */

enum pgw_startup_kind {
	PGW_STARTUP_MESSAGE, /* a protocol version plus parameters */
	PGW_STARTUP_SSL,
	PGW_STARTUP_GSSENC,
	PGW_STARTUP_CANCEL,
};

struct pgw_startup {
	enum pgw_startup_kind kind;
	uint32_t code;          /* raw code */
	uint16_t major, minor;  /* PGW_STARTUP_MESSAGE */
	uint32_t pid, secret;   /* PGW_STARTUP_CANCEL */
	/* Private below: the parameter list, walked with pgw_startup_next_param. */
	const char *params;
	size_t params_len;
	size_t params_pos;
};

/* Decode a startup-phase message. For a StartupMessage the parameter layout is checked
 * completely here (every key and value NUL-terminated, a final NUL as the last byte). */
int pgw_startup_decode(const struct pgw_msg *m, struct pgw_startup *out, const char **reason);

/* Next key/value pair of a decoded StartupMessage; false when there are no more. The
 * strings point into the message body. */
bool pgw_startup_next_param(struct pgw_startup *s, const char **key, const char **value);

/* Query ('Q'): the body must be a string whose only NUL is its last byte. *sql points
 * into the body and *len excludes the NUL. */
int pgw_query_decode(const struct pgw_msg *m, const char **sql, size_t *len, const char **reason);

/* Terminate ('X'): an empty body. */
int pgw_terminate_decode(const struct pgw_msg *m, const char **reason);

/* ---- Builders ------------------------------------------------------------------------
 * Sticky failure: on allocation failure or a message longer than INT32_MAX, b->failed is
 * set and every later put is a no-op; check b->failed once before sending. */

/* Start a backend message of `type`; returns the mark pgw_buf_finish needs. */
size_t pgw_buf_start(struct buf *b, uint8_t type);
void pgw_buf_put_i16(struct buf *b, int16_t v);
void pgw_buf_put_i32(struct buf *b, int32_t v);
void pgw_buf_put_str(struct buf *b, const char *s); /* with its NUL */
void pgw_buf_put_bytes(struct buf *b, const void *p, size_t n);
/* Back-patch the length of the message started at `mark`. */
void pgw_buf_finish(struct buf *b, size_t mark);

/* A RowDescription field. */
struct pgw_column {
	const char *name;
	uint32_t type_oid;
	int16_t typlen;
};

/* ErrorResponse / NoticeResponse fields. severity, code and message are required. */
struct pgw_error {
	const char *severity; /* "ERROR", "FATAL", "PANIC", "WARNING", "NOTICE", ... */
	const char *code;     /* SQLSTATE */
	const char *message;
	const char *detail;   /* NULL when absent */
	const char *hint;     /* NULL when absent */
	int position;         /* 1-based character index in the query; 0 when absent */
};

/* Frontend messages, for the proxy's upstream connection. */
/* StartupMessage 3.0 with n key/value pairs: kv[2i] is a key, kv[2i+1] its value. */
void pgw_encode_startup(struct buf *b, unsigned n, const char *const *kv);
void pgw_encode_query(struct buf *b, const char *sql);

void pgw_encode_auth_ok(struct buf *b);
void pgw_encode_parameter_status(struct buf *b, const char *name, const char *value);
void pgw_encode_backend_key(struct buf *b, uint32_t pid, uint32_t secret);
void pgw_encode_ready(struct buf *b, char status); /* 'I', 'T' or 'E' */
void pgw_encode_row_description(struct buf *b, unsigned n, const struct pgw_column *cols);
void pgw_encode_command_complete(struct buf *b, const char *tag);
void pgw_encode_empty_query(struct buf *b);
/* type is 'E' (ErrorResponse) or 'N' (NoticeResponse). */
void pgw_encode_error(struct buf *b, uint8_t type, const struct pgw_error *e);
/* NegotiateProtocolVersion: newest supported minor plus the unrecognized options. */
void pgw_encode_negotiate_version(struct buf *b, uint32_t minor, unsigned n_options,
				  const char *const *options);

/* DataRow is built field by field: pgw_datarow_start, then one put per column, then
 * pgw_buf_finish(b, mark). */
size_t pgw_datarow_start(struct buf *b, uint16_t n_fields);
void pgw_datarow_put_null(struct buf *b);
void pgw_datarow_put(struct buf *b, const void *p, size_t n);
/* A field of unknown length: begin, append its bytes with buf_put*, then end. */
size_t pgw_datarow_field_begin(struct buf *b);
void pgw_datarow_field_end(struct buf *b, size_t field_mark);

/* ---- Backend message decoders (what the proxy reads from its upstream) ----------------- */

/* ErrorResponse / NoticeResponse: fills severity (the non-localized 'V' field, else 'S'),
 * code, message, detail and hint with pointers into the body (absent fields: "" for the
 * first three, NULL for detail and hint; position 0). The body must be a list of
 * {byte code, string} fields ended by a NUL as its last byte, every string terminated
 * inside it. Returns 0 or ERR_PROTO. */
int pgw_error_decode(const struct pgw_msg *m, struct pgw_error *out);

/* ParameterStatus ('S'): name and value, both terminated inside the body. */
int pgw_parameter_status_decode(const struct pgw_msg *m, const char **name, const char **value);

#endif

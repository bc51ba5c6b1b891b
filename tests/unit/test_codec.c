/* Unit tests of pgwire/codec.c: framing at every split point, rejection of malformed
 * input without out-of-bounds reads, decoders, and the exact bytes of the builders. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../pgwire/codec.h"
#include "../../lib/err.h"

#define MAX_LEN (1u << 20)

/* ---- Helpers ------------------------------------------------------------------------- */

static void put32(struct buf *b, uint32_t v)
{
	buf_put_u32be(b, v);
}

/* Append a startup-phase packet: length, code, body. */
static void add_startup(struct buf *b, uint32_t code, const void *body, size_t n)
{
	put32(b, (uint32_t)(8 + n));
	put32(b, code);
	buf_put(b, body, n);
}

/* Append a normal-phase message. */
static void add_msg(struct buf *b, uint8_t type, const void *body, size_t n)
{
	buf_put_u8(b, type);
	put32(b, (uint32_t)(4 + n));
	buf_put(b, body, n);
}

struct seen {
	uint8_t type;
	size_t len;
	uint8_t body[256];
};

/* Feed stream[0..n) in chunks whose sizes cycle through `chunk` (1..n), framing after
 * each chunk the way a connection does. The first `n_startup` messages are framed in the
 * startup phase. Returns the number of messages seen; -1 on a malformed result. */
static int feed(const uint8_t *stream, size_t n, size_t chunk, int n_startup, struct seen *out,
		int max_out)
{
	struct buf in;
	size_t off = 0;
	int n_seen = 0;

	buf_init(&in);
	while (off < n) {
		size_t take = n - off < chunk ? n - off : chunk;
		buf_put(&in, stream + off, take);
		off += take;
		for (;;) {
			struct pgw_msg m;
			const char *reason = NULL;
			int r = pgw_frame(&in, n_seen < n_startup ? PGW_PHASE_STARTUP
								  : PGW_PHASE_NORMAL,
					  MAX_LEN, &m, &reason);
			if (r == PGW_FRAME_NEED_MORE)
				break;
			if (r == PGW_FRAME_MALFORMED) {
				buf_close(&in);
				return -1;
			}
			assert_true(n_seen < max_out);
			assert_true(m.len <= sizeof(out[n_seen].body));
			assert_int_equal(m.frame_len, m.len + (n_seen < n_startup ? 4 : 5));
			out[n_seen].type = m.type;
			out[n_seen].len = m.len;
			memcpy(out[n_seen].body, m.body, m.len);
			n_seen++;
			buf_consume(&in, m.frame_len);
		}
	}
	/* Nothing may be left over. */
	assert_int_equal(in.len, 0);
	buf_close(&in);
	return n_seen;
}

/* Frame bytes held in an exactly sized heap block, so ASan flags any over-read. */
static int frame_exact(const void *bytes, size_t n, enum pgw_phase phase, size_t max_len,
		       struct pgw_msg *m, const char **reason)
{
	struct buf b;
	int r;
	uint8_t *copy = malloc(n > 0 ? n : 1);

	assert_non_null(copy);
	memcpy(copy, bytes, n);
	b.data = copy;
	b.len = n;
	b.cap = n;
	b.failed = false;
	r = pgw_frame(&b, phase, max_len, m, reason);
	free(copy);
	return r;
}

/* ---- Framing ---------------------------------------------------------------------------- */

static void frame_stream_all_splits(void **state)
{
	static const char params[] = "user\0alice\0database\0db1\0application_name\0psql\0";
	static const char q1[] = "select 1";
	static const char q2[] = "insert into t values (1); select 2";
	struct buf s;
	struct seen seen[8];
	size_t chunk;

	(void)state;
	buf_init(&s);
	add_startup(&s, PGW_CODE_SSL, NULL, 0);
	add_startup(&s, PGW_PROTOCOL_3_0, params, sizeof(params)); /* includes the final NUL */
	add_msg(&s, 'Q', q1, sizeof(q1));
	add_msg(&s, 'Q', q2, sizeof(q2));
	add_msg(&s, 'X', NULL, 0);
	assert_false(s.failed);

	for (chunk = 1; chunk <= s.len; chunk++) {
		int n = feed(s.data, s.len, chunk, 2, seen, 8);
		assert_int_equal(n, 5);
		assert_int_equal(seen[0].type, 0);
		assert_int_equal(seen[0].len, 4);
		assert_int_equal(get_u32be(seen[0].body), PGW_CODE_SSL);
		assert_int_equal(seen[1].len, 4 + sizeof(params));
		assert_int_equal(get_u32be(seen[1].body), PGW_PROTOCOL_3_0);
		assert_memory_equal(seen[1].body + 4, params, sizeof(params));
		assert_int_equal(seen[2].type, 'Q');
		assert_int_equal(seen[2].len, sizeof(q1));
		assert_memory_equal(seen[2].body, q1, sizeof(q1));
		assert_int_equal(seen[3].type, 'Q');
		assert_int_equal(seen[3].len, sizeof(q2));
		assert_memory_equal(seen[3].body, q2, sizeof(q2));
		assert_int_equal(seen[4].type, 'X');
		assert_int_equal(seen[4].len, 0);
	}
	buf_close(&s);
}

/* Every proper prefix of a valid message needs more bytes; none is malformed. */
static void frame_prefixes_need_more(void **state)
{
	static const char q[] = "select 42";
	struct buf s;
	struct pgw_msg m;
	const char *reason;
	size_t i;

	(void)state;
	buf_init(&s);
	add_msg(&s, 'Q', q, sizeof(q));
	for (i = 0; i < s.len; i++)
		assert_int_equal(frame_exact(s.data, i, PGW_PHASE_NORMAL, MAX_LEN, &m, &reason),
				 PGW_FRAME_NEED_MORE);
	assert_int_equal(frame_exact(s.data, s.len, PGW_PHASE_NORMAL, MAX_LEN, &m, &reason),
			 PGW_FRAME_MSG);
	buf_close(&s);

	buf_init(&s);
	add_startup(&s, PGW_PROTOCOL_3_0, "user\0u\0\0", 8);
	for (i = 0; i < s.len; i++)
		assert_int_equal(frame_exact(s.data, i, PGW_PHASE_STARTUP, MAX_LEN, &m, &reason),
				 PGW_FRAME_NEED_MORE);
	buf_close(&s);
}

static void frame_bad_lengths(void **state)
{
	struct pgw_msg m;
	const char *reason = NULL;
	uint8_t b[16];
	uint32_t len;

	(void)state;
	/* Normal phase: lengths 0..3 are malformed, 4 is an empty body. */
	for (len = 0; len < 4; len++) {
		b[0] = 'Q';
		put_u32be(b + 1, len);
		reason = NULL;
		assert_int_equal(frame_exact(b, 5, PGW_PHASE_NORMAL, MAX_LEN, &m, &reason),
				 PGW_FRAME_MALFORMED);
		assert_non_null(reason);
	}
	put_u32be(b + 1, 4);
	assert_int_equal(frame_exact(b, 5, PGW_PHASE_NORMAL, MAX_LEN, &m, &reason),
			 PGW_FRAME_MSG);
	assert_int_equal(m.len, 0);
	assert_int_equal(m.frame_len, 5);

	/* Over the configured maximum, rejected from the header alone. */
	put_u32be(b + 1, MAX_LEN + 1);
	assert_int_equal(frame_exact(b, 5, PGW_PHASE_NORMAL, MAX_LEN, &m, &reason),
			 PGW_FRAME_MALFORMED);
	put_u32be(b + 1, 0xFFFFFFFFu);
	assert_int_equal(frame_exact(b, 5, PGW_PHASE_NORMAL, MAX_LEN, &m, &reason),
			 PGW_FRAME_MALFORMED);
	/* Exactly the maximum is fine (it needs more bytes). */
	put_u32be(b + 1, MAX_LEN);
	assert_int_equal(frame_exact(b, 5, PGW_PHASE_NORMAL, MAX_LEN, &m, &reason),
			 PGW_FRAME_NEED_MORE);

	/* Startup phase: below 8 or above 10000. */
	for (len = 0; len < 8; len++) {
		put_u32be(b, len);
		put_u32be(b + 4, PGW_PROTOCOL_3_0);
		assert_int_equal(frame_exact(b, 8, PGW_PHASE_STARTUP, MAX_LEN, &m, &reason),
				 PGW_FRAME_MALFORMED);
	}
	put_u32be(b, PGW_CODEC_STARTUP_MAX_LEN + 1);
	assert_int_equal(frame_exact(b, 8, PGW_PHASE_STARTUP, MAX_LEN, &m, &reason),
			 PGW_FRAME_MALFORMED);
	put_u32be(b, PGW_CODEC_STARTUP_MAX_LEN);
	assert_int_equal(frame_exact(b, 8, PGW_PHASE_STARTUP, MAX_LEN, &m, &reason),
			 PGW_FRAME_NEED_MORE);
}

/* An HTTP request as the first packet: its "length" is huge. */
static void frame_garbage(void **state)
{
	static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	struct pgw_msg m;
	const char *reason = NULL;
	uint32_t seed = 12345;
	int i, j;

	(void)state;
	assert_int_equal(frame_exact(http, strlen(http), PGW_PHASE_STARTUP, MAX_LEN, &m, &reason),
			 PGW_FRAME_MALFORMED);
	assert_non_null(reason);

	/* Random bytes: whatever the verdict, a frame never extends past the input. */
	for (i = 0; i < 2000; i++) {
		uint8_t b[64];
		size_t n = (size_t)(i % 64);
		int r;
		for (j = 0; j < (int)n; j++) {
			seed = seed * 1103515245u + 12345u;
			b[j] = (uint8_t)(seed >> 16);
		}
		if (n >= 5 && (i & 1)) /* make short lengths common */
			put_u32be(b + 1, (uint32_t)(seed % 80));
		r = frame_exact(b, n, (i & 2) ? PGW_PHASE_STARTUP : PGW_PHASE_NORMAL, 64, &m,
				&reason);
		if (r == PGW_FRAME_MSG) {
			assert_true(m.frame_len <= n);
			if ((i & 2) == 0 && (b[0] == 0 || strchr("BCDEFHPQSXcdfp", b[0]) == NULL))
				assert_int_equal(m.frame_len, 1); /* unknown type, reported early */
			else
				assert_int_equal(m.frame_len, m.len + ((i & 2) ? 4 : 5));
		} else if (r == PGW_FRAME_MALFORMED) {
			assert_non_null(reason);
		}
	}
}

/* ---- Decoders ------------------------------------------------------------------------- */

/* Decode a startup packet body held in an exactly sized block. */
static int decode_startup_exact(const void *body, size_t n, struct pgw_startup *su,
				void **keep)
{
	struct pgw_msg m;
	const char *reason = NULL;
	uint8_t *copy = malloc(n > 0 ? n : 1);
	int rc;

	assert_non_null(copy);
	memcpy(copy, body, n);
	m.type = 0;
	m.body = copy;
	m.len = n;
	m.frame_len = n + 4;
	rc = pgw_startup_decode(&m, su, &reason);
	if (rc != 0)
		assert_non_null(reason);
	*keep = copy; /* the parameters point into it */
	return rc;
}

static void startup_params(void **state)
{
	static const uint8_t body[] = "\x00\x03\x00\x00"
				      "user\0alice\0database\0db1\0\0";
	struct pgw_startup su;
	const char *k, *v;
	void *keep;

	(void)state;
	assert_int_equal(decode_startup_exact(body, sizeof(body) - 1, &su, &keep), 0);
	assert_int_equal(su.kind, PGW_STARTUP_MESSAGE);
	assert_int_equal(su.major, 3);
	assert_int_equal(su.minor, 0);
	assert_true(pgw_startup_next_param(&su, &k, &v));
	assert_string_equal(k, "user");
	assert_string_equal(v, "alice");
	assert_true(pgw_startup_next_param(&su, &k, &v));
	assert_string_equal(k, "database");
	assert_string_equal(v, "db1");
	assert_false(pgw_startup_next_param(&su, &k, &v));
	free(keep);
}

static void startup_bad_layouts(void **state)
{
	/* Each body lacks something: no terminator, a key without a value, bytes after the
	 * terminator, no NUL at all. */
	static const struct {
		const char *bytes;
		size_t n;
	} bad[] = {
		{"\x00\x03\x00\x00user\0alice\0", 15},
		{"\x00\x03\x00\x00user\0", 9},
		{"\x00\x03\x00\x00user", 8},
		{"\x00\x03\x00\x00\0x", 6},
		{"\x00\x03\x00\x00", 4},
		{"\x00\x03", 2},
	};
	struct pgw_startup su;
	void *keep;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(decode_startup_exact(bad[i].bytes, bad[i].n, &su, &keep),
				 ERR_PROTO);
		free(keep);
	}
	/* The empty parameter list (a single NUL) is valid. */
	assert_int_equal(decode_startup_exact("\x00\x03\x00\x00\0", 5, &su, &keep), 0);
	free(keep);
}

static void startup_requests(void **state)
{
	uint8_t b[12];
	struct pgw_startup su;
	void *keep;

	(void)state;
	put_u32be(b, PGW_CODE_SSL);
	assert_int_equal(decode_startup_exact(b, 4, &su, &keep), 0);
	assert_int_equal(su.kind, PGW_STARTUP_SSL);
	free(keep);
	put_u32be(b, PGW_CODE_GSSENC);
	assert_int_equal(decode_startup_exact(b, 4, &su, &keep), 0);
	assert_int_equal(su.kind, PGW_STARTUP_GSSENC);
	free(keep);
	/* SSLRequest with extra bytes is malformed. */
	put_u32be(b, PGW_CODE_SSL);
	assert_int_equal(decode_startup_exact(b, 8, &su, &keep), ERR_PROTO);
	free(keep);
	put_u32be(b, PGW_CODE_CANCEL);
	put_u32be(b + 4, 4242);
	put_u32be(b + 8, 0xDEADBEEFu);
	assert_int_equal(decode_startup_exact(b, 12, &su, &keep), 0);
	assert_int_equal(su.kind, PGW_STARTUP_CANCEL);
	assert_int_equal(su.pid, 4242);
	assert_int_equal(su.secret, 0xDEADBEEFu);
	free(keep);
	assert_int_equal(decode_startup_exact(b, 11, &su, &keep), ERR_PROTO);
	free(keep);
	/* Protocol 3.2 and 2.0 decode; the session decides what to do with them. */
	put_u32be(b, (3u << 16) | 2u);
	b[4] = 0;
	assert_int_equal(decode_startup_exact(b, 5, &su, &keep), 0);
	assert_int_equal(su.major, 3);
	assert_int_equal(su.minor, 2);
	free(keep);
}

static int decode_query_exact(const void *body, size_t n, const char **sql, size_t *len)
{
	struct pgw_msg m;
	const char *reason = NULL;
	uint8_t *copy = malloc(n > 0 ? n : 1);
	int rc;

	assert_non_null(copy);
	memcpy(copy, body, n);
	m.type = 'Q';
	m.body = copy;
	m.len = n;
	m.frame_len = n + 5;
	rc = pgw_query_decode(&m, sql, len, &reason);
	if (rc != 0)
		assert_string_equal(reason, "invalid string in message");
	else
		assert_true(*sql == (const char *)copy);
	free(copy);
	return rc;
}

static void query_strings(void **state)
{
	const char *sql;
	size_t len = 99;

	(void)state;
	assert_int_equal(decode_query_exact("select 1", 9, &sql, &len), 0);
	assert_int_equal(len, 8);
	assert_int_equal(decode_query_exact("", 1, &sql, &len), 0);
	assert_int_equal(len, 0);
	assert_int_equal(decode_query_exact("select 1", 8, &sql, &len), ERR_PROTO); /* no NUL */
	assert_int_equal(decode_query_exact("sel\0ect", 8, &sql, &len), ERR_PROTO); /* inner */
	assert_int_equal(decode_query_exact("x\0\0", 3, &sql, &len), ERR_PROTO);
	assert_int_equal(decode_query_exact("", 0, &sql, &len), ERR_PROTO);
}

static void terminate_body(void **state)
{
	struct pgw_msg m = {'X', (const uint8_t *)"", 0, 5};
	const char *reason = NULL;

	(void)state;
	assert_int_equal(pgw_terminate_decode(&m, &reason), 0);
	m.len = 1;
	assert_int_equal(pgw_terminate_decode(&m, &reason), ERR_PROTO);
}

/* ---- Builders --------------------------------------------------------------------------- */

#define ASSERT_BYTES(b, lit)                                                                 \
	do {                                                                                 \
		assert_false((b)->failed);                                                   \
		assert_int_equal((b)->len, sizeof(lit) - 1);                                 \
		assert_memory_equal((b)->data, lit, sizeof(lit) - 1);                         \
	} while (0)

static void build_simple(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b);
	pgw_encode_auth_ok(&b);
	ASSERT_BYTES(&b, "R\x00\x00\x00\x08\x00\x00\x00\x00");
	buf_reset(&b);
	pgw_encode_ready(&b, 'T');
	ASSERT_BYTES(&b, "Z\x00\x00\x00\x05T");
	buf_reset(&b);
	pgw_encode_parameter_status(&b, "TimeZone", "UTC");
	ASSERT_BYTES(&b, "S\x00\x00\x00\x11TimeZone\0UTC\0");
	buf_reset(&b);
	pgw_encode_backend_key(&b, 0x01020304u, 0xA0B0C0D0u);
	ASSERT_BYTES(&b, "K\x00\x00\x00\x0c\x01\x02\x03\x04\xa0\xb0\xc0\xd0");
	buf_reset(&b);
	pgw_encode_command_complete(&b, "INSERT 0 1");
	ASSERT_BYTES(&b, "C\x00\x00\x00\x0fINSERT 0 1\0");
	buf_reset(&b);
	pgw_encode_empty_query(&b);
	ASSERT_BYTES(&b, "I\x00\x00\x00\x04");
	buf_reset(&b);
	{
		const char *opts[] = {"_pq_.x"};
		pgw_encode_negotiate_version(&b, 0, 1, opts);
		ASSERT_BYTES(&b, "v\x00\x00\x00\x13\x00\x00\x00\x00\x00\x00\x00\x01_pq_.x\0");
	}
	buf_close(&b);
}

static void build_rows(void **state)
{
	struct buf b;
	struct pgw_column cols[2] = {{"a", 23, 4}, {"b", 25, -1}};
	size_t mark, f;

	(void)state;
	buf_init(&b);
	pgw_encode_row_description(&b, 2, cols);
	ASSERT_BYTES(&b, "T\x00\x00\x00\x2e\x00\x02"
			 "a\0\x00\x00\x00\x00\x00\x00\x00\x00\x00\x17\x00\x04\xff\xff\xff\xff\x00\x00"
			 "b\0\x00\x00\x00\x00\x00\x00\x00\x00\x00\x19\xff\xff\xff\xff\xff\xff\x00\x00");
	buf_reset(&b);
	mark = pgw_datarow_start(&b, 3);
	pgw_datarow_put(&b, "42", 2);
	pgw_datarow_put_null(&b);
	f = pgw_datarow_field_begin(&b);
	buf_put(&b, "xyz", 3);
	pgw_datarow_field_end(&b, f);
	pgw_buf_finish(&b, mark);
	ASSERT_BYTES(&b, "D\x00\x00\x00\x17\x00\x03"
			 "\x00\x00\x00\x02" "42"
			 "\xff\xff\xff\xff"
			 "\x00\x00\x00\x03" "xyz");
	buf_close(&b);
}

static void build_error(void **state)
{
	struct buf b;
	struct pgw_error e = {"ERROR", "42601", "bad", NULL, "fix it", 7};

	(void)state;
	buf_init(&b);
	pgw_encode_error(&b, 'E', &e);
	ASSERT_BYTES(&b, "E\x00\x00\x00\x2a"
			 "SERROR\0VERROR\0C42601\0Mbad\0Hfix it\0P7\0\0");
	buf_reset(&b);
	e.severity = "WARNING";
	e.code = "25P01";
	e.message = "m";
	e.detail = "d";
	e.hint = NULL;
	e.position = 0;
	pgw_encode_error(&b, 'N', &e);
	ASSERT_BYTES(&b, "N\x00\x00\x00\x24"
			 "SWARNING\0VWARNING\0C25P01\0Mm\0Dd\0\0");
	buf_close(&b);
}

/* Several messages in one buffer each get their own length. */
static void build_concatenated(void **state)
{
	struct buf b;
	struct seen seen[4];
	size_t mark;

	(void)state;
	buf_init(&b);
	mark = pgw_buf_start(&b, 'Q');
	pgw_buf_put_str(&b, "SELECT 1");
	pgw_buf_finish(&b, mark);
	mark = pgw_buf_start(&b, 'S');
	pgw_buf_finish(&b, mark);
	mark = pgw_buf_start(&b, 'X');
	pgw_buf_finish(&b, mark);
	assert_false(b.failed);
	assert_int_equal(feed(b.data, b.len, 3, 0, seen, 4), 3);
	assert_int_equal(seen[0].type, 'Q');
	assert_string_equal((const char *)seen[0].body, "SELECT 1");
	assert_int_equal(seen[1].type, 'S');
	assert_int_equal(seen[1].len, 0);
	assert_int_equal(seen[2].type, 'X');
	buf_close(&b);
}

/* A type byte no frontend message has is reported at once, without waiting for the body
 * its length announces (as PostgreSQL does), and so is a NUL type byte. */
static void frame_unknown_type_early(void **state)
{
	static const uint8_t types[] = {'z', 0, 'Z', 'T'};
	uint8_t bytes[5] = {0, 0, 0, 0x27, 0x10}; /* announces 10000 bytes, sends none */
	struct pgw_msg m;
	const char *reason = NULL;
	struct buf b;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof types; i++) {
		buf_init(&b);
		bytes[0] = types[i];
		buf_put(&b, bytes, 1);
		assert_int_equal(pgw_frame(&b, PGW_PHASE_NORMAL, 1 << 20, &m, &reason),
				 PGW_FRAME_MSG);
		assert_int_equal(m.type, types[i]);
		buf_put(&b, bytes + 1, 4);
		assert_int_equal(pgw_frame(&b, PGW_PHASE_NORMAL, 1 << 20, &m, &reason),
				 PGW_FRAME_MSG);
		assert_int_equal(m.len, 0);
		buf_close(&b);
	}
	/* A known type still waits for its body. */
	buf_init(&b);
	bytes[0] = 'Q';
	buf_put(&b, bytes, 5);
	assert_int_equal(pgw_frame(&b, PGW_PHASE_NORMAL, 1 << 20, &m, &reason),
			 PGW_FRAME_NEED_MORE);
	buf_close(&b);
}

/* Backend framing (the proxy's upstream): any type byte is framed by its length. */
static void frame_backend(void **state)
{
	uint8_t bytes[] = {'Z', 0, 0, 0, 5, 'I', 'T', 0, 0, 0, 6, 0, 1};
	struct pgw_msg m;
	const char *reason = NULL;
	struct buf b;

	(void)state;
	buf_init(&b);
	buf_put(&b, bytes, 5);
	assert_int_equal(pgw_frame(&b, PGW_PHASE_BACKEND, 1 << 20, &m, &reason),
			 PGW_FRAME_NEED_MORE);
	buf_reset(&b);
	buf_put(&b, bytes, sizeof bytes);
	assert_int_equal(pgw_frame(&b, PGW_PHASE_BACKEND, 1 << 20, &m, &reason), PGW_FRAME_MSG);
	assert_int_equal(m.type, 'Z');
	assert_int_equal(m.len, 1);
	assert_int_equal(m.frame_len, 6);
	buf_reset(&b);
	buf_put(&b, bytes, 2);
	buf_put(&b, "\0\0\3", 3); /* length 3 < 4 */
	assert_int_equal(pgw_frame(&b, PGW_PHASE_BACKEND, 1 << 20, &m, &reason),
			 PGW_FRAME_MALFORMED);
	assert_non_null(reason);
	buf_close(&b);
}

static int decode_error_exact(const void *body, size_t n, struct pgw_error *e, void **keep)
{
	struct pgw_msg m;
	uint8_t *copy = malloc(n > 0 ? n : 1);

	assert_non_null(copy);
	memcpy(copy, body, n);
	m.type = 'E';
	m.body = copy;
	m.len = n;
	m.frame_len = n + 5;
	*keep = copy;
	return pgw_error_decode(&m, e);
}

/* ErrorResponse fields: V preferred over S; bounded; malformed bodies refused. */
static void error_fields(void **state)
{
	static const char ok[] = "SFATAL\0VFATAL\0C57P01\0Mbye\0Dleader: 1.2.3.4:5\0Xz\0";
	static const char old[] = "SERREUR\0C25006\0Mnon\0";
	struct pgw_error e;
	void *keep;

	(void)state;
	assert_int_equal(decode_error_exact(ok, sizeof ok, &e, &keep), 0);
	assert_string_equal(e.severity, "FATAL");
	assert_string_equal(e.code, "57P01");
	assert_string_equal(e.message, "bye");
	assert_string_equal(e.detail, "leader: 1.2.3.4:5");
	assert_null(e.hint);
	free(keep);
	assert_int_equal(decode_error_exact(old, sizeof old, &e, &keep), 0);
	assert_string_equal(e.severity, "ERREUR");
	free(keep);
	assert_int_equal(decode_error_exact("\0", 1, &e, &keep), 0);
	assert_string_equal(e.code, "");
	free(keep);
	assert_int_equal(decode_error_exact(ok, sizeof ok - 1, &e, &keep), ERR_PROTO);
	free(keep);
	assert_int_equal(decode_error_exact("Cabc", 4, &e, &keep), ERR_PROTO);
	free(keep);
	assert_int_equal(decode_error_exact("", 0, &e, &keep), ERR_PROTO);
	free(keep);
	assert_int_equal(decode_error_exact("Cx\0\0\0", 5, &e, &keep), ERR_PROTO);
	free(keep);
}

static void parameter_status_fields(void **state)
{
	struct pgw_msg m = {'S', (const uint8_t *)"a\0b", 4, 9};
	const char *name, *value;

	(void)state;
	assert_int_equal(pgw_parameter_status_decode(&m, &name, &value), 0);
	assert_string_equal(name, "a");
	assert_string_equal(value, "b");
	m.len = 3; /* value unterminated */
	assert_int_equal(pgw_parameter_status_decode(&m, &name, &value), ERR_PROTO);
	m.body = (const uint8_t *)"ab";
	m.len = 2;
	assert_int_equal(pgw_parameter_status_decode(&m, &name, &value), ERR_PROTO);
	m.body = (const uint8_t *)"a\0b\0c";
	m.len = 6; /* bytes after the value */
	assert_int_equal(pgw_parameter_status_decode(&m, &name, &value), ERR_PROTO);
	m.len = 0;
	assert_int_equal(pgw_parameter_status_decode(&m, &name, &value), ERR_PROTO);
}

/* The proxy's frontend messages decode with our own startup decoder. */
static void build_startup_and_query(void **state)
{
	static const char *const kv[] = {"user", "u", "pqlite.proxied", "1"};
	struct pgw_startup su;
	struct pgw_msg m;
	const char *reason = NULL, *k, *v;
	struct buf b;

	(void)state;
	buf_init(&b);
	pgw_encode_startup(&b, 2, kv);
	ASSERT_BYTES(&b, "\x00\x00\x00\x21\x00\x03\x00\x00user\0u\0pqlite.proxied\0" "1\0\0");
	assert_int_equal(pgw_frame(&b, PGW_PHASE_STARTUP, 0, &m, &reason), PGW_FRAME_MSG);
	assert_int_equal(pgw_startup_decode(&m, &su, &reason), 0);
	assert_true(pgw_startup_next_param(&su, &k, &v));
	assert_true(pgw_startup_next_param(&su, &k, &v));
	assert_string_equal(k, "pqlite.proxied");
	assert_false(pgw_startup_next_param(&su, &k, &v));
	buf_reset(&b);
	pgw_encode_query(&b, "SET x = 1");
	ASSERT_BYTES(&b, "Q\x00\x00\x00\x0eSET x = 1\0");
	buf_close(&b);
}

/* A failed buffer stays failed and the builders do not touch it. */
static void build_sticky_failure(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b);
	b.failed = true;
	pgw_encode_ready(&b, 'I');
	pgw_encode_command_complete(&b, "X");
	assert_true(b.failed);
	assert_int_equal(b.len, 0);
	buf_close(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(frame_stream_all_splits),
		cmocka_unit_test(frame_prefixes_need_more),
		cmocka_unit_test(frame_bad_lengths),
		cmocka_unit_test(frame_garbage),
		cmocka_unit_test(frame_unknown_type_early),
		cmocka_unit_test(startup_params),
		cmocka_unit_test(startup_bad_layouts),
		cmocka_unit_test(startup_requests),
		cmocka_unit_test(query_strings),
		cmocka_unit_test(terminate_body),
		cmocka_unit_test(build_simple),
		cmocka_unit_test(build_rows),
		cmocka_unit_test(build_error),
		cmocka_unit_test(build_concatenated),
		cmocka_unit_test(build_sticky_failure),
		cmocka_unit_test(frame_backend),
		cmocka_unit_test(error_fields),
		cmocka_unit_test(parameter_status_fields),
		cmocka_unit_test(build_startup_and_query),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

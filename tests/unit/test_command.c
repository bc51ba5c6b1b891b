/* Unit tests of the Raft entry encoding (core/command.h): round trips, truncations,
 * single-byte corruptions and the rejections the decoder promises. Every decode reads a
 * heap copy of exactly the tested length, so ASan reports any read past its end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/command.h"
#include "../../lib/err.h"
#include "../lib/rng.h"

#define PAD8(n) (((size_t)(n) + 7u) & ~(size_t)7u)

static uint64_t base_seed;

/* A command built by the test, with the page images it owns. */
struct fixture {
	struct rng rng;
	struct command cmd;
	uint32_t *pgnos;
	uint8_t *images;
	const uint8_t **pages;
	uint8_t *enc; /* cmd_encode output */
	size_t len;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	assert_non_null(f);
	*state = f;
	return 0;
}

static void fixture_clear(struct fixture *f)
{
	free(f->pgnos);
	free(f->images);
	free(f->pages);
	free(f->enc);
	f->pgnos = NULL;
	f->images = NULL;
	f->pages = NULL;
	f->enc = NULL;
	f->len = 0;
	memset(&f->cmd, 0, sizeof f->cmd);
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	fixture_clear(f);
	free(f);
	return 0;
}

/* Fill f->cmd.db with a name of len bytes drawn from [lo, hi]. */
static void random_name(struct fixture *f, size_t len, uint8_t lo, uint8_t hi)
{
	size_t i;
	assert_true(len < sizeof f->cmd.db);
	for (i = 0; i < len; i++)
		f->cmd.db[i] = (char)rng_range(&f->rng, lo, hi);
	f->cmd.db[len] = '\0';
}

/* Build a FRAMES command with n random pages of page_size bytes, then encode it. */
static void make_frames(struct fixture *f, uint32_t n, uint32_t page_size, size_t name_len)
{
	uint32_t i;

	fixture_clear(f);
	f->cmd.type = CMD_FRAMES;
	random_name(f, name_len, 0x20, 0x7e);
	f->pgnos = malloc(sizeof *f->pgnos * n);
	f->pages = malloc(sizeof *f->pages * n);
	f->images = malloc((size_t)n * page_size);
	assert_non_null(f->pgnos);
	assert_non_null(f->pages);
	assert_non_null(f->images);
	for (i = 0; i < n; i++) {
		f->pgnos[i] = rng_chance(&f->rng, 50) ? rng_range(&f->rng, 1, 1000)
						       : rng_range(&f->rng, 1, UINT32_MAX);
		f->pages[i] = f->images + (size_t)i * page_size;
	}
	rng_fill(&f->rng, f->images, (size_t)n * page_size);
	f->cmd.frames.page_size = page_size;
	f->cmd.frames.n = n;
	f->cmd.frames.commit_size = rng_range(&f->rng, 1, UINT32_MAX);
	f->cmd.frames.pgnos = f->pgnos;
	f->cmd.frames.pages = f->pages;
	f->cmd.frames.owned = false;
}

static void make_db_cmd(struct fixture *f, uint8_t type, size_t name_len)
{
	fixture_clear(f);
	f->cmd.type = type;
	random_name(f, name_len, 0x20, 0x7e);
}

/* Encode f->cmd into f->enc, checking the size rules and that every byte is written. */
static void encode(struct fixture *f)
{
	uint8_t *other;

	f->len = cmd_sizeof(&f->cmd);
	assert_int_equal(f->len % 8, 0);
	assert_true(f->len >= 8 + PAD8(strlen(f->cmd.db)));
	if (f->cmd.type == CMD_FRAMES)
		assert_true(f->len >= (size_t)f->cmd.frames.n * f->cmd.frames.page_size);
	free(f->enc);
	f->enc = malloc(f->len);
	other = malloc(f->len);
	assert_non_null(f->enc);
	assert_non_null(other);
	/* Whatever the buffer held before, the encoding is the same bytes (padding is zeroed). */
	memset(f->enc, 0xa5, f->len);
	memset(other, 0x00, f->len);
	cmd_encode(&f->cmd, f->enc);
	cmd_encode(&f->cmd, other);
	assert_memory_equal(f->enc, other, f->len);
	free(other);
}

static bool same_command(const struct command *a, const struct command *b)
{
	uint32_t i;

	if (a->type != b->type || strcmp(a->db, b->db) != 0)
		return false;
	if (a->type != CMD_FRAMES)
		return true;
	if (a->frames.page_size != b->frames.page_size || a->frames.n != b->frames.n ||
	    a->frames.commit_size != b->frames.commit_size)
		return false;
	for (i = 0; i < a->frames.n; i++) {
		if (a->frames.pgnos[i] != b->frames.pgnos[i])
			return false;
		if (memcmp(a->frames.pages[i], b->frames.pages[i], a->frames.page_size) != 0)
			return false;
	}
	return true;
}

/* Decode an exact-size heap copy of p[0..len). */
static int decode_copy(const uint8_t *p, size_t len, struct command *out, uint8_t **copy)
{
	*copy = malloc(len);
	if (len > 0) {
		assert_non_null(*copy);
		memcpy(*copy, p, len);
	}
	return cmd_decode(*copy, len, out);
}

static void expect_rejected(const uint8_t *p, size_t len, const char *what)
{
	struct command out;
	uint8_t *copy;
	int rv = decode_copy(p, len, &out, &copy);
	if (rv != ERR_CORRUPT) {
		if (rv == 0)
			cmd_close(&out);
		free(copy);
		fail_msg("%s: cmd_decode returned %d (%s), expected ERR_CORRUPT", what, rv,
			 err_str(rv));
	}
	free(copy);
}

/* Decode f->enc and compare with f->cmd; page images must point into the buffer. */
static void expect_round_trip(struct fixture *f)
{
	struct command out;
	uint8_t *copy;
	uint32_t i;
	int rv = decode_copy(f->enc, f->len, &out, &copy);

	assert_int_equal(rv, 0);
	assert_int_equal(out.type, f->cmd.type);
	assert_string_equal(out.db, f->cmd.db);
	if (f->cmd.type == CMD_FRAMES) {
		assert_int_equal(out.frames.page_size, f->cmd.frames.page_size);
		assert_int_equal(out.frames.n, f->cmd.frames.n);
		assert_int_equal(out.frames.commit_size, f->cmd.frames.commit_size);
		for (i = 0; i < out.frames.n; i++) {
			const uint8_t *pg = out.frames.pages[i];
			assert_int_equal(out.frames.pgnos[i], f->cmd.frames.pgnos[i]);
			assert_true(pg >= copy && pg + out.frames.page_size <= copy + f->len);
			assert_memory_equal(pg, f->cmd.frames.pages[i], out.frames.page_size);
		}
	}
	assert_true(same_command(&out, &f->cmd));
	cmd_close(&out);
	free(copy);
}

/* ---- Round trips ------------------------------------------------------------------ */

static void test_frames_round_trip(void **state)
{
	struct fixture *f = *state;
	unsigned iter;

	rng_init(&f->rng, seed_mix(base_seed, 1));
	for (iter = 0; iter < 300; iter++) {
		uint32_t page_size = 512u << rng_below(&f->rng, 8);
		uint32_t max_n = (uint32_t)((1u << 21) / page_size); /* at most 2 MiB of pages */
		uint32_t n;
		if (max_n > 64)
			max_n = 64;
		n = iter < 64 ? iter % max_n + 1 : rng_range(&f->rng, 1, max_n);
		make_frames(f, n, page_size, rng_range(&f->rng, 1, 63));
		encode(f);
		expect_round_trip(f);
	}
	/* The extremes. */
	make_frames(f, 1, 512, 1);
	encode(f);
	expect_round_trip(f);
	make_frames(f, 3, 65536, 63);
	encode(f);
	expect_round_trip(f);
}

static void test_db_commands_round_trip(void **state)
{
	struct fixture *f = *state;
	size_t len;
	int t;

	rng_init(&f->rng, seed_mix(base_seed, 2));
	for (t = 0; t < 2; t++) {
		uint8_t type = t == 0 ? CMD_CREATE_DB : CMD_DROP_DB;
		for (len = 1; len <= 63; len++) {
			make_db_cmd(f, type, len);
			encode(f);
			assert_int_equal(f->len, 8 + PAD8(len));
			expect_round_trip(f);
			/* Bytes >= 0x80 (UTF-8) survive too. */
			random_name(f, len, 0x01, 0xff);
			encode(f);
			expect_round_trip(f);
		}
	}
}

/* ---- Truncation and corruption ---------------------------------------------------- */

static void check_truncations(struct fixture *f)
{
	size_t l;
	char what[128];

	encode(f);
	for (l = 0; l < f->len; l++) {
		snprintf(what, sizeof what, "type %u truncated to %zu of %zu", f->cmd.type, l,
			 f->len);
		expect_rejected(f->enc, l, what);
	}
}

static void test_truncations(void **state)
{
	struct fixture *f = *state;
	size_t len;

	rng_init(&f->rng, seed_mix(base_seed, 3));
	make_frames(f, 3, 512, 5);
	check_truncations(f);
	make_frames(f, 2, 4096, 63);
	check_truncations(f);
	make_frames(f, 1, 65536, 2);
	check_truncations(f);
	for (len = 1; len <= 63; len += 7) {
		make_db_cmd(f, CMD_CREATE_DB, len);
		check_truncations(f);
		make_db_cmd(f, CMD_DROP_DB, len);
		check_truncations(f);
	}
}

/* Offsets [lo, hi) of page image bytes in f->enc, from a decode of it. */
static void page_area(struct fixture *f, size_t *lo, size_t *hi)
{
	struct command out;
	int rv = cmd_decode(f->enc, f->len, &out);
	assert_int_equal(rv, 0);
	*lo = *hi = f->len;
	if (out.type == CMD_FRAMES) {
		*lo = (size_t)(out.frames.pages[0] - f->enc);
		*hi = (size_t)(out.frames.pages[out.frames.n - 1] - f->enc) + out.frames.page_size;
	}
	cmd_close(&out);
}

/* Flip every byte of f->enc in turn: the result is rejected, or (only for page images and
 * fields that carry values) decodes to a different command. A byte whose change goes
 * unnoticed would be unchecked padding or a reserved field. */
static void check_corruptions(struct fixture *f)
{
	static const uint8_t xors[] = {0x01, 0x80, 0xff};
	size_t i, lo, hi, x;
	uint8_t *bad = malloc(f->len);

	assert_non_null(bad);
	page_area(f, &lo, &hi);
	for (i = 0; i < f->len; i++) {
		for (x = 0; x < sizeof xors; x++) {
			struct command out;
			uint8_t *copy;
			int rv;
			memcpy(bad, f->enc, f->len);
			bad[i] ^= xors[x];
			rv = decode_copy(bad, f->len, &out, &copy);
			if (rv != 0 && rv != ERR_CORRUPT)
				fail_msg("byte %zu ^ 0x%02x: cmd_decode returned %d", i, xors[x], rv);
			if (rv == 0) {
				if (same_command(&out, &f->cmd))
					fail_msg("byte %zu of %zu ^ 0x%02x: decodes to the same "
						 "command (unchecked byte)", i, f->len, xors[x]);
				if (i >= lo && i < hi) {
					/* A page byte: only that byte of that page differs. */
					size_t k = (i - lo) / f->cmd.frames.page_size;
					size_t o = (i - lo) % f->cmd.frames.page_size;
					assert_int_equal(out.frames.pages[k][o],
							 f->cmd.frames.pages[k][o] ^ xors[x]);
				}
				cmd_close(&out);
			} else if (i >= lo && i < hi) {
				fail_msg("page byte %zu rejected", i);
			}
			free(copy);
		}
	}
	free(bad);
}

static void test_single_byte_corruptions(void **state)
{
	struct fixture *f = *state;
	size_t len;

	rng_init(&f->rng, seed_mix(base_seed, 4));
	make_frames(f, 3, 512, 5);
	encode(f);
	check_corruptions(f);
	make_frames(f, 1, 512, 63);
	encode(f);
	check_corruptions(f);
	for (len = 1; len <= 63; len += 9) {
		make_db_cmd(f, CMD_CREATE_DB, len);
		encode(f);
		check_corruptions(f);
		make_db_cmd(f, CMD_DROP_DB, len);
		encode(f);
		check_corruptions(f);
	}
}

/* ---- Rejections named by the contract ---------------------------------------------- */

static void put32le(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

/* A modified copy of f->enc with `extra` spare bytes at the end. */
static uint8_t *copy_enc(struct fixture *f, size_t extra)
{
	uint8_t *p = malloc(f->len + extra);
	assert_non_null(p);
	memcpy(p, f->enc, f->len);
	memset(p + f->len, 0, extra);
	return p;
}

static void test_rejects_header(void **state)
{
	struct fixture *f = *state;
	static const uint8_t bad_versions[] = {0, 2, 0x7f, 0xff};
	static const uint8_t bad_types[] = {0, 4, 5, 0x80, 0xff};
	uint8_t types[] = {CMD_FRAMES, CMD_CREATE_DB, CMD_DROP_DB};
	size_t i, t;
	uint8_t *p;

	rng_init(&f->rng, seed_mix(base_seed, 5));
	for (t = 0; t < 3; t++) {
		if (types[t] == CMD_FRAMES)
			make_frames(f, 2, 512, 3);
		else
			make_db_cmd(f, types[t], 3);
		encode(f);
		assert_int_equal(f->enc[0], CMD_FORMAT_VERSION);
		p = copy_enc(f, 0);
		for (i = 0; i < sizeof bad_versions; i++) {
			p[0] = bad_versions[i];
			expect_rejected(p, f->len, "unknown version");
		}
		p[0] = CMD_FORMAT_VERSION;
		assert_int_equal(p[1], types[t]);
		for (i = 0; i < sizeof bad_types; i++) {
			p[1] = bad_types[i];
			expect_rejected(p, f->len, "unknown type");
		}
		/* A FRAMES entry read as a database command has trailing bytes, and a database
		 * command read as FRAMES is short. */
		p[1] = types[t] == CMD_FRAMES ? CMD_CREATE_DB : CMD_FRAMES;
		expect_rejected(p, f->len, "other type");
		free(p);
	}
}

static void test_rejects_names(void **state)
{
	struct fixture *f = *state;
	uint8_t *p;
	size_t len;

	rng_init(&f->rng, seed_mix(base_seed, 6));
	/* Empty name: length byte 0 (name bytes then count as padding). */
	make_db_cmd(f, CMD_CREATE_DB, 8);
	encode(f);
	assert_int_equal(f->enc[2], 8);
	p = copy_enc(f, 0);
	p[2] = 0;
	expect_rejected(p, f->len, "empty name, bytes left");
	memset(p + 8, 0, 8);
	expect_rejected(p, f->len, "empty name, zero bytes");
	free(p);

	/* 64 and more bytes: a well-formed layout around a name that is too long. */
	for (len = 64; len <= 255; len += 191) {
		size_t total = 8 + PAD8(len);
		p = calloc(1, total);
		assert_non_null(p);
		p[0] = CMD_FORMAT_VERSION;
		p[1] = CMD_DROP_DB;
		p[2] = (uint8_t)len;
		memset(p + 8, 'n', len);
		expect_rejected(p, total, "name longer than 63");
		p[2] = 63; /* the same bytes as a 63-byte name: trailing garbage */
		expect_rejected(p, total, "63-byte name with a 64th byte");
		free(p);
	}
	/* The control: a hand-made 63-byte name is accepted. */
	p = calloc(1, 8 + 64);
	assert_non_null(p);
	p[0] = CMD_FORMAT_VERSION;
	p[1] = CMD_DROP_DB;
	p[2] = 63;
	memset(p + 8, 'n', 63);
	{
		struct command out;
		assert_int_equal(cmd_decode(p, 8 + 64, &out), 0);
		assert_int_equal(strlen(out.db), 63);
		cmd_close(&out);
	}
	/* A NUL inside the name. */
	p[8 + 10] = 0;
	expect_rejected(p, 8 + 64, "NUL inside the name");
	p[8 + 10] = 'n';
	p[8 + 62] = 0;
	expect_rejected(p, 8 + 64, "NUL as last name byte");
	free(p);

	/* Name length pointing past the buffer. */
	make_db_cmd(f, CMD_CREATE_DB, 5);
	encode(f);
	p = copy_enc(f, 0);
	p[2] = 9;
	expect_rejected(p, f->len, "name length past the end");
	free(p);
}

/* Offset of the FRAMES body in f->enc (after header and padded name). */
static size_t body_offset(struct fixture *f)
{
	return 8 + PAD8(strlen(f->cmd.db));
}

static void test_rejects_frames_fields(void **state)
{
	struct fixture *f = *state;
	static const uint32_t bad_sizes[] = {0, 1, 256, 511, 513, 1000, 3000, 4095, 4097,
					     65535, 65537, 131072, 0x80000000u, UINT32_MAX};
	static const uint32_t bad_ns[] = {0, 2, 4, 5, 1000, 0x10000000u, UINT32_MAX};
	size_t i, b;
	uint8_t *p;

	rng_init(&f->rng, seed_mix(base_seed, 7));
	make_frames(f, 3, 4096, 2);
	encode(f);
	b = body_offset(f);
	p = copy_enc(f, 0);
	/* Page size. */
	for (i = 0; i < sizeof bad_sizes / sizeof bad_sizes[0]; i++) {
		put32le(p + b, bad_sizes[i]);
		expect_rejected(p, f->len, "bad page size");
	}
	/* A valid page size that does not match the bytes present. */
	put32le(p + b, 2048);
	expect_rejected(p, f->len, "page size 2048 for 4096-byte pages");
	put32le(p + b, 8192);
	expect_rejected(p, f->len, "page size 8192 for 4096-byte pages");
	put32le(p + b, 4096);
	/* Number of pages, including sizes that must not be allocated. */
	for (i = 0; i < sizeof bad_ns / sizeof bad_ns[0]; i++) {
		put32le(p + b + 4, bad_ns[i]);
		expect_rejected(p, f->len, "bad n");
	}
	put32le(p + b + 4, 3);
	/* Commit size 0, reserved word. */
	put32le(p + b + 8, 0);
	expect_rejected(p, f->len, "commit size 0");
	put32le(p + b + 8, f->cmd.frames.commit_size);
	put32le(p + b + 12, 1);
	expect_rejected(p, f->len, "reserved word");
	put32le(p + b + 12, 0);
	/* Page number 0. */
	put32le(p + b + 16 + 4, 0);
	expect_rejected(p, f->len, "page number 0");
	put32le(p + b + 16 + 4, f->cmd.frames.pgnos[1]);
	/* Padding after the 3 page numbers. */
	p[b + 16 + 12] = 1;
	expect_rejected(p, f->len, "page number padding");
	p[b + 16 + 12] = 0;
	{
		struct command out;
		assert_int_equal(cmd_decode(p, f->len, &out), 0);
		assert_true(same_command(&out, &f->cmd));
		cmd_close(&out);
	}
	free(p);

	/* n = 0 written by the encoder itself. */
	fixture_clear(f);
	f->cmd.type = CMD_FRAMES;
	strcpy(f->cmd.db, "db");
	f->cmd.frames.page_size = 4096;
	f->cmd.frames.commit_size = 1;
	f->cmd.frames.n = 0;
	encode(f);
	expect_rejected(f->enc, f->len, "FRAMES with n = 0");
}

static void test_rejects_trailing(void **state)
{
	struct fixture *f = *state;
	static const size_t extras[] = {1, 7, 8, 16, 4096};
	uint8_t types[] = {CMD_FRAMES, CMD_CREATE_DB, CMD_DROP_DB};
	size_t i, t;

	rng_init(&f->rng, seed_mix(base_seed, 8));
	for (t = 0; t < 3; t++) {
		if (types[t] == CMD_FRAMES)
			make_frames(f, 2, 1024, 7);
		else
			make_db_cmd(f, types[t], 7);
		encode(f);
		for (i = 0; i < sizeof extras / sizeof extras[0]; i++) {
			uint8_t *p = copy_enc(f, extras[i]);
			expect_rejected(p, f->len + extras[i], "trailing zeros");
			memset(p + f->len, 0xee, extras[i]);
			expect_rejected(p, f->len + extras[i], "trailing garbage");
			free(p);
		}
	}
}

/* Random garbage of random lengths never crashes and is never accepted unless it is a
 * well-formed command (checked by re-encoding it). */
static void test_random_garbage(void **state)
{
	struct fixture *f = *state;
	unsigned iter;

	rng_init(&f->rng, seed_mix(base_seed, 9));
	for (iter = 0; iter < 20000; iter++) {
		size_t len = rng_below(&f->rng, 200) * (rng_chance(&f->rng, 50) ? 8 : 1);
		uint8_t *p = malloc(len);
		struct command out;
		int rv;
		assert_true(len == 0 || p != NULL);
		rng_fill(&f->rng, p, len);
		if (len > 0 && rng_chance(&f->rng, 70))
			p[0] = CMD_FORMAT_VERSION;
		if (len > 1 && rng_chance(&f->rng, 70))
			p[1] = (uint8_t)rng_range(&f->rng, 1, 3);
		if (len > 7 && rng_chance(&f->rng, 50))
			memset(p + 3, 0, 5);
		rv = cmd_decode(p, len, &out);
		assert_true(rv == 0 || rv == ERR_CORRUPT);
		if (rv == 0) {
			uint8_t *again = malloc(len);
			assert_int_equal(cmd_sizeof(&out), len);
			cmd_encode(&out, again);
			assert_memory_equal(again, p, len);
			free(again);
			cmd_close(&out);
		}
		free(p);
	}
}

/* ---- Delta encoding ------------------------------------------------------------------ */

#define DP 4096 /* page size of the delta tests */

struct bases {
	uint8_t pages[4][DP]; /* base images of pages 1..4; page 5 lies beyond the end */
};

static const uint8_t *base_fn(void *ctx, uint32_t pgno)
{
	struct bases *b = ctx;
	return pgno >= 1 && pgno <= 4 ? b->pages[pgno - 1] : NULL;
}

/* Pages 1..5 changed from their bases in different ways: a few bytes, nothing, half the
 * page, everything, and a new page beyond the end (base: zeros). */
static void delta_fixture(struct rng *rng, struct bases *b, uint8_t (*pages)[DP],
			  const uint8_t **ptrs, uint32_t *pgnos)
{
	uint32_t i;
	for (i = 0; i < 4; i++)
		rng_fill(rng, b->pages[i], DP);
	memcpy(pages[0], b->pages[0], DP);
	pages[0][17] ^= 0xff;
	memset(pages[0] + 3000, 0x5a, 40);
	memcpy(pages[1], b->pages[1], DP);
	memcpy(pages[2], b->pages[2], DP);
	rng_fill(rng, pages[2], DP / 2 + 100);
	rng_fill(rng, pages[3], DP);
	memset(pages[4], 0, DP);
	memcpy(pages[4] + 100, "new page", 8);
	for (i = 0; i < 5; i++) {
		ptrs[i] = pages[i];
		pgnos[i] = i + 1;
	}
}

static void test_delta_round_trip(void **state)
{
	struct fixture *f = *state;
	static struct bases b;
	static uint8_t pages[5][DP];
	const uint8_t *ptrs[5];
	uint32_t pgnos[5], i;
	struct command c, out;
	uint8_t *enc, *copy;
	size_t len, full_len;

	rng_init(&f->rng, seed_mix(base_seed, 900));
	delta_fixture(&f->rng, &b, pages, ptrs, pgnos);
	memset(&c, 0, sizeof c);
	c.type = CMD_FRAMES;
	strcpy(c.db, "app");
	c.frames = (struct core_frames){DP, 5, 5, pgnos, ptrs, false};
	full_len = cmd_sizeof(&c);
	assert_int_equal(cmd_set_base(&c, base_fn, &b), 0);
	/* Pages 1, 2 and 5 shrink to deltas; 3 (half the page changed) and 4 stay whole. */
	assert_int_equal(c.n_delta, 3);
	len = cmd_sizeof(&c);
	assert_int_equal(len % 8, 0);
	assert_true(len < full_len - 2 * DP);
	enc = malloc(len);
	assert_non_null(enc);
	cmd_encode(&c, enc);
	c.frames.pgnos = NULL; /* owned by the test: keep cmd_close off them */
	c.frames.pages = NULL;
	cmd_close(&c);

	/* Exact-length copy so ASan sees any overread. */
	copy = malloc(len);
	memcpy(copy, enc, len);
	assert_int_equal(cmd_decode(copy, len, &out), 0);
	assert_int_equal(out.frames.n, 5);
	assert_null(out.frames.pages[0]); /* delta: not rebuilt yet */
	assert_int_equal(cmd_materialize(&out, base_fn, &b), 0);
	for (i = 0; i < 5; i++)
		assert_memory_equal(out.frames.pages[i], pages[i], DP);
	cmd_close(&out);

	/* A node whose base differs by one byte refuses to rebuild. */
	assert_int_equal(cmd_decode(copy, len, &out), 0);
	b.pages[1][4000] ^= 1;
	assert_int_equal(cmd_materialize(&out, base_fn, &b), ERR_CORRUPT);
	b.pages[1][4000] ^= 1;
	cmd_close(&out);
	free(copy);

	/* Every truncation is rejected; every corruption is rejected or decodes into
	 * something that either fails to rebuild or rebuilds different bytes (never a
	 * crash or an out-of-bounds access). */
	for (i = 0; i < len; i++) {
		copy = malloc(i > 0 ? i : 1);
		memcpy(copy, enc, i);
		if (cmd_decode(copy, i, &out) == 0)
			fail_msg("truncation to %u bytes accepted", i);
		free(copy);
	}
	copy = malloc(len);
	for (i = 0; i < len; i++) {
		uint32_t k;
		bool same = true;
		memcpy(copy, enc, len);
		copy[i] ^= 0x41;
		if (cmd_decode(copy, len, &out) != 0)
			continue;
		if (cmd_materialize(&out, base_fn, &b) == 0) {
			for (k = 0; k < out.frames.n && k < 5; k++)
				if (out.frames.pgnos[k] != pgnos[k] ||
				    memcmp(out.frames.pages[k], pages[k], DP) != 0)
					same = false;
			if (out.frames.commit_size != 5 || strcmp(out.db, "app") != 0)
				same = false;
			if (same)
				fail_msg("corrupting byte %u changed nothing", i);
		}
		cmd_close(&out);
	}
	free(copy);
	free(enc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_frames_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_db_commands_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_truncations, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_single_byte_corruptions, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rejects_header, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rejects_names, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rejects_frames_fields, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rejects_trailing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_random_garbage, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_delta_round_trip, setup, teardown),
	};
	base_seed = test_seed("test_command", 0x5eed0001);
	return cmocka_run_group_tests(tests, NULL, NULL);
}

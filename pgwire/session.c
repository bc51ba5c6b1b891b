/* The per-connection PostgreSQL state machine: startup, simple query with PostgreSQL's
 * transaction semantics, result encoding and SQLSTATE mapping, on top of core.h.
 *
 * States (enum sess_state) and moves:
 *   STARTUP --StartupMessage ok--> IDLE --Query--> QUERY --done--> IDLE
 *   STARTUP --StartupMessage ok on a PROXY-mode follower--> PROXY (proxy.c relays)
 *   QUERY --core returned CORE_PENDING--> PENDING --callback--> QUERY
 *   any --FATAL, Terminate, CancelRequest, output failure--> CLOSING (final)
 * A Query message runs as a small program of steps (enum q_phase): pick the next
 * statement (QP_NEXT), step it (QP_STEP), and finish the message (QP_END: implicit COMMIT,
 * ReadyForQuery). Results of asynchronous core calls are stored on the session and
 * consumed by the same loop, so a callback that arrives while the loop runs is safe. */
#include "session.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "../lib/log.h"
#include "codec.h"
#include "lex.h"
#include "pgwire.h"
#include "proxy.h"

_Static_assert(PGW_CODEC_STARTUP_MAX_LEN == PGW_STARTUP_MAX_LEN, "startup limits differ");

enum sess_state {
	ST_STARTUP, /* waiting for the startup packet (after SSL/GSSENC answers too) */
	ST_IDLE,    /* between messages */
	ST_QUERY,   /* running a Query message (may be suspended on a full output) */
	ST_PENDING, /* a core call returned CORE_PENDING; input is buffered */
	ST_PROXY,   /* relaying to the leader: messages go to s->proxy */
	ST_CLOSING, /* final: nothing more is processed */
};

/* PostgreSQL's transaction block states, as seen by the client. */
enum txn_state {
	TX_IDLE,     /* autocommit; ReadyForQuery 'I' */
	TX_IMPLICIT, /* internal BEGIN of a multi-statement message; never seen by the client */
	TX_EXPLICIT, /* client BEGIN; 'T' */
	TX_FAILED,   /* error inside the block; 'E' until COMMIT/ROLLBACK */
};

/* What the statement being stepped is for. */
enum run_kind {
	RUN_USER,            /* a client statement: rows and a command tag */
	RUN_BEGIN_IMPLICIT,  /* opens the implicit transaction of a multi-statement message */
	RUN_COMMIT_IMPLICIT, /* closes it at the end of the message */
	RUN_ROLLBACK,        /* after an error; produces no output */
	RUN_TXN,             /* client BEGIN/COMMIT/ROLLBACK: tag q.tag when done */
	RUN_GATE,            /* waits until a new leader is ready, before a prepare */
};

enum q_phase { QP_NEXT, QP_STEP, QP_END };

/* How the command tag of a client statement is built at CommandComplete. */
enum tag_kind { TAG_INSERT, TAG_UPDATE, TAG_DELETE, TAG_SELECT, TAG_PLAIN };

/* Statement classes that pgwire handles itself. */
enum stmt_class { C_USER, C_BEGIN, C_COMMIT, C_ROLLBACK, C_ROLLBACK_TO, C_CREATE_DB, C_DROP_DB,
		  C_SETTING, C_GUC };

#define GUC_MAX 24        /* parameters one session may SET */
#define GUC_VALUE_MAX 128 /* longest value kept */

/* Session settings served by pgwire itself (SET / SHOW / RESET). */
#define READ_CONSISTENCY "pqlite.read_consistency"

#define NAME_MAX_LEN 255 /* longest database name accepted from SQL before the core checks */

struct db_op; /* an in-flight CREATE/DROP DATABASE; outlives the session if need be */

struct query {
	char *sql;            /* owned, NUL-terminated copy of the message text */
	size_t len;
	size_t pos;           /* where the next statement search starts */
	size_t stmt_pos;      /* start of the current statement in sql */
	size_t first_pos;     /* start of the message's first statement */
	bool multi;           /* the message holds more than one statement */
	bool failed;          /* an error ended the message: skip the rest */
	enum q_phase phase;
	/* The statement being stepped. */
	struct core_stmt *st;
	enum run_kind kind;
	enum txn_state txn_after; /* RUN_TXN / RUN_ROLLBACK: state after success */
	bool rolling_back;    /* the statement is a ROLLBACK (which must not fail) */
	bool pos_valid;       /* errors of this statement may carry a position */
	char tag[64];         /* RUN_TXN: the tag; RUN_USER TAG_PLAIN: the keywords */
	enum tag_kind tag_kind;
	bool described;       /* RowDescription sent */
	bool gated;           /* the gate ran for the statement at pos */
	uint64_t n_rows;
	int n_cols;
	uint32_t *oids;       /* n_cols column type OIDs */
	/* The database command in flight. */
	bool db_pending;
	bool db_drop, db_if_exists;
	char db_name[NAME_MAX_LEN + 1];
};

struct pgw_session {
	struct core_engine *engine;
	char *server_version;
	size_t max_msg_len;
	pgw_session_wake_cb wake;
	void *wake_arg;

	struct buf in, out;
	size_t in_off;        /* bytes of `in` already consumed, compacted after each round */
	enum sess_state state;
	enum txn_state txn;
	bool running;         /* inside run(): callbacks only record their result */
	bool discard_until_sync; /* after rejecting an extended-protocol message */
	bool have_result;     /* an asynchronous result waits in result_rc */
	int result_rc;
	bool server_aborted;  /* the core ended our explicit transaction behind our back */

	int follower_mode;    /* PGW_FOLLOWER_* */
	unsigned apply_timeout_ms;
	const struct pgw_upstream_ops *up_ops;
	void *up_arg;
	bool proxied;         /* the client is another node's proxy (pqlite.proxied=1) */
	bool reported_standby; /* in_hot_standby last reported "on" */
	bool read_mode_explicit; /* SET pqlite.read_consistency chose the mode */
	bool terminate_pending; /* end with FATAL 57P01 once the current message is done */
	struct {
		const char *name;        /* from guc_table */
		char value[GUC_VALUE_MAX];
	} gucs[GUC_MAX];             /* PostgreSQL parameters SET by the client */
	int n_gucs;
	struct pgw_proxy *proxy; /* ST_PROXY */

	char *user;
	char *database;
	struct core_session *core;
	struct db_op *db_op;
	struct query q;
	bool q_active;
	char detail_buf[128]; /* storage for an ErrorResponse detail being built */
};

struct db_op {
	struct pgw_session *s; /* NULL once the session was destroyed */
};

/* ---- Small helpers ------------------------------------------------------------------- */

/* True when s[0..len) is well-formed UTF-8 (no overlongs, surrogates or code points above
 * U+10FFFF). */
static bool utf8_valid(const uint8_t *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		uint8_t c = s[i];
		size_t n, k;
		uint32_t cp;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF) {
			n = 1;
			cp = c & 0x1F;
		} else if (c >= 0xE0 && c <= 0xEF) {
			n = 2;
			cp = c & 0x0F;
		} else if (c >= 0xF0 && c <= 0xF4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (len - i <= n)
			return false;
		for (k = 1; k <= n; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3F);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
		    (cp >= 0xD800 && cp <= 0xDFFF))
			return false;
		i += n + 1;
	}
	return true;
}

/* 1-based character index of byte offset `off` in UTF-8 text s. */
static int char_position(const char *s, size_t off)
{
	size_t i;
	int n = 1;
	for (i = 0; i < off; i++)
		if (((uint8_t)s[i] & 0xC0) != 0x80)
			n++;
	return n;
}

/* ---- Statement classes ---------------------------------------------------------------- */

/* Classify the statement s[0..len) and, for transaction control, fill the tag. */
/* PostgreSQL parameters pgwire answers itself. Drivers SET and SHOW some of them at
 * connect time (pgjdbc: "SET extra_float_digits = 3", "SET application_name = ...",
 * "show transaction_read_only" for targetServerType=primary). SETTABLE ones are kept per
 * session and reported by SHOW, but have no effect on execution (SQLite's semantics
 * apply); client_encoding accepts UTF8 only. Read-only ones refuse SET (55P02); the
 * STANDBY ones follow the node's role. Anything else is left to SQLite. */
enum { GUC_FIXED, GUC_SETTABLE, GUC_STANDBY };

static const struct guc_def {
	const char *name;
	const char *value; /* default */
	int kind;
} guc_table[] = {
	{"transaction_read_only", NULL, GUC_STANDBY},
	{"default_transaction_read_only", NULL, GUC_STANDBY},
	{"in_hot_standby", NULL, GUC_STANDBY},
	{"server_version", NULL, GUC_FIXED},
	{"server_version_num", "150000", GUC_FIXED},
	{"server_encoding", "UTF8", GUC_FIXED},
	{"integer_datetimes", "on", GUC_FIXED},
	{"is_superuser", "on", GUC_FIXED},
	{"max_identifier_length", "63", GUC_FIXED},
	{"transaction_isolation", "serializable", GUC_FIXED},
	{"default_transaction_isolation", "serializable", GUC_FIXED},
	{"client_encoding", "UTF8", GUC_SETTABLE},
	{"DateStyle", "ISO, MDY", GUC_SETTABLE},
	{"IntervalStyle", "postgres", GUC_SETTABLE},
	{"TimeZone", "UTC", GUC_SETTABLE},
	{"standard_conforming_strings", "on", GUC_SETTABLE},
	{"application_name", "", GUC_SETTABLE},
	{"extra_float_digits", "1", GUC_SETTABLE},
	{"search_path", "\"$user\", public", GUC_SETTABLE},
	{"statement_timeout", "0", GUC_SETTABLE},
	{"lock_timeout", "0", GUC_SETTABLE},
	{"idle_in_transaction_session_timeout", "0", GUC_SETTABLE},
	{"client_min_messages", "notice", GUC_SETTABLE},
	{"bytea_output", "hex", GUC_SETTABLE},
	{"synchronous_commit", "on", GUC_SETTABLE},
	{"jit", "off", GUC_SETTABLE},
	{"work_mem", "4MB", GUC_SETTABLE},
	{"row_security", "on", GUC_SETTABLE},
	{"escape_string_warning", "on", GUC_SETTABLE},
	{"lc_messages", "C", GUC_SETTABLE},
	{"lc_monetary", "C", GUC_SETTABLE},
	{"lc_numeric", "C", GUC_SETTABLE},
	{"lc_time", "C", GUC_SETTABLE},
};

static const struct guc_def *guc_find(const char *w, size_t wl)
{
	size_t i;

	for (i = 0; i < sizeof guc_table / sizeof guc_table[0]; i++)
		if (pgw_eq_nocase(w, wl, guc_table[i].name))
			return &guc_table[i];
	return NULL;
}

static enum stmt_class classify(const char *s, size_t len, char *tag, size_t tag_size)
{
	const char *w, *w2;
	size_t wl, wl2, i = 0;

	if (!pgw_next_word(s, len, &i, &w, &wl))
		return C_USER;
	if (pgw_eq_nocase(w, wl, "BEGIN")) {
		snprintf(tag, tag_size, "BEGIN");
		return C_BEGIN;
	}
	if (pgw_eq_nocase(w, wl, "START")) {
		if (pgw_next_word(s, len, &i, &w2, &wl2) && pgw_eq_nocase(w2, wl2, "TRANSACTION")) {
			snprintf(tag, tag_size, "START TRANSACTION");
			return C_BEGIN;
		}
		return C_USER;
	}
	if (pgw_eq_nocase(w, wl, "COMMIT") || pgw_eq_nocase(w, wl, "END")) {
		snprintf(tag, tag_size, "COMMIT");
		return C_COMMIT;
	}
	if (pgw_eq_nocase(w, wl, "ROLLBACK") || pgw_eq_nocase(w, wl, "ABORT")) {
		/* ROLLBACK [TRANSACTION | WORK] TO [SAVEPOINT] x is not the end of the block. */
		size_t j = i;
		if (pgw_next_word(s, len, &j, &w2, &wl2)) {
			if (pgw_eq_nocase(w2, wl2, "TRANSACTION") ||
			    pgw_eq_nocase(w2, wl2, "WORK")) {
				if (!pgw_next_word(s, len, &j, &w2, &wl2))
					wl2 = 0;
			}
			if (wl2 > 0 && pgw_eq_nocase(w2, wl2, "TO"))
				return C_ROLLBACK_TO;
		}
		snprintf(tag, tag_size, "ROLLBACK");
		return C_ROLLBACK;
	}
	if (pgw_eq_nocase(w, wl, "SET") || pgw_eq_nocase(w, wl, "SHOW") ||
	    pgw_eq_nocase(w, wl, "RESET")) {
		/* Only pqlite's own settings for now; anything else goes to SQLite. */
		size_t j = i;
		const char *p1, *p2;
		size_t l1, l2;
		if (!pgw_next_word(s, len, &j, &p1, &l1))
			return C_USER;
		if (pgw_eq_nocase(w, wl, "SET") &&
		    (pgw_eq_nocase(p1, l1, "SESSION") || pgw_eq_nocase(p1, l1, "LOCAL")) &&
		    !pgw_next_word(s, len, &j, &p1, &l1))
			return C_USER;
		if (guc_find(p1, l1) != NULL ||
		    (pgw_eq_nocase(w, wl, "RESET") && pgw_eq_nocase(p1, l1, "ALL"))) {
			snprintf(tag, tag_size, "%s", pgw_eq_nocase(w, wl, "SHOW") ? "SHOW"
						    : pgw_eq_nocase(w, wl, "SET") ? "SET"
									      : "RESET");
			return C_GUC;
		}
		if (pgw_eq_nocase(p1, l1, "pqlite") && j < len && s[j] == '.') {
			j++;
			if (pgw_next_word(s, len, &j, &p2, &l2) &&
			    pgw_eq_nocase(p2, l2, "read_consistency")) {
				snprintf(tag, tag_size, "%s", pgw_eq_nocase(w, wl, "SHOW") ? "SHOW"
							    : pgw_eq_nocase(w, wl, "SET") ? "SET"
										      : "RESET");
				return C_SETTING;
			}
		}
		return C_USER;
	}
	if (pgw_eq_nocase(w, wl, "CREATE") || pgw_eq_nocase(w, wl, "DROP")) {
		bool create = pgw_to_upper(w[0]) == 'C';
		if (pgw_next_word(s, len, &i, &w2, &wl2) && pgw_eq_nocase(w2, wl2, "DATABASE")) {
			snprintf(tag, tag_size, create ? "CREATE DATABASE" : "DROP DATABASE");
			return create ? C_CREATE_DB : C_DROP_DB;
		}
	}
	return C_USER;
}

/* Parse the name of CREATE DATABASE name / DROP DATABASE [IF EXISTS] name (the statement
 * was classified already). Unquoted names are folded to lower case; trailing options are
 * ignored. Returns false on a syntax error. */
static bool parse_db_command(const char *s, size_t len, bool drop, bool *if_exists, char *name,
			     size_t name_size)
{
	const char *w;
	size_t wl, i = 0, j, n = 0;

	*if_exists = false;
	pgw_next_word(s, len, &i, &w, &wl); /* CREATE | DROP */
	pgw_next_word(s, len, &i, &w, &wl); /* DATABASE */
	if (drop) {
		j = i;
		if (pgw_next_word(s, len, &j, &w, &wl) && pgw_eq_nocase(w, wl, "IF")) {
			if (!pgw_next_word(s, len, &j, &w, &wl) || !pgw_eq_nocase(w, wl, "EXISTS"))
				return false;
			*if_exists = true;
			i = j;
		}
	}
	i = pgw_skip_blank(s, len, i);
	if (i < len && s[i] == '"') {
		for (i++; i < len; i++) {
			if (s[i] == '"') {
				if (i + 1 < len && s[i + 1] == '"')
					i++; /* a doubled quote stands for one */
				else
					break;
			}
			if (n + 1 >= name_size)
				return false;
			name[n++] = s[i];
		}
		if (i >= len)
			return false; /* unterminated */
	} else if (i < len && pgw_is_word_start(s[i])) {
		for (; i < len && pgw_is_word_char(s[i]); i++) {
			if (n + 1 >= name_size)
				return false;
			name[n++] = pgw_to_lower(s[i]);
		}
	} else {
		return false;
	}
	name[n] = '\0';
	return n > 0;
}

/* The command-tag shape of a client statement, from its first keywords. */
static enum tag_kind tag_for(const char *s, size_t len, char *tag, size_t tag_size)
{
	const char *w, *w2;
	size_t wl, wl2, i = 0, k;

	tag[0] = '\0';
	if (!pgw_next_word(s, len, &i, &w, &wl))
		return TAG_PLAIN;
	if (pgw_eq_nocase(w, wl, "INSERT") || pgw_eq_nocase(w, wl, "REPLACE"))
		return TAG_INSERT;
	if (pgw_eq_nocase(w, wl, "UPDATE"))
		return TAG_UPDATE;
	if (pgw_eq_nocase(w, wl, "DELETE"))
		return TAG_DELETE;
	if (pgw_eq_nocase(w, wl, "SELECT") || pgw_eq_nocase(w, wl, "VALUES"))
		return TAG_SELECT;
	if (pgw_eq_nocase(w, wl, "WITH")) {
		/* The main verb is the first of these keywords outside parentheses. */
		int depth = 0;
		while (i < len) {
			char c = s[i];
			if (c == '\'' || c == '"' || c == '`' || c == '[') {
				i = pgw_skip_quoted(s, len, i);
			} else if (c == '(') {
				depth++;
				i++;
			} else if (c == ')') {
				depth--;
				i++;
			} else if (pgw_is_word_start(c)) {
				size_t j = i;
				while (j < len && pgw_is_word_char(s[j]))
					j++;
				if (depth == 0) {
					if (pgw_eq_nocase(s + i, j - i, "INSERT") ||
					    pgw_eq_nocase(s + i, j - i, "REPLACE"))
						return TAG_INSERT;
					if (pgw_eq_nocase(s + i, j - i, "UPDATE"))
						return TAG_UPDATE;
					if (pgw_eq_nocase(s + i, j - i, "DELETE"))
						return TAG_DELETE;
					if (pgw_eq_nocase(s + i, j - i, "SELECT") ||
					    pgw_eq_nocase(s + i, j - i, "VALUES"))
						return TAG_SELECT;
				}
				i = j;
			} else {
				size_t j = pgw_skip_blank(s, len, i);
				i = j > i ? j : i + 1;
			}
		}
		return TAG_SELECT;
	}
	/* Otherwise the upper-cased keyword, and for CREATE/DROP/ALTER the object kind. */
	for (k = 0; k < wl && k + 1 < tag_size; k++)
		tag[k] = pgw_to_upper(w[k]);
	tag[k] = '\0';
	if (pgw_eq_nocase(w, wl, "CREATE") || pgw_eq_nocase(w, wl, "DROP") ||
	    pgw_eq_nocase(w, wl, "ALTER")) {
		while (pgw_next_word(s, len, &i, &w2, &wl2)) {
			if (pgw_eq_nocase(w2, wl2, "TEMP") || pgw_eq_nocase(w2, wl2, "TEMPORARY") ||
			    pgw_eq_nocase(w2, wl2, "UNIQUE") || pgw_eq_nocase(w2, wl2, "VIRTUAL"))
				continue;
			if (k + 1 + wl2 + 1 <= tag_size && wl2 < 32) {
				size_t m;
				tag[k++] = ' ';
				for (m = 0; m < wl2; m++)
					tag[k++] = pgw_to_upper(w2[m]);
				tag[k] = '\0';
			}
			break;
		}
	}
	return TAG_PLAIN;
}

/* ---- Types and values --------------------------------------------------------------- */

struct type_name {
	const char *name;
	uint32_t oid;
};

static const struct type_name type_names[] = {
	{"int2", 21}, {"smallint", 21},
	{"int", 23}, {"int4", 23},
	{"integer", 20}, /* SQLite's INTEGER holds 64-bit values (PGWIRE.md section 6) */
	{"bigint", 20}, {"int8", 20},
	{"real", 701}, /* SQLite's REAL is an 8-byte double: float4 would lose digits */
	{"float4", 700},
	{"double", 701}, {"double precision", 701}, {"float8", 701}, {"float", 701},
	{"numeric", 1700}, {"decimal", 1700},
	{"text", 25}, {"clob", 25},
	{"varchar", 1043}, {"character varying", 1043},
	{"char", 1042}, {"character", 1042}, {"bpchar", 1042},
	{"bool", 16}, {"boolean", 16},
	{"bytea", 17}, {"blob", 17},
	{"date", 1082},
	{"time", 1083}, {"time without time zone", 1083},
	{"timestamp", 1114}, {"datetime", 1114}, {"timestamp without time zone", 1114},
	{"timestamptz", 1184}, {"timestamp with time zone", 1184},
	{"interval", 1186},
	{"json", 114}, {"jsonb", 3802},
	{"uuid", 2950},
};

/* The PostgreSQL type OID for a declared column type; 25 when unknown. */
static uint32_t oid_from_decltype(const char *decl)
{
	char norm[64];
	size_t n = 0, i;
	int depth = 0;
	bool space = false;

	/* Lower-case, drop "(...)" modifiers, collapse and trim spaces. */
	for (; *decl != '\0'; decl++) {
		char c = *decl;
		if (c == '(') {
			depth++;
			continue;
		}
		if (c == ')') {
			if (depth > 0)
				depth--;
			continue;
		}
		if (depth > 0)
			continue;
		if (pgw_is_space(c)) {
			space = n > 0;
			continue;
		}
		if (space) {
			if (n + 1 >= sizeof(norm))
				return 25;
			norm[n++] = ' ';
			space = false;
		}
		if (n + 1 >= sizeof(norm))
			return 25;
		norm[n++] = pgw_to_lower(c);
	}
	norm[n] = '\0';
	for (i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++)
		if (strcmp(norm, type_names[i].name) == 0)
			return type_names[i].oid;
	return 25;
}

static int16_t typlen_of(uint32_t oid)
{
	switch (oid) {
	case 16: return 1;
	case 20: return 8;
	case 21: return 2;
	case 23: return 4;
	case 700: return 4;
	case 701: return 8;
	case 1082: return 4;
	case 1083: return 8;
	case 1114: return 8;
	case 1184: return 8;
	case 1186: return 16;
	case 2950: return 16;
	default: return -1;
	}
}

static uint32_t oid_from_storage(int type)
{
	switch (type) {
	case SQLITE_INTEGER: return 20;
	case SQLITE_FLOAT: return 701;
	case SQLITE_BLOB: return 17;
	default: return 25; /* TEXT, NULL */
	}
}

/* Shortest text that reads back as exactly d; PostgreSQL's spellings of specials. */
static void format_double(double d, char *out, size_t size)
{
	int prec;

	if (isnan(d)) {
		snprintf(out, size, "NaN");
		return;
	}
	if (isinf(d)) {
		snprintf(out, size, d > 0 ? "Infinity" : "-Infinity");
		return;
	}
	for (prec = 15; prec <= 17; prec++) {
		snprintf(out, size, "%.*g", prec, d);
		if (strtod(out, NULL) == d)
			return;
	}
}

static bool text_is_true(const char *p, size_t n)
{
	static const char *const yes[] = {"t", "true", "1", "yes", "on"};
	size_t i;
	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		if (pgw_eq_nocase(p, n, yes[i]))
			return true;
	return false;
}

static void put_hex_field(struct buf *b, const uint8_t *p, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	size_t i, mark;

	if (n > (INT32_MAX - 2) / 2) {
		b->failed = true;
		return;
	}
	mark = pgw_datarow_field_begin(b);
	if (!buf_reserve(b, 2 + 2 * n))
		return;
	b->data[b->len++] = '\\';
	b->data[b->len++] = 'x';
	for (i = 0; i < n; i++) {
		b->data[b->len++] = (uint8_t)digits[p[i] >> 4];
		b->data[b->len++] = (uint8_t)digits[p[i] & 15];
	}
	pgw_datarow_field_end(b, mark);
}

static void put_text_field(struct buf *b, const char *s)
{
	pgw_datarow_put(b, s, strlen(s));
}

static bool is_int_oid(uint32_t oid)
{
	return oid == 20 || oid == 21 || oid == 23;
}

/* Append column i of the current row in PostgreSQL text format for type `oid`. */
static void put_value(struct buf *b, sqlite3_stmt *ss, int i, uint32_t oid)
{
	int type = sqlite3_column_type(ss, i);
	char tmp[64];

	if (type == SQLITE_NULL) {
		pgw_datarow_put_null(b);
		return;
	}
	if (type == SQLITE_BLOB || (oid == 17 && type != SQLITE_NULL)) {
		const void *p = type == SQLITE_BLOB ? sqlite3_column_blob(ss, i)
						    : (const void *)sqlite3_column_text(ss, i);
		int n = sqlite3_column_bytes(ss, i);
		if (p == NULL && n > 0) {
			b->failed = true; /* out of memory inside SQLite */
			return;
		}
		put_hex_field(b, p, (size_t)n);
		return;
	}
	switch (type) {
	case SQLITE_INTEGER: {
		sqlite3_int64 v = sqlite3_column_int64(ss, i);
		if (oid == 16)
			put_text_field(b, v != 0 ? "t" : "f");
		else {
			snprintf(tmp, sizeof(tmp), "%lld", (long long)v);
			put_text_field(b, tmp);
		}
		return;
	}
	case SQLITE_FLOAT: {
		double d = sqlite3_column_double(ss, i);
		if (oid == 16)
			put_text_field(b, d != 0 ? "t" : "f");
		else if (is_int_oid(oid) && d == floor(d) && fabs(d) < 9.2e18) {
			snprintf(tmp, sizeof(tmp), "%lld", (long long)d);
			put_text_field(b, tmp);
		} else {
			format_double(d, tmp, sizeof(tmp));
			put_text_field(b, tmp);
		}
		return;
	}
	default: { /* TEXT */
		const char *p = (const char *)sqlite3_column_text(ss, i);
		int n = sqlite3_column_bytes(ss, i);
		if (p == NULL) {
			b->failed = true;
			return;
		}
		if (oid == 16)
			put_text_field(b, text_is_true(p, (size_t)n) ? "t" : "f");
		else
			pgw_datarow_put(b, p, (size_t)n);
		return;
	}
	}
}

/* ---- Errors -------------------------------------------------------------------------- */

static void send_notice(struct pgw_session *s, const char *severity, const char *code,
			const char *message)
{
	struct pgw_error e = {severity, code, message, NULL, NULL, 0};
	pgw_encode_error(&s->out, 'N', &e);
}

static void send_error(struct pgw_session *s, const char *code, const char *message,
		       const char *detail)
{
	struct pgw_error e = {"ERROR", code, message, detail, NULL, 0};
	pgw_encode_error(&s->out, 'E', &e);
}

/* Send FATAL and stop processing; the caller flushes the output and closes. */
static void send_fatal_detail(struct pgw_session *s, const char *code, const char *message,
			      const char *detail)
{
	struct pgw_error e = {"FATAL", code, message, detail, NULL, 0};
	pgw_encode_error(&s->out, 'E', &e);
	s->state = ST_CLOSING;
}

static void send_fatal(struct pgw_session *s, const char *code, const char *message)
{
	send_fatal_detail(s, code, message, NULL);
}

/* "leader: H:P" for a 25006 detail, in s->detail_buf. */
static const char *leader_detail(struct pgw_session *s)
{
	const char *leader = core_engine_leader_address(s->engine);

	if (leader == NULL)
		return "no leader is known at the moment";
	snprintf(s->detail_buf, sizeof s->detail_buf, "leader: %s", leader);
	return s->detail_buf;
}

#define NOT_LEADER_MSG "cannot execute statement: this node is not the leader"
#define DEPOSED_MSG "terminating connection because this node is no longer the leader"

static bool has(const char *msg, const char *needle)
{
	return strstr(msg, needle) != NULL;
}

/* SQLSTATE for an SQLite error: by extended code, then by message. */
static const char *sqlstate_for_sqlite(int ext, const char *msg)
{
	switch (ext & 0xFF) {
	case SQLITE_CONSTRAINT:
		switch (ext) {
		case SQLITE_CONSTRAINT_UNIQUE:
		case SQLITE_CONSTRAINT_PRIMARYKEY:
		case SQLITE_CONSTRAINT_ROWID:
			return "23505";
		case SQLITE_CONSTRAINT_NOTNULL:
			return "23502";
		case SQLITE_CONSTRAINT_FOREIGNKEY:
			return "23503";
		case SQLITE_CONSTRAINT_CHECK:
			return "23514";
		default:
			return "23000";
		}
	case SQLITE_BUSY:
		return "40001";
	case SQLITE_READONLY:
		return "25006";
	case SQLITE_INTERRUPT:
		return "57014";
	case SQLITE_TOOBIG:
		return "54000";
	case SQLITE_FULL:
		return "53100";
	case SQLITE_NOMEM:
		return "53200";
	case SQLITE_AUTH:
		return "42501";
	case SQLITE_MISMATCH:
		return "42804";
	default:
		break;
	}
	if (has(msg, "no such table"))
		return "42P01";
	if (has(msg, "no such column"))
		return "42703";
	if (has(msg, "syntax error") || has(msg, "incomplete input") ||
	    has(msg, "unrecognized token"))
		return "42601";
	if (has(msg, "already exists"))
		return "42P07";
	if (has(msg, "datatype mismatch"))
		return "42804";
	if (has(msg, "no such function"))
		return "42883";
	return "XX000";
}

/* Report a failed core call as ErrorResponse. pos_base is the byte offset in q.sql of the
 * text the failing statement was prepared from (used when pos_valid). */
static void send_core_error(struct pgw_session *s, int rc, const struct core_error *ce,
			    bool pos_valid, size_t pos_base)
{
	struct pgw_error e = {"ERROR", "XX000", NULL, NULL, NULL, 0};
	const char *core_msg = ce->msg[0] != '\0' ? ce->msg : NULL;
	char sqlstate[6];

	switch (rc) {
	case ERR_SQL:
		e.code = sqlstate_for_sqlite(ce->sqlite_code, ce->msg);
		e.message = core_msg != NULL ? core_msg : sqlite3_errstr(ce->sqlite_code);
		if (pos_valid && ce->offset >= 0 && s->q_active) {
			size_t off = pos_base + (size_t)ce->offset;
			if (off > s->q.len)
				off = s->q.len;
			e.position = char_position(s->q.sql, off);
		}
		break;
	case ERR_NOTLEADER:
		e.code = "25006";
		e.message = NOT_LEADER_MSG;
		e.detail = leader_detail(s);
		e.hint = "Nothing was executed; retry on the leader.";
		break;
	case ERR_LEADERSHIP_LOST:
		e.code = "40003";
		e.message = "leadership lost while committing; the transaction may or may not "
			    "have been committed";
		break;
	case ERR_TIMEOUT:
		e.code = "57P03";
		e.message = "timed out waiting for the database to accept the statement; "
			    "nothing was committed";
		e.detail = core_msg;
		e.hint = "Retry the statement.";
		break;
	case ERR_FULL:
		e.code = "53100";
		e.message = "database memory limit exceeded";
		e.detail = core_msg;
		break;
	case ERR_NOMEM:
		e.code = "53200";
		e.message = "out of memory";
		break;
	case ERR_BUSY:
		e.code = "40001";
		e.message = core_msg != NULL ? core_msg : "could not serialize access";
		break;
	case ERR_NOTFOUND:
		e.code = "3D000";
		e.message = core_msg != NULL ? core_msg : "the database no longer exists";
		break;
	case ERR_SHUTDOWN:
		e.code = "57P01";
		e.message = "the server is shutting down";
		break;
	case ERR_IO:
		e.code = "58030";
		e.message = core_msg != NULL ? core_msg : "I/O error";
		break;
	default:
		e.code = "XX000";
		e.message = core_msg != NULL ? core_msg : err_str(rc);
		break;
	}
	if (ce->sqlstate[0] != '\0') {
		/* The core chose the SQLSTATE (the cluster functions). */
		memcpy(sqlstate, ce->sqlstate, sizeof(sqlstate) - 1);
		sqlstate[sizeof(sqlstate) - 1] = '\0';
		e.code = sqlstate;
		e.message = core_msg != NULL ? core_msg : e.message;
		if (strcmp(ce->sqlstate, "25006") == 0 && e.detail == NULL)
			e.detail = leader_detail(s);
	}
	pgw_encode_error(&s->out, 'E', &e);
}

/* ---- Query execution ----------------------------------------------------------------- */

static int run(struct pgw_session *s);

static char ready_status(const struct pgw_session *s)
{
	switch (s->txn) {
	case TX_EXPLICIT:
		return 'T';
	case TX_FAILED:
		return 'E';
	default:
		return 'I';
	}
}

static void query_free(struct query *q)
{
	free(q->sql);
	free(q->oids);
	memset(q, 0, sizeof(*q));
}

/* True when this session reports itself as a hot standby: STANDBY mode on a follower. */
static bool standby_now(struct pgw_session *s)
{
	return s->follower_mode == PGW_FOLLOWER_STANDBY && !core_engine_is_leader(s->engine);
}

static void send_standby_status(struct pgw_session *s, bool standby)
{
	pgw_encode_parameter_status(&s->out, "in_hot_standby", standby ? "on" : "off");
	pgw_encode_parameter_status(&s->out, "default_transaction_read_only",
				    standby ? "on" : "off");
	s->reported_standby = standby;
}

/* ReadyForQuery, preceded (as PostgreSQL does) by ParameterStatus for in_hot_standby and
 * default_transaction_read_only when the node's role changed since they were reported. */
static void send_ready(struct pgw_session *s)
{
	bool standby = standby_now(s);

	if (standby != s->reported_standby)
		send_standby_status(s, standby);
	pgw_encode_ready(&s->out, ready_status(s));
}

/* STANDBY mode without an explicit SET pqlite.read_consistency: reads run on the local
 * copy while the node follows, on the leader's terms while it leads. */
static void apply_auto_read_mode(struct pgw_session *s)
{
	/* Not for another node's proxy: its client reads through the leader (a node may run
	 * in STANDBY mode while its peers proxy to it). */
	if (s->follower_mode != PGW_FOLLOWER_STANDBY || s->read_mode_explicit || s->core == NULL ||
	    s->proxied)
		return;
	core_session_set_read_mode(s->core, core_engine_is_leader(s->engine) ? CORE_READ_LEADER
									   : CORE_READ_STALE);
}

/* Finish the Query message: ReadyForQuery and back to IDLE. */
static void query_done(struct pgw_session *s)
{
	send_ready(s);
	query_free(&s->q);
	s->q_active = false;
	s->state = ST_IDLE;
}

static void on_step(struct core_stmt *st, int rc, void *arg);
static void fail_statement(struct pgw_session *s, int rc);

/* Prepare and start one internal statement (BEGIN/COMMIT/ROLLBACK). */
static void start_internal(struct pgw_session *s, enum run_kind kind, const char *sql,
			   enum txn_state txn_after)
{
	struct query *q = &s->q;
	struct core_stmt *st = NULL;
	const char *tail;
	int rc;

	rc = core_session_prepare(s->core, sql, (int)strlen(sql), &tail, &st);
	q->kind = kind;
	q->txn_after = txn_after;
	q->rolling_back = strcmp(sql, "ROLLBACK") == 0;
	q->pos_valid = false;
	q->described = false;
	if (rc != 0 || st == NULL) {
		fail_statement(s, rc != 0 ? rc : ERR_INVALID);
		return;
	}
	q->st = st;
	q->phase = QP_STEP;
}

/* After any error: end the message and settle the transaction state the way PostgreSQL
 * does. The ErrorResponse was sent already. */
static void settle_after_error(struct pgw_session *s, enum run_kind kind)
{
	struct query *q = &s->q;
	bool in = core_session_in_txn(s->core);
	enum txn_state next;

	q->failed = true;
	q->phase = QP_END;
	if (kind == RUN_TXN && q->txn_after == TX_IDLE)
		next = TX_IDLE; /* a failed COMMIT/ROLLBACK still ends the block */
	else if (s->txn == TX_EXPLICIT || s->txn == TX_FAILED)
		next = TX_FAILED;
	else
		next = TX_IDLE; /* autocommit, or the implicit block of the message */
	if (next == TX_IDLE && in) {
		start_internal(s, RUN_ROLLBACK, "ROLLBACK", TX_IDLE);
		return;
	}
	s->txn = next;
}

/* Make sure no SQLite transaction is left open after a ROLLBACK failed (the core may
 * refuse statements once leadership is gone): closing the core session rolls back, and a
 * fresh one takes its place. Returns false, after a FATAL, when that is impossible. */
static bool force_rollback(struct pgw_session *s)
{
	int rc;

	if (!core_session_in_txn(s->core))
		return true;
	enum core_read_mode mode = core_session_read_mode(s->core);
	LOGW("pgwire: ROLLBACK failed; reopening the session to discard its transaction");
	core_session_close(s->core);
	s->core = NULL;
	rc = core_session_open(s->engine, s->database, &s->core);
	if (rc != 0) {
		s->core = NULL;
		send_fatal(s, rc == ERR_NOTFOUND ? "3D000" : "57P01",
			   "the session's transaction could not be rolled back; closing");
		return false;
	}
	core_session_set_read_mode(s->core, mode); /* session settings survive */
	return true;
}

/* The current statement failed with rc: report, finalize, settle. */
static void fail_statement(struct pgw_session *s, int rc)
{
	struct query *q = &s->q;
	struct core_error ce = *core_session_error(s->core);
	enum run_kind kind = q->kind == RUN_GATE ? RUN_USER : q->kind; /* it stood for it */

	if (ce.code != rc) { /* the details belong to another call: keep only the code */
		ce.sqlite_code = 0;
		ce.offset = -1;
		ce.sqlstate[0] = '\0';
		ce.msg[0] = '\0';
		if (rc == ERR_SQL)
			snprintf(ce.msg, sizeof(ce.msg), "SQL error");
	}
	if (q->st != NULL) {
		core_stmt_finalize(q->st);
		q->st = NULL;
	}
	if (rc == ERR_SHUTDOWN) {
		/* The node is stopping, or its copy of the database was replaced by a snapshot:
		 * this session cannot go on. */
		send_fatal(s, "57P01", ce.msg[0] != '\0' ? ce.msg : "terminating connection: "
								    "the node is shutting down");
		return;
	}
	if (rc == ERR_NOTLEADER && s->proxied && q->stmt_pos == q->first_pos && !q->described &&
	    (s->txn == TX_IDLE || s->txn == TX_IMPLICIT)) {
		/* Nothing of the message ran and nothing was answered: a FATAL tells the proxy
		 * to send it again to the new leader (an ERROR would reach its client). */
		send_fatal_detail(s, "25006", NOT_LEADER_MSG, leader_detail(s));
		return;
	}
	if (q->rolling_back) {
		/* PostgreSQL's ROLLBACK cannot fail: discard the transaction another way. */
		LOGD("pgwire: ROLLBACK failed: %s", ce.msg[0] ? ce.msg : err_str(rc));
		s->server_aborted = false;
		if (!force_rollback(s))
			return;
		s->txn = q->txn_after;
		if (kind == RUN_TXN) {
			pgw_encode_command_complete(&s->out, q->tag);
			q->phase = QP_NEXT;
		} else {
			q->phase = QP_END;
		}
		return;
	}
	send_core_error(s, rc, &ce, q->pos_valid, q->stmt_pos);
	settle_after_error(s, kind);
}

/* Send RowDescription for the current statement; has_row says whether a row is current,
 * so expressions can be typed by their first value. */
static bool describe(struct pgw_session *s, bool has_row)
{
	struct query *q = &s->q;
	sqlite3_stmt *ss = core_stmt_sqlite(q->st);
	int n = sqlite3_column_count(ss), i;
	struct pgw_column *cols;

	q->described = true;
	q->n_cols = n;
	free(q->oids);
	q->oids = NULL;
	if (n == 0)
		return true;
	q->oids = calloc((size_t)n, sizeof(*q->oids));
	cols = calloc((size_t)n, sizeof(*cols));
	if (q->oids == NULL || cols == NULL) {
		free(cols);
		s->out.failed = true;
		return false;
	}
	for (i = 0; i < n; i++) {
		const char *decl = sqlite3_column_decltype(ss, i);
		const char *name = sqlite3_column_name(ss, i);
		uint32_t oid;

		if (decl != NULL)
			oid = oid_from_decltype(decl);
		else if (has_row)
			oid = oid_from_storage(sqlite3_column_type(ss, i));
		else
			oid = 25;
		q->oids[i] = oid;
		cols[i].name = name != NULL ? name : "?column?";
		cols[i].type_oid = oid;
		cols[i].typlen = typlen_of(oid);
	}
	pgw_encode_row_description(&s->out, (unsigned)n, cols);
	free(cols);
	return true;
}

static void send_row(struct pgw_session *s)
{
	struct query *q = &s->q;
	sqlite3_stmt *ss = core_stmt_sqlite(q->st);
	size_t mark = pgw_datarow_start(&s->out, (uint16_t)q->n_cols);
	int i;

	for (i = 0; i < q->n_cols; i++)
		put_value(&s->out, ss, i, q->oids[i]);
	pgw_buf_finish(&s->out, mark);
	q->n_rows++;
}

static void send_user_tag(struct pgw_session *s)
{
	struct query *q = &s->q;
	char tag[96];
	uint64_t n = q->n_cols > 0 ? q->n_rows : (uint64_t)core_stmt_changes(q->st);

	switch (q->tag_kind) {
	case TAG_INSERT:
		snprintf(tag, sizeof(tag), "INSERT 0 %llu", (unsigned long long)n);
		break;
	case TAG_UPDATE:
		snprintf(tag, sizeof(tag), "UPDATE %llu", (unsigned long long)n);
		break;
	case TAG_DELETE:
		snprintf(tag, sizeof(tag), "DELETE %llu", (unsigned long long)n);
		break;
	case TAG_SELECT:
		snprintf(tag, sizeof(tag), "SELECT %llu", (unsigned long long)q->n_rows);
		break;
	case TAG_PLAIN:
		if (q->n_cols > 0) /* PRAGMA, EXPLAIN... returning rows */
			snprintf(tag, sizeof(tag), "SELECT %llu", (unsigned long long)q->n_rows);
		else
			snprintf(tag, sizeof(tag), "%s", q->tag);
		break;
	}
	pgw_encode_command_complete(&s->out, tag);
}

/* Keep txn in line with SQLite after a client statement that succeeded (SAVEPOINT opens
 * a transaction in SQLite, RELEASE of the outermost savepoint ends it). */
static void server_rolled_back_message(struct pgw_session *s)
{
	send_error(s, "40001",
		   "the server rolled back the transaction of this query (leadership change); "
		   "nothing of it was committed",
		   NULL);
	s->txn = TX_IDLE;
	s->q.failed = true;
}

static void sync_txn_after_user(struct pgw_session *s)
{
	bool in = core_session_in_txn(s->core);

	if (s->txn == TX_IDLE && in) {
		s->txn = TX_EXPLICIT;
	} else if (s->txn == TX_IMPLICIT && !in) {
		/* The server rolled back this message's implicit transaction (leadership
		 * change): its earlier statements are undone, so the message fails. */
		server_rolled_back_message(s);
	} else if (s->txn == TX_EXPLICIT && !in) {
		s->txn = TX_IDLE;
	}
}

/* Handle one result of core_stmt_step for the current statement. */
static void step_result(struct pgw_session *s, int rc)
{
	struct query *q = &s->q;

	if (rc != CORE_ROW && rc != CORE_DONE) {
		fail_statement(s, rc);
		return;
	}
	switch (q->kind) {
	case RUN_USER:
		if (rc == CORE_ROW) {
			if (!q->described && !describe(s, true))
				return;
			send_row(s);
			q->phase = QP_STEP;
			return;
		}
		if (!q->described && !describe(s, false))
			return;
		send_user_tag(s);
		core_stmt_finalize(q->st);
		q->st = NULL;
		if (q->tag_kind == TAG_PLAIN && s->txn == TX_FAILED)
			s->txn = TX_EXPLICIT; /* ROLLBACK TO SAVEPOINT recovered the block */
		sync_txn_after_user(s);
		q->phase = QP_NEXT;
		return;
	case RUN_BEGIN_IMPLICIT:
	case RUN_COMMIT_IMPLICIT:
	case RUN_ROLLBACK:
	case RUN_TXN:
	case RUN_GATE:
		if (rc == CORE_ROW) { /* only the gate has one; keep stepping */
			q->phase = QP_STEP;
			return;
		}
		core_stmt_finalize(q->st);
		q->st = NULL;
		break;
	}
	switch (q->kind) {
	case RUN_BEGIN_IMPLICIT:
		s->txn = TX_IMPLICIT;
		q->phase = QP_NEXT; /* now run the statement that needed it */
		break;
	case RUN_COMMIT_IMPLICIT:
		s->txn = TX_IDLE;
		q->phase = QP_END;
		break;
	case RUN_ROLLBACK:
		s->txn = q->txn_after;
		q->phase = QP_END;
		break;
	case RUN_TXN:
		s->txn = q->txn_after;
		pgw_encode_command_complete(&s->out, q->tag);
		q->phase = QP_NEXT;
		break;
	case RUN_GATE:
		q->phase = QP_NEXT; /* ready: now prepare the statement */
		break;
	case RUN_USER:
		break;
	}
}

static void db_done(void *arg, int status);

/* Result of CREATE/DROP DATABASE. */
static void db_result(struct pgw_session *s, int rc)
{
	struct query *q = &s->q;
	char msg[NAME_MAX_LEN + 64];
	const char *tag = q->db_drop ? "DROP DATABASE" : "CREATE DATABASE";

	q->phase = QP_NEXT;
	if (rc == 0) {
		pgw_encode_command_complete(&s->out, tag);
		return;
	}
	switch (rc) {
	case ERR_NOTFOUND:
		if (q->db_drop && q->db_if_exists) {
			snprintf(msg, sizeof(msg), "database \"%s\" does not exist, skipping",
				 q->db_name);
			send_notice(s, "NOTICE", "00000", msg);
			pgw_encode_command_complete(&s->out, tag);
			return;
		}
		snprintf(msg, sizeof(msg), "database \"%s\" does not exist", q->db_name);
		send_error(s, "3D000", msg, NULL);
		break;
	case ERR_EXISTS:
		snprintf(msg, sizeof(msg), "database \"%s\" already exists", q->db_name);
		send_error(s, "42P04", msg, NULL);
		break;
	case ERR_INUSE:
		snprintf(msg, sizeof(msg), "database \"%s\" is being accessed by other users",
			 q->db_name);
		send_error(s, "55006", msg, NULL);
		break;
	case ERR_INVALID:
		snprintf(msg, sizeof(msg), "invalid database name \"%s\"", q->db_name);
		send_error(s, "42602", msg, NULL);
		break;
	case ERR_SHUTDOWN:
		/* Raft closed with the entry in flight: it may still commit. Say so before the
		 * FATAL, which alone would read as "nothing ran" (a proxy resends then). */
		snprintf(msg, sizeof(msg), "the node is shutting down: the outcome of %s is unknown",
			 tag);
		send_error(s, "40003", msg, NULL);
		send_fatal(s, "57P01", "terminating connection: the node is shutting down");
		return;
	default: {
		struct core_error ce = {rc, 0, -1, "", ""};
		send_core_error(s, rc, &ce, false, 0);
		break;
	}
	}
	settle_after_error(s, RUN_USER);
}

/* CREATE DATABASE / DROP DATABASE at q.stmt_pos. */
static void run_db_command(struct pgw_session *s, enum stmt_class cls, size_t end)
{
	struct query *q = &s->q;
	const char *text = q->sql + q->stmt_pos;
	bool drop = cls == C_DROP_DB;
	struct db_op *op;
	int rc;

	q->pos = end;
	if (s->txn != TX_IDLE || q->multi) {
		send_error(s, "25001",
			   drop ? "DROP DATABASE cannot run inside a transaction block"
				: "CREATE DATABASE cannot run inside a transaction block",
			   NULL);
		settle_after_error(s, RUN_USER);
		return;
	}
	q->db_drop = drop;
	if (!parse_db_command(text, end - q->stmt_pos, drop, &q->db_if_exists, q->db_name,
			      sizeof(q->db_name))) {
		struct pgw_error e = {"ERROR", "42601",
				      drop ? "syntax error in DROP DATABASE"
					   : "syntax error in CREATE DATABASE",
				      NULL, "Expected a database name.", 0};
		pgw_encode_error(&s->out, 'E', &e);
		settle_after_error(s, RUN_USER);
		return;
	}
	if (drop && strcmp(q->db_name, s->database) == 0) {
		send_error(s, "55006", "cannot drop the currently open database", NULL);
		settle_after_error(s, RUN_USER);
		return;
	}
	op = malloc(sizeof(*op));
	if (op == NULL) {
		db_result(s, ERR_NOMEM);
		return;
	}
	op->s = s;
	s->db_op = op;
	q->db_pending = true;
	s->state = ST_PENDING;
	if (drop)
		rc = core_database_drop(s->engine, q->db_name, db_done, op);
	else
		rc = core_database_create(s->engine, q->db_name, db_done, op);
	if (rc == CORE_PENDING)
		return;
	s->db_op = NULL;
	q->db_pending = false;
	s->state = ST_QUERY;
	free(op);
	db_result(s, rc);
}

static const char *const read_mode_names[] = {"leader", "linearizable", "stale"};

/* SET [SESSION] pqlite.read_consistency {TO | =} {leader | linearizable | stale | DEFAULT},
 * RESET pqlite.read_consistency, SHOW pqlite.read_consistency. Not transactional: a SET
 * inside a transaction that later rolls back stays in force (PostgreSQL would undo it). */
static const char *guc_value(struct pgw_session *s, const struct guc_def *g)
{
	int i;

	for (i = 0; i < s->n_gucs; i++)
		if (s->gucs[i].name == g->name)
			return s->gucs[i].value;
	if (g->kind == GUC_STANDBY)
		return standby_now(s) ? "on" : "off";
	if (strcmp(g->name, "server_version") == 0)
		return s->server_version;
	return g->value;
}

static void guc_reset(struct pgw_session *s, const struct guc_def *g)
{
	int i;

	for (i = 0; i < s->n_gucs; i++) {
		if (s->gucs[i].name == g->name) {
			s->gucs[i] = s->gucs[--s->n_gucs];
			return;
		}
	}
}

/* SET / SHOW / RESET of a PostgreSQL parameter in guc_table (RESET ALL too). */
static void run_guc(struct pgw_session *s, const char *tag, size_t start, size_t end)
{
	struct query *q = &s->q;
	const char *text = q->sql + start, *w;
	size_t len = end - start, i = 0, wl, vs, ve;
	const struct guc_def *g;
	char value[GUC_VALUE_MAX];
	int k;

	q->pos = end;
	/* The statement's end, without a trailing ";" and blanks. */
	while (len > 0 && (pgw_is_space(text[len - 1]) || text[len - 1] == ';'))
		len--;
	pgw_next_word(text, len, &i, &w, &wl); /* SET / SHOW / RESET */
	pgw_next_word(text, len, &i, &w, &wl);
	if (strcmp(tag, "RESET") == 0 && pgw_eq_nocase(w, wl, "ALL")) {
		s->n_gucs = 0;
		s->read_mode_explicit = false;
		core_session_set_read_mode(s->core, CORE_READ_LEADER);
		apply_auto_read_mode(s);
		pgw_encode_command_complete(&s->out, "RESET");
		return;
	}
	if (strcmp(tag, "SET") == 0 && pgw_eq_nocase(w, wl, "LOCAL")) {
		send_error(s, "0A000", "SET LOCAL is not supported", NULL);
		settle_after_error(s, RUN_USER);
		return;
	}
	if (strcmp(tag, "SET") == 0 && pgw_eq_nocase(w, wl, "SESSION"))
		pgw_next_word(text, len, &i, &w, &wl);
	g = guc_find(w, wl);
	if (g == NULL || pgw_skip_blank(text, len, i) > len)
		goto syntax;
	if (strcmp(tag, "SHOW") == 0) {
		struct pgw_column col = {g->name, 25, -1};
		const char *v = guc_value(s, g);
		size_t mark;
		if (pgw_skip_blank(text, len, i) != len)
			goto syntax;
		pgw_encode_row_description(&s->out, 1, &col);
		mark = pgw_datarow_start(&s->out, 1);
		pgw_datarow_put(&s->out, v, strlen(v));
		pgw_buf_finish(&s->out, mark);
		pgw_encode_command_complete(&s->out, "SHOW");
		return;
	}
	if (g->kind != GUC_SETTABLE) {
		snprintf(s->detail_buf, sizeof s->detail_buf,
			 "parameter \"%s\" cannot be changed", g->name);
		send_error(s, "55P02", s->detail_buf, NULL);
		settle_after_error(s, RUN_USER);
		return;
	}
	if (strcmp(tag, "RESET") == 0) {
		if (pgw_skip_blank(text, len, i) != len)
			goto syntax;
		guc_reset(s, g);
		pgw_encode_command_complete(&s->out, "RESET");
		return;
	}
	/* SET name { = | TO } value[, value...] | DEFAULT */
	i = pgw_skip_blank(text, len, i);
	if (i < len && text[i] == '=') {
		i++;
	} else if (!pgw_next_word(text, len, &i, &w, &wl) || !pgw_eq_nocase(w, wl, "TO")) {
		goto syntax;
	}
	vs = pgw_skip_blank(text, len, i);
	ve = len;
	if (vs >= ve)
		goto syntax;
	if (text[vs] == '\'' && ve - vs >= 2 && text[ve - 1] == '\'' &&
	    memchr(text + vs + 1, '\'', ve - vs - 2) == NULL) {
		vs++;
		ve--;
	}
	if (ve - vs >= sizeof value) {
		snprintf(s->detail_buf, sizeof s->detail_buf, "value for \"%s\" is too long",
			 g->name);
		send_error(s, "22023", s->detail_buf, NULL);
		settle_after_error(s, RUN_USER);
		return;
	}
	memcpy(value, text + vs, ve - vs);
	value[ve - vs] = '\0';
	if (sqlite3_stricmp(value, "DEFAULT") == 0) {
		guc_reset(s, g);
		pgw_encode_command_complete(&s->out, "SET");
		return;
	}
	if (strcmp(g->name, "client_encoding") == 0 && sqlite3_stricmp(value, "UTF8") != 0 &&
	    sqlite3_stricmp(value, "UTF-8") != 0 && sqlite3_stricmp(value, "UNICODE") != 0) {
		send_error(s, "22023", "only the UTF8 client encoding is supported", NULL);
		settle_after_error(s, RUN_USER);
		return;
	}
	for (k = 0; k < s->n_gucs && s->gucs[k].name != g->name; k++)
		;
	if (k == s->n_gucs) {
		if (s->n_gucs == GUC_MAX) {
			send_error(s, "54000", "too many parameters set in this session", NULL);
			settle_after_error(s, RUN_USER);
			return;
		}
		s->n_gucs++;
	}
	s->gucs[k].name = g->name;
	snprintf(s->gucs[k].value, sizeof s->gucs[k].value, "%s", value);
	pgw_encode_command_complete(&s->out, "SET");
	return;
syntax:
	send_error(s, "42601", "syntax error in SET, SHOW or RESET", NULL);
	settle_after_error(s, RUN_USER);
}

static void run_setting(struct pgw_session *s, const char *tag, size_t start, size_t end)
{
	struct query *q = &s->q;
	const char *text = q->sql + start, *w;
	size_t len = end - start, i = 0, wl;
	char value[64];
	int mode = -1, k;

	q->pos = end;
	if (strcmp(tag, "SHOW") == 0) {
		struct pgw_column col = {READ_CONSISTENCY, 25, -1};
		const char *v = read_mode_names[core_session_read_mode(s->core)];
		size_t mark;
		pgw_encode_row_description(&s->out, 1, &col);
		mark = pgw_datarow_start(&s->out, 1);
		pgw_datarow_put(&s->out, v, strlen(v));
		pgw_buf_finish(&s->out, mark);
		pgw_encode_command_complete(&s->out, "SHOW");
		return;
	}
	if (strcmp(tag, "RESET") == 0) {
		s->read_mode_explicit = false;
		core_session_set_read_mode(s->core, CORE_READ_LEADER);
		apply_auto_read_mode(s);
		pgw_encode_command_complete(&s->out, "RESET");
		return;
	}
	/* SET: skip SET [SESSION|LOCAL] pqlite . read_consistency */
	pgw_next_word(text, len, &i, &w, &wl);
	pgw_next_word(text, len, &i, &w, &wl);
	if (pgw_eq_nocase(w, wl, "LOCAL")) {
		send_error(s, "0A000", "SET LOCAL is not supported for " READ_CONSISTENCY, NULL);
		settle_after_error(s, RUN_USER);
		return;
	}
	if (pgw_eq_nocase(w, wl, "SESSION"))
		pgw_next_word(text, len, &i, &w, &wl);
	i++; /* the dot */
	pgw_next_word(text, len, &i, &w, &wl);
	i = pgw_skip_blank(text, len, i);
	if (i < len && text[i] == '=') {
		i++;
	} else if (!pgw_next_word(text, len, &i, &w, &wl) || !pgw_eq_nocase(w, wl, "TO")) {
		goto syntax;
	}
	i = pgw_skip_blank(text, len, i);
	if (i < len && text[i] == '\'') {
		size_t j = ++i;
		while (j < len && text[j] != '\'')
			j++;
		if (j >= len || j - i >= sizeof value)
			goto syntax;
		memcpy(value, text + i, j - i);
		value[j - i] = 0;
		i = j + 1;
	} else if (pgw_next_word(text, len, &i, &w, &wl) && wl < sizeof value) {
		memcpy(value, w, wl);
		value[wl] = 0;
	} else {
		goto syntax;
	}
	i = pgw_skip_blank(text, len, i);
	if (i < len && text[i] == ';')
		i = pgw_skip_blank(text, len, i + 1);
	if (i < len)
		goto syntax;
	if (sqlite3_stricmp(value, "default") == 0)
		mode = CORE_READ_LEADER; /* and, in STANDBY mode, automatic again (below) */
	for (k = 0; k < 3; k++)
		if (sqlite3_stricmp(value, read_mode_names[k]) == 0)
			mode = k;
	if (mode < 0) {
		struct pgw_error e = {"ERROR", "22023", NULL, NULL,
				      "Available values: leader, linearizable, stale.", 0};
		snprintf(s->detail_buf, sizeof s->detail_buf,
			 "invalid value for parameter \"" READ_CONSISTENCY "\": \"%s\"", value);
		e.message = s->detail_buf;
		pgw_encode_error(&s->out, 'E', &e);
		settle_after_error(s, RUN_USER);
		return;
	}
	core_session_set_read_mode(s->core, (enum core_read_mode)mode);
	s->read_mode_explicit = sqlite3_stricmp(value, "default") != 0;
	apply_auto_read_mode(s);
	pgw_encode_command_complete(&s->out, "SET");
	return;
syntax:
	send_error(s, "42601", "syntax error in SET " READ_CONSISTENCY, NULL);
	settle_after_error(s, RUN_USER);
}

/* Pick and start the next statement of the message. */
static void next_statement(struct pgw_session *s)
{
	struct query *q = &s->q;
	size_t start, end;
	enum stmt_class cls;
	char tag[sizeof(q->tag)];
	struct core_stmt *st = NULL;
	const char *tail;
	int rc;

	if (q->failed || !pgw_split_next(q->sql, q->len, q->pos, &start, &end)) {
		q->phase = QP_END;
		return;
	}
	q->stmt_pos = start;
	cls = classify(q->sql + start, end - start, tag, sizeof(tag));
	apply_auto_read_mode(s); /* the node's role may have changed since the last one */

	if (s->txn == TX_EXPLICIT && !core_session_in_txn(s->core)) {
		/* The core rolled our transaction back (leadership change, idle timeout). */
		s->txn = TX_FAILED;
		s->server_aborted = true;
	}
	if (s->txn == TX_IMPLICIT && !core_session_in_txn(s->core)) {
		q->pos = end;
		server_rolled_back_message(s);
		q->phase = QP_END;
		return;
	}
	if (cls == C_COMMIT && s->txn == TX_FAILED && s->server_aborted) {
		/* The client never saw an error for this transaction: COMMIT must not look
		 * like it went through (PostgreSQL would have closed the connection). */
		q->pos = end;
		s->server_aborted = false;
		s->txn = TX_IDLE;
		send_error(s, "40001",
			   "could not commit: the server had already rolled the transaction back "
			   "(leadership change, or idle too long while holding the write lock)",
			   NULL);
		q->failed = true;
		q->phase = QP_END;
		return;
	}
	if (s->txn == TX_FAILED && cls != C_COMMIT && cls != C_ROLLBACK && cls != C_ROLLBACK_TO) {
		q->pos = end;
		send_error(s, "25P02",
			   "current transaction is aborted, commands ignored until end of "
			   "transaction block",
			   s->server_aborted ? "The server rolled the transaction back: after a "
					       "leadership change, or when it sat idle holding "
					       "the database's write lock too long."
					     : NULL);
		s->server_aborted = false; /* told now: a later COMMIT answers ROLLBACK */
		q->failed = true;
		q->phase = QP_END;
		return;
	}

	switch (cls) {
	case C_BEGIN:
		q->pos = end;
		snprintf(q->tag, sizeof(q->tag), "%s", tag);
		if (s->txn == TX_IDLE) {
			start_internal(s, RUN_TXN, "BEGIN", TX_EXPLICIT);
			return;
		}
		if (s->txn == TX_EXPLICIT)
			send_notice(s, "WARNING", "25001",
				    "there is already a transaction in progress");
		s->txn = TX_EXPLICIT; /* an implicit block becomes explicit */
		pgw_encode_command_complete(&s->out, q->tag);
		return;
	case C_COMMIT:
	case C_ROLLBACK:
		q->pos = end;
		if (s->txn == TX_IDLE || s->txn == TX_IMPLICIT)
			send_notice(s, "WARNING", "25P01", "there is no transaction in progress");
		/* COMMIT of a failed block rolls back and says so. */
		snprintf(q->tag, sizeof(q->tag), "%s",
			 s->txn == TX_FAILED ? "ROLLBACK" : tag);
		s->server_aborted = false;
		if (core_session_in_txn(s->core)) {
			bool commit = cls == C_COMMIT && s->txn != TX_FAILED;
			start_internal(s, RUN_TXN, commit ? "COMMIT" : "ROLLBACK", TX_IDLE);
			return;
		}
		s->txn = TX_IDLE;
		pgw_encode_command_complete(&s->out, q->tag);
		return;
	case C_CREATE_DB:
	case C_DROP_DB:
		run_db_command(s, cls, end);
		return;
	case C_SETTING:
		run_setting(s, tag, start, end);
		return;
	case C_GUC:
		run_guc(s, tag, start, end);
		return;
	case C_USER:
	case C_ROLLBACK_TO:
		break;
	}

	if (q->multi && s->txn == TX_IDLE) {
		start_internal(s, RUN_BEGIN_IMPLICIT, "BEGIN", TX_IMPLICIT);
		return; /* QP_NEXT comes back to this same statement */
	}
	if (!q->gated && core_engine_is_leader(s->engine) && !core_engine_is_ready(s->engine) &&
	    core_session_read_mode(s->core) != CORE_READ_STALE) {
		/* A new leader that has not applied everything yet would compile the statement
		 * against an old schema (42P01 for a table whose CREATE was acknowledged): wait
		 * for readiness through a statement the core gates, then prepare. */
		q->gated = true;
		start_internal(s, RUN_GATE, "SELECT 1", s->txn);
		return; /* QP_NEXT comes back to this same statement */
	}
	q->gated = false;
	q->kind = RUN_USER;
	q->rolling_back = false;
	q->pos_valid = true;
	q->described = false;
	q->n_rows = 0;
	q->n_cols = 0;
	rc = core_session_prepare(s->core, q->sql + start, (int)(end - start), &tail, &st);
	if (rc != 0) {
		q->pos = end;
		fail_statement(s, rc);
		return;
	}
	if (st == NULL) { /* only comments after all */
		q->pos = end;
		q->phase = QP_NEXT;
		return;
	}
	q->pos = (size_t)(tail - q->sql);
	if (q->pos <= start || q->pos > end)
		q->pos = end; /* never loop on the same text */
	q->st = st;
	q->tag_kind = tag_for(q->sql + start, end - start, q->tag, sizeof(q->tag));
	if (cls == C_ROLLBACK_TO)
		q->tag_kind = TAG_PLAIN; /* tag "ROLLBACK"; recovers a failed block */
	q->phase = QP_STEP;
}

/* One move of the Query program. */
static void query_tick(struct pgw_session *s)
{
	struct query *q = &s->q;
	int rc;

	if (s->have_result) {
		s->have_result = false;
		if (q->db_pending) {
			q->db_pending = false;
			db_result(s, s->result_rc);
		} else {
			step_result(s, s->result_rc);
		}
		return;
	}
	switch (q->phase) {
	case QP_NEXT:
		next_statement(s);
		return;
	case QP_STEP:
		/* PENDING before the call, so that even a callback fired from inside it (which
		 * the contract excludes) would only be recorded for this loop. */
		s->state = ST_PENDING;
		rc = core_stmt_step(q->st, on_step, s);
		if (rc == CORE_PENDING)
			return; /* PENDING, or QUERY again when the result is already here */
		s->state = ST_QUERY;
		step_result(s, rc);
		return;
	case QP_END:
		if (s->txn == TX_IMPLICIT) {
			start_internal(s, RUN_COMMIT_IMPLICIT, "COMMIT", TX_IDLE);
			return;
		}
		query_done(s);
		return;
	}
}

/* Record an asynchronous result and, unless the run loop is active, resume. */
static void resume(struct pgw_session *s, int rc)
{
	int status;

	s->have_result = true;
	s->result_rc = rc;
	s->state = ST_QUERY;
	if (s->running)
		return; /* the loop picks it up */
	status = run(s);
	if (s->wake != NULL)
		s->wake(s->wake_arg, status);
}

static void on_step(struct core_stmt *st, int rc, void *arg)
{
	struct pgw_session *s = arg;

	if (s->state != ST_PENDING || s->q.st != st) {
		/* Being destroyed (core_session_close reporting), or a stray callback. */
		return;
	}
	resume(s, rc);
}

static void db_done(void *arg, int status)
{
	struct db_op *op = arg;
	struct pgw_session *s = op->s;

	free(op);
	if (s == NULL)
		return; /* the session is gone */
	s->db_op = NULL;
	if (s->state != ST_PENDING)
		return;
	resume(s, status);
}

/* Start running a Query message. */
static void start_query(struct pgw_session *s, const char *sql, size_t len)
{
	struct query *q = &s->q;
	size_t end;
	unsigned n;

	memset(q, 0, sizeof(*q));
	q->sql = malloc(len + 1);
	if (q->sql == NULL) {
		send_error(s, "53200", "out of memory", NULL);
		if (s->txn == TX_EXPLICIT)
			s->txn = TX_FAILED;
		send_ready(s);
		return;
	}
	memcpy(q->sql, sql, len);
	q->sql[len] = '\0';
	q->len = len;
	s->q_active = true;
	if (!utf8_valid((const uint8_t *)sql, len)) {
		send_error(s, "22021", "invalid byte sequence for encoding \"UTF8\"", NULL);
		if (s->txn == TX_EXPLICIT)
			s->txn = TX_FAILED;
		query_done(s);
		return;
	}
	n = pgw_count_statements(q->sql, q->len, 2);
	if (n == 0) {
		pgw_encode_empty_query(&s->out);
		query_done(s);
		return;
	}
	pgw_split_next(q->sql, q->len, 0, &q->first_pos, &end);
	q->multi = n > 1;
	q->phase = QP_NEXT;
	s->state = ST_QUERY;
}

/* ---- Startup -------------------------------------------------------------------------- */

static void send_parameters(struct pgw_session *s, const char *app_name, bool standby)
{
	struct buf *b = &s->out;

	pgw_encode_parameter_status(b, "server_version", s->server_version);
	pgw_encode_parameter_status(b, "server_encoding", "UTF8");
	pgw_encode_parameter_status(b, "client_encoding", "UTF8");
	pgw_encode_parameter_status(b, "DateStyle", "ISO, MDY");
	pgw_encode_parameter_status(b, "IntervalStyle", "postgres");
	pgw_encode_parameter_status(b, "integer_datetimes", "on");
	pgw_encode_parameter_status(b, "standard_conforming_strings", "on");
	pgw_encode_parameter_status(b, "TimeZone", "UTC");
	send_standby_status(s, standby);
	pgw_encode_parameter_status(b, "is_superuser", "on");
	pgw_encode_parameter_status(b, "session_authorization", s->user);
	pgw_encode_parameter_status(b, "application_name", app_name);
}

#define MAX_PQ_OPTIONS 16

/* A PROXY-mode session on a follower: relay to the leader (proxy.c). */
static int start_proxy(struct pgw_session *s, const char *app_name, const char *client_encoding)
{
	struct pgw_proxy_config pc;

	pc.engine = s->engine;
	pc.ops = s->up_ops;
	pc.ops_arg = s->up_arg;
	pc.apply_timeout_ms = s->apply_timeout_ms;
	pc.user = s->user;
	pc.database = s->database;
	pc.application_name = app_name;
	pc.client_encoding = client_encoding;
	return pgw_proxy_create(&pc, &s->out, &s->proxy);
}

/* The value of pqlite.read_consistency in a startup "options" string
 * ("-c pqlite.read_consistency=stale", "--pqlite.read_consistency=stale"), else prev. */
static const char *startup_read_mode(const char *options, const char *prev)
{
	static char value[16];
	const char *p = options;
	size_t n;

	while ((p = strstr(p, READ_CONSISTENCY "=")) != NULL) {
		bool ok = (p >= options + 2 && p[-1] == '-' && p[-2] == '-') ||
			  (p >= options + 2 && p[-1] == 'c' && p[-2] == '-') ||
			  (p >= options + 3 && p[-1] == ' ' && p[-2] == 'c' && p[-3] == '-');
		p += strlen(READ_CONSISTENCY "=");
		if (!ok)
			continue;
		n = strcspn(p, " \t");
		if (n >= sizeof value)
			n = sizeof value - 1;
		memcpy(value, p, n);
		value[n] = '\0';
		prev = value;
	}
	return prev;
}

static void handle_startup_message(struct pgw_session *s, struct pgw_startup *su)
{
	const char *key, *value, *user = NULL, *database = NULL, *app_name = NULL;
	const char *client_encoding = NULL, *read_mode = NULL;
	const char *options[MAX_PQ_OPTIONS];
	unsigned n_options = 0;
	char msg[NAME_MAX_LEN + 128];
	uint8_t rnd[8];
	bool proxy;
	int rc, mode, k;

	if (su->major != 3) {
		snprintf(msg, sizeof(msg),
			 "unsupported frontend protocol %u.%u: server supports 3.0 to 3.0",
			 su->major, su->minor);
		send_fatal(s, "0A000", msg);
		return;
	}
	while (pgw_startup_next_param(su, &key, &value)) {
		if (strcmp(key, "user") == 0)
			user = value;
		else if (strcmp(key, "database") == 0)
			database = value;
		else if (strcmp(key, "application_name") == 0)
			app_name = value;
		else if (strcmp(key, "client_encoding") == 0)
			client_encoding = value; /* passed on by a proxy; otherwise ignored */
		else if (strcmp(key, PGW_PROXIED_PARAM) == 0)
			s->proxied = strcmp(value, "1") == 0;
		else if (strcmp(key, READ_CONSISTENCY) == 0)
			read_mode = value;
		else if (strcmp(key, "options") == 0)
			read_mode = startup_read_mode(value, read_mode);
		else if (strncmp(key, "_pq_.", 5) == 0 && n_options < MAX_PQ_OPTIONS)
			options[n_options++] = key;
		/* Other settings (DateStyle, options...) are ignored: the reported values are
		 * the only ones supported. */
	}
	if (su->minor > 0 || n_options > 0)
		pgw_encode_negotiate_version(&s->out, 0, n_options, options);
	if (user == NULL || user[0] == '\0') {
		send_fatal(s, "28000", "no PostgreSQL user name specified in startup packet");
		return;
	}
	if (database == NULL || database[0] == '\0')
		database = user;
	s->user = strdup(user);
	s->database = strdup(database);
	if (s->user == NULL || s->database == NULL) {
		send_fatal(s, "53200", "out of memory");
		return;
	}
	if (s->proxied && !core_engine_is_leader(s->engine)) {
		/* Another node's proxy took us for the leader: it retries elsewhere. A proxied
		 * session is never proxied again, so there are no chains or loops. */
		send_fatal_detail(s, "25006", "this node is not the leader", leader_detail(s));
		return;
	}
	/* The catalog is replicated: a follower knows the databases too. */
	if (strlen(database) > NAME_MAX_LEN || !core_database_exists(s->engine, database)) {
		snprintf(msg, sizeof(msg), "database \"%.*s\" does not exist", NAME_MAX_LEN,
			 database);
		send_fatal(s, "3D000", msg);
		return;
	}
	mode = -1;
	if (read_mode != NULL) {
		for (k = 0; k < 3; k++)
			if (sqlite3_stricmp(read_mode, read_mode_names[k]) == 0)
				mode = k;
		if (mode < 0) {
			snprintf(msg, sizeof(msg),
				 "invalid value for parameter \"" READ_CONSISTENCY "\": \"%.64s\"",
				 read_mode);
			send_fatal(s, "22023", msg);
			return;
		}
	}
	/* A session that asks for stale reads at startup reads this node's own copy, also
	 * on a follower in proxy mode (where SET relays to the leader like everything). */
	proxy = s->follower_mode == PGW_FOLLOWER_PROXY && s->up_ops != NULL && !s->proxied &&
		!core_engine_is_leader(s->engine) && mode != CORE_READ_STALE;
	if (proxy) {
		/* No core session here: the leader runs everything. */
		rc = start_proxy(s, app_name, client_encoding);
		if (rc == 0 && mode >= 0) {
			char set[96];
			snprintf(set, sizeof set, "SET " READ_CONSISTENCY " = %s",
				 read_mode_names[mode]);
			rc = pgw_proxy_initial_setting(s->proxy, set);
		}
		if (rc != 0) {
			send_fatal(s, "53200", "out of memory");
			return;
		}
	} else {
		rc = core_session_open(s->engine, database, &s->core);
		if (rc != 0) {
			s->core = NULL;
			if (rc == ERR_NOTFOUND) {
				snprintf(msg, sizeof(msg), "database \"%s\" does not exist",
					 database);
				send_fatal(s, "3D000", msg);
			} else if (rc == ERR_SHUTDOWN) {
				send_fatal(s, "57P01", "the node is shutting down");
			} else {
				send_fatal(s, rc == ERR_NOMEM ? "53200" : "XX000", err_str(rc));
			}
			return;
		}
		if (mode >= 0) {
			core_session_set_read_mode(s->core, (enum core_read_mode)mode);
			s->read_mode_explicit = true;
		}
	}
	if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
		send_fatal(s, "XX000", "could not generate a cancellation key");
		return;
	}
	pgw_encode_auth_ok(&s->out);
	/* A proxy session is read-write through the leader. */
	send_parameters(s, app_name != NULL ? app_name : "", !proxy && standby_now(s));
	pgw_encode_backend_key(&s->out, get_u32be(rnd) & 0x7FFFFFFFu, get_u32be(rnd + 4));
	pgw_encode_ready(&s->out, 'I');
	s->state = proxy ? ST_PROXY : ST_IDLE;
}

static void handle_startup(struct pgw_session *s, const struct pgw_msg *m)
{
	struct pgw_startup su;
	const char *reason;

	if (pgw_startup_decode(m, &su, &reason) != 0) {
		send_fatal(s, "08P01", reason);
		return;
	}
	switch (su.kind) {
	case PGW_STARTUP_SSL:
	case PGW_STARTUP_GSSENC:
		buf_put_u8(&s->out, 'N'); /* no TLS / GSS encryption; the startup follows */
		return;
	case PGW_STARTUP_CANCEL:
		s->state = ST_CLOSING; /* not implemented yet: close without a reply */
		return;
	case PGW_STARTUP_MESSAGE:
		handle_startup_message(s, &su);
		return;
	}
}

/* ---- Normal-phase messages ----------------------------------------------------------- */

static void handle_message(struct pgw_session *s, const struct pgw_msg *m)
{
	const char *sql, *reason;
	size_t len;
	char msg[64];

	switch (m->type) {
	case 'Q':
		if (s->discard_until_sync)
			return;
		if (pgw_query_decode(m, &sql, &len, &reason) != 0) {
			send_error(s, "08P01", reason, NULL);
			if (s->txn == TX_EXPLICIT)
				s->txn = TX_FAILED;
			send_ready(s);
			return;
		}
		start_query(s, sql, len);
		return;
	case 'X':
		s->state = ST_CLOSING;
		return;
	case 'S': /* Sync */
		s->discard_until_sync = false;
		send_ready(s);
		return;
	case 'P': case 'B': case 'D': case 'E': case 'C': case 'F':
		if (!s->discard_until_sync) {
			send_error(s, "0A000", "extended query protocol is not supported yet",
				   NULL);
			if (s->txn == TX_EXPLICIT)
				s->txn = TX_FAILED;
			s->discard_until_sync = true;
		}
		return;
	case 'H':           /* Flush: the output is sent every round anyway */
	case 'd': case 'c': case 'f': /* COPY messages outside COPY are ignored */
		return;
	default:
		snprintf(msg, sizeof(msg), "invalid frontend message type %d", m->type);
		send_fatal(s, "08P01", msg);
		return;
	}
}

/* ---- The loop -------------------------------------------------------------------------- */

/* Frame and handle one input message; false when more input is needed. */
static bool next_message(struct pgw_session *s)
{
	struct buf view;
	struct pgw_msg m;
	const char *reason = NULL;
	int r;
	bool startup = s->state == ST_STARTUP;

	view.data = s->in.data + s->in_off;
	view.len = s->in.len - s->in_off;
	view.cap = view.len;
	view.failed = false;
	r = pgw_frame(&view, startup ? PGW_PHASE_STARTUP : PGW_PHASE_NORMAL, s->max_msg_len, &m,
		      &reason);
	if (r == PGW_FRAME_NEED_MORE)
		return false;
	if (r == PGW_FRAME_MALFORMED) {
		if (startup) {
			/* Garbage before startup (an HTTP request...): close silently, as
			 * PostgreSQL does. */
			LOGD("pgwire: bad startup packet: %s", reason);
			s->state = ST_CLOSING;
		} else {
			send_fatal(s, "08P01", reason);
		}
		return true;
	}
	if (startup) {
		handle_startup(s, &m);
	} else if (s->state == ST_PROXY && m.frame_len >= 5) {
		/* Relayed whole; a type no frontend sends is fatal here, as below. */
		int pr = pgw_proxy_message(s->proxy, &m);
		if (pr == PGW_PROXY_WAIT)
			return false; /* offered again after upstream progress */
		if (pr == PGW_PROXY_CLOSE)
			s->state = ST_CLOSING;
	} else {
		handle_message(s, &m);
	}
	/* The handlers copied what they keep; the frame can go. */
	s->in_off += m.frame_len;
	return true;
}

static int status_of(const struct pgw_session *s)
{
	if (s->state == ST_CLOSING)
		return PGW_SESSION_CLOSE;
	if (s->state == ST_PENDING || s->state == ST_QUERY || s->out.len >= PGW_SESSION_OUT_HIGH)
		return PGW_SESSION_BUSY;
	if (s->state == ST_PROXY && pgw_proxy_busy(s->proxy))
		return PGW_SESSION_BUSY;
	return PGW_SESSION_IDLE;
}

static int run(struct pgw_session *s)
{
	s->running = true;
	for (;;) {
		if (s->out.failed || s->in.failed) {
			s->state = ST_CLOSING;
			LOGW("pgwire: out of memory on a connection buffer; closing it");
		}
		if (s->state == ST_PROXY && pgw_proxy_pump(s->proxy) == PGW_PROXY_CLOSE)
			s->state = ST_CLOSING;
		if (s->state == ST_CLOSING || s->state == ST_PENDING)
			break;
		if (s->terminate_pending && s->state == ST_IDLE) {
			/* After the ReadyForQuery of the message that was running, if any. */
			send_fatal(s, "57P01", DEPOSED_MSG);
			break;
		}
		if (s->out.len >= PGW_SESSION_OUT_HIGH)
			break; /* resumed once the output drains */
		if (s->state == ST_QUERY) {
			query_tick(s);
			continue;
		}
		if (!next_message(s))
			break;
	}
	if (s->in_off > 0) {
		buf_consume(&s->in, s->in_off);
		s->in_off = 0;
	}
	s->running = false;
	return status_of(s);
}

/* ---- Public API -------------------------------------------------------------------------- */

int pgw_session_create(const struct pgw_session_config *cfg, struct pgw_session **out)
{
	struct pgw_session *s;

	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return ERR_NOMEM;
	s->server_version = strdup(cfg->server_version != NULL ? cfg->server_version : "15.0");
	if (s->server_version == NULL) {
		free(s);
		return ERR_NOMEM;
	}
	s->engine = cfg->engine;
	s->max_msg_len = cfg->max_msg_len != 0 ? cfg->max_msg_len : PGW_DEFAULT_MAX_MSG_LEN;
	s->wake = cfg->wake;
	s->wake_arg = cfg->wake_arg;
	s->follower_mode = cfg->follower_mode;
	s->apply_timeout_ms = cfg->apply_timeout_ms != 0 ? cfg->apply_timeout_ms
							 : PGW_DEFAULT_APPLY_TIMEOUT_MS;
	s->up_ops = cfg->upstream;
	s->up_arg = cfg->upstream_arg;
	buf_init(&s->in);
	buf_init(&s->out);
	s->state = ST_STARTUP;
	s->txn = TX_IDLE;
	*out = s;
	return 0;
}

void pgw_session_destroy(struct pgw_session *s)
{
	bool pending = s->state == ST_PENDING;

	s->state = ST_CLOSING; /* callbacks fired from the close below are ignored */
	if (s->db_op != NULL) {
		s->db_op->s = NULL; /* db_done frees it */
		s->db_op = NULL;
	}
	if (s->q.st != NULL && !(pending && !s->q.db_pending)) {
		core_stmt_finalize(s->q.st);
		s->q.st = NULL;
	}
	if (s->core != NULL)
		core_session_close(s->core); /* abandons a pending step */
	if (s->proxy != NULL)
		pgw_proxy_destroy(s->proxy); /* drops its upstream connection */
	query_free(&s->q);
	buf_close(&s->in);
	buf_close(&s->out);
	free(s->user);
	free(s->database);
	free(s->server_version);
	free(s);
}

struct buf *pgw_session_in(struct pgw_session *s)
{
	return &s->in;
}

struct buf *pgw_session_out(struct pgw_session *s)
{
	return &s->out;
}

int pgw_session_process(struct pgw_session *s)
{
	if (s->running) /* re-entered from a callback: the outer loop continues */
		return status_of(s);
	return run(s);
}

bool pgw_session_started(const struct pgw_session *s)
{
	return s->state != ST_STARTUP;
}

bool pgw_session_is_proxy(const struct pgw_session *s)
{
	return s->proxy != NULL;
}

struct buf *pgw_session_up_in(struct pgw_session *s)
{
	return s->proxy != NULL ? pgw_proxy_up_in(s->proxy) : NULL;
}

struct buf *pgw_session_up_out(struct pgw_session *s)
{
	return s->proxy != NULL ? pgw_proxy_up_out(s->proxy) : NULL;
}

bool pgw_session_upstream_wants_input(const struct pgw_session *s)
{
	return s->proxy != NULL && s->state != ST_CLOSING && pgw_proxy_wants_input(s->proxy);
}

int pgw_session_upstream_closed(struct pgw_session *s)
{
	if (s->proxy != NULL)
		pgw_proxy_upstream_closed(s->proxy);
	return pgw_session_process(s);
}

int pgw_session_timeout(struct pgw_session *s)
{
	if (s->proxy != NULL)
		pgw_proxy_timeout(s->proxy);
	return pgw_session_process(s);
}

int pgw_session_terminate(struct pgw_session *s)
{
	if (s->core == NULL || s->state == ST_STARTUP || s->state == ST_CLOSING)
		return -1; /* a proxy session, or not a session yet, or ending anyway */
	s->terminate_pending = true;
	if (s->running || s->state != ST_IDLE)
		return -1; /* ends when its current message is done */
	return run(s);
}

/* SQL text lexing shared by the session and the proxy: blanks and comments, words, and
 * statement boundaries of a simple-query string. Bytes only, no state. */
#ifndef PQ_PGWIRE_LEX_H
#define PQ_PGWIRE_LEX_H

#include <stdbool.h>
#include <stddef.h>

static inline bool pgw_is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static inline bool pgw_is_word_start(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static inline bool pgw_is_word_char(char c)
{
	return pgw_is_word_start(c) || (c >= '0' && c <= '9') || c == '$';
}

static inline char pgw_to_upper(char c)
{
	return (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
}

static inline char pgw_to_lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* True when a[0..alen) equals the NUL-terminated b, ignoring ASCII case. */
bool pgw_eq_nocase(const char *a, size_t alen, const char *b);

/* Skip whitespace and comments from i; returns the first other position (or len). */
size_t pgw_skip_blank(const char *s, size_t len, size_t i);

/* Skip a quoted string or identifier opening at s[i] (' " ` or [); returns the position
 * after it. */
size_t pgw_skip_quoted(const char *s, size_t len, size_t i);

/* Read the next word after blanks into *w / *wlen; false when the next token is not a
 * word. Advances *i past the word. */
bool pgw_next_word(const char *s, size_t len, size_t *i, const char **w, size_t *wlen);

/* Find the next non-empty statement at or after `from`: [*start, *end) where *start is its
 * first token and *end is just past its terminating ';' (or len). s[len] must be a
 * writable NUL: a CREATE TRIGGER body is checked with sqlite3_complete, which needs
 * NUL-terminated text, so s is modified briefly (and restored). */
bool pgw_split_next(char *s, size_t len, size_t from, size_t *start, size_t *end);

/* Number of non-empty statements in s[0..len) (same requirement on s[len]), counting at
 * most `limit`. */
unsigned pgw_count_statements(char *s, size_t len, unsigned limit);

#endif

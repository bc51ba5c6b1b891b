/* SQL text lexing shared by the session and the proxy (see lex.h). */
#include "lex.h"

#include <sqlite3.h>

bool pgw_eq_nocase(const char *a, size_t alen, const char *b)
{
	size_t i;
	for (i = 0; i < alen; i++)
		if (b[i] == '\0' || pgw_to_upper(a[i]) != pgw_to_upper(b[i]))
			return false;
	return b[alen] == '\0';
}

/* Skip whitespace and comments from i; returns the first other position (or len). */
size_t pgw_skip_blank(const char *s, size_t len, size_t i)
{
	for (;;) {
		if (i < len && pgw_is_space(s[i])) {
			i++;
		} else if (i + 1 < len && s[i] == '-' && s[i + 1] == '-') {
			while (i < len && s[i] != '\n')
				i++;
		} else if (i + 1 < len && s[i] == '/' && s[i + 1] == '*') {
			i += 2;
			while (i + 1 < len && !(s[i] == '*' && s[i + 1] == '/'))
				i++;
			i = i + 1 < len ? i + 2 : len;
		} else {
			return i;
		}
	}
}

/* Skip a quoted string or identifier opening at s[i]; returns the position after it. */
size_t pgw_skip_quoted(const char *s, size_t len, size_t i)
{
	char close = s[i] == '[' ? ']' : s[i];
	i++;
	while (i < len && s[i] != close)
		i++;
	return i < len ? i + 1 : len;
}

/* Read the next word after blanks into *w / *wlen; false when the next token is not a
 * word. Advances *i past the word. */
bool pgw_next_word(const char *s, size_t len, size_t *i, const char **w, size_t *wlen)
{
	size_t j = pgw_skip_blank(s, len, *i);
	size_t k = j;

	if (j >= len || !pgw_is_word_start(s[j]))
		return false;
	while (k < len && pgw_is_word_char(s[k]))
		k++;
	*w = s + j;
	*wlen = k - j;
	*i = k;
	return true;
}

/* Find the next non-empty statement at or after `from`: [*start, *end) where *start is its
 * first token and *end is just past its terminating ';' (or the end of the text). A ';'
 * inside a CREATE TRIGGER body does not end the statement (sqlite3_complete decides; it
 * needs NUL-terminated text, so s is modified briefly and restored). */
bool pgw_split_next(char *s, size_t len, size_t from, size_t *start, size_t *end)
{
	size_t i = from;
	unsigned n_words = 0;
	bool create = false, trigger = false;

	for (;;) {
		i = pgw_skip_blank(s, len, i);
		if (i >= len)
			return false;
		if (s[i] != ';')
			break;
		i++; /* an empty statement */
	}
	*start = i;
	while (i < len) {
		char c = s[i];

		if (c == '\'' || c == '"' || c == '`' || c == '[') {
			i = pgw_skip_quoted(s, len, i);
		} else if ((c == '-' && i + 1 < len && s[i + 1] == '-') ||
			   (c == '/' && i + 1 < len && s[i + 1] == '*')) {
			i = pgw_skip_blank(s, len, i);
		} else if (c == ';') {
			i++;
			if (trigger) {
				char saved = s[i]; /* s[len] is the message's NUL */
				int complete;
				s[i] = '\0';
				complete = sqlite3_complete(s + *start);
				s[i] = saved;
				if (!complete)
					continue;
			}
			*end = i;
			return true;
		} else if (pgw_is_word_start(c)) {
			size_t j = i;
			while (j < len && pgw_is_word_char(s[j]))
				j++;
			n_words++;
			if (n_words == 1)
				create = pgw_eq_nocase(s + i, j - i, "CREATE");
			else if (create && n_words <= 3 && pgw_eq_nocase(s + i, j - i, "TRIGGER"))
				trigger = true;
			i = j;
		} else {
			i++;
		}
	}
	*end = len;
	return true;
}

/* Number of non-empty statements in the text, counting at most `limit`. */
unsigned pgw_count_statements(char *s, size_t len, unsigned limit)
{
	size_t pos = 0, start, end;
	unsigned n = 0;

	while (n < limit && pgw_split_next(s, len, pos, &start, &end)) {
		n++;
		pos = end;
	}
	return n;
}

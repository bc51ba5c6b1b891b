/* Minimal leveled logging to stderr. */
#ifndef PQ_LIB_LOG_H
#define PQ_LIB_LOG_H

enum { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

extern int log_level;

void log_printf(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define LOGD(...) log_printf(LOG_DEBUG, __VA_ARGS__)
#define LOGI(...) log_printf(LOG_INFO, __VA_ARGS__)
#define LOGW(...) log_printf(LOG_WARN, __VA_ARGS__)
#define LOGE(...) log_printf(LOG_ERROR, __VA_ARGS__)

#endif

/* pvd's log: one line per event on stderr, "pvd[vm3]: warning: ...".
 * Under systemd (JOURNAL_STREAM set) lines carry a <N> priority prefix so
 * journald files them at the right level. */
#ifndef PVD_LOG_H
#define PVD_LOG_H

#include <stdint.h>

enum pv_log_level { PV_LOG_ERR = 3, PV_LOG_WARN = 4, PV_LOG_NOTICE = 5, PV_LOG_INFO = 6, PV_LOG_DEBUG = 7 };

void pv_log_init(const char *ident);
void pv_log_set_level(int level);
int pv_log_get_level(void);
/* "error", "warning", "notice", "info", "debug": the level, or -1. */
int pv_log_parse_level(const char *s);
void pv_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A message that can repeat as fast as programs make it (a flood of
 * connections at a limit): logged at most once per second, with the count
 * of those left out since. One limiter per kind of message. */
struct pv_log_limit {
        uint64_t next_ms;
        uint64_t suppressed;
};
void pv_log_limited(struct pv_log_limit *l, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define pv_err(...)    pv_log(PV_LOG_ERR, __VA_ARGS__)
#define pv_warn(...)   pv_log(PV_LOG_WARN, __VA_ARGS__)
#define pv_notice(...) pv_log(PV_LOG_NOTICE, __VA_ARGS__)
#define pv_info(...)   pv_log(PV_LOG_INFO, __VA_ARGS__)
#define pv_debug(...)  pv_log(PV_LOG_DEBUG, __VA_ARGS__)

#endif

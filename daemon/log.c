/* pvd's log: one line per event on stderr. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

static int log_level = PV_LOG_INFO;
static char log_ident[64] = "pvd";
static int log_journal;

void pv_log_init(const char *ident)
{
        snprintf(log_ident, sizeof(log_ident), "%s", ident);
        log_journal = getenv("JOURNAL_STREAM") != NULL;
}

void pv_log_set_level(int level)
{
        log_level = level;
}

int pv_log_get_level(void)
{
        return log_level;
}

static const struct {
        const char *name;
        int level;
} level_names[] = {
        { "error", PV_LOG_ERR },   { "warning", PV_LOG_WARN }, { "notice", PV_LOG_NOTICE },
        { "info", PV_LOG_INFO },   { "debug", PV_LOG_DEBUG },
};

int pv_log_parse_level(const char *s)
{
        for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
                if (strcmp(s, level_names[i].name) == 0)
                        return level_names[i].level;
        return -1;
}

static const char *level_name(int level)
{
        for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
                if (level_names[i].level == level)
                        return level_names[i].name;
        return "log";
}

__attribute__((format(printf, 2, 0)))
static void log_line(int level, const char *fmt, va_list ap, const char *tail)
{
        char line[1024];
        int n = 0;
        if (log_journal)
                n = snprintf(line, sizeof(line), "<%d>%s: ", level, log_ident);
        else
                n = snprintf(line, sizeof(line), "%s: %s: ", log_ident, level_name(level));
        vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
        if (tail)
                snprintf(line + strlen(line), sizeof(line) - strlen(line), "%s", tail);
        /* One write per line, so lines of concurrent pvds do not interleave. */
        size_t len = strlen(line);
        if (len + 1 < sizeof(line)) {
                line[len++] = '\n';
        } else {
                line[sizeof(line) - 2] = '\n';
                len = sizeof(line) - 1;
        }
        fwrite(line, 1, len, stderr);
        fflush(stderr);
}

void pv_log(int level, const char *fmt, ...)
{
        if (level > log_level)
                return;
        va_list ap;
        va_start(ap, fmt);
        log_line(level, fmt, ap, NULL);
        va_end(ap);
}

void pv_log_limited(struct pv_log_limit *l, int level, const char *fmt, ...)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t now = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
        if (now < l->next_ms) {
                l->suppressed++;
                return;
        }
        l->next_ms = now + 1000;
        char tail[64] = "";
        if (l->suppressed)
                snprintf(tail, sizeof(tail), " (and %llu more like it in the last second)",
                         (unsigned long long)l->suppressed);
        l->suppressed = 0;
        if (level > log_level)
                return;
        va_list ap;
        va_start(ap, fmt);
        log_line(level, fmt, ap, tail);
        va_end(ap);
}

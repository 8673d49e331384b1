/* pvctl top: every vlink and driver of the VM on one screen, refreshed in
 * place like pw-top: requests and bytes per second, ring and PMEM fill,
 * xIRQs sent and suppressed per second, and the programs on each vlink.
 * On a terminal it draws with plain ANSI sequences on the alternate screen
 * (q or Ctrl-C quits); when stdout is not a terminal it prints a block of
 * lines per sample instead, for logs and scripts.
 *
 * Rates are differences of pvd's counters between two samples (the first
 * sample shows "-"). The rows come from the status document (so a vlink
 * that is down still shows) and each driver's statistics document. */
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "pv-msg.h"
#include "pvctl.h"

#define TOP_ROWS_MAX 128
#define TOP_DRIVERS  3

static const char *const top_drivers[TOP_DRIVERS] = { "vrpq", "vumem", "vbpipe" };

struct top_row {
        char vlink[128], driver[16], peer[64], state[16];
        char programs[256];
        /* Counters (cumulative, from pvd) and what they are worth now. */
        uint64_t reqs, bytes, xsent, xsaved;
        bool has_bytes, has_xirq, has_ring, has_pmem, has_stat;
        unsigned ring_pct, pmem_pct;
};

struct top_sample {
        double t;
        unsigned n;
        struct top_row rows[TOP_ROWS_MAX];
};

static void add_program(struct top_row *r, const char *p)
{
        if (!*p || strstr(r->programs, p))
                return;
        size_t used = strlen(r->programs);
        snprintf(r->programs + used, sizeof(r->programs) - used, "%s%s", used ? " " : "", p);
}

static unsigned pct(uint64_t part, uint64_t whole)
{
        return whole ? (unsigned)(part * 100 / whole) : 0;
}

/* "name[pid]" of a program entry with keys comm (or program) and pid. */
static void add_program_of(struct top_row *r, const msgpack_object *m, const char *name_key)
{
        char name[64], both[96];
        doc_str(m, name_key, name, sizeof(name));
        if (!name[0])
                return;
        if (strcmp(name_key, "comm") == 0)
                snprintf(both, sizeof(both), "%s[%" PRIu64 "]", name, doc_u64(m, "pid"));
        else
                snprintf(both, sizeof(both), "%s", name);
        add_program(r, both);
}

static void fill_vrpq(struct top_row *r, const msgpack_object *st)
{
        uint32_t ns, nc;
        const msgpack_object *ss = doc_array(st, "sessions", &ns);
        uint64_t posted = 0, received = 0;
        for (uint32_t i = 0; i < ns; i++) {
                add_program_of(r, &ss[i], "program");
                add_program_of(r, &ss[i], "peer_program");
                const msgpack_object *cs = doc_array(&ss[i], "channels", &nc);
                for (uint32_t k = 0; k < nc; k++) {
                        posted += doc_u64(&cs[k], "posted");
                        received += doc_u64(&cs[k], "received");
                        r->xsent += doc_u64(&cs[k], "xirqs_sent");
                        r->xsaved += doc_u64(&cs[k], "xirqs_suppressed");
                }
        }
        /* The client VM counts what it posts, the server VM what it takes. */
        r->reqs = posted > received ? posted : received;
        r->has_xirq = r->has_ring = r->has_pmem = true;
        r->ring_pct = pct(doc_u64(st, "stacked"), doc_u64(st, "ring_total"));
        r->pmem_pct = pct(doc_u64(st, "pmem_used"), doc_u64(st, "pmem"));
}

static void fill_vumem(struct top_row *r, const msgpack_object *st)
{
        uint32_t ns;
        const msgpack_object *srv = doc_get(st, "server");
        if (srv && doc_get(srv, "running") && doc_get(srv, "running")->type == MSGPACK_OBJECT_BOOLEAN &&
            doc_get(srv, "running")->via.boolean)
                add_program_of(r, srv, "comm");
        const msgpack_object *ss = doc_array(st, "sessions", &ns);
        for (uint32_t i = 0; i < ns; i++)
                add_program_of(r, &ss[i], "comm");
        r->reqs = doc_u64(st, "requests_served") + doc_u64(st, "requests_failed");
        /* The pdev is VUMEM's shared bookkeeping memory: its PMEM. */
        r->has_pmem = doc_u64(st, "pdev_size") != 0;
        r->pmem_pct = pct(doc_u64(st, "pdev_used"), doc_u64(st, "pdev_size"));
}

static void fill_vbpipe(struct top_row *r, const msgpack_object *st)
{
        const msgpack_object *tx = doc_get(st, "to_peer"), *rx = doc_get(st, "from_peer");
        const msgpack_object *local = doc_get(st, "local");
        if (local && doc_u64(local, "pid")) {
                char name[64], both[96];
                snprintf(both, sizeof(both), "%s[%" PRIu64 "]", doc_str(local, "program", name, sizeof(name)),
                         doc_u64(local, "pid"));
                add_program(r, both);
        }
        r->reqs = doc_u64(tx, "writes") + doc_u64(rx, "writes");
        r->bytes = doc_u64(tx, "bytes") + doc_u64(rx, "bytes");
        r->xsent = doc_u64(st, "xirq_sent");
        r->xsaved = doc_u64(st, "xirq_suppressed");
        uint64_t fill = doc_u64(tx, "fill") > doc_u64(rx, "fill") ? doc_u64(tx, "fill") : doc_u64(rx, "fill");
        r->ring_pct = pct(fill, doc_u64(st, "ring_size"));
        r->has_bytes = r->has_xirq = r->has_ring = true;
}

static struct top_row *find_row(struct top_sample *s, const char *vlink, const char *driver)
{
        for (unsigned i = 0; i < s->n; i++)
                if (strcmp(s->rows[i].vlink, vlink) == 0 && strcmp(s->rows[i].driver, driver) == 0)
                        return &s->rows[i];
        return NULL;
}

/* One sample: the status (rows, header) and every driver's statistics. */
static int sample(struct top_sample *s, char *head, size_t hlen, char *buf, size_t cap)
{
        msgpack_zone zone;
        msgpack_object doc;
        char vm[64], ver[32];
        memset(s, 0, sizeof(*s));
        s->t = pvctl_now();
        msgpack_zone_init(&zone, 4096);
        int rc = pvctl_fetch(PV_OP_STATUS, NULL, &zone, &doc, buf, cap);
        if (rc < 0) {
                msgpack_zone_destroy(&zone);
                return rc;
        }
        uint32_t nv, np;
        const msgpack_object *vls = doc_array(&doc, "vlinks", &nv);
        doc_array(&doc, "programs", &np);
        unsigned on = 0;
        for (uint32_t i = 0; i < nv; i++) {
                uint32_t nd;
                const msgpack_object *ds = doc_array(&vls[i], "drivers", &nd);
                char state[16];
                on += strcmp(doc_str(&vls[i], "state", state, sizeof(state)), "ON") == 0;
                for (uint32_t d = 0; d < nd && s->n < TOP_ROWS_MAX; d++) {
                        struct top_row *r = &s->rows[s->n++];
                        memset(r, 0, sizeof(*r));
                        doc_str(&vls[i], "name", r->vlink, sizeof(r->vlink));
                        doc_str(&vls[i], "peer", r->peer, sizeof(r->peer));
                        snprintf(r->state, sizeof(r->state), "%s", state);
                        if (ds[d].type == MSGPACK_OBJECT_STR)
                                snprintf(r->driver, sizeof(r->driver), "%.*s", (int)ds[d].via.str.size,
                                         ds[d].via.str.ptr);
                }
        }
        uint64_t up = doc_u64(&doc, "uptime_ms");
        snprintf(head, hlen, "VM %s  pvd %s  up %" PRIu64 "h%02" PRIu64 "m%02" PRIu64 "s  vlinks %u (%u ON)  "
                             "programs %u",
                 doc_str(&doc, "vm", vm, sizeof(vm)), doc_str(&doc, "version", ver, sizeof(ver)),
                 up / 3600000, up / 60000 % 60, up / 1000 % 60, (unsigned)nv, on, (unsigned)np);
        msgpack_zone_destroy(&zone);

        for (int d = 0; d < TOP_DRIVERS; d++) {
                msgpack_zone_init(&zone, 4096);
                rc = pvctl_fetch(PV_OP_STAT, top_drivers[d], &zone, &doc, buf, cap);
                if (rc < 0) {
                        /* A pvd without this driver: its rows stay empty. */
                        msgpack_zone_destroy(&zone);
                        continue;
                }
                const msgpack_object *sv = doc_array(&doc, "vlinks", &nv);
                for (uint32_t i = 0; i < nv; i++) {
                        char name[128];
                        struct top_row *r = find_row(s, doc_str(&sv[i], "name", name, sizeof(name)), top_drivers[d]);
                        const msgpack_object *st = doc_get(&sv[i], "stat");
                        if (!r || !st || st->type != MSGPACK_OBJECT_MAP)
                                continue;
                        r->has_stat = true;
                        if (d == 0)
                                fill_vrpq(r, st);
                        else if (d == 1)
                                fill_vumem(r, st);
                        else
                                fill_vbpipe(r, st);
                }
                msgpack_zone_destroy(&zone);
        }
        return 0;
}

/* A rate from two cumulative counters, "-" without a previous sample. */
static const char *rate(const struct top_row *prev, uint64_t now_v, uint64_t prev_v, double dt, bool bytes,
                        char *buf, size_t len)
{
        if (!prev || dt <= 0 || now_v < prev_v) {
                snprintf(buf, len, "-");
                return buf;
        }
        double r = (double)(now_v - prev_v) / dt;
        if (bytes) {
                char h[32];
                human_bytes((uint64_t)r, h, sizeof(h));
                snprintf(buf, len, "%s", h);
        } else if (r >= 1e6) {
                snprintf(buf, len, "%.1fM", r / 1e6);
        } else if (r >= 1e4) {
                snprintf(buf, len, "%.1fk", r / 1e3);
        } else {
                snprintf(buf, len, "%.0f", r);
        }
        return buf;
}

static const char *fill_pct(bool has, bool stat, unsigned v, char *buf, size_t len)
{
        if (has && stat)
                snprintf(buf, len, "%u%%", v);
        else
                snprintf(buf, len, "-");
        return buf;
}

/* The screen (or block) of one sample: each line ends with eol. */
static void draw(FILE *f, const char *head, const struct top_sample *s, const struct top_sample *prev,
                 const char *eol, unsigned width)
{
        char line[1024];
        double dt = prev ? s->t - prev->t : 0;
        snprintf(line, sizeof(line), "%s", head);
        fprintf(f, "%.*s%s", (int)width, line, eol);
        snprintf(line, sizeof(line), "%-24s %-6s %-6s %-5s %8s %10s %5s %5s %8s %8s  %s", "VLINK", "DRIVER", "PEER",
                 "STATE", "REQ/S", "BYTES/S", "RING", "PMEM", "XIRQ/S", "SAVED/S", "PROGRAMS");
        fprintf(f, "%.*s%s", (int)width, line, eol);
        if (!s->n)
                fprintf(f, "(no vlink in this VM)%s", eol);
        for (unsigned i = 0; i < s->n; i++) {
                const struct top_row *r = &s->rows[i];
                const struct top_row *p = prev ? find_row((struct top_sample *)prev, r->vlink, r->driver) : NULL;
                if (p && !p->has_stat)
                        p = NULL;
                char q[16], b[32], ring[8], pm[8], xs[16], xv[16];
                bool st = r->has_stat;
                snprintf(line, sizeof(line), "%-24s %-6s %-6s %-5s %8s %10s %5s %5s %8s %8s  %s", r->vlink, r->driver,
                         r->peer, r->state, st ? rate(p, r->reqs, p ? p->reqs : 0, dt, false, q, sizeof(q)) : "-",
                         st && r->has_bytes ? rate(p, r->bytes, p ? p->bytes : 0, dt, true, b, sizeof(b)) : "-",
                         fill_pct(r->has_ring, st, r->ring_pct, ring, sizeof(ring)),
                         fill_pct(r->has_pmem, st, r->pmem_pct, pm, sizeof(pm)),
                         st && r->has_xirq ? rate(p, r->xsent, p ? p->xsent : 0, dt, false, xs, sizeof(xs)) : "-",
                         st && r->has_xirq ? rate(p, r->xsaved, p ? p->xsaved : 0, dt, false, xv, sizeof(xv)) : "-",
                         r->programs[0] ? r->programs : "-");
                fprintf(f, "%.*s%s", (int)width, line, eol);
        }
}

static struct termios saved_tio;
static bool tio_saved;

static void screen_leave(void)
{
        fputs("\033[?25h\033[?1049l", stdout);
        fflush(stdout);
        if (tio_saved)
                tcsetattr(STDIN_FILENO, TCSANOW, &saved_tio);
}

/* On a terminal: sleep, or less when q is typed (then true). */
static bool wait_key(double seconds)
{
        double end = pvctl_now() + seconds;
        while (!pvctl_stopping()) {
                double left = end - pvctl_now();
                if (left <= 0)
                        return false;
                struct pollfd p = { .fd = STDIN_FILENO, .events = POLLIN };
                int n = poll(&p, tio_saved ? 1 : 0, (int)(left * 1000) + 1);
                if (n > 0) {
                        char c;
                        if (read(STDIN_FILENO, &c, 1) == 1 && (c == 'q' || c == 'Q'))
                                return true;
                }
        }
        return true;
}

int pvctl_top(const struct pvctl_opts *o)
{
        double interval = o->watch > 0 ? o->watch : 1;
        bool tty = isatty(STDOUT_FILENO);
        size_t cap = PV_MSG_DOC_MAX;
        char *buf = malloc(cap), head[512];
        struct top_sample *cur = malloc(sizeof(*cur)), *prev = malloc(sizeof(*prev));
        int status = 0;
        bool have_prev = false;
        if (!buf || !cur || !prev) {
                fprintf(stderr, "pvctl: out of memory\n");
                status = 1;
                goto out;
        }
        if (tty) {
                if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved_tio) == 0) {
                        struct termios raw = saved_tio;
                        raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
                        raw.c_cc[VMIN] = 0;
                        raw.c_cc[VTIME] = 0;
                        tio_saved = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
                }
                fputs("\033[?1049h\033[?25l", stdout);
        }
        for (unsigned tick = 0;; tick++) {
                int rc = sample(cur, head, sizeof(head), buf, cap);
                if (rc < 0) {
                        if (tty)
                                screen_leave();
                        tty = false;
                        pvctl_say_error(rc);
                        status = 1;
                        break;
                }
                if (tty) {
                        struct winsize ws;
                        unsigned width = ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col ? ws.ws_col : 80;
                        char hl[600];
                        snprintf(hl, sizeof(hl), "%s  (every %gs, q quits)", head, interval);
                        fputs("\033[H", stdout);
                        draw(stdout, hl, cur, have_prev ? prev : NULL, "\033[K\n", width);
                        fputs("\033[J", stdout);
                } else {
                        char hl[600], ts[16];
                        time_t now = time(NULL);
                        strftime(ts, sizeof(ts), "%H:%M:%S", localtime(&now));
                        snprintf(hl, sizeof(hl), "%s %s", ts, head);
                        draw(stdout, hl, cur, have_prev ? prev : NULL, "\n", sizeof(((struct top_row *)0)->programs) + 128);
                        fputs("\n", stdout);
                }
                fflush(stdout);
                struct top_sample *t = prev;
                prev = cur;
                cur = t;
                have_prev = true;
                if ((o->count && tick + 1 >= o->count) || pvctl_stopping())
                        break;
                if (tty ? wait_key(interval) : (pvctl_sleep(interval), pvctl_stopping()))
                        break;
        }
        if (tty)
                screen_leave();
out:
        free(buf);
        free(cur);
        free(prev);
        return status;
}

/* pvctl stat vrpq: the seed's vrpqstat. Once: per vlink, session and
 * channel, requests stacked now and at peak against the ring, PMEM in use
 * now and at peak against the port (and the vlink's vrpq-pmem), requests
 * posted, received and completed, xIRQs sent and suppressed. With --watch:
 * a line per vlink and interval with a small plot of ring and PMEM
 * occupancy over time, to tune vrpq-reqs and vrpq-pmem (the seed's
 * Remark 2). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "pvctl.h"

#define PLOT_LEN   24
#define HIST_VLINKS 32

static unsigned pct(uint64_t part, uint64_t whole)
{
        return whole ? (unsigned)(part * 100 / whole) : 0;
}

static void print_chan(FILE *f, const msgpack_object *c)
{
        char st[16], used[48], ring[32], xirq[32], cb[48];
        snprintf(ring, sizeof(ring), "%" PRIu64 "/%" PRIu64, doc_u64(c, "stacked"), doc_u64(c, "ring"));
        snprintf(used, sizeof(used), "%" PRIu64 "/%" PRIu64, doc_u64(c, "pmem_used"), doc_u64(c, "port"));
        snprintf(xirq, sizeof(xirq), "%" PRIu64 "/%" PRIu64, doc_u64(c, "xirqs_sent"), doc_u64(c, "xirqs_suppressed"));
        snprintf(cb, sizeof(cb), "%" PRIu64 "/%" PRIu64, doc_u64(c, "cb_posted"), doc_u64(c, "cb_completed"));
        fprintf(f, "    %-7" PRIu64 " %-7s %16s %7" PRIu64 " %18s %4u%% %7" PRIu64 " %10" PRIu64 " %10" PRIu64
                   " %10" PRIu64 " %15s %11s\n",
                doc_u64(c, "id"), doc_str(c, "state", st, sizeof(st)), ring, doc_u64(c, "stacked_peak"), used,
                pct(doc_u64(c, "pmem_used"), doc_u64(c, "port")), doc_u64(c, "pmem_peak"), doc_u64(c, "posted"),
                doc_u64(c, "received"), doc_u64(c, "completed"), xirq, cb);
}

static void print_once(const msgpack_object *doc, FILE *f)
{
        char vm[64];
        uint32_t n;
        const msgpack_object *vls = doc_array(doc, "vlinks", &n);
        fprintf(f, "VM %s: VRPQ\n", doc_str(doc, "vm", vm, sizeof(vm)));
        if (!n)
                fprintf(f, "(no VRPQ vlink in this VM)\n");
        for (uint32_t i = 0; i < n; i++) {
                const msgpack_object *vl = &vls[i], *st = doc_get(vl, "stat");
                char name[128], role[16], peer[64], state[16], a[32], b[32];
                uint32_t ns;
                const msgpack_object *ss = doc_array(st, "sessions", &ns);
                uint64_t pmem = doc_u64(st, "pmem");
                fprintf(f, "\nvlink %s (%s, peer %s, %s): %u session%s, %" PRIu64 " channel%s\n",
                        doc_str(vl, "name", name, sizeof(name)), doc_str(vl, "role", role, sizeof(role)),
                        doc_str(vl, "peer", peer, sizeof(peer)), doc_str(vl, "state", state, sizeof(state)), ns,
                        ns == 1 ? "" : "s", doc_u64(st, "channels"), doc_u64(st, "channels") == 1 ? "" : "s");
                fprintf(f, "  vrpq-reqs %" PRIu64 ": %" PRIu64 " slots given to rings; requests stacked %" PRIu64
                           ", peak %" PRIu64 "\n",
                        doc_u64(st, "reqs"), doc_u64(st, "slots_allocated"), doc_u64(st, "stacked"),
                        doc_u64(st, "stacked_peak"));
                fprintf(f, "  vrpq-pmem %s: %s given to ports; in use %" PRIu64 " (%u%%), peak %" PRIu64 " (%u%%)\n",
                        human_bytes(pmem, a, sizeof(a)), human_bytes(doc_u64(st, "pmem_allocated"), b, sizeof(b)),
                        doc_u64(st, "pmem_used"), pct(doc_u64(st, "pmem_used"), pmem), doc_u64(st, "pmem_used_peak"),
                        pct(doc_u64(st, "pmem_used_peak"), pmem));
                for (uint32_t k = 0; k < ns; k++) {
                        const msgpack_object *s = &ss[k];
                        char sst[16], prog[64], pprog[64];
                        fprintf(f, "  session %" PRIu64 " %s: program %s, peer program %s, %" PRIu64 " info bytes\n",
                                doc_u64(s, "id"), doc_str(s, "state", sst, sizeof(sst)),
                                doc_str(s, "program", prog, sizeof(prog))[0] ? prog : "-",
                                doc_str(s, "peer_program", pprog, sizeof(pprog))[0] ? pprog : "-",
                                doc_u64(s, "info_bytes"));
                        uint32_t nc;
                        const msgpack_object *cs = doc_array(s, "channels", &nc);
                        if (!nc)
                                continue;
                        fprintf(f, "    %-7s %-7s %16s %7s %18s %5s %7s %10s %10s %10s %15s %11s\n", "CHANNEL",
                                "STATE", "STACKED/RING", "PEAK", "PMEM USED/PORT", "%", "PEAK", "POSTED",
                                "RECEIVED", "COMPLETED", "XIRQ SENT/SAVED", "CALLBACKS");
                        for (uint32_t j = 0; j < nc; j++)
                                print_chan(f, &cs[j]);
                }
                if (doc_u64(st, "sessions_not_listed") || doc_u64(st, "channels_not_listed"))
                        fprintf(f, "  (%" PRIu64 " more sessions and %" PRIu64 " more channels not listed; the "
                                   "totals above count them)\n",
                                doc_u64(st, "sessions_not_listed"), doc_u64(st, "channels_not_listed"));
        }
}

/* --watch: the last PLOT_LEN samples of each vlink, as characters. */
static struct {
        char name[128];
        char ring[PLOT_LEN + 1], pmem[PLOT_LEN + 1];
} hist[HIST_VLINKS];

static char level(unsigned percent)
{
        static const char levels[] = " .:-=+*#%@";
        if (!percent)
                return levels[0];
        unsigned l = (percent * 9 + 99) / 100;
        return levels[l > 9 ? 9 : l];
}

static void push(char *plot, char c)
{
        memmove(plot, plot + 1, PLOT_LEN - 1);
        plot[PLOT_LEN - 1] = c;
        plot[PLOT_LEN] = 0;
}

static void print_watch(const msgpack_object *doc, const struct pvctl_opts *o, FILE *f)
{
        uint32_t n;
        const msgpack_object *vls = doc_array(doc, "vlinks", &n);
        time_t now = time(NULL);
        struct tm tm;
        char ts[16];
        localtime_r(&now, &tm);
        strftime(ts, sizeof(ts), "%H:%M:%S", &tm);
        if (o->tick == 0)
                fprintf(f, "%-8s %-20s %22s %-*s  %15s %-*s\n", "TIME", "VLINK", "STACKED/RING (PEAK)", PLOT_LEN + 2,
                        " requests", "PMEM % (PEAK)", PLOT_LEN + 2, " PMEM");
        for (uint32_t i = 0; i < n; i++) {
                const msgpack_object *st = doc_get(&vls[i], "stat");
                char name[128];
                doc_str(&vls[i], "name", name, sizeof(name));
                int h = -1;
                for (int k = 0; k < HIST_VLINKS && h < 0; k++)
                        if (strcmp(hist[k].name, name) == 0)
                                h = k;
                for (int k = 0; k < HIST_VLINKS && h < 0; k++)
                        if (!hist[k].name[0]) {
                                h = k;
                                snprintf(hist[k].name, sizeof(hist[k].name), "%s", name);
                                memset(hist[k].ring, ' ', PLOT_LEN);
                                memset(hist[k].pmem, ' ', PLOT_LEN);
                        }
                if (h < 0)
                        continue;
                /* Requests: against the request rings the channels have
                 * (the ring share of vrpq-reqs); PMEM: against vrpq-pmem. */
                uint64_t rings = doc_u64(st, "ring_total"), pmem = doc_u64(st, "pmem");
                uint64_t stacked = doc_u64(st, "stacked"), used = doc_u64(st, "pmem_used");
                push(hist[h].ring, level(pct(stacked, rings)));
                push(hist[h].pmem, level(pct(used, pmem)));
                char req[48], pm[32];
                snprintf(req, sizeof(req), "%" PRIu64 "/%" PRIu64 " (%" PRIu64 ")", stacked, rings,
                         doc_u64(st, "stacked_peak"));
                snprintf(pm, sizeof(pm), "%u%% (%u%%)", pct(used, pmem), pct(doc_u64(st, "pmem_used_peak"), pmem));
                fprintf(f, "%-8s %-20s %22s |%s|  %15s |%s|\n", ts, name, req, hist[h].ring, pm, hist[h].pmem);
        }
}

int pvctl_stat_vrpq(const msgpack_object *doc, const struct pvctl_opts *o, FILE *f)
{
        if (o->watch > 0)
                print_watch(doc, o, f);
        else
                print_once(doc, f);
        return 0;
}

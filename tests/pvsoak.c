/* pvsoak: mixed traffic for a long time. The honest programs of every
 * driver (campaign.h) work and churn (their clients end their sessions and
 * conversations every few hundred operations and open new ones) while the
 * pvds' descriptors, memfds and memory are sampled. At the end: no pvd or
 * program died, no corrupt data, every pair still works, every pvd is back
 * to the descriptors and memfds it had before, and its memory stopped
 * growing (from the first quarter of the run to the end it grew by at most
 * 8 MiB).
 *
 *   pvsoak [--duration SECONDS] [--seed N] [-v]      (default 10 s)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "campaign.h"

#define SAMPLES_MAX       4096
#define RSS_GROWTH_MAX_KB (8 * 1024)
#define CHURN             300

static const char usage[] = "usage: pvsoak [--duration SECONDS] [--seed N] [--keep-logs] [-v]\n"
                            "Mixed traffic with session churn on a test platform; pvd's fds, memfds and RSS\n"
                            "sampled; nothing may leak or grow without bound.\n";

struct sample {
        double t;
        struct cp_res r[3];
        uint64_t ops;
};

int main(int argc, char **argv)
{
        struct cp_options o;
        int rc = cp_options(argc, argv, &o, 10, usage);
        if (rc)
                return rc;
        static struct sample smp[SAMPLES_MAX];
        unsigned ns = 0;
        struct cp cp;
        if (cp_start(&cp, false) < 0) {
                cp_stop(&cp);
                return 1;
        }
        usleep(200000);
        struct cp_res base[3];
        for (int i = 0; i < 3; i++)
                cp_res(pvt_vm(&cp.plat, cp_vms[i])->pid, &base[i]);
        cp.sh->churn = CHURN;
        int64_t t0 = cp_now_ns();
        for (int k = 0; k < CP_NPROGS; k++)
                cp_spawn(&cp, (enum cp_prog)k);
        int failures = cp_all_flowing(&cp, t0, 15000) < 0;
        double interval = o.duration_s / 20 < 1 ? 1 : o.duration_s / 20;
        printf("pvsoak: %.0f s, a sample every %.1f s, clients start over every %d operations\n", o.duration_s,
               interval, CHURN);
        printf("%8s %12s | %-22s | %-22s | %-22s\n", "seconds", "operations", "vm2 fds/memfds/RSS KiB",
               "vm3 fds/memfds/RSS KiB", "vm4 fds/memfds/RSS KiB");
        int64_t start = cp_now_ns(), until = start + (int64_t)(o.duration_s * 1e9);
        const char *died = NULL;
        for (int64_t next = start; !died;) {
                int64_t now = cp_now_ns();
                if (now >= next && ns < SAMPLES_MAX) {
                        struct sample *s = &smp[ns++];
                        s->t = (double)(now - start) / 1e9;
                        s->ops = 0;
                        for (int k = 0; k < CP_NPROGS; k++)
                                s->ops += cp.sh->slot[k].ops;
                        for (int i = 0; i < 3; i++)
                                cp_res(pvt_vm(&cp.plat, cp_vms[i])->pid, &s->r[i]);
                        printf("%8.1f %12llu", s->t, (unsigned long long)s->ops);
                        for (int i = 0; i < 3; i++)
                                printf(" | %5d %4d %11ld", s->r[i].fds, s->r[i].memfds, s->r[i].rss_kb);
                        printf("\n");
                        fflush(stdout);
                        next += (int64_t)(interval * 1e9);
                }
                if (now >= until || cp_interrupted)
                        break;
                usleep(100000);
                died = cp_pvd_died(&cp);
                if (!died)
                        died = cp_prog_died(&cp);
        }
        uint64_t corrupt = 0, fails = 0;
        for (int k = 0; k < CP_NPROGS; k++) {
                corrupt += cp.sh->slot[k].corrupt;
                fails += cp.sh->slot[k].fails;
        }
        if (!died && cp_all_flowing(&cp, cp_now_ns(), 5000) < 0)
                failures++;
        failures += cp_stop_programs(&cp);
        int leaks = 0, grown = 0;
        const struct sample *q = ns ? &smp[ns / 4] : NULL, *last = ns ? &smp[ns - 1] : NULL;
        for (int i = 0; !died && last && i < 3; i++) {
                struct cp_res now;
                cp_res_settle(&cp, cp_vms[i], &base[i], 5000, &now);
                long growth = last->r[i].rss_kb - q->r[i].rss_kb;
                printf("pvd %s: fds %d -> %d, memfds %d -> %d; RSS %ld KiB at the first sample, %ld at %.0f s, %ld at "
                       "the end (%+ld KiB since %.0f s)\n",
                       cp_vms[i], base[i].fds, now.fds, base[i].memfds, now.memfds, smp[0].r[i].rss_kb,
                       q->r[i].rss_kb, q->t, last->r[i].rss_kb, growth, q->t);
                leaks += cp_leaked(&cp, cp_vms[i], &base[i], &now);
                if (cp_sanitized(pvt_vm(&cp.plat, cp_vms[i])->pid))
                        printf("  (RSS not judged: this pvd runs under AddressSanitizer, whose quarantine keeps "
                               "freed memory)\n");
                else
                        grown += growth > RSS_GROWTH_MAX_KB;
        }
        printf("pvsoak: %.0f s, %llu operations, %llu sessions ended on purpose or by a peer; %llu corrupt; %s "
               "crashed; %d leaks; memory %s\n",
               last ? last->t : 0.0, (unsigned long long)(last ? last->ops : 0), (unsigned long long)fails,
               (unsigned long long)corrupt, died ? died : "nothing", leaks, grown ? "GREW" : "bounded");
        failures += cp_stop(&cp);
        bool ok = !failures && !died && !corrupt && !leaks && !grown && last && last->ops > 0;
        printf("pvsoak: %s\n", ok ? "OK" : "FAILED");
        return ok ? 0 : 1;
}

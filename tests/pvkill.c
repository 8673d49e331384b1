/* pvkill: the kill campaign. On a platform of real pvds with honest
 * programs of every driver at work (campaign.h), SIGKILL a random program
 * or pvd each round, measure how long its peers take to see it (each
 * records when its call failed), start it again and measure how long until
 * every pair works again. At the end: no pvd died on its own, no honest
 * program died or saw corrupt data, every detection within 1 s, every
 * recovery within 10 s, and every pvd holds as many descriptors and memfds
 * as before the campaign.
 *
 *   pvkill [--duration SECONDS] [--seed N] [--only NAME] [--keep-logs] [-v]
 * (default 12 s; --only: the victims whose name has NAME, e.g. vm2 or
 * "VRPQ"; --keep-logs: print the pvds' logs at the end)
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "campaign.h"

#define DETECT_MAX_MS   1000
/* A victim still there this long after SIGKILL is held by the kernel
 * (state D while it tears its memory down: README, Reliability): its
 * descriptors close only at its end, and nobody can see it go before, so
 * detection counts from its end (known within pvt_reap's 5 ms poll). */
#define SLOW_EXIT_MS    100
#define REAP_POLL_MS    5
#define DETECT_WAIT_MS  3000
#define RECOVER_MAX_MS  10000
#define OBS_MAX         (1 << 20)

static const char usage[] = "usage: pvkill [--duration SECONDS] [--seed N] [--only NAME] [--keep-logs] [-v]\n"
                            "SIGKILL random programs and pvds of a test platform under traffic; measure the\n"
                            "peers' detection and the recovery; check nothing leaks.\n";

/* Who sees a victim go: the peers in other programs (-1 ends). */
static const int prog_observers[CP_NPROGS][2] = {
        [CP_VRPQ_SRV] = { CP_VRPQ_CLT, -1 },  [CP_VRPQ_CLT] = { CP_VRPQ_SRV, -1 },
        [CP_VUMEM_SRV] = { CP_VUMEM_CLT, -1 }, [CP_VUMEM_CLT] = { -1, -1 }, /* a server is not told */
        [CP_PIPE_SRV] = { CP_PIPE_CLT, -1 },  [CP_PIPE_CLT] = { CP_PIPE_SRV, -1 },
};
/* For a pvd: the programs of the other VMs that talk to its VM. */
static const int pvd_observers[3][4] = {
        { CP_VRPQ_CLT, CP_VUMEM_CLT, CP_PIPE_CLT, -1 }, /* vm2 */
        { CP_VRPQ_SRV, -1, -1, -1 },                     /* vm3 (the VUMEM server is not told) */
        { CP_PIPE_SRV, -1, -1, -1 },                     /* vm4 */
};

static double *detect_ms, *recover_ms;
static size_t ndetect, nrecover;

int main(int argc, char **argv)
{
        struct cp_options o;
        int rc = cp_options(argc, argv, &o, 12, usage);
        if (rc)
                return rc;
        uint64_t rng = o.seed;
        detect_ms = calloc(OBS_MAX, sizeof(double));
        recover_ms = calloc(OBS_MAX, sizeof(double));
        struct cp cp;
        int failures = 0;
        if (!detect_ms || !recover_ms || cp_start(&cp, false) < 0) {
                cp_stop(&cp);
                return 1;
        }
        usleep(200000);
        struct cp_res base[3], first[3], end[3];
        for (int i = 0; i < 3; i++)
                cp_res(pvt_vm(&cp.plat, cp_vms[i])->pid, &base[i]);
        int64_t t0 = cp_now_ns();
        for (int k = 0; k < CP_NPROGS; k++)
                cp_spawn(&cp, (enum cp_prog)k);
        if (cp_all_flowing(&cp, t0, 15000) < 0) {
                fprintf(stderr, "pvkill: the honest programs do not work\n");
                cp_stop(&cp);
                return 1;
        }
        for (int i = 0; i < 3; i++)
                cp_res(pvt_vm(&cp.plat, cp_vms[i])->pid, &first[i]);
        printf("pvkill: seed %llu, %.0f s\n", (unsigned long long)o.seed, o.duration_s);

        unsigned rounds = 0, prog_kills = 0, pvd_kills = 0, late = 0, stuck = 0, slow_exits = 0;
        const char *died = NULL;
        int64_t stop_ns = cp_now_ns() + (int64_t)(o.duration_s * 1e9);
        while (cp_now_ns() < stop_ns && !died && !cp_interrupted) {
                int victim = (int)(cp_rand(&rng) % (CP_NPROGS + 3));
                const char *vname = victim < CP_NPROGS ? cp_prog_name((enum cp_prog)victim) : cp_vms[victim - CP_NPROGS];
                if (o.only && !strstr(vname, o.only))
                        continue;
                const int *obs;
                const char *what;
                int64_t seen[CP_NPROGS];
                bool working[CP_NPROGS];
                for (int k = 0; k < CP_NPROGS; k++) {
                        seen[k] = cp.sh->slot[k].fail_ns;
                        /* A peer that is between sessions (waiting for a
                         * server, say) was not talking to the victim. */
                        working[k] = cp.sh->slot[k].ok_ns > seen[k];
                }
                int64_t t_kill = cp_now_ns();
                if (victim < CP_NPROGS) {
                        what = cp_prog_name((enum cp_prog)victim);
                        obs = prog_observers[victim];
                        pvt_kill(cp.prog[victim], SIGKILL);
                        pvt_reap(cp.prog[victim], SIGKILL, what, 5000);
                        cp.prog[victim] = 0;
                        prog_kills++;
                } else {
                        what = cp_vms[victim - CP_NPROGS];
                        obs = pvd_observers[victim - CP_NPROGS];
                        pvt_pvd_stop(&cp.plat, what, SIGKILL);
                        pvd_kills++;
                }
                int64_t t_gone = cp_now_ns(), t_from = t_kill;
                if (t_gone - t_kill > (int64_t)SLOW_EXIT_MS * 1000000) {
                        t_from = t_gone - (int64_t)REAP_POLL_MS * 1000000;
                        slow_exits++;
                }
                /* Each peer sees it: its call fails after the kill. */
                double worst = 0;
                for (int j = 0; j < 4 && obs[j] >= 0; j++) {
                        const struct cp_slot *s = &cp.sh->slot[obs[j]];
                        if (!working[obs[j]])
                                continue;
                        long long until = pvt_now_ms() + DETECT_WAIT_MS;
                        while (s->fail_ns == seen[obs[j]] && pvt_now_ms() < until)
                                usleep(500);
                        if (s->fail_ns == seen[obs[j]]) {
                                fprintf(stderr, "round %u: %s killed: the %s did not notice within %d ms\n", rounds,
                                        what, cp_prog_name((enum cp_prog)obs[j]), DETECT_WAIT_MS);
                                late++;
                                continue;
                        }
                        double ms = (double)(s->fail_ns - t_from) / 1e6;
                        if (ms < 0)
                                ms = 0;
                        if (ndetect < OBS_MAX)
                                detect_ms[ndetect++] = ms;
                        worst = ms > worst ? ms : worst;
                        if (ms > DETECT_MAX_MS) {
                                fprintf(stderr, "round %u: %s killed: the %s noticed after %.1f ms\n", rounds, what,
                                        cp_prog_name((enum cp_prog)obs[j]), ms);
                                late++;
                        }
                }
                /* Back: the victim starts again; every pair works again. */
                int64_t t_back = cp_now_ns();
                if (victim < CP_NPROGS)
                        cp_spawn(&cp, (enum cp_prog)victim);
                else if ((rc = pvt_pvd_start(&cp.plat, what, cp_pvd_args())) < 0) {
                        fprintf(stderr, "round %u: the pvd of %s does not start again (%s)\n", rounds, what,
                                rc == -ECHILD ? "it exited" : strerror(-rc));
                        pvt_show_log_tail(pvt_vm(&cp.plat, what)->log, 4000);
                }
                if (cp_all_flowing(&cp, cp_now_ns(), RECOVER_MAX_MS) < 0) {
                        fprintf(stderr, "round %u: after %s was killed, the programs did not all recover\n", rounds,
                                what);
                        if (!o.keep_logs)
                                pvt_show_logs(&cp.plat, 6000);
                        stuck++;
                        break;
                }
                double rec = (double)(cp_now_ns() - t_back) / 1e6;
                if (nrecover < OBS_MAX)
                        recover_ms[nrecover++] = rec;
                if (o.verbose)
                        printf("round %u: %s killed: seen within %.2f ms, all working again %.1f ms after restart\n",
                               rounds, what, worst, rec);
                rounds++;
                died = cp_prog_died(&cp);
                if (!died)
                        died = cp_pvd_died(&cp);
        }

        for (int i = 0; i < 3; i++)
                cp_res(pvt_vm(&cp.plat, cp_vms[i])->pid, &end[i]);
        uint64_t corrupt = 0, ops = 0;
        for (int k = 0; k < CP_NPROGS; k++) {
                corrupt += cp.sh->slot[k].corrupt;
                ops += cp.sh->slot[k].ops;
        }
        failures += cp_stop_programs(&cp);
        /* What pvd holds goes back to what it held before: nothing leaked. */
        int leaks = 0;
        for (int i = 0; i < 3; i++) {
                struct cp_res now;
                cp_res_settle(&cp, cp_vms[i], &base[i], 5000, &now);
                printf("pvd %s: fds %d -> %d, memfds %d -> %d; RSS %ld KiB at the start, %ld KiB at the end\n",
                       cp_vms[i], base[i].fds, now.fds, base[i].memfds, now.memfds, first[i].rss_kb, end[i].rss_kb);
                leaks += cp_leaked(&cp, cp_vms[i], &base[i], &now);
        }
        double dmed = cp_median(detect_ms, ndetect), dmax = cp_max(detect_ms, ndetect);
        double rmed = cp_median(recover_ms, nrecover), rmax = cp_max(recover_ms, nrecover);
        printf("pvkill: %u rounds (%u program kills, %u pvd kills); detection median %.2f ms, max %.2f ms "
               "(%zu observations; %u victims took over %d ms to go, and count from their end); recovery median "
               "%.1f ms, max %.1f ms; %llu operations, %llu corrupt; %s crashed; %d leaks\n",
               rounds, prog_kills, pvd_kills, dmed, dmax, ndetect, slow_exits, SLOW_EXIT_MS, rmed, rmax,
               (unsigned long long)ops, (unsigned long long)corrupt, died ? died : "nothing", leaks);
        failures += cp_stop(&cp);
        free(detect_ms);
        free(recover_ms);
        bool ok = !failures && !died && !late && !stuck && !corrupt && !leaks && rounds > 0;
        printf("pvkill: %s\n", ok ? "OK" : "FAILED");
        return ok ? 0 : 1;
}

/* Scaling benches: generated platforms and the pvds' CPU time (see
 * bench-scale.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench-scale.h"
#include "bench-util.h"

int bench_sessions_parse(const char *list, int max, int n[BENCH_SCALE_POINTS])
{
        int k = 0;
        const char *p = list;
        while (*p) {
                char *end;
                long v = strtol(p, &end, 10);
                if (end == p || v < 1 || v > max || k == BENCH_SCALE_POINTS || (*end && *end != ','))
                        return -1;
                n[k++] = (int)v;
                p = *end ? end + 1 : end;
        }
        return k ? k : -1;
}

int bench_scale_run(const char *prog, const char *list, int max, int rounds,
                    void (*run)(struct bench_scale_point *), struct bench_scale_point pts[BENCH_SCALE_POINTS],
                    const struct bench_scale_point **one, const struct bench_scale_point **big)
{
        int ns[BENCH_SCALE_POINTS];
        int k = bench_sessions_parse(list, max, ns);
        if (k < 0) {
                fprintf(stderr, "%s: --sessions wants numbers from 1 to %d, comma-separated\n", prog, max);
                return -1;
        }
        if (rounds < 1 || rounds > BENCH_SCALE_ROUNDS) {
                fprintf(stderr, "%s: --rounds wants 1 to %d\n", prog, BENCH_SCALE_ROUNDS);
                return -1;
        }
        bench_raise_nofile();
        *one = *big = NULL;
        /* Per point and round; a round that failed is left out of the
         * figures, and the point is marked failed. */
        static double rate[BENCH_SCALE_POINTS][BENCH_SCALE_ROUNDS], pvd[BENCH_SCALE_POINTS][BENCH_SCALE_ROUNDS],
                mbs[BENCH_SCALE_POINTS][BENCH_SCALE_ROUNDS];
        int got[BENCH_SCALE_POINTS] = { 0 }, npvd[BENCH_SCALE_POINTS] = { 0 };
        for (int i = 0; i < k; i++)
                pts[i] = (struct bench_scale_point){ .n = ns[i], .ok = true, .pvd_ns = -1 };
        /* Interleaved: a quiet or a busy spell of the machine falls on
         * every point alike. */
        for (int r = 0; r < rounds; r++) {
                for (int i = 0; i < k; i++) {
                        struct bench_scale_point one_round = { .n = ns[i], .pvd_ns = -1 };
                        run(&one_round);
                        if (!one_round.ok) {
                                pts[i].ok = false;
                                continue;
                        }
                        rate[i][got[i]] = one_round.rate;
                        mbs[i][got[i]++] = one_round.mb_per_s;
                        if (one_round.pvd_ns >= 0)
                                pvd[i][npvd[i]++] = one_round.pvd_ns;
                }
        }
        for (int i = 0; i < k; i++) {
                if (!got[i]) {
                        pts[i].ok = false;
                        continue;
                }
                struct bench_stat st = bench_stat_of(rate[i], got[i]);
                pts[i].rate = st.med;
                pts[i].rate_lo = st.lo;
                pts[i].rate_hi = st.hi;
                pts[i].rounds = got[i];
                pts[i].mb_per_s = bench_stat_of(mbs[i], got[i]).med;
                /* Unknown in any round: unknown. */
                pts[i].pvd_ns = npvd[i] == got[i] ? bench_stat_of(pvd[i], npvd[i]).med : -1;
        }
        for (int i = 0; i < k; i++) {
                if (pts[i].ok && pts[i].n == 1)
                        *one = &pts[i];
                if (pts[i].ok && pts[i].n > 1 && (!*big || pts[i].n > (*big)->n))
                        *big = &pts[i];
        }
        return k;
}

const char *bench_scale_spread(const struct bench_scale_point *pt, char *buf, size_t len)
{
        struct bench_stat st = { .med = pt->rate, .lo = pt->rate_lo, .hi = pt->rate_hi, .n = pt->rounds };
        return bench_spread(st, buf, len);
}

long long bench_pvd_cpu_ns(const struct pvt_platform *p)
{
        long long sum = 0;
        for (unsigned i = 0; i < p->nvms; i++) {
                long long v = p->vms[i].pid > 0 ? pvt_cpu_ns(p->vms[i].pid) : -1;
                if (v < 0)
                        return -1;
                sum += v;
        }
        return sum;
}

void bench_raise_nofile(void)
{
        struct rlimit r;
        if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
                r.rlim_cur = r.rlim_max;
                setrlimit(RLIMIT_NOFILE, &r);
        }
}

static int run_dtc(const char *in, const char *out)
{
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
                execlp("dtc", "dtc", "-q", "-I", "dts", "-O", "dtb", "-o", out, in, (char *)NULL);
                _exit(127);
        }
        int st;
        if (pid < 0 || waitpid(pid, &st, 0) != pid)
                return -1;
        return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

int bench_plat_start(struct pvt_platform *p, const char *dts_vm2, const char *dts_vm3, int nvlinks)
{
        /* Any platform of the build will do for the directory; the device
         * tree is ours. */
        if (pvt_platform_init(p, "demo") < 0) {
                fprintf(stderr, "bench: cannot make a temporary platform (PV_CONF_DIR=%s)\n", getenv("PV_CONF_DIR"));
                return -1;
        }
        char dts[sizeof(p->dir) + 16];
        snprintf(dts, sizeof(dts), "%s/scale.dts", p->dir);
        snprintf(p->dtb, sizeof(p->dtb), "%s/scale.dtb", p->dir);
        FILE *f = fopen(dts, "w");
        if (!f)
                return -1;
        fprintf(f, "/dts-v1/;\n/ {\n\tcompatible = \"pvd,platform\";\n\tvms {\n"
                   "\t\tvm2 { vdevs {\n%s\t\t}; };\n\t\tvm3 { vdevs {\n%s\t\t}; };\n\t};\n};\n",
                dts_vm2, dts_vm3);
        if (fclose(f) != 0 || run_dtc(dts, p->dtb) < 0) {
                fprintf(stderr, "bench: cannot compile %s with dtc (is device-tree-compiler installed?)\n", dts);
                return -1;
        }
        const char *quiet[] = { "--log-level", "warning", NULL };
        if (pvt_pvd_start(p, "vm2", quiet) < 0 || pvt_pvd_start(p, "vm3", quiet) < 0) {
                fprintf(stderr, "bench: the pvds of vm2 and vm3 did not start (logs in %s)\n", p->dir);
                return -1;
        }
        /* Every vlink up. */
        if (pvt_wait_vlink(p, "vm3", NULL, "ON", 30000) == 0 && pvt_wait_vlink(p, "vm2", NULL, "ON", 30000) == 0)
                return 0;
        fprintf(stderr, "bench: the %d vlinks of the platform did not all come up (logs in %s)\n", nvlinks, p->dir);
        return -1;
}

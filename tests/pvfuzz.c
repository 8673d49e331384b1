/* pvfuzz: a live fuzzer of pvd. On a platform of real pvds with honest
 * programs at work (campaign.h), workers send every device node mutations
 * of valid requests (each driver's operations with learned ids and
 * tokens, then byte-level mutations) with 0 to 9 fds of many kinds, and
 * join a vlink's emulated-hypervisor socket as a fake VM to send it mutated
 * link messages (pvfuzz-emu.c). The nodes the honest programs use are left
 * to them (a fuzzer there is a legitimate program that competes for
 * them). Every answer that reports a failure must say why (PV_K_MSG, the
 * program's pvLastError()). At the end: no pvd died, the honest programs
 * worked throughout and saw no corrupt data, every pvd is back to its descriptors and
 * memfds, and its memory did not grow without bound.
 *
 *   pvfuzz [--duration SECONDS] [--seed N] [--workers N] [--only WORD] [--all] [-v]
 * (default 10 s, 2 workers; --only: the targets whose name has WORD, e.g.
 * "control", "vrpq", "emu"; --all: the honest programs' nodes too, and no
 * honest program)
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pv-msg.h"
#include "pvfuzz.h"

#define TARGETS_MAX 32
#define RSS_GROWTH_MAX_KB (32 * 1024)

static const char usage[] =
        "usage: pvfuzz [--duration SECONDS] [--seed N] [--workers N] [--only WORD] [--all] [--keep-logs] [-v]\n"
        "Fuzz the device nodes and a vlink's emulated-hypervisor socket of live pvds. --all: every node,\n"
        "those of the honest programs too (then none runs).\n";

struct target {
        char path[200];
        char name[64];         /* "vm3/vrpq-clt-vsmall0", or "vm2/emu" */
        bool emu;
        const uint32_t *ops;
        unsigned nops;
};

static struct target targets[TARGETS_MAX];
static unsigned ntargets;

/* ---- random ----------------------------------------------------------------------------- */

uint64_t fz_next(struct fz_rng *r)
{
        return cp_rand(&r->s);
}

uint64_t fz_below(struct fz_rng *r, uint64_t n)
{
        return n ? fz_next(r) % n : 0;
}

uint64_t fz_interesting(struct fz_rng *r)
{
        static const uint64_t v[] = { 0, 1, 2, 7, 8, 15, 16, 63, 64, 127, 128, 255, 256, 4095, 4096, 4097, 65535,
                                      65536, 1u << 20, 0x7fffffff, 0x80000000u, 0xffffffffu, 0x100000000ull,
                                      0x7fffffffffffffffull, 0x8000000000000000ull, UINT64_MAX, UINT64_MAX - 1 };
        uint64_t x = fz_below(r, 4) ? v[fz_below(r, sizeof(v) / sizeof(v[0]))] : fz_next(r);
        return fz_below(r, 8) ? x : x + fz_below(r, 5) - 2;
}

void fz_bytes(struct fz_rng *r, void *p, size_t n)
{
        uint8_t *b = p;
        for (size_t i = 0; i < n; i++)
                b[i] = (uint8_t)fz_next(r);
}

/* ---- datagrams with fds --------------------------------------------------------------------- */

int fz_sendmsg(int fd, const void *buf, size_t len, const int *fds, unsigned nfds)
{
        union {
                char b[CMSG_SPACE(sizeof(int) * FZ_FDS_MAX)];
                struct cmsghdr a;
        } u;
        struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        if (nfds) {
                memset(&u, 0, sizeof(u));
                mh.msg_control = u.b;
                mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
                struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
                memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
        }
        return sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 ? -errno : 0;
}

ssize_t fz_recvmsg(int fd, void *buf, size_t cap)
{
        union {
                char b[CMSG_SPACE(sizeof(int) * 16)];
                struct cmsghdr a;
        } u;
        struct iovec iov = { .iov_base = buf, .iov_len = cap };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof(u.b) };
        ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0)
                return -errno;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                        continue;
                int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
                for (int i = 0; i < k; i++) {
                        int x;
                        memcpy(&x, CMSG_DATA(c) + i * sizeof(int), sizeof(x));
                        close(x);
                }
        }
        return n;
}

void fz_pick_fds(struct fz_worker *w, int *fds, unsigned n)
{
        for (unsigned i = 0; i < n; i++)
                fds[i] = w->pool[fz_below(&w->rng, w->npool)];
}

/* fds of many kinds, made once per worker. */
static void pool_make(struct fz_worker *w)
{
        int p[2], s[2];
        int m0 = memfd_create("fz-empty", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        int m1 = memfd_create("fz-page", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        int m2 = memfd_create("fz-mib", MFD_CLOEXEC);
        if (m1 >= 0 && ftruncate(m1, 4096) == 0)
                fcntl(m1, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
        if (m2 >= 0 && ftruncate(m2, 1 << 20) < 0)
                perror("pvfuzz: ftruncate");
        int fds[] = { m0, m1, m2, eventfd(0, EFD_CLOEXEC), open("/dev/null", O_RDWR | O_CLOEXEC),
                      open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC), open("/proc/self/stat", O_RDONLY | O_CLOEXEC),
                      epoll_create1(EPOLL_CLOEXEC), timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC) };
        for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
                if (fds[i] >= 0 && w->npool < FZ_POOL)
                        w->pool[w->npool++] = fds[i];
        if (pipe2(p, O_CLOEXEC) == 0) {
                w->pool[w->npool++] = p[0];
                w->pool[w->npool++] = p[1];
        }
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, s) == 0) {
                w->pool[w->npool++] = s[0];
                w->pool[w->npool++] = s[1];
        }
}

/* ---- the device nodes --------------------------------------------------------------------- */

static const uint32_t ops_control[] = { PV_OP_STATUS, PV_OP_STAT };
static const uint32_t ops_vrpq[] = { 0x101, 0x102, 0x103, 0x104 };
static const uint32_t ops_vumem_clt[] = { 0x201, 0x202, 0x203, 0x204, 0x205, 0x206, 0x280 };
static const uint32_t ops_vumem_srv[] = { 0x240, 0x241, 0x242, 0x243, 0x244, 0x245, 0x246, 0x247, 0x248, 0x280 };
static const uint32_t ops_vbpipe[] = { 0x300 };

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* Every node of the platform but those the honest programs use (all:
 * every node). */
static void targets_find(struct cp *cp, const char *only, bool all)
{
        for (int i = 0; i < 3; i++) {
                const char *rt = pvt_vm(&cp->plat, cp_vms[i])->rt;
                DIR *d = opendir(rt);
                struct dirent *e;
                while (d && (e = readdir(d)) && ntargets < TARGETS_MAX) {
                        const char *n = e->d_name;
                        if (n[0] == '.' || strstr(n, ".lock") ||
                            (!all && (strstr(n, "vogl0") || !strcmp(n, "vbpipe0"))))
                                continue;
                        struct target *t = &targets[ntargets];
                        snprintf(t->name, sizeof(t->name), "%s/%s", cp_vms[i], n);
                        if (only && !strstr(t->name, only))
                                continue;
                        snprintf(t->path, sizeof(t->path), "%s/%s", rt, n);
                        if (!strcmp(n, "control"))
                                t->ops = ops_control, t->nops = N(ops_control);
                        else if (!strncmp(n, "vrpq", 4))
                                t->ops = ops_vrpq, t->nops = N(ops_vrpq);
                        else if (!strncmp(n, "vumem-clt", 9))
                                t->ops = ops_vumem_clt, t->nops = N(ops_vumem_clt);
                        else if (!strncmp(n, "vumem-srv", 9))
                                t->ops = ops_vumem_srv, t->nops = N(ops_vumem_srv);
                        else
                                t->ops = ops_vbpipe, t->nops = N(ops_vbpipe);
                        ntargets++;
                }
                if (d)
                        closedir(d);
        }
        if (ntargets < TARGETS_MAX && (!only || strstr("vm2/emu", only))) {
                struct target *t = &targets[ntargets++];
                snprintf(t->name, sizeof(t->name), "vm2/emu");
                t->emu = true;
        }
}

static const enum pv_key int_keys[] = { PV_K_SEQ,   PV_K_DIAG,   PV_K_NFDS,  PV_K_ID,   PV_K_ID2,  PV_K_TOKEN,
                                        PV_K_SIZE,  PV_K_SIZE2,  PV_K_OFFSET, PV_K_OFFSET2, PV_K_FLAGS, PV_K_COUNT,
                                        PV_K_STATE, PV_K_GEN,    PV_K_VALUE, PV_K_VALUE2 };
static const enum pv_key bin_keys[] = { PV_K_MSG, PV_K_INFO, PV_K_NAME, PV_K_DATA, PV_K_BIN_DRV0 };

/* Values pvd gave this connection (ids, tokens): a request that uses them
 * reaches further than random ones. */
struct learned {
        uint64_t v[8];
        unsigned n;
};

/* An answer that reports a failure must say why: its PV_K_MSG becomes the
 * program's pvLastError(). Counted, and the first few shown. */
static void check_reason(struct fz_worker *w, const struct pv_msg *m)
{
        const void *text;
        uint32_t n;
        int64_t diag;
        /* Only answers carry a diag; pvd's pushes (a VUMEM server's
         * requests and lanes) have none. */
        if (pv_msg_get_i(m, PV_K_DIAG, &diag) < 0)
                return;
        if (diag < 0)
                w->stats->failed_answers++;
        if (diag >= 0 || (pv_msg_get_b(m, PV_K_MSG, &text, &n) == 0 && n > 0))
                return;
        if (w->stats->no_reason++ < 5)
                fprintf(stderr, "pvfuzz: an answer (op 0x%x) reports %lld with no reason for the program\n",
                        pv_msg_op(m), (long long)diag);
}

static void learn(struct fz_worker *w, struct learned *l, const uint8_t *buf, size_t len)
{
        struct pv_msg m;
        if (pv_msg_decode(buf, len, &m) < 0)
                return;
        check_reason(w, &m);
        static const enum pv_key keys[] = { PV_K_ID, PV_K_ID2, PV_K_TOKEN, PV_K_VALUE };
        for (size_t i = 0; i < N(keys); i++) {
                uint64_t x;
                if (pv_msg_get_u(&m, keys[i], &x) == 0)
                        l->v[l->n++ % 8] = x;
        }
}

static uint64_t int_value(struct fz_worker *w, const struct learned *l)
{
        if (l->n && fz_below(&w->rng, 2))
                return l->v[fz_below(&w->rng, l->n < 8 ? l->n : 8)];
        return fz_interesting(&w->rng);
}

/* A request for t: one of its operations (or another), keys with learned
 * or interesting values, nfds fds announced (sometimes wrongly); then, half
 * the time, bytes flipped, set, cut or added. Its length. */
static size_t build(struct fz_worker *w, const struct target *t, const struct learned *l, uint8_t *buf, size_t cap,
                    unsigned nfds)
{
        static uint8_t bins[4][8192];
        static const char *const names[] = { "vrpq", "vumem", "vbpipe", "control", "", "vrpq\xff" };
        struct pv_msg m;
        uint32_t op = fz_below(&w->rng, 4) ? t->ops[fz_below(&w->rng, t->nops)] : (uint32_t)fz_interesting(&w->rng);
        pv_msg_init(&m, op);
        pv_msg_set_u(&m, PV_K_SEQ, 1 + fz_below(&w->rng, 1000));
        unsigned nkeys = (unsigned)fz_below(&w->rng, 7);
        for (unsigned i = 0; i < nkeys; i++) {
                if (fz_below(&w->rng, 3)) {
                        enum pv_key k = int_keys[fz_below(&w->rng, N(int_keys))];
                        pv_msg_set_u(&m, k, int_value(w, l));
                } else {
                        unsigned b = (unsigned)fz_below(&w->rng, 4);
                        enum pv_key k = bin_keys[fz_below(&w->rng, N(bin_keys))];
                        if (k == PV_K_NAME && fz_below(&w->rng, 2)) {
                                pv_msg_set_str(&m, k, names[fz_below(&w->rng, N(names))]);
                                continue;
                        }
                        size_t len = fz_below(&w->rng, 8) ? fz_below(&w->rng, 200) : fz_below(&w->rng, sizeof(bins[b]));
                        fz_bytes(&w->rng, bins[b], len);
                        pv_msg_set_b(&m, k, bins[b], (uint32_t)len);
                }
        }
        for (unsigned i = 0; i < nfds && i < PV_MSG_MAX_FDS; i++)
                pv_msg_add_fd(&m, 0);
        if (fz_below(&w->rng, 8) == 0)
                pv_msg_set_u(&m, PV_K_NFDS, fz_below(&w->rng, 12)); /* a lie */
        size_t len = 0;
        if (pv_msg_encode(&m, buf, cap, &len) < 0) {
                len = 1 + fz_below(&w->rng, 64);
                fz_bytes(&w->rng, buf, len);
        }
        if (fz_below(&w->rng, 2))
                return len;
        unsigned n = 1 + (unsigned)fz_below(&w->rng, 4);
        for (unsigned i = 0; i < n && len; i++) {
                size_t at = fz_below(&w->rng, len);
                switch (fz_below(&w->rng, 5)) {
                case 0:
                        buf[at] ^= (uint8_t)(1u << fz_below(&w->rng, 8));
                        break;
                case 1:
                        buf[at] = (uint8_t)fz_interesting(&w->rng);
                        break;
                case 2:
                        len = at; /* cut */
                        break;
                case 3: {
                        size_t add = 1 + fz_below(&w->rng, 32);
                        if (len + add <= cap) {
                                fz_bytes(&w->rng, buf + len, add);
                                len += add;
                        }
                        break;
                }
                default:
                        buf[at] = (uint8_t)(0xc0 + fz_below(&w->rng, 0x20)); /* msgpack type bytes */
                        break;
                }
        }
        return len;
}

static int node_connect(const char *path)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                close(fd);
                return -1;
        }
        return fd;
}

/* Read pvd's answers without waiting (wait_ms: once, for the first);
 * false once it hung up. */
static bool drain(struct fz_worker *w, int fd, struct learned *l, int wait_ms)
{
        static uint8_t buf[PV_MSG_DOC_MAX];
        for (;;) {
                struct pollfd pf = { .fd = fd, .events = POLLIN };
                if (poll(&pf, 1, wait_ms) != 1)
                        return true;
                wait_ms = 0;
                ssize_t n = fz_recvmsg(fd, buf, sizeof(buf));
                if (n == -EAGAIN)
                        return true;
                if (n <= 0)
                        return false;
                w->stats->replies++;
                learn(w, l, buf, (size_t)n);
        }
}

static void node_session(struct fz_worker *w, const struct target *t, volatile uint64_t *inputs)
{
        static uint8_t buf[PV_MSG_MAX + 64];
        int fd = node_connect(t->path);
        if (fd < 0) {
                w->stats->refused++;
                usleep(1000);
                return;
        }
        w->stats->conns++;
        struct learned l = { .n = 0 };
        unsigned n = 1 + (unsigned)fz_below(&w->rng, 24);
        for (unsigned i = 0; i < n; i++) {
                unsigned nfds = fz_below(&w->rng, 2) ? 0 : (unsigned)fz_below(&w->rng, FZ_FDS_MAX + 1);
                int fds[FZ_FDS_MAX];
                size_t len = build(w, t, &l, buf, sizeof(buf), nfds);
                fz_pick_fds(w, fds, nfds);
                int rc = fz_sendmsg(fd, buf, len, fds, nfds);
                if (rc == -EAGAIN) {
                        if (!drain(w, fd, &l, 50))
                                break;
                        continue;
                }
                if (rc < 0)
                        break;
                (*inputs)++;
                if (!drain(w, fd, &l, fz_below(&w->rng, 8) ? 0 : 5))
                        break;
        }
        close(fd);
}

static int worker(struct fz_stats *st, unsigned id, uint64_t seed, const char *platform_dir, int64_t until_ns)
{
        struct fz_worker w = { .rng = { seed ^ (0x9e3779b97f4a7c15ull * (id + 1)) }, .stats = st,
                               .platform_dir = platform_dir };
        signal(SIGPIPE, SIG_IGN);
        pool_make(&w);
        while (!st->stop && cp_now_ns() < until_ns) {
                const struct target *t = &targets[fz_below(&w.rng, ntargets)];
                if (t->emu)
                        fz_emu_session(&w, &st->emu_inputs[id]);
                else
                        node_session(&w, t, &st->inputs[id]);
        }
        for (unsigned i = 0; i < w.npool; i++)
                close(w.pool[i]);
        return 0;
}

/* ---- the run -------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
        struct cp_options o;
        int rc = cp_options(argc, argv, &o, 10, usage);
        if (rc)
                return rc;
        struct cp cp;
        struct fz_stats *st = mmap(NULL, sizeof(*st), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (st == MAP_FAILED || cp_start(&cp, false) < 0) {
                cp_stop(&cp);
                return 1;
        }
        memset(st, 0, sizeof(*st));
        usleep(200000);
        struct cp_res base[3], first[3], last[3];
        for (int i = 0; i < 3; i++)
                cp_res(pvt_vm(&cp.plat, cp_vms[i])->pid, &base[i]);
        int64_t t0 = cp_now_ns();
        for (int k = 0; !o.all && k < CP_NPROGS; k++)
                cp_spawn(&cp, (enum cp_prog)k);
        int failures = !o.all && cp_all_flowing(&cp, t0, 15000) < 0;
        targets_find(&cp, o.only, o.all);
        printf("pvfuzz: seed %llu, %.0f s, %u workers, %u targets:", (unsigned long long)o.seed, o.duration_s,
               o.workers, ntargets);
        for (unsigned i = 0; i < ntargets; i++)
                printf(" %s", targets[i].name);
        printf("\n");
        fflush(stdout);
        for (int i = 0; i < 3; i++)
                cp_res(pvt_vm(&cp.plat, cp_vms[i])->pid, &first[i]);

        int64_t start = cp_now_ns(), until = start + (int64_t)(o.duration_s * 1e9);
        uint64_t ops_before[CP_NPROGS];
        for (int k = 0; k < CP_NPROGS; k++)
                ops_before[k] = cp.sh->slot[k].ops;
        pid_t pids[FZ_WORKERS_MAX] = { 0 };
        for (unsigned i = 0; ntargets && i < o.workers; i++) {
                fflush(NULL);
                pids[i] = fork();
                if (pids[i] == 0) {
                        signal(SIGINT, SIG_IGN); /* the run stops them */
                        signal(SIGTERM, SIG_DFL);
                        _exit(worker(st, i, o.seed, cp.plat.platform_dir, until));
                }
        }
        const char *died = NULL;
        while (cp_now_ns() < until && !died && !cp_interrupted) {
                usleep(200000);
                died = cp_pvd_died(&cp);
                if (!died)
                        died = cp_prog_died(&cp);
        }
        st->stop = 1;
        for (unsigned i = 0; i < o.workers; i++)
                if (pids[i] > 0 && pvt_wait(pids[i], 10000) != 0)
                        failures++;
        double secs = (double)(cp_now_ns() - start) / 1e9;
        uint64_t inputs = 0, emu = 0;
        for (unsigned i = 0; i < FZ_WORKERS_MAX; i++) {
                inputs += st->inputs[i];
                emu += st->emu_inputs[i];
        }
        for (int i = 0; i < 3; i++)
                cp_res(pvt_vm(&cp.plat, cp_vms[i])->pid, &last[i]);
        /* The honest programs worked through it, and still work. */
        uint64_t corrupt = 0;
        for (int k = 0; !o.all && k < CP_NPROGS; k++) {
                corrupt += cp.sh->slot[k].corrupt;
                if (cp.sh->slot[k].ops == ops_before[k]) {
                        fprintf(stderr, "pvfuzz: the %s did no work during the fuzzing\n",
                                cp_prog_name((enum cp_prog)k));
                        failures++;
                }
        }
        if (!died && !o.all && cp_all_flowing(&cp, cp_now_ns(), 5000) < 0)
                failures++;
        failures += cp_stop_programs(&cp);
        int leaks = 0, grown = 0;
        for (int i = 0; !died && i < 3; i++) {
                struct cp_res now;
                cp_res_settle(&cp, cp_vms[i], &base[i], 5000, &now);
                printf("pvd %s: fds %d -> %d, memfds %d -> %d; RSS %ld KiB at the start, %ld KiB at the end\n",
                       cp_vms[i], base[i].fds, now.fds, base[i].memfds, now.memfds, first[i].rss_kb, last[i].rss_kb);
                leaks += cp_leaked(&cp, cp_vms[i], &base[i], &now);
                if (cp_sanitized(pvt_vm(&cp.plat, cp_vms[i])->pid))
                        printf("  (RSS not judged: this pvd runs under AddressSanitizer, whose quarantine keeps "
                               "freed memory)\n");
                else
                        grown += last[i].rss_kb > first[i].rss_kb + RSS_GROWTH_MAX_KB;
        }
        printf("pvfuzz: %llu inputs in %.0f s (%.0f/s): %llu to the device nodes, %llu to the emulated "
               "hypervisor's socket (%llu joins, %llu dropped); %llu connections, %llu answers; %llu corrupt; "
               "%llu reporting failures, %llu of them without a reason; %s crashed; %d leaks\n",
               (unsigned long long)(inputs + emu), secs, (double)(inputs + emu) / secs, (unsigned long long)inputs,
               (unsigned long long)emu, (unsigned long long)st->emu_joins, (unsigned long long)st->emu_drops,
               (unsigned long long)st->conns, (unsigned long long)st->replies, (unsigned long long)corrupt,
               (unsigned long long)st->failed_answers, (unsigned long long)st->no_reason, died ? died : "nothing", leaks);
        failures += cp_stop(&cp);
        bool ok = !failures && !died && !corrupt && !st->no_reason && !leaks && !grown && inputs + emu > 0;
        printf("pvfuzz: %s\n", ok ? "OK" : "FAILED");
        munmap(st, sizeof(*st));
        return ok ? 0 : 1;
}

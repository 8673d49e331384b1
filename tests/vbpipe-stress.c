/* VBPIPE "nothing lost", across real pvd processes (test-2clients: vm2 and
 * vm4): a program in each VM opens the pipe O_RDWR and both send
 * PV_STRESS_BYTES bytes (default 256 MiB) to each other at the same time,
 * in writes of 1 byte to 256 KiB, read back in reads of 1 byte to 256 KiB,
 * each direction a seeded PRNG stream (tests/vbpipe-stream.h) that the
 * receiver checks byte by byte. Then each shuts its writing down, reads to
 * EOF and checks the total. Run on vbpipe0 (256 KiB rings, whole-count
 * reads) and vbpipe1 (flag a, 64 KiB rings); prints MB/s per direction.
 * Then the same with direct access (O_DIRECT, vbpipeRead/vbpipeWrite) on
 * both ends, and with one end mixing direct calls and read/write at
 * random, so that bytes through pvd and bytes through the rings interleave
 * in both directions. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "pv/vbpipe.h"
#include "pvt-run.h"
#include "pvtest.h"
#include "vbpipe-stream.h"

#define IO_MAX     (256 * 1024)
#define CHILD_S    240          /* a child that takes longer is stuck: SIGALRM ends it */

/* What a program reports (shared memory). */
struct side {
        uint64_t sent, got;
        double secs;            /* from open to the EOF of what it received */
        int err;                /* errno of what failed, or -1: a wrong byte */
        uint64_t bad_at;        /* offset of the first wrong byte */
        char what[96];
};

static struct pvt_platform plat;
static struct side *res;        /* [2]: vm2, vm4 */
static uint64_t total = 256ull << 20;

enum io_mode { IO_PLAIN, IO_DIRECT, IO_MIXED };

struct job {
        const char *pipe;
        int idx;                /* 0: vm2, 1: vm4 */
        int fd;
        enum io_mode mode;
};

/* One call of the job's kind; IO_MIXED picks at random. */
static ssize_t job_write(struct job *j, uint64_t *rng, const void *buf, size_t n)
{
        bool direct = j->mode == IO_DIRECT || (j->mode == IO_MIXED && (vbs_rand(rng) & 1));
        return direct ? vbpipeWrite(j->fd, buf, n) : write(j->fd, buf, n);
}

static ssize_t job_read(struct job *j, uint64_t *rng, void *buf, size_t n)
{
        bool direct = j->mode == IO_DIRECT || (j->mode == IO_MIXED && (vbs_rand(rng) & 1));
        return direct ? vbpipeRead(j->fd, buf, n) : read(j->fd, buf, n);
}

static uint64_t seed_of(const char *pipe, int from)
{
        return 0x5eed0000ull + (uint64_t)from * 7919 + (uint64_t)pipe[strlen(pipe) - 1];
}

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fail(struct side *s, int err, const char *what)
{
        if (!s->what[0]) {
                s->err = err;
                snprintf(s->what, sizeof(s->what), "%s", what);
        }
}

static void *writer(void *arg)
{
        struct job *j = arg;
        struct side *s = &res[j->idx];
        uint8_t *buf = malloc(IO_MAX);
        struct vbs_stream st;
        uint64_t rng = seed_of(j->pipe, j->idx) ^ 0xa5a5;
        vbs_init(&st, seed_of(j->pipe, j->idx));
        while (buf && s->sent < total) {
                size_t n = vbs_size(&rng, IO_MAX);
                if (n > total - s->sent)
                        n = (size_t)(total - s->sent);
                vbs_fill(&st, buf, n);
                for (size_t off = 0; off < n;) {
                        ssize_t w = job_write(j, &rng, buf + off, n - off);
                        if (w < 0 && errno == EINTR)
                                continue;
                        if (w <= 0) {
                                fail(s, errno, "write");
                                goto out;
                        }
                        off += (size_t)w;
                        s->sent += (uint64_t)w;
                }
        }
        if (shutdown(j->fd, SHUT_WR) < 0)
                fail(s, errno, "shutdown");
out:
        free(buf);
        return NULL;
}

static int program(void *arg)
{
        struct job *j = arg;
        struct side *s = &res[j->idx];
        alarm(CHILD_S);
        signal(SIGPIPE, SIG_IGN);
        j->fd = vbpipeOpen(j->pipe, O_RDWR | (j->mode != IO_PLAIN ? O_DIRECT : 0));
        if (j->fd < 0) {
                fail(s, errno, "vbpipeOpen");
                return 1;
        }
        double t0 = now_s();
        pthread_t th;
        if (pthread_create(&th, NULL, writer, j) != 0) {
                fail(s, EAGAIN, "pthread_create");
                return 1;
        }
        uint8_t *buf = malloc(IO_MAX), *scratch = malloc(IO_MAX);
        struct vbs_stream st;
        uint64_t rng = seed_of(j->pipe, !j->idx) ^ 0x5a5a;
        vbs_init(&st, seed_of(j->pipe, !j->idx));
        for (;;) {
                size_t n = vbs_size(&rng, IO_MAX);
                ssize_t r = job_read(j, &rng, buf, n);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0) {
                        fail(s, errno, "read");
                        break;
                }
                if (r == 0)
                        break;
                size_t ok = vbs_check(&st, buf, (size_t)r, scratch);
                if (ok != (size_t)r) {
                        s->bad_at = s->got + ok;
                        fail(s, -1, "a wrong byte");
                        break;
                }
                s->got += (uint64_t)r;
        }
        s->secs = now_s() - t0;
        pthread_join(th, NULL);
        free(buf);
        free(scratch);
        vbpipeClose(j->fd);
        return s->what[0] ? 1 : 0;
}

static const msgpack_object *get(const msgpack_object *m, const char *key)
{
        if (!m || m->type != MSGPACK_OBJECT_MAP)
                return NULL;
        for (uint32_t i = 0; i < m->via.map.size; i++) {
                const msgpack_object *k = &m->via.map.ptr[i].key;
                if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
                    !memcmp(k->via.str.ptr, key, k->via.str.size))
                        return &m->via.map.ptr[i].val;
        }
        return NULL;
}

static uint64_t get_u64(const msgpack_object *m, const char *key)
{
        const msgpack_object *v = get(m, key);
        return v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? v->via.u64 : UINT64_MAX;
}

struct pipe_figures {
        uint64_t to_peer, from_peer, conversations;
};

/* vm's `pvctl stat vbpipe` figures of pipe; printed when `show`. */
static void stat_of(const char *vm, const char *pipe, struct pipe_figures *f, bool show)
{
        msgpack_zone z;
        msgpack_object doc;
        memset(f, 0xff, sizeof(*f));
        msgpack_zone_init(&z, 4096);
        CU_ASSERT_EQUAL_FATAL(pvt_stat(&plat, vm, "vbpipe", &z, &doc), 0);
        const msgpack_object *vls = get(&doc, "vlinks"), *st = NULL;
        for (uint32_t i = 0; vls && vls->type == MSGPACK_OBJECT_ARRAY && i < vls->via.array.size; i++) {
                const msgpack_object *x = get(&vls->via.array.ptr[i], "stat"), *name = get(x, "pipe");
                if (name && name->type == MSGPACK_OBJECT_STR && name->via.str.size == strlen(pipe) &&
                    !memcmp(name->via.str.ptr, pipe, strlen(pipe)))
                        st = x;
        }
        CU_ASSERT_PTR_NOT_NULL(st);
        f->to_peer = get_u64(get(st, "to_peer"), "bytes");
        f->from_peer = get_u64(get(st, "from_peer"), "bytes");
        f->conversations = get_u64(st, "conversations");
        if (show)
                printf("\n    %s in %s: ring peak %llu / %llu B to the peer, xIRQs %llu sent, %llu suppressed", pipe,
                       vm, (unsigned long long)get_u64(get(st, "to_peer"), "peak"),
                       (unsigned long long)get_u64(st, "ring_size"), (unsigned long long)get_u64(st, "xirq_sent"),
                       (unsigned long long)get_u64(st, "xirq_suppressed"));
        msgpack_zone_destroy(&z);
}

/* pvd counted exactly the programs' bytes, whether it moved them or the
 * programs did (direct access): one more conversation, `total` more bytes
 * each way than before the run. */
static void check_stat(const char *vm, const char *pipe, const struct pipe_figures *before)
{
        struct pipe_figures now;
        stat_of(vm, pipe, &now, true);
        CU_ASSERT_EQUAL(now.to_peer - before->to_peer, total);
        CU_ASSERT_EQUAL(now.from_peer - before->from_peer, total);
        CU_ASSERT_EQUAL(now.conversations - before->conversations, 1);
}

static void run_pipe(const char *pipe, enum io_mode ma, enum io_mode mb)
{
        memset(res, 0, 2 * sizeof(*res));
        struct pipe_figures before[2];
        stat_of("vm2", pipe, &before[0], false);
        stat_of("vm4", pipe, &before[1], false);
        struct job a = { .pipe = pipe, .idx = 0, .mode = ma }, b = { .pipe = pipe, .idx = 1, .mode = mb };
        pid_t pa = pvt_spawn(&plat, "vm2", program, &a);
        pid_t pb = pvt_spawn(&plat, "vm4", program, &b);
        CU_ASSERT_FATAL(pa > 0 && pb > 0);
        int ra = pvt_wait(pa, (CHILD_S + 10) * 1000), rb = pvt_wait(pb, (CHILD_S + 10) * 1000);
        static const char *const vm[2] = { "vm2", "vm4" };
        for (int i = 0; i < 2; i++) {
                struct side *s = &res[i];
                if (s->what[0]) {
                        if (s->err < 0)
                                printf("\n    %s on %s: wrong byte at offset %llu of %s's stream", vm[i], pipe,
                                       (unsigned long long)s->bad_at, vm[!i]);
                        else
                                printf("\n    %s on %s: %s: %s", vm[i], pipe, s->what, strerror(s->err));
                }
                printf("\n    %s: %s -> %s: %llu bytes in %.2f s, %.1f MB/s", pipe, vm[!i], vm[i],
                       (unsigned long long)s->got, s->secs, s->secs > 0 ? (double)s->got / s->secs / 1e6 : 0.0);
                CU_ASSERT_EQUAL(s->sent, total);
                CU_ASSERT_EQUAL(s->got, total);
                CU_ASSERT_EQUAL(s->what[0], 0);
        }
        if (ra || rb)
                printf("\n    exit statuses: vm2 %d, vm4 %d", ra, rb);
        CU_ASSERT_EQUAL(ra, 0);
        CU_ASSERT_EQUAL(rb, 0);
        check_stat("vm2", pipe, &before[0]);
        check_stat("vm4", pipe, &before[1]);
        printf("\n    ");
        /* Both pvds are still there. */
        CU_ASSERT_EQUAL(kill(pvt_vm(&plat, "vm2")->pid, 0), 0);
        CU_ASSERT_EQUAL(kill(pvt_vm(&plat, "vm4")->pid, 0), 0);
}

static void test_vbpipe0(void)
{
        run_pipe("vbpipe0", IO_PLAIN, IO_PLAIN);
}

static void test_vbpipe1(void)
{
        run_pipe("vbpipe1", IO_PLAIN, IO_PLAIN);
}

static void test_direct0(void)
{
        run_pipe("vbpipe0", IO_DIRECT, IO_DIRECT);
}

static void test_mixed1(void)
{
        run_pipe("vbpipe1", IO_MIXED, IO_DIRECT);
}

static void test_mixed0(void)
{
        run_pipe("vbpipe0", IO_PLAIN, IO_MIXED);
}

static int suite_init(void)
{
        const char *e = getenv("PV_STRESS_BYTES");
        if (e && strtoull(e, NULL, 0) > 0)
                total = strtoull(e, NULL, 0);
        res = mmap(NULL, 2 * sizeof(*res), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (res == MAP_FAILED || pvt_platform_init(&plat, "test-2clients") < 0)
                goto fail;
        const char *quiet[] = { "--log-level", "warning", NULL };
        if (pvt_pvd_start(&plat, "vm2", quiet) < 0 || pvt_pvd_start(&plat, "vm4", quiet) < 0 ||
            pvt_wait_vlink(&plat, "vm4", NULL, "ON", 10000) < 0)
                goto fail;
        return 0;
fail:
        pvt_platform_fini(&plat);
        return -1;
}

static int suite_fini(void)
{
        int left = pvt_platform_fini(&plat);
        munmap(res, 2 * sizeof(*res));
        return left ? -1 : 0;
}

static const struct pvt_test tests[] = {
        { "both ways at once on vbpipe0 (256 KiB rings), every byte checked", test_vbpipe0 },
        { "both ways at once on vbpipe1 (flag a, 64 KiB rings), every byte checked", test_vbpipe1 },
        { "direct access on both ends (vbpipe0), every byte checked", test_direct0 },
        { "one end mixing direct calls and read/write, the other direct (vbpipe1)", test_mixed1 },
        { "one end read/write, the other mixing (vbpipe0)", test_mixed0 },
        { NULL, NULL },
};

static const struct pvt_suite suites[] = {
        { "vbpipe-stress", suite_init, suite_fini, tests, 0 },
        { NULL, NULL, NULL, NULL, 0 },
};

int main(int argc, char **argv)
{
        return pvt_main(argc, argv, suites);
}

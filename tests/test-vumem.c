/* VUMEM across real pvds (test-2clients platform: vm2 serves vogl to vm3
 * and vm5, and the small vsmall vlink to vm3): sessions, buffers mapped on
 * both sides, memory VUMEM refuses, sharing between sessions and client
 * VMs, cache operations, pdev exhaustion, the death of clients, servers
 * and VMs, and pvctl stat vumem. The server program is a child process "in"
 * vm2 (vumem-test.c) that answers as each test asks. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "pv/vumem-server.h"
#include "pv/vumem.h"
#include "vumem-test.h"

#define CLT0 "/dev/vumem-clt-vogl0"   /* vm3 and vm5 */
#define CLTS "vumem-clt-vsmall0"      /* vm3 */
#define SRV0 "vumem-srv-vogl0"        /* vm2, for vm3 */
#define SRV1 "vumem-srv-vogl1"        /* vm2, for vm5 */
#define SRVS "vumem-srv-vsmall0"      /* vm2, for vm3 */

static struct pvt_platform plat;
static int fds_before;
static pid_t srv[3];

static int suite_init(void)
{
        fds_before = pvt_fd_count();
        if (pvt_platform_init(&plat, "test-2clients") < 0)
                return -1;
        const char *vms[] = { "vm2", "vm3", "vm5" };
        for (int i = 0; i < 3; i++)
                if (pvt_pvd_start(&plat, vms[i], NULL) < 0)
                        return -1;
        if (pvt_wait_vlink(&plat, "vm3", NULL, "ON", 5000) < 0 || pvt_wait_vlink(&plat, "vm5", NULL, "ON", 5000) < 0)
                return -1;
        tev_init();
        int diag;
        srv[0] = tsrv_start(&plat, "vm2", SRV0, 0, &diag);
        if (srv[0] <= 0 || diag)
                return -1;
        srv[2] = tsrv_start(&plat, "vm2", SRVS, 2, &diag);
        if (srv[2] <= 0 || diag)
                return -1;
        return 0;
}

static int suite_fini(void)
{
        for (int i = 0; i < 3; i++)
                tsrv_kill(srv[i]);
        tev_fini();
        int left = pvt_platform_fini(&plat);
        int fds = pvt_fd_count();
        if (left || fds != fds_before)
                fprintf(stderr, "test-vumem: %d leftovers, fds %d -> %d\n", left, fds_before, fds);
        return left || fds != fds_before ? -1 : 0;
}

static int alloc(VumemSession *s, uint32_t op, uint32_t size, uint32_t fill, VumemBufferHd *b)
{
        struct talloc t = { .op = op, .size = size, .fill = fill };
        return vumemBufferAlloc(s, &t, sizeof(t), b);
}

static bool all_bytes(const uint8_t *p, size_t n, uint8_t v)
{
        for (size_t i = 0; i < n; i++)
                if (p[i] != v)
                        return false;
        return true;
}

/* ---- sessions ---------------------------------------------------------------- */

struct open_arg {
        VumemSession *s;
        int rc;
};

static void *open_thread(void *argp)
{
        struct open_arg *a = argp;
        a->rc = vumemSessionCreate(CLT0, &a->s);
        return NULL;
}

static void test_no_server(void)
{
        pvt_use_vm(&plat, "vm5");
        VumemSession *s = NULL;
        long long t0 = pvt_now_ms();
        CU_ASSERT_EQUAL(vumemSessionCreate(CLT0, &s), -ECONNREFUSED);
        long long waited = pvt_now_ms() - t0;
        CU_ASSERT(waited >= VUMEM_SERVER_WAIT_MS - 100 && waited < VUMEM_SERVER_WAIT_MS + 2000);
        CU_ASSERT_PTR_NOT_NULL(strstr(pvLastError(), "no VUMEM server program"));
        CU_ASSERT_PTR_NULL(s);

        /* A session waits for a server that comes within the bound. */
        pthread_t th;
        struct open_arg oa = { 0 };
        pthread_create(&th, NULL, open_thread, &oa);
        usleep(300 * 1000);
        int diag;
        srv[1] = tsrv_start(&plat, "vm2", SRV1, 1, &diag);
        CU_ASSERT(srv[1] > 0 && diag == 0);
        pthread_join(th, NULL);
        CU_ASSERT_EQUAL(oa.rc, 0);
        if (oa.rc == 0)
                CU_ASSERT_EQUAL(vumemSessionDestroy(oa.s), 0);
}

static void test_server_busy(void)
{
        pvt_use_vm(&plat, "vm2");
        VumemServer *v = NULL;
        CU_ASSERT_EQUAL(vumemServerCreate(SRV0, &v), -EBUSY);
        CU_ASSERT_PTR_NOT_NULL(strstr(pvLastError(), "already serves"));
        CU_ASSERT_EQUAL(vumemServerCreate("vumem-srv-nothing", &v), -ENOENT);
}

static void test_sessions(void)
{
        pvt_use_vm(&plat, "vm3");
        VumemSession *a, *b, *m, *m2;
        VumemBufferHd ba, bb, bm;
        CU_ASSERT_EQUAL_FATAL(vumemSessionCreate(CLT0, &a), 0);
        CU_ASSERT_EQUAL_FATAL(vumemSessionCreate(CLT0, &b), 0);
        /* Only standard sessions: all allocate. */
        CU_ASSERT_EQUAL(alloc(a, TA_POOL, 4096, 1, &ba), 0);
        CU_ASSERT_EQUAL(alloc(b, TA_POOL, 4096, 2, &bb), 0);
        /* A master: only it allocates. */
        CU_ASSERT_EQUAL_FATAL(vumemSessionMasterCreate(CLT0, &m), 0);
        VumemBufferHd x;
        CU_ASSERT_EQUAL(alloc(a, TA_POOL, 4096, 3, &x), -EPERM);
        CU_ASSERT_PTR_NOT_NULL(strstr(pvLastError(), "master session"));
        CU_ASSERT_EQUAL(alloc(m, TA_POOL, 4096, 4, &bm), 0);
        /* One master at a time. */
        CU_ASSERT_EQUAL(vumemSessionMasterCreate(CLT0, &m2), -EBUSY);
        CU_ASSERT_PTR_NOT_NULL(strstr(pvLastError(), "master session already exists"));
        /* Buffers allocated before the master stay usable. */
        void *p;
        CU_ASSERT_EQUAL(vumemBufferMap(ba, &p), 0);
        CU_ASSERT(all_bytes(p, 4096, 1));
        CU_ASSERT_EQUAL(vumemBufferFree(ba), 0);
        /* The master ends (with its buffer): the others allocate again. */
        CU_ASSERT_EQUAL(vumemSessionDestroy(m), 0);
        struct tev ev;
        CU_ASSERT_EQUAL(tev_wait(TEV_FREE, 0, 2000, &ev), 0); /* ba */
        CU_ASSERT_EQUAL(tev_wait(TEV_FREE, 0, 2000, &ev), 0); /* bm, released with its session */
        usleep(50 * 1000);
        CU_ASSERT_EQUAL(alloc(a, TA_POOL, 4096, 5, &x), 0);
        CU_ASSERT_EQUAL(vumemSessionDestroy(a), 0);
        CU_ASSERT_EQUAL(vumemSessionDestroy(b), 0);
        CU_ASSERT_EQUAL(tev_count(TEV_FREE, 0, 300), 2);
        tev_flush();
}

/* ---- buffers -------------------------------------------------------------------- */

static void test_buffers(void)
{
        pvt_use_vm(&plat, "vm3");
        int fds = pvt_fd_count();
        VumemSession *s;
        CU_ASSERT_EQUAL_FATAL(vumemSessionMasterCreate(CLT0, &s), 0);
        struct talloc t = { .op = TA_MEMFD, .size = 3 * 4096 + 100, .fill = 0x5a };
        memcpy(t.tag, "original", 9);
        VumemBufferHd b;
        CU_ASSERT_EQUAL_FATAL(vumemBufferAlloc(s, &t, sizeof(t), &b), 0);
        /* The server's rewrite of alloc comes back. */
        CU_ASSERT_STRING_EQUAL(t.tag, "rewritten");
        struct tev ev;
        CU_ASSERT_EQUAL(tev_wait(TEV_ALLOC, 0, 2000, &ev), 0);
        size_t size;
        CU_ASSERT_EQUAL(vumemBufferSizeGet(b, &size), 0);
        CU_ASSERT_EQUAL(size, 3 * 4096 + 100);
        nku64_f id;
        CU_ASSERT_EQUAL(vumemBufferIdGet(b, &id), 0);
        CU_ASSERT(id != 0);
        /* The same memory object as the server's: no copy on the way. */
        int fd, dmabuf;
        nku64_f off;
        struct stat st;
        CU_ASSERT_EQUAL(vumemBufferFdGet(b, &fd, &off, &dmabuf), 0);
        CU_ASSERT(fstat(fd, &st) == 0 && st.st_ino == ev.ino);
        CU_ASSERT_EQUAL(dmabuf, 0);

        /* The server's pattern, read in the client VM... */
        uint8_t *p, *p2;
        CU_ASSERT_EQUAL_FATAL(vumemBufferMap(b, (void **)&p), 0);
        CU_ASSERT(all_bytes(p, size, 0x5a));
        CU_ASSERT_EQUAL(vumemBufferMap(b, (void **)&p2), 0);
        CU_ASSERT_PTR_EQUAL(p, p2);
        /* ...and the client's, read by the server program. */
        memset(p, 0xc3, size);
        CU_ASSERT_EQUAL(vumemBufferCacheOp(b, VUMEM_CACHE_CLEAN, 0, size), 0);
        CU_ASSERT_EQUAL(vumemBufferUnmap(b), 0);
        CU_ASSERT_EQUAL(vumemBufferUnmap(b), -EINVAL);
        CU_ASSERT_EQUAL(vumemBufferFree(b), 0);
        CU_ASSERT_EQUAL(tev_wait(TEV_FREE, 0, 2000, &ev), 0);
        CU_ASSERT_EQUAL(ev.id, id);
        CU_ASSERT(all_bytes(ev.head, sizeof(ev.head), 0xc3));

        /* Carved from a pool at an unaligned address: the client sees the
         * buffer from its first byte. */
        t = (struct talloc){ .op = TA_POOL, .size = 1000, .fill = 0x77, .pgoff = 136 };
        CU_ASSERT_EQUAL_FATAL(vumemBufferAlloc(s, &t, sizeof(t), &b), 0);
        CU_ASSERT_EQUAL_FATAL(vumemBufferMap(b, (void **)&p), 0);
        CU_ASSERT_EQUAL((uintptr_t)p % 4096, 136);
        CU_ASSERT(all_bytes(p, 1000, 0x77));
        memcpy(p, "client was here", 16);
        CU_ASSERT_EQUAL(vumemBufferFree(b), 0); /* unmaps */
        CU_ASSERT_EQUAL(tev_wait(TEV_FREE, 0, 2000, &ev), 0);
        CU_ASSERT_STRING_EQUAL((char *)ev.head, "client was here");

        /* Many at once. */
        VumemBufferHd many[20];
        for (int i = 0; i < 20; i++)
                CU_ASSERT_EQUAL(alloc(s, TA_POOL, 8192, (uint32_t)i, &many[i]), 0);
        for (int i = 0; i < 20; i++) {
                CU_ASSERT_EQUAL(vumemBufferMap(many[i], (void **)&p), 0);
                CU_ASSERT(all_bytes(p, 8192, (uint8_t)i));
        }
        for (int i = 0; i < 20; i += 2)
                CU_ASSERT_EQUAL(vumemBufferFree(many[i]), 0);
        CU_ASSERT_EQUAL(vumemSessionDestroy(s), 0); /* frees the other 10 */
        CU_ASSERT_EQUAL(tev_count(TEV_FREE, 0, 500), 20);
        tev_flush();
        CU_ASSERT_EQUAL(pvt_fd_count(), fds);

        CU_ASSERT_EQUAL(vumemBufferAlloc(NULL, &t, sizeof(t), &b), -EINVAL);
        CU_ASSERT_EQUAL(vumemBufferMap(NULL, (void **)&p), -EINVAL);
}

static void test_refused_memory(void)
{
        pvt_use_vm(&plat, "vm3");
        VumemSession *s;
        VumemBufferHd b;
        struct tev ev;
        CU_ASSERT_EQUAL_FATAL(vumemSessionCreate(CLT0, &s), 0);
        CU_ASSERT_EQUAL(alloc(s, TA_MALLOC, 4096, 0, &b), -EFAULT);
        CU_ASSERT_PTR_NOT_NULL(strstr(pvLastError(), "cannot share"));
        CU_ASSERT_EQUAL(tev_wait(TEV_RESPOND_ERR, 0, 2000, &ev), 0);
        CU_ASSERT_EQUAL(ev.diag, -EFAULT);
        CU_ASSERT_STRING_EQUAL((char *)ev.head, "cannot share");
        CU_ASSERT_EQUAL(alloc(s, TA_STACK, 256, 0, &b), -EFAULT);
        CU_ASSERT_EQUAL(tev_wait(TEV_RESPOND_ERR, 0, 2000, &ev), 0);
        /* The server's own diag reaches the client. */
        CU_ASSERT_EQUAL(alloc(s, TA_FAIL, 4096, 0, &b), -ENOMEM);
        CU_ASSERT_PTR_NOT_NULL(strstr(pvLastError(), "refused the allocation"));
        /* Too many alloc bytes never leave the program. */
        uint8_t big[VUMEM_ALLOC_MAX + 1] = { 0 };
        CU_ASSERT_EQUAL(vumemBufferAlloc(s, big, sizeof(big), &b), -EINVAL);
        /* The server still serves; no FREE came for what never became a buffer. */
        CU_ASSERT_EQUAL(alloc(s, TA_POOL, 4096, 9, &b), 0);
        CU_ASSERT_EQUAL(vumemSessionDestroy(s), 0);
        CU_ASSERT_EQUAL(tev_count(TEV_FREE, 0, 300), 1);
        tev_flush();
}

/* ---- sharing ------------------------------------------------------------------------ */

/* A server program's own memory crosses VMs only where the hypervisor
 * backend says it can share memory it did not make; elsewhere the library
 * says why, and the client's call fails with the server's diag. */
static void test_foreign_memory(void)
{
        pvt_use_vm(&plat, "vm3");
        VumemSession *s;
        VumemBufferHd b;
        struct tev ev;
        CU_ASSERT_EQUAL_FATAL(vumemSessionCreate(CLT0, &s), 0);
        tev_flush();
        int rc = alloc(s, TA_FOREIGN, 8192, 0x5a, &b);
        CU_ASSERT_EQUAL(tev_wait(TEV_ALLOC, 0, 2000, &ev), 0);
        if (foreign_mem_off()) {
                CU_ASSERT_EQUAL(rc, -EOPNOTSUPP);
                CU_ASSERT_EQUAL(ev.diag, -EOPNOTSUPP);
                CU_ASSERT_STRING_EQUAL((char *)ev.head, "did not make");
        } else {
                CU_ASSERT_EQUAL_FATAL(rc, 0);
                uint8_t *p;
                CU_ASSERT(vumemBufferMap(b, (void **)&p) == 0 && p[0] == 0x5a && p[8191] == 0x5a);
                CU_ASSERT_EQUAL(vumemBufferFree(b), 0);
                CU_ASSERT_EQUAL(tev_wait(TEV_FREE, 0, 2000, &ev), 0);
        }
        CU_ASSERT_EQUAL(vumemSessionDestroy(s), 0);
        tev_flush();
}

static void test_share_sessions(void)
{
        pvt_use_vm(&plat, "vm3");
        VumemSession *a, *b;
        VumemBufferHd ba, bb, bc, x;
        nku64_f id, id2;
        uint8_t *pa, *pb;
        struct tev ev;
        CU_ASSERT_EQUAL_FATAL(vumemSessionCreate(CLT0, &a), 0);
        CU_ASSERT_EQUAL_FATAL(vumemSessionCreate(CLT0, &b), 0);
        CU_ASSERT_EQUAL_FATAL(alloc(a, TA_MEMFD, 4096, 0x11, &ba), 0);
        CU_ASSERT_EQUAL(vumemBufferIdGet(ba, &id), 0);
        CU_ASSERT_EQUAL_FATAL(vumemBufferAccess(b, id, &bb), 0);
        CU_ASSERT_EQUAL(vumemBufferIdGet(bb, &id2), 0);
        CU_ASSERT_EQUAL(id, id2);
        CU_ASSERT_EQUAL(vumemBufferMap(ba, (void **)&pa), 0);
        CU_ASSERT_EQUAL(vumemBufferMap(bb, (void **)&pb), 0);
        /* Two mappings of the same pages. */
        pa[10] = 0x42;
        CU_ASSERT_EQUAL(pb[10], 0x42);
        /* The same session may hold two handles of it. */
        CU_ASSERT_EQUAL(vumemBufferAccess(a, id, &bc), 0);
        /* The first holders let go: no FREE yet. */
        CU_ASSERT_EQUAL(vumemBufferFree(ba), 0);
        CU_ASSERT_EQUAL(vumemBufferFree(bc), 0);
        CU_ASSERT_EQUAL(tev_wait(TEV_FREE, 0, 300, &ev), -ETIMEDOUT);
        CU_ASSERT_EQUAL(pb[10], 0x42);
        CU_ASSERT_EQUAL(vumemBufferFree(bb), 0);
        CU_ASSERT_EQUAL(tev_wait(TEV_FREE, 0, 2000, &ev), 0);
        CU_ASSERT_EQUAL(ev.id, id);
        CU_ASSERT_EQUAL(tev_count(TEV_FREE, 0, 300), 0);
        /* Freed or made up: -ENOENT. */
        CU_ASSERT_EQUAL(vumemBufferAccess(b, id, &x), -ENOENT);
        CU_ASSERT_PTR_NOT_NULL(strstr(pvLastError(), "no buffer with id"));
        CU_ASSERT_EQUAL(vumemBufferAccess(b, id + 1, &x), -ENOENT);
        CU_ASSERT_EQUAL(vumemBufferAccess(b, 0, &x), -ENOENT);
        CU_ASSERT_EQUAL(vumemSessionDestroy(a), 0);
        CU_ASSERT_EQUAL(vumemSessionDestroy(b), 0);
}

struct vm5_arg {
        nku64_f id;
        int pipe_w;
        bool die;      /* exit holding the buffer */
};

/* A program in vm5: access the buffer by id, check and write it. */
static int vm5_holder(void *argp)
{
        struct vm5_arg *a = argp;
        child_close_fds(a->pipe_w);
        VumemSession *s;
        VumemBufferHd b;
        uint8_t *p;
        if (vumemSessionCreate(CLT0, &s) || vumemBufferAccess(s, a->id, &b) || vumemBufferMap(b, (void **)&p))
                return 1;
        int ok = p[0] == 0x21 ? 0 : 2;
        p[1] = 0x55; /* for vm3 to see */
        char c = 'k';
        if (write(a->pipe_w, &c, 1) != 1)
                return 3;
        if (a->die)
                _exit(ok); /* holding it */
        usleep(200 * 1000);
        vumemBufferFree(b);
        vumemSessionDestroy(s);
        return ok;
}

/* vm5 asks for a buffer of another vlink's memory, on a backend where each
 * vlink's memory is its own: refused, and said why. */
static int vm5_refused(void *argp)
{
        struct vm5_arg *a = argp;
        VumemSession *s;
        VumemBufferHd b;
        if (vumemSessionCreate(CLT0, &s))
                return 1;
        int rc = vumemBufferAccess(s, a->id, &b);
        bool said = strstr(pvLastError(), "memory of vlink") != NULL;
        vumemSessionDestroy(s);
        return rc == -EOPNOTSUPP && said ? 0 : 2;
}

/* vumemBufferFree does not wait for pvd, yet the session's next request
 * is read after it: an ACCESS right after the last free finds nothing, and
 * the server gets its one FREE. Many frees in a row leave no answers behind
 * that a later call could take for its own. */
static void test_free_async(void)
{
        VumemSession *a;
        VumemBufferHd ba, bb, x;
        nku64_f id;
        struct tev ev;
        CU_ASSERT_EQUAL_FATAL(vumemSessionCreate(CLT0, &a), 0);
        CU_ASSERT_EQUAL_FATAL(alloc(a, TA_MEMFD, 4096, 0x21, &ba), 0);
        CU_ASSERT_EQUAL(vumemBufferIdGet(ba, &id), 0);
        CU_ASSERT_EQUAL_FATAL(vumemBufferAccess(a, id, &bb), 0);
        CU_ASSERT_EQUAL(vumemBufferFree(ba), 0);
        CU_ASSERT_EQUAL(vumemBufferFree(bb), 0);
        CU_ASSERT_EQUAL(vumemBufferAccess(a, id, &x), -ENOENT);
        CU_ASSERT_EQUAL(tev_wait(TEV_FREE, 0, 2000, &ev), 0);
        CU_ASSERT_EQUAL(ev.id, id);
        enum { N = 50 };
        VumemBufferHd b[N];
        for (int i = 0; i < N; i++)
                CU_ASSERT_EQUAL_FATAL(alloc(a, TA_MEMFD, 4096, (uint8_t)i, &b[i]), 0);
        for (int i = 0; i < N; i++)
                CU_ASSERT_EQUAL(vumemBufferFree(b[i]), 0);
        /* The next answers are this session's own: a buffer with the
         * server's pattern, then -ENOENT for a made-up id. */
        VumemBufferHd y;
        uint8_t *p;
        CU_ASSERT_EQUAL_FATAL(alloc(a, TA_MEMFD, 4096, 0x5a, &y), 0);
        CU_ASSERT_EQUAL(vumemBufferMap(y, (void **)&p), 0);
        CU_ASSERT_EQUAL(p[0], 0x5a);
        CU_ASSERT_EQUAL(vumemBufferUnmap(y), 0);
        CU_ASSERT_EQUAL(vumemBufferAccess(a, id ^ 1, &x), -ENOENT);
        CU_ASSERT_EQUAL(vumemBufferFree(y), 0);
        CU_ASSERT_EQUAL(tev_count(TEV_FREE, 0, 1500), N + 1);
        CU_ASSERT_EQUAL(vumemSessionDestroy(a), 0);
}

static void test_share_vms(void)
{
        pvt_use_vm(&plat, "vm3");
        VumemSession *s;
        VumemBufferHd b, b2;
        nku64_f id, id2;
        uint8_t *p;
        struct tev ev;
        CU_ASSERT_EQUAL_FATAL(vumemSessionCreate(CLT0, &s), 0);
        CU_ASSERT_EQUAL_FATAL(alloc(s, TA_MEMFD, 8192, 0x21, &b), 0);
        CU_ASSERT_EQUAL_FATAL(alloc(s, TA_MEMFD, 8192, 0x21, &b2), 0);
        vumemBufferIdGet(b, &id);
        vumemBufferIdGet(b2, &id2);
        /* Not guessable: two ids in a row are not neighbours. */
        CU_ASSERT(id - id2 > 0xffffffffu && id2 - id > 0xffffffffu);
        CU_ASSERT_EQUAL(vumemBufferFree(b2), 0);
        CU_ASSERT_EQUAL(tev_wait(TEV_FREE, 0, 2000, &ev), 0);
        CU_ASSERT_EQUAL_FATAL(vumemBufferMap(b, (void **)&p), 0);

        if (strcmp(pvt_hv(), "emu") != 0) {
                /* One memory per vlink (ivshmem): vm5 cannot be given pages of
                 * vm3's vlink. */
                struct vm5_arg r = { .id = id };
                CU_ASSERT_EQUAL(pvt_wait(pvt_spawn(&plat, "vm5", vm5_refused, &r), 5000), 0);
                CU_ASSERT_EQUAL(vumemBufferFree(b), 0);
                CU_ASSERT_EQUAL(tev_wait(TEV_FREE, 0, 2000, &ev), 0);
                CU_ASSERT_EQUAL(vumemSessionDestroy(s), 0);
                tev_flush();
                return;
        }
        /* vm5 (another client VM of vm2's vogl) maps the same buffer. */
        int pp[2];
        CU_ASSERT_FATAL(pipe(pp) == 0);
        struct vm5_arg a = { .id = id, .pipe_w = pp[1] };
        pid_t pid = pvt_spawn(&plat, "vm5", vm5_holder, &a);
        char c;
        CU_ASSERT(read(pp[0], &c, 1) == 1);
        CU_ASSERT_EQUAL(p[1], 0x55);
        /* vm3 lets go first: the buffer lives on in vm5. */
        CU_ASSERT_EQUAL(vumemBufferFree(b), 0);
        CU_ASSERT_EQUAL(tev_wait(TEV_FREE, 0, 100, &ev), -ETIMEDOUT);
        CU_ASSERT_EQUAL(pvt_wait(pid, 5000), 0);
        /* The FREE goes to the server program that allocated it, once. */
        CU_ASSERT_EQUAL(tev_wait(TEV_FREE, 0, 2000, &ev), 0);
        CU_ASSERT_EQUAL(ev.id, id);
        CU_ASSERT_EQUAL(tev_count(TEV_FREE, -1, 300), 0);

        /* A holder in vm5 that dies counts as letting go. */
        CU_ASSERT_EQUAL_FATAL(alloc(s, TA_MEMFD, 4096, 0x21, &b), 0);
        vumemBufferIdGet(b, &id);
        a = (struct vm5_arg){ .id = id, .pipe_w = pp[1], .die = true };
        pid = pvt_spawn(&plat, "vm5", vm5_holder, &a);
        CU_ASSERT(read(pp[0], &c, 1) == 1);
        CU_ASSERT_EQUAL(pvt_wait(pid, 5000), 0);
        CU_ASSERT_EQUAL(tev_wait(TEV_FREE, -1, 300, &ev), -ETIMEDOUT);
        CU_ASSERT_EQUAL(vumemBufferFree(b), 0);
        CU_ASSERT_EQUAL(tev_wait(TEV_FREE, 0, 2000, &ev), 0);
        CU_ASSERT_EQUAL(ev.id, id);
        CU_ASSERT_EQUAL(tev_count(TEV_FREE, -1, 300), 0);
        close(pp[0]);
        close(pp[1]);
        CU_ASSERT_EQUAL(vumemSessionDestroy(s), 0);
        /* Ids are per vdev: the vsmall vlink does not know vogl's. */
        VumemSession *sm;
        CU_ASSERT_EQUAL_FATAL(vumemSessionCreate(CLTS, &sm), 0);
        CU_ASSERT_EQUAL_FATAL(vumemSessionCreate(CLT0, &s), 0);
        CU_ASSERT_EQUAL_FATAL(alloc(s, TA_POOL, 4096, 0, &b), 0);
        vumemBufferIdGet(b, &id);
        CU_ASSERT_EQUAL(vumemBufferAccess(sm, id, &b2), -ENOENT);
        CU_ASSERT_EQUAL(vumemSessionDestroy(sm), 0);
        CU_ASSERT_EQUAL(vumemSessionDestroy(s), 0);
        tev_count(TEV_FREE, -1, 200);
        tev_flush();
}

/* ---- cache operations ------------------------------------------------------------------- */

static void test_cache_ops(void)
{
        pvt_use_vm(&plat, "vm3");
        VumemSession *s;
        VumemBufferHd b;
        CU_ASSERT_EQUAL_FATAL(vumemSessionCreate(CLT0, &s), 0);
        CU_ASSERT_EQUAL_FATAL(alloc(s, TA_POOL, 10000, 0, &b), 0);
        int ops[] = { VUMEM_CACHE_CLEAN, VUMEM_CACHE_INVALIDATE, VUMEM_CACHE_FLUSH };
        for (int i = 0; i < 3; i++) {
                CU_ASSERT_EQUAL(vumemBufferCacheOp(b, ops[i], 0, 10000), 0);
                CU_ASSERT_EQUAL(vumemBufferCacheOp(b, ops[i], 9999, 1), 0);
                CU_ASSERT_EQUAL(vumemBufferCacheOp(b, ops[i], 10000, 0), 0);
                CU_ASSERT_EQUAL(vumemBufferCacheOp(b, ops[i], 0, 10001), -EINVAL);
                CU_ASSERT_EQUAL(vumemBufferCacheOp(b, ops[i], 10001, 0), -EINVAL);
                CU_ASSERT_EQUAL(vumemBufferCacheOp(b, ops[i], 5000, (size_t)-4000), -EINVAL);
        }
        CU_ASSERT_EQUAL(vumemBufferCacheOp(b, 0, 0, 1), -EINVAL);
        CU_ASSERT_EQUAL(vumemBufferCacheOp(b, 99, 0, 1), -EINVAL);
        CU_ASSERT_PTR_NOT_NULL(strstr(pvLastError(), "unknown operation"));
        CU_ASSERT_EQUAL(vumemBufferCacheOp(NULL, VUMEM_CACHE_CLEAN, 0, 1), -EINVAL);

        if (!udmabuf_available() || foreign_mem_off()) {
                printf("\n    (no /dev/udmabuf: the dma-buf part of the cache test is skipped) ");
        } else {
                VumemBufferHd d;
                uint8_t *p;
                int fd, isdma;
                CU_ASSERT_EQUAL_FATAL(alloc(s, TA_DMABUF, 8192, 0x3c, &d), 0);
                CU_ASSERT_EQUAL(vumemBufferFdGet(d, &fd, NULL, &isdma), 0);
                CU_ASSERT_EQUAL(isdma, 1);
                CU_ASSERT_EQUAL_FATAL(vumemBufferMap(d, (void **)&p), 0);
                for (int i = 0; i < 3; i++)
                        CU_ASSERT_EQUAL(vumemBufferCacheOp(d, ops[i], 0, 8192), 0);
                CU_ASSERT(all_bytes(p, 8192, 0x3c));
                CU_ASSERT_EQUAL(vumemBufferCacheOp(d, VUMEM_CACHE_CLEAN, 1, 8192), -EINVAL);
                CU_ASSERT_EQUAL(vumemBufferFree(d), 0);
        }
        CU_ASSERT_EQUAL(vumemSessionDestroy(s), 0);
        tev_count(TEV_FREE, -1, 200);
        tev_flush();
}

/* ---- pdev ------------------------------------------------------------------------------- */

static void test_pdev_exhaustion(void)
{
        pvt_use_vm(&plat, "vm3");
        VumemSession *s;
        CU_ASSERT_EQUAL_FATAL(vumemSessionCreate(CLTS, &s), 0);
        /* vumem-pdev=4K: a 64-byte header, then 32-byte cells, two per buffer. */
        int expect = (4096 - 64) / 32 / 2;
        static VumemBufferHd b[200];
        int n = 0, rc;
        while ((rc = alloc(s, TA_POOL, 4096, 0, &b[n])) == 0 && n < 199)
                n++;
        CU_ASSERT_EQUAL(rc, -ENOSPC);
        CU_ASSERT_EQUAL(n, expect);
        CU_ASSERT_PTR_NOT_NULL(strstr(pvLastError(), "vumem-pdev"));
        CU_ASSERT_PTR_NOT_NULL(strstr(pvLastError(), "4096 bytes"));
        /* The server program never saw the refused request. */
        CU_ASSERT_EQUAL(tev_count(TEV_ALLOC, 2, 200), n);
        /* Sharing needs a record on the vlink too. */
        nku64_f id;
        VumemBufferHd x;
        vumemBufferIdGet(b[0], &id);
        CU_ASSERT_EQUAL(vumemBufferAccess(s, id, &x), 0); /* the same record on the same vlink */
        CU_ASSERT_EQUAL(vumemBufferFree(x), 0);
        /* Room again after a free. */
        CU_ASSERT_EQUAL(vumemBufferFree(b[3]), 0);
        CU_ASSERT_EQUAL(alloc(s, TA_POOL, 4096, 0, &b[3]), 0);
        CU_ASSERT_EQUAL(alloc(s, TA_POOL, 4096, 0, &x), -ENOSPC);
        CU_ASSERT_EQUAL(vumemSessionDestroy(s), 0);
        CU_ASSERT_EQUAL(tev_count(TEV_FREE, 2, 1000), n + 1);
        tev_flush();
        /* All records are back. */
        CU_ASSERT_EQUAL_FATAL(vumemSessionCreate(CLTS, &s), 0);
        for (n = 0; n < expect; n++)
                if (alloc(s, TA_POOL, 4096, 0, &b[n]) != 0)
                        break;
        CU_ASSERT_EQUAL(n, expect);
        CU_ASSERT_EQUAL(vumemSessionDestroy(s), 0);
        tev_count(TEV_FREE, 2, 500);
        tev_flush();
}

/* ---- disconnection --------------------------------------------------------------------- */

static int dying_client(void *arg)
{
        child_close_fds(-1);
        VumemSession *s;
        VumemBufferHd b;
        uint8_t *p;
        if (vumemSessionCreate(CLT0, &s))
                return 1;
        for (int i = 0; i < 3; i++) {
                if (alloc(s, TA_MEMFD, 4096, 0, &b) || vumemBufferMap(b, (void **)&p))
                        return 2;
                memcpy(p, "dead client", 12);
        }
        _exit(0); /* no free, no destroy */
}

static void test_client_death(void)
{
        pid_t pid = pvt_spawn(&plat, "vm3", dying_client, NULL);
        CU_ASSERT_EQUAL(pvt_wait(pid, 5000), 0);
        int n = 0;
        struct tev ev;
        while (tev_wait(TEV_FREE, 0, 2000, &ev) == 0) {
                n++;
                CU_ASSERT_STRING_EQUAL((char *)ev.head, "dead client");
                if (n == 3)
                        break;
        }
        CU_ASSERT_EQUAL(n, 3);
        CU_ASSERT_EQUAL(tev_count(TEV_FREE, -1, 300), 0);
        tev_flush();
}

struct hang_arg {
        VumemSession *s;
        int rc;
        long long ms;
};

static void *hang_thread(void *argp)
{
        struct hang_arg *a = argp;
        VumemBufferHd b;
        a->rc = alloc(a->s, TA_HANG, 4096, 0, &b);
        a->ms = pvt_now_ms();
        return NULL;
}

static void test_server_death(void)
{
        pvt_use_vm(&plat, "vm3");
        VumemSession *s, *s2;
        VumemBufferHd b, x;
        uint8_t *p;
        CU_ASSERT_EQUAL_FATAL(vumemSessionCreate(CLT0, &s), 0);
        CU_ASSERT_EQUAL_FATAL(alloc(s, TA_MEMFD, 8192, 0x66, &b), 0);
        CU_ASSERT_EQUAL_FATAL(vumemBufferMap(b, (void **)&p), 0);
        CU_ASSERT_EQUAL_FATAL(vumemSessionCreate(CLT0, &s2), 0);
        struct hang_arg a = { .s = s2 };
        pthread_t th;
        pthread_create(&th, NULL, hang_thread, &a);
        struct tev ev;
        CU_ASSERT_EQUAL(tev_wait(TEV_ALLOC, 0, 2000, &ev), 0); /* the server holds the request */
        long long t0 = pvt_now_ms();
        tsrv_kill(srv[0]);
        srv[0] = 0;
        pthread_join(th, NULL);
        /* The pending call fails at once, with the reason. */
        CU_ASSERT_EQUAL(a.rc, -ECONNRESET);
        CU_ASSERT(a.ms - t0 < 1000);
        /* The mapping stays valid: nothing written is lost. */
        CU_ASSERT(all_bytes(p, 8192, 0x66));
        memset(p, 0x67, 8192);
        CU_ASSERT(all_bytes(p, 8192, 0x67));
        /* Later calls fail too. */
        usleep(100 * 1000);
        CU_ASSERT_EQUAL(alloc(s, TA_POOL, 4096, 0, &x), -ECONNRESET);
        CU_ASSERT_PTR_NOT_NULL(strstr(pvLastError(), "went away"));
        CU_ASSERT_EQUAL(vumemBufferUnmap(b), 0);
        CU_ASSERT_EQUAL(vumemBufferFree(b), -ECONNRESET);
        CU_ASSERT_EQUAL(vumemSessionDestroy(s), -ECONNRESET);
        CU_ASSERT_EQUAL(vumemSessionDestroy(s2), -ECONNRESET);
        tev_flush();

        /* A new server program serves new sessions. */
        int diag;
        srv[0] = tsrv_start(&plat, "vm2", SRV0, 0, &diag);
        CU_ASSERT_FATAL(srv[0] > 0 && diag == 0);
        CU_ASSERT_EQUAL_FATAL(vumemSessionCreate(CLT0, &s), 0);
        CU_ASSERT_EQUAL(alloc(s, TA_POOL, 4096, 0x12, &b), 0);
        CU_ASSERT_EQUAL(vumemSessionDestroy(s), 0);
        CU_ASSERT_EQUAL(tev_wait(TEV_FREE, 0, 2000, &ev), 0);
        tev_flush();
}

static void test_client_vm_death(void)
{
        pvt_use_vm(&plat, "vm3");
        VumemSession *s;
        VumemBufferHd b;
        uint8_t *p;
        CU_ASSERT_EQUAL_FATAL(vumemSessionCreate(CLT0, &s), 0);
        CU_ASSERT_EQUAL(alloc(s, TA_MEMFD, 4096, 0x44, &b), 0);
        CU_ASSERT_EQUAL(vumemBufferMap(b, (void **)&p), 0);
        CU_ASSERT_EQUAL(alloc(s, TA_POOL, 4096, 0, &b), 0);
        tev_flush();
        /* vm3's pvd dies: vm2 frees what vm3 held. */
        pvt_pvd_stop(&plat, "vm3", SIGKILL);
        CU_ASSERT_EQUAL(tev_count(TEV_FREE, 0, 1500), 2);
        CU_ASSERT(all_bytes(p, 4096, 0x44));
        VumemBufferHd x;
        CU_ASSERT_EQUAL(alloc(s, TA_POOL, 4096, 0, &x), -ECONNRESET);
        CU_ASSERT_EQUAL(vumemSessionDestroy(s), -ECONNRESET);
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm3", NULL), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm3", NULL, "ON", 5000), 0);
        CU_ASSERT_EQUAL_FATAL(vumemSessionCreate(CLT0, &s), 0);
        CU_ASSERT_EQUAL(alloc(s, TA_POOL, 4096, 0, &b), 0);
        CU_ASSERT_EQUAL(vumemSessionDestroy(s), 0);
        tev_count(TEV_FREE, -1, 300);
        tev_flush();
}

/* ---- pvctl stat vumem --------------------------------------------------------------------- */

static void test_stat(void)
{
        pvt_use_vm(&plat, "vm3");
        VumemSession *m, *s;
        VumemBufferHd b1, b2;
        CU_ASSERT_EQUAL_FATAL(vumemSessionMasterCreate(CLT0, &m), 0);
        CU_ASSERT_EQUAL_FATAL(vumemSessionCreate(CLT0, &s), 0);
        CU_ASSERT_EQUAL(alloc(m, TA_POOL, 5000, 0, &b1), 0);
        CU_ASSERT_EQUAL(alloc(m, TA_POOL, 3000, 0, &b2), 0);
        VumemBufferHd x;
        CU_ASSERT_EQUAL(alloc(s, TA_POOL, 3000, 0, &x), -EPERM);

        char out[16384], err[4096];
        const char *pvctl = getenv("PVCTL_BIN");
        const char *argv[] = { pvctl, "stat", "vumem", NULL, NULL };
        CU_ASSERT_EQUAL(pvt_run(&plat, "vm2", argv, out, sizeof(out), err, sizeof(err), 5000), 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "vumem-srv-vogl0"));
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "vumem-srv-vsmall0"));
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "2 (1 master)"));
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "7.8 KiB")); /* 8000 bytes live */
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "192 B / 128.0 KiB")); /* header + 2 x 2 cells */
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "master"));
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "standard"));
        argv[3] = "--json";
        CU_ASSERT_EQUAL(pvt_run(&plat, "vm2", argv, out, sizeof(out), err, sizeof(err), 5000), 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"pdev_used\": 192"));
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"pdev_size\": 131072"));
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"kind\": \"master\""));
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"requests_failed\""));
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"running\": true"));
        argv[3] = NULL;
        CU_ASSERT_EQUAL(pvt_run(&plat, "vm3", argv, out, sizeof(out), err, sizeof(err), 5000), 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "vumem-clt-vogl0"));
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "client end"));
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "192 B / 128.0 KiB")); /* as the server VM counts */

        msgpack_zone zone;
        msgpack_object doc;
        msgpack_zone_init(&zone, 4096);
        CU_ASSERT_EQUAL(pvt_stat(&plat, "vm2", "vumem", &zone, &doc), 0);
        msgpack_zone_destroy(&zone);
        CU_ASSERT_EQUAL(vumemSessionDestroy(m), 0);
        CU_ASSERT_EQUAL(vumemSessionDestroy(s), 0);
        tev_count(TEV_FREE, -1, 300);
        tev_flush();
}

/* ---- the lane ----------------------------------------------------------------------------- */

/* lane_allocs of vm2's vogl0 node (pvctl stat vumem --json), -1 if unseen. */
static long lane_allocs(void)
{
        char out[16384], err[4096];
        const char *argv[] = { getenv("PVCTL_BIN"), "stat", "vumem", "--json", NULL };
        if (pvt_run(&plat, "vm2", argv, out, sizeof(out), err, sizeof(err), 5000) != 0)
                return -1;
        const char *n = strstr(out, "\"vumem-srv-vogl0\"");
        const char *k = n ? strstr(n, "\"lane_allocs\": ") : NULL;
        const char *next = n ? strstr(n + 1, "\"vumem-srv-") : NULL;
        if (!k || (next && next < k))
                return -1;
        return strtol(k + strlen("\"lane_allocs\": "), NULL, 10);
}

/* Until vm2's pvd no longer lists a master session on vogl0 (a session's
 * destroy closes its connection and returns; the server VM learns of it
 * a moment later). */
static bool wait_master_gone(void)
{
        char out[16384], err[4096];
        const char *argv[] = { getenv("PVCTL_BIN"), "stat", "vumem", "--json", NULL };
        for (int i = 0; i < 500; i++) {
                if (pvt_run(&plat, "vm2", argv, out, sizeof(out), err, sizeof(err), 5000) == 0 &&
                    !strstr(out, "\"kind\": \"master\""))
                        return true;
                usleep(10000);
        }
        return false;
}

/* Allocations on the session's lane: pvd counts each, keeps the master
 * rule, knows the buffer at once (another session accesses it), and a
 * session with the lane off goes through pvd with the same results. */
static void test_lane(void)
{
        pvt_use_vm(&plat, "vm3");
        tev_flush();
        VumemSession *s, *p, *m, *q;
        VumemBufferHd b[8], x;
        uint8_t *v;
        long l0 = lane_allocs();
        CU_ASSERT_FATAL(l0 >= 0);
        CU_ASSERT_EQUAL_FATAL(vumemSessionCreate(CLT0, &s), 0);
        CU_ASSERT_EQUAL_FATAL(vumemSessionCreate(CLT0, &p), 0);
        for (int i = 0; i < 8; i++)
                CU_ASSERT_EQUAL(alloc(s, TA_POOL, 4096, 0x30 + (uint32_t)i, &b[i]), 0);
        CU_ASSERT_EQUAL(lane_allocs(), l0 + 8);
        /* Named at once from another session: pvd knows it. */
        nku64_f id;
        CU_ASSERT_EQUAL(vumemBufferIdGet(b[3], &id), 0);
        CU_ASSERT_EQUAL(vumemBufferAccess(p, id, &x), 0);
        CU_ASSERT_EQUAL(vumemBufferMap(x, (void **)&v), 0);
        CU_ASSERT(all_bytes(v, 4096, 0x33));
        CU_ASSERT_EQUAL(vumemBufferFree(x), 0);

        /* The master rule holds on the lane too. */
        CU_ASSERT_EQUAL_FATAL(vumemSessionMasterCreate(CLT0, &m), 0);
        CU_ASSERT_EQUAL(alloc(s, TA_POOL, 4096, 0, &x), -EPERM);
        CU_ASSERT_PTR_NOT_NULL(strstr(pvLastError(), "master"));
        CU_ASSERT_EQUAL(alloc(m, TA_POOL, 4096, 0x41, &x), 0);
        CU_ASSERT_EQUAL(lane_allocs(), l0 + 9);
        CU_ASSERT_EQUAL(vumemBufferFree(x), 0);
        CU_ASSERT_EQUAL(vumemSessionDestroy(m), 0);
        CU_ASSERT(wait_master_gone());
        CU_ASSERT_EQUAL(alloc(s, TA_POOL, 4096, 0x42, &x), 0);
        CU_ASSERT_EQUAL(lane_allocs(), l0 + 10);
        CU_ASSERT_EQUAL(vumemBufferFree(x), 0);

        /* Lane off: through pvd, same buffer, not counted as a lane's. */
        setenv("PVCLIENT_VUMEM_LANE", "0", 1);
        int rc = vumemSessionCreate(CLT0, &q);
        unsetenv("PVCLIENT_VUMEM_LANE");
        CU_ASSERT_EQUAL_FATAL(rc, 0);
        CU_ASSERT_EQUAL(alloc(q, TA_POOL, 4096, 0x43, &x), 0);
        CU_ASSERT_EQUAL(vumemBufferMap(x, (void **)&v), 0);
        CU_ASSERT(all_bytes(v, 4096, 0x43));
        CU_ASSERT_EQUAL(lane_allocs(), l0 + 10);
        CU_ASSERT_EQUAL(vumemSessionDestroy(q), 0);
        for (int i = 0; i < 8; i++)
                CU_ASSERT_EQUAL(vumemBufferFree(b[i]), 0);
        CU_ASSERT_EQUAL(vumemSessionDestroy(p), 0);
        CU_ASSERT_EQUAL(vumemSessionDestroy(s), 0);
        /* Every allocation came back to the server once. */
        CU_ASSERT_EQUAL(tev_count(TEV_ALLOC, 0, 300), 11);
        CU_ASSERT_EQUAL(tev_count(TEV_FREE, 0, 1000), 11);

        /* Neither side polls: every request and answer wakes the other
         * through the pvds, and still goes on the lane. */
        tsrv_kill(srv[0]);
        setenv("PVCLIENT_VUMEM_SPIN_US", "0", 1);
        int diag;
        srv[0] = tsrv_start(&plat, "vm2", SRV0, 0, &diag);
        CU_ASSERT_FATAL(srv[0] > 0 && diag == 0);
        rc = vumemSessionCreate(CLT0, &s);
        unsetenv("PVCLIENT_VUMEM_SPIN_US");
        CU_ASSERT_EQUAL_FATAL(rc, 0);
        l0 = lane_allocs();
        for (int i = 0; i < 20; i++) {
                CU_ASSERT_EQUAL(alloc(s, TA_POOL, 4096, 0x50 + (uint32_t)i, &x), 0);
                CU_ASSERT(vumemBufferMap(x, (void **)&v) == 0 && all_bytes(v, 4096, (uint8_t)(0x50 + i)));
                CU_ASSERT_EQUAL(vumemBufferFree(x), 0);
                if (i % 5 == 4)
                        usleep(20000); /* the server library is asleep by now */
        }
        CU_ASSERT_EQUAL(lane_allocs(), l0 + 20);
        CU_ASSERT_EQUAL(vumemSessionDestroy(s), 0);
        CU_ASSERT_EQUAL(tev_count(TEV_FREE, 0, 1000), 20);
        tev_flush();
}

/* ---- the examples ------------------------------------------------------------------------- */

static const char *example_server, *example_client;

static void test_examples(void)
{
        if (!example_server) {
                printf("\n    (examples not given: skipped) ");
                return;
        }
        /* The example takes vm2's vogl0 node for the time of the test. */
        tsrv_kill(srv[0]);
        srv[0] = 0;
        int out[2];
        CU_ASSERT_FATAL(pipe2(out, O_CLOEXEC) == 0);
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
                dup2(out[1], 1);
                child_close_fds(-1);
                setenv("PVD_RUNTIME_DIR", pvt_vm(&plat, "vm2")->rt, 1);
                execl(example_server, example_server, "/dev/vumem-srv-vogl0", (char *)NULL);
                _exit(127);
        }
        close(out[1]);
        char sout[4096] = "", cout[4096], cerr[4096];
        size_t n = 0;
        /* Its first line says it serves. */
        while (n < sizeof(sout) - 1 && !strchr(sout, '\n')) {
                ssize_t r = read(out[0], sout + n, sizeof(sout) - 1 - n);
                if (r <= 0)
                        break;
                n += (size_t)r;
                sout[n] = 0;
        }
        CU_ASSERT_PTR_NOT_NULL(strstr(sout, "serving"));
        const char *argv[] = { example_client, CLT0, NULL };
        CU_ASSERT_EQUAL(pvt_run(&plat, "vm3", argv, cout, sizeof(cout), cerr, sizeof(cerr), 10000), 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(cout, "the buffer says \"hello from the server VM (640x480)\""));
        CU_ASSERT_PTR_NOT_NULL(strstr(cout, "stride 2560"));
        CU_ASSERT_PTR_NOT_NULL(strstr(cout, "done"));
        usleep(200 * 1000);
        kill(pid, SIGTERM);
        CU_ASSERT_EQUAL(pvt_wait(pid, 5000), 0);
        for (;;) {
                ssize_t r = read(out[0], sout + n, sizeof(sout) - 1 - n);
                if (r <= 0)
                        break;
                n += (size_t)r;
                sout[n] = 0;
        }
        close(out[0]);
        CU_ASSERT_PTR_NOT_NULL(strstr(sout, "ALLOC 1228800 bytes"));
        CU_ASSERT_PTR_NOT_NULL(strstr(sout, "the client left: \"hello from the client VM\""));
        CU_ASSERT_PTR_NOT_NULL(strstr(sout, "stopped"));
        int diag;
        srv[0] = tsrv_start(&plat, "vm2", SRV0, 0, &diag);
        CU_ASSERT(srv[0] > 0 && diag == 0);
}

/* The server VM's pvd dies: clients fail at once and keep their
 * mappings; the server programs see the end; a new pvd serves anew. */
static void test_server_vm_death(void)
{
        pvt_use_vm(&plat, "vm3");
        VumemSession *s;
        VumemBufferHd b, x;
        uint8_t *p;
        CU_ASSERT_EQUAL_FATAL(vumemSessionCreate(CLT0, &s), 0);
        CU_ASSERT_EQUAL_FATAL(alloc(s, TA_MEMFD, 4096, 0x71, &b), 0);
        CU_ASSERT_EQUAL_FATAL(vumemBufferMap(b, (void **)&p), 0);
        long long t0 = pvt_now_ms();
        pvt_pvd_stop(&plat, "vm2", SIGKILL);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm3", "vm2-vm3-vogl0", "OFF", 3000), 0);
        CU_ASSERT_EQUAL(alloc(s, TA_POOL, 4096, 0, &x), -ECONNRESET);
        CU_ASSERT(pvt_now_ms() - t0 < 3000);
        CU_ASSERT_PTR_NOT_NULL(strstr(pvLastError(), "went down"));
        CU_ASSERT(all_bytes(p, 4096, 0x71));
        CU_ASSERT_EQUAL(vumemBufferUnmap(b), 0);
        CU_ASSERT_EQUAL(vumemSessionDestroy(s), -ECONNRESET);
        /* The server programs saw their pvd go. */
        for (int i = 0; i < 3; i++) {
                if (srv[i] > 0)
                        CU_ASSERT_EQUAL(pvt_wait(srv[i], 3000), 0);
                srv[i] = 0;
        }
        tev_flush();
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm2", NULL), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm3", NULL, "ON", 5000), 0);
        int diag;
        srv[0] = tsrv_start(&plat, "vm2", SRV0, 0, &diag);
        CU_ASSERT_FATAL(srv[0] > 0 && diag == 0);
        CU_ASSERT_EQUAL_FATAL(vumemSessionCreate(CLT0, &s), 0);
        CU_ASSERT_EQUAL(alloc(s, TA_POOL, 4096, 0, &b), 0);
        CU_ASSERT_EQUAL(vumemSessionDestroy(s), 0);
        tev_count(TEV_FREE, -1, 200);
        tev_flush();
}

int main(int argc, char **argv)
{
        if (argc > 2) {
                example_server = argv[1];
                example_client = argv[2];
        }
        if (CU_initialize_registry() != CUE_SUCCESS)
                return 1;
        CU_pSuite s = CU_add_suite("vumem", suite_init, suite_fini);
        CU_add_test(s, "no server program: bounded wait, clear error", test_no_server);
        CU_add_test(s, "one server program per node", test_server_busy);
        CU_add_test(s, "a program's own memory follows the backend's capability", test_foreign_memory);
        CU_add_test(s, "master and standard sessions", test_sessions);
        CU_add_test(s, "buffers: alloc, map, same pages both ways, free", test_buffers);
        CU_add_test(s, "memory VUMEM cannot share is refused", test_refused_memory);
        CU_add_test(s, "sharing between sessions", test_share_sessions);
        CU_add_test(s, "a free does not wait and is seen by the next request", test_free_async);
        CU_add_test(s, "sharing between client VMs", test_share_vms);
        CU_add_test(s, "cache operations", test_cache_ops);
        CU_add_test(s, "pdev exhaustion", test_pdev_exhaustion);
        CU_add_test(s, "client death frees its buffers", test_client_death);
        CU_add_test(s, "server death and restart", test_server_death);
        CU_add_test(s, "client VM death", test_client_vm_death);
        CU_add_test(s, "pvctl stat vumem", test_stat);
        CU_add_test(s, "allocations on the session's lane", test_lane);
        CU_add_test(s, "the seed's walkthrough: examples across VMs", test_examples);
        CU_add_test(s, "server VM death and return", test_server_vm_death);
        CU_basic_set_mode(CU_BRM_VERBOSE);
        CU_basic_run_tests();
        unsigned failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
        CU_cleanup_registry();
        return failed ? 1 : 0;
}

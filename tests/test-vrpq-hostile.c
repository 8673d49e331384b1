/* Hostile input: while a client and a server exchange requests, a third
 * program maps the same memory (the session's memory, or where the
 * hypervisor does not slice, its own session on the vlink) and
 * corrupts the channel: the producer's ring index, whole descriptors,
 * parameter offsets, release indices, and the consumer's indices. The
 * victim gets -EPROTO for that channel, never a crash and never a pointer
 * outside PMEM (the server touches every byte it is given; run under ASan
 * by scripts/test.sh); both pvds keep serving and free everything. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "vrpq-proto.h"
#include "vrpq-test.h"

#define SRV "vrpq-srv-vogl0"
#define CLT "vrpq-clt-vogl0"
#define P_ASYNC VRPQ_PROC_ID(2, 1)
#define P_SYNC  VRPQ_PROC_ID(2, 2)
#define REQS    (128u * 1024)           /* demo.dtb's vrpq-reqs and vrpq-pmem */
#define PMEM    (2u << 20)
#define CLEAN_COUNT 20000

enum kind { K_PROD = 1, K_DESC, K_OFFSET, K_PEND, K_CONS, K_CLEAN, K_ISOLATE };
static const char *const kind_name[] = { "", "producer index", "descriptors", "parameter offsets", "release indices",
                                         "consumer indices", "none (control)", "its own session" };

enum { F_SRV_READY, F_CLT_READY, F_SRV_DONE, F_CLT_DONE };
enum { V_SRV_RC, V_CLT_RC, V_SRV_STICKY, V_SRV_BAD_PTR, V_SRV_COUNT, V_HOSTILE_WRITES, V_SUM, V_NO_SLICE };

static struct pvt_platform plat;
static struct vt_shared *sh;
static int fds_before;

static int suite_init(void)
{
        fds_before = pvt_fd_count();
        sh = vt_shared_new();
        if (!sh || pvt_platform_init(&plat, "demo") < 0 || pvt_pvd_start(&plat, "vm2", NULL) < 0 ||
            pvt_pvd_start(&plat, "vm3", NULL) < 0 || pvt_wait_vlink(&plat, "vm3", NULL, "ON", 5000) < 0)
                goto fail;
        return 0;
fail:
        /* Nothing left behind, even when the platform cannot start. */
        pvt_platform_fini(&plat);
        return -1;
}

static int suite_fini(void)
{
        int left = pvt_platform_fini(&plat);
        munmap((void *)sh, sizeof(*sh));
        return left || pvt_fd_count() != fds_before ? -1 : 0;
}

static bool inside(const uint8_t *p, size_t n, const uint8_t *pmem)
{
        return p >= pmem && p + n <= pmem + PMEM;
}

/* The server touches every byte it is handed. */
static int server(void *arg)
{
        VrpqSession *s;
        VrpqChan *c;
        VrpqReq *reqs[16];
        void *shm;
        int avail, rc;
        uint64_t sum = 0, n = 0;
        CHK_OK(vrpqSessionAccept(SRV, NULL, NULL, &s));
        CHK_OK(vrpqChanAccept(s, NULL, NULL, &c));
        CHK_OK(vrpqShmMap(s, &shm));
        vt_set_flag(&sh->flag[F_SRV_READY], 1);
        while ((rc = vrpqReceive(c, reqs, 16, &avail)) == 0) {
                for (int i = 0; i < avail; i++, n++) {
                        VrpqReq *r = reqs[i];
                        uint8_t *in = vrpqParamInGet(r, shm), *out = vrpqParamOutGet(r, shm);
                        size_t ni = vrpqParamInSize(r), no = vrpqParamOutSize(r);
                        if ((in && !inside(in, ni, shm)) || (out && !inside(out, no, shm)))
                                sh->v[V_SRV_BAD_PTR]++;
                        for (size_t k = 0; in && k < ni; k++)
                                sum += in[k];
                        if (out)
                                memset(out, (int)sum, no);
                        if (r->flags & VRPQ_REQ_SYNC)
                                vrpqReply(c, r);
                }
        }
        sh->v[V_SRV_RC] = rc;
        sh->v[V_SRV_COUNT] = (int64_t)n;
        /* -EPROTO is sticky for the channel. */
        if (rc == -EPROTO)
                sh->v[V_SRV_STICKY] = vrpqReceiveTimeout(c, reqs, 16, &avail, 0) == -EPROTO;
        sh->v[V_SUM] = (int64_t)sum; /* so that every byte is read */
        vt_set_flag(&sh->flag[F_SRV_DONE], 1);
        vrpqChanDestroy(c);
        vrpqSessionDestroy(s);
        return 0;
}

static int client(void *arg)
{
        enum kind kind = (enum kind)(intptr_t)arg;
        VrpqSession *s;
        VrpqChan *c;
        void *in, *out;
        int rc = 0;
        CHK_OK(vrpqSessionCreate(CLT, NULL, 0, &s));
        CHK_OK(vrpqChanCreate(s, NULL, 0, &c));
        vt_set_flag(&sh->flag[F_CLT_READY], 1);
        long long deadline = pvt_now_ms() + 10000;
        for (uint32_t i = 0; !rc; i++) {
                if (kind == K_CLEAN || kind == K_ISOLATE ? i == CLEAN_COUNT
                                                         : sh->flag[F_SRV_DONE] || pvt_now_ms() > deadline)
                        break;
                uint32_t size = 4 + (i * 7919) % 4000;
                rc = vrpqParamAlloc(c, size, i % 50 ? 0 : 16, &in);
                if (rc)
                        break;
                memset(in, (int)i, size);
                rc = i % 50 ? vrpqPostAndNotify(c, P_ASYNC, in) : vrpqCall(c, P_SYNC, in, &out);
        }
        sh->v[V_CLT_RC] = rc;
        vt_set_flag(&sh->flag[F_CLT_DONE], 1);
        vrpqChanDestroy(c);
        vrpqSessionDestroy(s);
        return 0;
}

static uint32_t rnd(uint32_t *state)
{
        *state ^= *state << 13;
        *state ^= *state >> 17;
        *state ^= *state << 5;
        return *state;
}

/* A program with a session of its own on the vlink writes garbage over all
 * of that session's memory. Where the hypervisor gives each session its own
 * memory, the client's session next to it does not notice. */
static int isolate(void)
{
        VrpqSession *s;
        void *shm;
        CHK(vt_wait_flag(&sh->flag[F_SRV_READY], 1, 5000) == 0);
        CHK(vt_wait_flag(&sh->flag[F_CLT_READY], 1, 5000) == 0);
        CHK_OK(vrpqSessionCreate(CLT, NULL, 0, &s));
        CHK_OK(vrpqShmMap(s, &shm));
        int fd = pvt_open_emu_object(pvt_vm(&plat, "vm2")->pid, "pvd-vrpq-session-");
        if (fd < 0) {
                sh->v[V_NO_SLICE] = 1;  /* one region for all: this would break the client */
                vrpqSessionDestroy(s);
                return 0;
        }
        close(fd);
        struct vrpq_layout l;
        vrpq_layout_init(&l, REQS, PMEM);
        volatile uint32_t *w = (volatile uint32_t *)((uint8_t *)shm - l.pmem_off);
        uint32_t seed = 0x2545f491u;
        long long deadline = pvt_now_ms() + 10000;
        while (!sh->flag[F_CLT_DONE] && pvt_now_ms() < deadline) {
                for (size_t i = 0; i < l.size / 4; i += 1 + (rnd(&seed) & 63))
                        w[i] = rnd(&seed);
                sh->v[V_HOSTILE_WRITES]++;
        }
        vrpqSessionDestroy(s);
        return 0;
}

/* The third mapping. Where the hypervisor gives each session memory of its
 * own, the client's session memory, found in the server pvd's descriptors
 * (what a hostile client kernel holds); elsewhere a session of our own on
 * the same vlink gives us the region. The open channel's header says where
 * its rings are. */
static int hostile(void *arg)
{
        enum kind kind = (enum kind)(intptr_t)arg;
        VrpqSession *s = NULL;
        void *shm;
        if (kind == K_ISOLATE)
                return isolate();
        /* After the server accepted the client's session, so that it does
         * not accept ours instead. */
        CHK(vt_wait_flag(&sh->flag[F_SRV_READY], 1, 5000) == 0);
        CHK(vt_wait_flag(&sh->flag[F_CLT_READY], 1, 5000) == 0);
        struct vrpq_layout l;
        vrpq_layout_init(&l, REQS, PMEM);
        uint8_t *base;
        size_t size = 0;
        int fd = pvt_open_emu_object(pvt_vm(&plat, "vm2")->pid, "pvd-vrpq-session-");
        if (fd >= 0) {
                base = pvt_map_emu_object(fd, &size);
                close(fd);
                CHK(base != NULL && size >= l.size);
        } else {
                CHK_OK(vrpqSessionCreate(CLT, NULL, 0, &s));
                CHK_OK(vrpqShmMap(s, &shm));
                base = (uint8_t *)shm - l.pmem_off;
        }
        struct vrpq_chan_hdr *h = NULL;
        for (uint32_t i = 0; i < VRPQ_CHANNELS_MAX; i++) {
                struct vrpq_chan_hdr *x = vrpq_chan_hdr_at(base, &l, i);
                if (x->magic == VRPQ_CHAN_MAGIC && x->state == VRPQ_CHAN_OPEN && (!h || x->cid > h->cid))
                        h = x;
        }
        if (kind == K_CLEAN) {
                if (s)
                        vrpqSessionDestroy(s);
                else
                        munmap(base, size);
                return 0;
        }
        CHK(h != NULL);
        struct vrpq_chan_geom g = h->geom;
        struct vrpq_desc *ring = (struct vrpq_desc *)(base + l.pool_off) + g.req_slot;
        uint32_t seed = 0x9e3779b9u * (uint32_t)kind;
        vt_sleep_ms(50); /* traffic flows */
        long long deadline = pvt_now_ms() + 5000;
        volatile int *done = &sh->flag[kind == K_CONS ? F_CLT_DONE : F_SRV_DONE];
        while (kind != K_CLEAN && !*done && pvt_now_ms() < deadline) {
                uint32_t k = rnd(&seed) & (g.req_cap - 1);
                switch (kind) {
                case K_PROD:
                        __atomic_fetch_add(&h->req_p.prod, g.req_cap + 1 + (rnd(&seed) & 0xffff), __ATOMIC_RELAXED);
                        break;
                case K_DESC:
                        for (uint32_t w = 0; w < 8; w++)
                                ((volatile uint32_t *)&ring[k])[w] = rnd(&seed);
                        break;
                case K_OFFSET:
                        for (uint32_t j = 0; j < g.req_cap; j++) {
                                ring[j].in_off = g.port_size - 4;
                                ring[j].out_off = rnd(&seed);
                        }
                        break;
                case K_PEND:
                        for (uint32_t j = 0; j < g.req_cap; j++)
                                ring[j].pend = rnd(&seed) | 0x40000000u;
                        break;
                case K_CONS:
                        h->req_c.cons = rnd(&seed);
                        h->req_c.done = rnd(&seed);
                        h->req_c.port_cons = rnd(&seed);
                        break;
                default:
                        break;
                }
                sh->v[V_HOSTILE_WRITES]++;
                usleep(20);
        }
        if (s)
                vrpqSessionDestroy(s);
        else
                munmap(base, size);
        return 0;
}

static int held(const char *vm)
{
        return vt_held(&plat, vm);
}

static void run_kind(enum kind kind)
{
        memset((void *)sh, 0, sizeof(*sh));
        pid_t sp = pvt_spawn(&plat, "vm2", server, (void *)(intptr_t)kind);
        pid_t cp = pvt_spawn(&plat, "vm3", client, (void *)(intptr_t)kind);
        pid_t hp = pvt_spawn(&plat, "vm3", hostile, (void *)(intptr_t)kind);
        /* pvd reads the corrupt header for its statistics meanwhile. */
        for (int i = 0; i < 5; i++) {
                CU_ASSERT(held("vm2") >= 0);
                CU_ASSERT(held("vm3") >= 0);
                vt_sleep_ms(20);
        }
        CU_ASSERT_EQUAL(pvt_wait(hp, 15000), 0);
        CU_ASSERT_EQUAL(pvt_wait(cp, 15000), 0);
        CU_ASSERT_EQUAL(pvt_wait(sp, 15000), 0);
        CU_ASSERT_EQUAL(sh->v[V_SRV_BAD_PTR], 0);
        if (kind == K_ISOLATE && sh->v[V_NO_SLICE]) {
                printf("\n  (not applicable: the hypervisor does not give sessions memory of their own) ");
        } else if (kind == K_CLEAN || kind == K_ISOLATE) {
                CU_ASSERT(kind == K_CLEAN || sh->v[V_HOSTILE_WRITES] > 0);
                CU_ASSERT_EQUAL(sh->v[V_SRV_RC], -ECONNRESET);
                CU_ASSERT_EQUAL(sh->v[V_CLT_RC], 0);
                CU_ASSERT_EQUAL(sh->v[V_SRV_COUNT], CLEAN_COUNT);
        } else if (kind == K_CONS) {
                CU_ASSERT_EQUAL(sh->v[V_CLT_RC], -EPROTO);
        } else {
                CU_ASSERT_EQUAL(sh->v[V_SRV_RC], -EPROTO);
                CU_ASSERT_EQUAL(sh->v[V_SRV_STICKY], 1);
        }
        if (CU_get_number_of_failures())
                fprintf(stderr, "kind %s: server %lld after %lld requests, client %lld, %lld hostile writes\n",
                        kind_name[kind], (long long)sh->v[V_SRV_RC], (long long)sh->v[V_SRV_COUNT],
                        (long long)sh->v[V_CLT_RC], (long long)sh->v[V_HOSTILE_WRITES]);
        /* The pvds go on, and free the channel. */
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm3", NULL, "ON", 1000), 0);
        long long deadline = pvt_now_ms() + 3000;
        while ((held("vm2") || held("vm3")) && pvt_now_ms() < deadline)
                vt_sleep_ms(20);
        CU_ASSERT_EQUAL(held("vm2"), 0);
        CU_ASSERT_EQUAL(held("vm3"), 0);
}

static void test_prod(void) { run_kind(K_PROD); }
static void test_desc(void) { run_kind(K_DESC); }
static void test_offset(void) { run_kind(K_OFFSET); }
static void test_pend(void) { run_kind(K_PEND); }
static void test_cons(void) { run_kind(K_CONS); }
static void test_clean(void) { run_kind(K_CLEAN); }
static void test_isolate(void) { run_kind(K_ISOLATE); }

int main(void)
{
        if (CU_initialize_registry() != CUE_SUCCESS)
                return 1;
        CU_pSuite s = CU_add_suite("vrpq-hostile", suite_init, suite_fini);
        CU_add_test(s, "corrupt producer index: server -EPROTO", test_prod);
        CU_add_test(s, "corrupt descriptors: server -EPROTO", test_desc);
        CU_add_test(s, "parameters outside the port: server -EPROTO", test_offset);
        CU_add_test(s, "corrupt release indices: server -EPROTO", test_pend);
        CU_add_test(s, "corrupt consumer indices: client -EPROTO", test_cons);
        CU_add_test(s, "afterwards, clean traffic flows", test_clean);
        CU_add_test(s, "a program scribbling its own session memory: other sessions flow", test_isolate);
        CU_basic_set_mode(CU_BRM_VERBOSE);
        CU_basic_run_tests();
        unsigned fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
        CU_cleanup_registry();
        return fails ? 1 : 0;
}

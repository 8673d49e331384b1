/* VRPQ across real pvd processes of the test platform (test-2clients.dtb:
 * vm2 serves vogl to vm3 and vm5, and a tiny vsmall vlink to vm3): sessions,
 * channels and their info, two client VMs at once, every kind of request,
 * callbacks, full rings and ports, -E2BIG, -ENOSPC, the session limit, and
 * `pvctl stat vrpq`. Programs are forked children "in" a VM. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <CUnit/CUnit.h>

#include "pvt-run.h"
#include "vrpq-test.h"
#include "vrpq/vrpq-int.h"

#define SRV0   "/dev/vrpq-srv-vogl0"   /* vm2, for vm3 */
#define SRV1   "/dev/vrpq-srv-vogl1"   /* vm2, for vm5 */
#define CLT    "/dev/vrpq-clt-vogl0"   /* vm3, vm5 */
#define SRV_SM "vrpq-srv-vsmall0"      /* vm2, for vm3: 64 slots, 16 KiB PMEM */
#define CLT_SM "vrpq-clt-vsmall0"

#define P_INT      VRPQ_PROC_ID(2, 1)  /* async: an int */
#define P_DOUBLE   VRPQ_PROC_ID(2, 2)  /* sync: out = 2 * in */
#define P_LATE     VRPQ_PROC_ID(2, 3)  /* sync, no vrpqReply: completed by the next vrpqReceive */
#define P_NOPARAM  VRPQ_PROC_ID(2, 4)  /* no parameters */
#define P_CBS      VRPQ_PROC_ID(2, 5)  /* in: n: n async callbacks, then a sync one */
#define P_COUNT    VRPQ_PROC_ID(2, 6)  /* sync: out = requests received before it */
#define P_NESTED   VRPQ_PROC_ID(2, 7)  /* sync: calls back (sync) before answering */
#define CB_TICK    VRPQ_PROC_ID(5, 1)
#define CB_ASK     VRPQ_PROC_ID(5, 2)

static struct pvt_platform plat;
static struct vt_shared *sh;

static int suite_init(void)
{
        sh = vt_shared_new();
        if (!sh || pvt_platform_init(&plat, "test-2clients") < 0 || pvt_pvd_start(&plat, "vm2", NULL) < 0 ||
            pvt_pvd_start(&plat, "vm3", NULL) < 0 || pvt_pvd_start(&plat, "vm5", NULL) < 0 ||
            pvt_wait_vlink(&plat, "vm3", NULL, "ON", 5000) < 0 || pvt_wait_vlink(&plat, "vm5", NULL, "ON", 5000) < 0)
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
        return left ? -1 : 0;
}

static void reset_shared(void)
{
        memset((void *)sh, 0, sizeof(*sh));
}

/* After each test: the pvds freed everything (and the next test starts
 * from nothing). */
static void assert_idle(void)
{
        static const char *const vms[] = { "vm2", "vm3", "vm5", NULL };
        CU_ASSERT_EQUAL(vt_wait_idle(&plat, vms, 5000), 0);
}

/* Run server (in vm2) and clients, wait for all: each must exit 0. */
static void run2(int (*srv)(void *), const char *cvm, int (*clt)(void *), void *arg, int timeout_ms)
{
        pid_t s = pvt_spawn(&plat, "vm2", srv, arg);
        pid_t c = pvt_spawn(&plat, cvm, clt, arg);
        CU_ASSERT_EQUAL(pvt_wait(c, timeout_ms), 0);
        CU_ASSERT_EQUAL(pvt_wait(s, timeout_ms), 0);
}

/* Receive on chan until -ECONNRESET; values must be base, base+1, ... */
static int drain_ints(VrpqChan *c, uint32_t base, unsigned expect)
{
        VrpqReq *reqs[8];
        int avail, rc;
        unsigned n = 0;
        while ((rc = vrpqReceive(c, reqs, 8, &avail)) == 0) {
                CHK(avail >= 1 && avail <= 8);
                for (int i = 0; i < avail; i++, n++) {
                        CHK(reqs[i]->procId == P_INT);
                        CHK(vrpqParamInSize(reqs[i]) == 4);
                        CHK(VRPQ_PARAM_READ(vrpqParamInGet(reqs[i], NULL), 0, nku32_f) == base + n);
                }
        }
        CHK(rc == -ECONNRESET);
        CHK(n == expect);
        return 0;
}

static int post_ints(VrpqChan *c, uint32_t base, unsigned count)
{
        for (unsigned i = 0; i < count; i++) {
                void *in;
                CHK_OK(vrpqParamAlloc(c, 4, 0, &in));
                VRPQ_PARAM_WRITE(in, 0, nku32_f, base + i);
                CHK_OK(i % 3 ? vrpqPost(c, P_INT, in) : vrpqPostAndNotify(c, P_INT, in));
        }
        CHK_OK(vrpqNotify(c));
        return 0;
}

/* ---- sessions, channels, info -------------------------------------------------------- */

static const char sess_info[] = "session info from vm3";
static const char chan_info[] = "channel zero: truncated";

static int srv_sessions(void *arg)
{
        VrpqSession *s1, *s2;
        VrpqChan *c[3], *c2;
        char info[64];
        size_t len = sizeof(info);
        CHK_OK(vrpqSessionAccept(SRV0, info, &len, &s1));
        CHK(len == sizeof(sess_info) && memcmp(info, sess_info, len) == 0);
        /* Truncation is reported by a length above the capacity. */
        len = 4;
        memset(info, 0, sizeof(info));
        CHK_OK(vrpqChanAccept(s1, info, &len, &c[0]));
        CHK(len == sizeof(chan_info) && memcmp(info, chan_info, 4) == 0 && info[4] == 0);
        len = sizeof(info);
        CHK_OK(vrpqChanAccept(s1, info, &len, &c[1]));
        CHK(len == 0);
        CHK_OK(vrpqChanAccept(s1, NULL, NULL, &c[2]));
        void *base;
        CHK_OK(vrpqShmMap(s1, &base));
        CHK(base != NULL);
        for (int i = 0; i < 3; i++)
                CHK(drain_ints(c[i], 1000000u * (unsigned)i, 100) == 0);
        /* The second session was destroyed by the client before we accepted
         * it: it still comes, with its channel and its requests. */
        len = sizeof(info);
        CHK_OK(vrpqSessionAccept(SRV0, info, &len, &s2));
        CHK(len == 0);
        CHK_OK(vrpqChanAccept(s2, NULL, NULL, &c2));
        CHK(drain_ints(c2, 7000000u, 50) == 0);
        /* And nothing more will come on it. */
        VrpqChan *none;
        CHK(vrpqChanAccept(s2, NULL, NULL, &none) == -ECONNRESET);
        for (int i = 0; i < 3; i++)
                CHK_OK(vrpqChanDestroy(c[i]));
        CHK_OK(vrpqChanDestroy(c2));
        CHK_OK(vrpqSessionDestroy(s1));
        CHK_OK(vrpqSessionDestroy(s2));
        return 0;
}

static int clt_sessions(void *arg)
{
        VrpqSession *s1, *s2;
        VrpqChan *c[3], *c2;
        CHK_OK(vrpqSessionCreate(CLT, sess_info, sizeof(sess_info), &s1));
        CHK_OK(vrpqChanCreate(s1, chan_info, sizeof(chan_info), &c[0]));
        CHK_OK(vrpqChanCreate(s1, NULL, 0, &c[1]));
        CHK_OK(vrpqChanCreate(s1, "x", 1, &c[2]));
        /* Interleaved over the channels; each keeps its own order. */
        for (int k = 0; k < 100; k += 10)
                for (int i = 0; i < 3; i++)
                        CHK(post_ints(c[i], 1000000u * (unsigned)i + (unsigned)k, 10) == 0);
        CHK_OK(vrpqSessionCreate("vrpq-clt-vogl0", NULL, 0, &s2));
        CHK_OK(vrpqChanCreate(s2, NULL, 0, &c2));
        CHK(post_ints(c2, 7000000u, 50) == 0);
        CHK_OK(vrpqChanDestroy(c2));
        CHK_OK(vrpqSessionDestroy(s2));
        for (int i = 0; i < 3; i++)
                CHK_OK(vrpqChanDestroy(c[i]));
        CHK_OK(vrpqSessionDestroy(s1));
        return 0;
}

static void test_sessions_channels_info(void)
{
        run2(srv_sessions, "vm3", clt_sessions, NULL, 20000);
        assert_idle();
}

/* Bad arguments and names: clear errors, nothing created. */
static void test_bad_arguments(void)
{
        pvt_use_vm(&plat, "vm3");
        VrpqSession *s = (VrpqSession *)1;
        VrpqChan *c;
        static char big[VRPQ_INFO_MAX + 1];
        CU_ASSERT_EQUAL(vrpqSessionCreate("/dev/vrpq-clt-nothing0", NULL, 0, &s), -ENOENT);
        CU_ASSERT_PTR_NULL(s);
        CU_ASSERT_PTR_NOT_NULL(strstr(pvLastError(), "vrpq-clt-nothing0"));
        CU_ASSERT_EQUAL(vrpqSessionCreate(CLT, big, sizeof(big), &s), -E2BIG);
        CU_ASSERT_EQUAL(vrpqSessionCreate(CLT, NULL, 3, &s), -EINVAL);
        CU_ASSERT_EQUAL(vrpqSessionCreate(CLT, NULL, 0, NULL), -EINVAL);
        CU_ASSERT_EQUAL(vrpqChanCreate(NULL, NULL, 0, &c), -EINVAL);
        CU_ASSERT_EQUAL(vrpqPost(NULL, P_INT, NULL), -EINVAL);
        CU_ASSERT_EQUAL(vrpqSessionDestroy(NULL), -EINVAL);
        CU_ASSERT_EQUAL(vrpqChanDestroy(NULL), -EINVAL);
        /* A client session cannot accept channels. */
        CU_ASSERT_EQUAL_FATAL(vrpqSessionCreate(CLT, NULL, 0, &s), 0);
        CU_ASSERT_EQUAL(vrpqChanAccept(s, NULL, NULL, &c), -EINVAL);
        CU_ASSERT_EQUAL(vrpqChanCreate(s, big, sizeof(big), &c), -E2BIG);
        CU_ASSERT_EQUAL_FATAL(vrpqChanCreate(s, NULL, 0, &c), 0);
        VrpqReq *reqs[1];
        int avail;
        CU_ASSERT_EQUAL(vrpqReceive(c, reqs, 1, &avail), -EINVAL);
        CU_ASSERT_EQUAL(vrpqPost(c, VRPQ_PROC_ID(0, 1), NULL), -EINVAL);
        CU_ASSERT_PTR_NOT_NULL(strstr(pvLastError(), "group 0"));
        void *in;
        CU_ASSERT_EQUAL(vrpqParamAlloc(c, 8, 0, &in), 0);
        CU_ASSERT_EQUAL(vrpqPost(c, P_INT, (char *)in + 8), -EINVAL);
        CU_ASSERT_EQUAL(vrpqChanDestroy(c), 0);
        CU_ASSERT_EQUAL(vrpqSessionDestroy(s), 0);
        unsetenv("PVD_RUNTIME_DIR");
        assert_idle();
}

/* ---- two client VMs at once ------------------------------------------------------------ */

#define TWO_COUNT 20000

struct two_arg {
        const char *dev;
        const char *vm;
        int rc;
};

static void *srv_two_thread(void *p)
{
        struct two_arg *a = p;
        VrpqSession *s;
        VrpqChan *c;
        char info[16];
        size_t len = sizeof(info);
        a->rc = 1;
        if (vrpqSessionAccept(a->dev, info, &len, &s) || len != strlen(a->vm) + 1 || strcmp(info, a->vm) ||
            vrpqChanAccept(s, NULL, NULL, &c))
                return NULL;
        uint32_t base = strcmp(a->vm, "vm3") == 0 ? 3000000 : 5000000;
        a->rc = drain_ints(c, base, TWO_COUNT);
        vrpqChanDestroy(c);
        vrpqSessionDestroy(s);
        return NULL;
}

static int srv_two(void *arg)
{
        pthread_t t[2];
        struct two_arg a[2] = { { SRV0, "vm3", -1 }, { SRV1, "vm5", -1 } };
        for (int i = 0; i < 2; i++)
                CHK(pthread_create(&t[i], NULL, srv_two_thread, &a[i]) == 0);
        for (int i = 0; i < 2; i++)
                pthread_join(t[i], NULL);
        CHK(a[0].rc == 0);
        CHK(a[1].rc == 0);
        return 0;
}

static int clt_two(void *arg)
{
        const char *vm = arg;
        VrpqSession *s;
        VrpqChan *c;
        CHK_OK(vrpqSessionCreate(CLT, vm, strlen(vm) + 1, &s));
        CHK_OK(vrpqChanCreate(s, NULL, 0, &c));
        vt_set_flag(&sh->flag[vm[2] - '0'], 1);
        /* Both VMs are connected before either sends. */
        CHK(vt_wait_flag(&sh->flag[3], 1, 5000) == 0 && vt_wait_flag(&sh->flag[5], 1, 5000) == 0);
        CHK(post_ints(c, strcmp(vm, "vm3") == 0 ? 3000000 : 5000000, TWO_COUNT) == 0);
        CHK_OK(vrpqChanDestroy(c));
        CHK_OK(vrpqSessionDestroy(s));
        return 0;
}

static void test_two_client_vms(void)
{
        reset_shared();
        pid_t s = pvt_spawn(&plat, "vm2", srv_two, NULL);
        pid_t c3 = pvt_spawn(&plat, "vm3", clt_two, "vm3");
        pid_t c5 = pvt_spawn(&plat, "vm5", clt_two, "vm5");
        CU_ASSERT_EQUAL(pvt_wait(c3, 20000), 0);
        CU_ASSERT_EQUAL(pvt_wait(c5, 20000), 0);
        CU_ASSERT_EQUAL(pvt_wait(s, 20000), 0);
        assert_idle();
}

/* ---- every kind of request --------------------------------------------------------------- */

struct cb_state {
        int64_t ticks;
        int asked;
};

static int on_cb(void *ctx, nku32_f proc, void *in, void *out)
{
        struct cb_state *st = ctx;
        if (proc == CB_TICK) {
                if (!in || VRPQ_PARAM_READ(in, 0, nku32_f) != (nku32_f)st->ticks + 1)
                        return -EBADMSG;
                st->ticks++;
        } else if (proc == CB_ASK && out) {
                VRPQ_PARAM_WRITE(out, 0, nku64_f, (nku64_f)st->ticks * 10);
                st->asked++;
        } else {
                return -EBADMSG;
        }
        return 0;
}

static void *second_receiver(void *p)
{
        VrpqChan *c = p;
        VrpqReq *reqs[1];
        int avail;
        vt_sleep_ms(100);
        /* The main thread is blocked in vrpqReceive: nothing was posted
         * yet, the client waits for the flag. */
        sh->v[10] = vrpqReceiveTimeout(c, reqs, 1, &avail, 0);
        vt_set_flag(&sh->flag[0], 1);
        return NULL;
}

static int srv_kinds(void *arg)
{
        VrpqSession *s;
        VrpqChan *c;
        VrpqReq *reqs[8];
        int avail, rc;
        CHK_OK(vrpqSessionAccept(SRV0, NULL, NULL, &s));
        CHK_OK(vrpqChanAccept(s, NULL, NULL, &c));
        CHK(vrpqReceiveTimeout(c, reqs, 8, &avail, 50) == -ETIMEDOUT);
        pthread_t t;
        CHK(pthread_create(&t, NULL, second_receiver, c) == 0);
        int64_t received = 0;
        while ((rc = vrpqReceive(c, reqs, 8, &avail)) == 0) {
                CHK(avail >= 1 && avail <= 8);
                for (int i = 0; i < avail; i++) {
                        VrpqReq *r = reqs[i];
                        void *in = vrpqParamInGet(r, NULL), *out = vrpqParamOutGet(r, NULL);
                        switch (r->procId) {
                        case P_INT:
                                CHK(in && vrpqParamInSize(r) == 4 && !out);
                                CHK(vrpqReply(c, r) == 0); /* not sync: accepted, ignored */
                                break;
                        case P_DOUBLE:
                                CHK(r->flags & VRPQ_REQ_SYNC);
                                CHK(in && out && vrpqParamOutSize(r) == 8);
                                VRPQ_PARAM_WRITE(out, 0, nku64_f, 2 * (nku64_f)VRPQ_PARAM_READ(in, 0, nku32_f));
                                CHK_OK(vrpqReply(c, r));
                                break;
                        case P_LATE:
                                CHK(r->flags & VRPQ_REQ_SYNC);
                                VRPQ_PARAM_WRITE(out, 0, nku32_f, 77);
                                break;
                        case P_NOPARAM:
                                CHK(!in && !out && vrpqParamInSize(r) == 0);
                                break;
                        case P_COUNT:
                                VRPQ_PARAM_WRITE(out, 0, int64_t, received);
                                CHK_OK(vrpqReply(c, r));
                                break;
                        case P_NESTED: {
                                void *cin, *cout;
                                CHK_OK(vrpqParamAlloc(c, 0, 8, &cin));
                                CHK_OK(vrpqCallbackPerform(c, CB_ASK, cin, &cout, 1));
                                VRPQ_PARAM_WRITE(out, 0, nku64_f, VRPQ_PARAM_READ(cout, 0, nku64_f) + 1);
                                CHK_OK(vrpqReply(c, r));
                                break;
                        }
                        case P_CBS: {
                                nku32_f n = VRPQ_PARAM_READ(in, 0, nku32_f);
                                void *cin, *cout;
                                for (nku32_f k = 1; k <= n; k++) {
                                        CHK_OK(vrpqParamAlloc(c, 4, 0, &cin));
                                        VRPQ_PARAM_WRITE(cin, 0, nku32_f, k);
                                        CHK_OK(vrpqCallbackPerform(c, CB_TICK, cin, NULL, 0));
                                }
                                CHK_OK(vrpqParamAlloc(c, 0, 8, &cin));
                                CHK_OK(vrpqCallbackPerform(c, CB_ASK, cin, &cout, 1));
                                CHK(cout && VRPQ_PARAM_READ(cout, 0, nku64_f) == (nku64_f)n * 10);
                                break;
                        }
                        default:
                                CHK(0);
                        }
                        received++;
                }
        }
        CHK(rc == -ECONNRESET);
        pthread_join(t, NULL);
        CHK(sh->v[10] == -EALREADY);
        sh->v[0] = received;
        CHK_OK(vrpqChanDestroy(c));
        CHK_OK(vrpqSessionDestroy(s));
        return 0;
}

static int clt_kinds(void *arg)
{
        VrpqSession *s;
        VrpqChan *c;
        void *in, *out;
        int64_t sent = 0;
        struct cb_state cb = { 0 };
        CHK_OK(vrpqSessionCreate(CLT, NULL, 0, &s));
        CHK_OK(vrpqChanCreate(s, NULL, 0, &c));
        CHK(vt_wait_flag(&sh->flag[0], 1, 5000) == 0);
        /* Asynchronous: posts, then one notify; post-and-notify. */
        CHK(post_ints(c, 0, 30) == 0);
        sent += 30;
        /* The notify populated the ring's pages ahead of the producer,
         * which nobody has written yet. */
        unsigned char res[16];
        CHK(mincore((uint8_t *)c->tx.ring + 4096, sizeof(res) * 4096, res) == 0);
        for (unsigned k = 0; k < sizeof(res); k++)
                CHK(res[k] & 1);
        /* The emu backend's xIRQs are eventfds: one read empties them. */
        CHK(c->wait_eventfd);
        /* Synchronous, with output parameters. */
        for (nku32_f i = 0; i < 200; i++, sent++) {
                CHK_OK(vrpqParamAlloc(c, 4, 8, &in));
                VRPQ_PARAM_WRITE(in, 0, nku32_f, i + 0x80000000u);
                CHK_OK(vrpqCall(c, P_DOUBLE, in, &out));
                CHK(VRPQ_PARAM_READ(out, 0, nku64_f) == 2 * (nku64_f)(i + 0x80000000u));
        }
        /* Completed by the server's next vrpqReceive, without vrpqReply. */
        CHK_OK(vrpqParamAlloc(c, 0, 4, &in));
        CHK_OK(vrpqCall(c, P_LATE, in, &out));
        CHK(VRPQ_PARAM_READ(out, 0, nku32_f) == 77);
        sent++;
        /* Without parameters, asynchronous and synchronous. */
        CHK_OK(vrpqPostAndNotify(c, P_NOPARAM, NULL));
        out = (void *)1;
        CHK_OK(vrpqCall(c, P_NOPARAM, NULL, &out));
        CHK(out == NULL);
        sent += 2;
        /* A call returns after every request posted before it was received. */
        for (int k = 0; k < 1000; k++, sent++) {
                CHK_OK(vrpqParamAlloc(c, 4, 0, &in));
                VRPQ_PARAM_WRITE(in, 0, nku32_f, (nku32_f)k);
                CHK_OK(vrpqPost(c, P_INT, in));
        }
        CHK_OK(vrpqParamAlloc(c, 0, 8, &in));
        CHK_OK(vrpqCall(c, P_COUNT, in, &out));
        CHK(VRPQ_PARAM_READ(out, 0, int64_t) == sent);
        sent++;
        /* Callbacks: asynchronous ticks, then a synchronous question. */
        CHK_OK(vrpqParamAlloc(c, 4, 0, &in));
        VRPQ_PARAM_WRITE(in, 0, nku32_f, 50);
        CHK_OK(vrpqPostAndNotify(c, P_CBS, in));
        sent++;
        while (!cb.asked)
                CHK_OK(vrpqCallbackHandle(c, on_cb, &cb, 5000));
        CHK(cb.ticks == 50);
        /* The event-loop way: nothing there arms the fd; a callback makes
         * it readable. */
        int fd;
        CHK_OK(vrpqChanFdGet(c, &fd));
        CHK(vrpqCallbackHandle(c, on_cb, &cb, 0) == -ETIMEDOUT);
        cb.ticks = cb.asked = 0;
        CHK_OK(vrpqParamAlloc(c, 4, 0, &in));
        VRPQ_PARAM_WRITE(in, 0, nku32_f, 1);
        CHK_OK(vrpqPostAndNotify(c, P_CBS, in));
        sent++;
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        CHK(poll(&pf, 1, 5000) == 1);
        CHK_OK(vrpqCallbackHandle(c, on_cb, &cb, 0));
        /* the question (sync) may still be on its way */
        while (!cb.asked)
                CHK_OK(vrpqCallbackHandle(c, on_cb, &cb, 5000));
        CHK(cb.ticks == 1);
        /* A synchronous request whose server calls back (synchronously)
         * before answering: the handler runs inside vrpqCall. */
        cb.ticks = 4;
        cb.asked = 0;
        CHK_OK(vrpqCallbackHandlerSet(c, on_cb, &cb));
        CHK_OK(vrpqParamAlloc(c, 0, 8, &in));
        CHK_OK(vrpqCall(c, P_NESTED, in, &out));
        CHK(cb.asked == 1 && VRPQ_PARAM_READ(out, 0, nku64_f) == 41);
        sent++;
        sh->v[1] = sent;
        CHK_OK(vrpqChanDestroy(c));
        CHK_OK(vrpqSessionDestroy(s));
        return 0;
}

static void test_request_kinds(void)
{
        reset_shared();
        run2(srv_kinds, "vm3", clt_kinds, NULL, 30000);
        CU_ASSERT(sh->v[1] > 0);
        CU_ASSERT_EQUAL(sh->v[0], sh->v[1]);
        assert_idle();
}

/* ---- full ring, full port, too big, no room for a channel ----------------------------------- */

static int srv_full(void *arg)
{
        VrpqSession *s;
        VrpqChan *c;
        VrpqReq *reqs[32];
        int avail, rc;
        CHK_OK(vrpqSessionAccept(SRV_SM, NULL, NULL, &s));
        CHK_OK(vrpqChanAccept(s, NULL, NULL, &c));
        unsigned n = 0;
        /* Let the client fill the ring (16 slots), then the port (4 KiB). */
        for (int phase = 1; phase <= 2; phase++) {
                CHK(vt_wait_flag(&sh->flag[1], phase, 5000) == 0);
                vt_sleep_ms(300);
                sh->v[2 + phase] = pvt_now_ms();
                CHK_OK(vrpqReceive(c, reqs, 32, &avail));
                for (int i = 0; i < avail; i++, n++)
                        CHK(reqs[i]->procId == VRPQ_PROC_ID(9, (n % 100)));
        }
        while ((rc = vrpqReceive(c, reqs, 32, &avail)) == 0)
                for (int i = 0; i < avail; i++, n++)
                        CHK(reqs[i]->procId == VRPQ_PROC_ID(9, (n % 100)));
        CHK(rc == -ECONNRESET);
        CHK(n == 17 + 5);
        vrpqChanDestroy(c);
        vrpqSessionDestroy(s);
        return 0;
}

static int clt_full(void *arg)
{
        VrpqSession *s;
        VrpqChan *c, *c2, *c3;
        void *in;
        unsigned n = 0;
        CHK_OK(vrpqSessionCreate(CLT_SM, NULL, 0, &s));
        CHK_OK(vrpqChanCreate(s, NULL, 0, &c));
        /* Larger than the port (4 KiB here), larger than PMEM: -E2BIG at once. */
        CHK(vrpqParamAlloc(c, 4096, 8, &in) == -E2BIG);
        CHK(strstr(pvLastError(), "port of 4096 bytes") != NULL);
        CHK(vrpqParamAlloc(c, 5u << 20, 0, &in) == -E2BIG);
        /* Ring: 16 requests fit, the 17th waits for the server. */
        for (; n < 16; n++)
                CHK_OK(vrpqPost(c, VRPQ_PROC_ID(9, n % 100), NULL));
        vt_set_flag(&sh->flag[1], 1);
        CHK_OK(vrpqPost(c, VRPQ_PROC_ID(9, n % 100), NULL));
        n++;
        CHK(pvt_now_ms() >= sh->v[3]);
        CHK(sh->v[3] != 0);
        /* Port: four blocks of 1 KiB fill it; the fifth waits until the
         * server's next vrpqReceive releases them. */
        for (int k = 0; k < 4; k++, n++) {
                CHK_OK(vrpqParamAlloc(c, 1000, 24, &in));
                CHK_OK(vrpqPostAndNotify(c, VRPQ_PROC_ID(9, n % 100), in));
        }
        vt_set_flag(&sh->flag[1], 2);
        CHK_OK(vrpqParamAlloc(c, 1024, 0, &in));
        CHK(sh->v[4] != 0 && pvt_now_ms() >= sh->v[4]);
        CHK_OK(vrpqPostAndNotify(c, VRPQ_PROC_ID(9, n % 100), in));
        /* vsmall has room for two channels (64 slots, 16 KiB): the third
         * is refused, naming what to raise. */
        CHK_OK(vrpqChanCreate(s, NULL, 0, &c2));
        CHK(vrpqChanCreate(s, NULL, 0, &c3) == -ENOSPC);
        CHK(strstr(pvLastError(), "vrpq-reqs") != NULL);
        CHK_OK(vrpqChanDestroy(c2));
        /* Released: there is room again. */
        for (int tries = 0; vrpqChanCreate(s, NULL, 0, &c2) != 0; tries++) {
                CHK(tries < 100);
                vt_sleep_ms(10);
        }
        CHK_OK(vrpqChanDestroy(c2));
        CHK_OK(vrpqChanDestroy(c));
        CHK_OK(vrpqSessionDestroy(s));
        return 0;
}

static void test_full_ring_and_port(void)
{
        reset_shared();
        run2(srv_full, "vm3", clt_full, NULL, 20000);
        assert_idle();
}

/* VRPQ_SESSIONS_MAX sessions per vlink, then -EMFILE; then room again. */
static int clt_limit(void *arg)
{
        static VrpqSession *s[VRPQ_SESSIONS_MAX + 1];
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 4096) {
                rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
                setrlimit(RLIMIT_NOFILE, &rl);
        }
        int i;
        for (i = 0; i < VRPQ_SESSIONS_MAX; i++)
                CHK_OK(vrpqSessionCreate(CLT_SM, NULL, 0, &s[i]));
        CHK(vrpqSessionCreate(CLT_SM, NULL, 0, &s[i]) == -EMFILE);
        CHK(strstr(pvLastError(), "1024 sessions") != NULL);
        for (i = 0; i < VRPQ_SESSIONS_MAX; i++)
                CHK_OK(vrpqSessionDestroy(s[i]));
        for (int tries = 0; vrpqSessionCreate(CLT_SM, NULL, 0, &s[0]) != 0; tries++) {
                CHK(tries < 100);
                vt_sleep_ms(10);
        }
        CHK_OK(vrpqSessionDestroy(s[0]));
        return 0;
}

static void test_session_limit(void)
{
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max < 1100) {
                pvt_skip("RLIMIT_NOFILE's hard limit is %lu; %d sessions need 1100 descriptors",
                         (unsigned long)rl.rlim_max, VRPQ_SESSIONS_MAX);
                return;
        }
        pid_t c = pvt_spawn(&plat, "vm3", clt_limit, NULL);
        CU_ASSERT_EQUAL(pvt_wait(c, 30000), 0);
        assert_idle();
}

/* ---- pvctl stat vrpq ------------------------------------------------------------------------- */

#define get vt_get

static uint64_t getu(const msgpack_object *m, const char *key)
{
        const msgpack_object *v = get(m, key);
        return v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? v->via.u64 : (uint64_t)-1;
}

/* The channel statistics of vm's vlink link (first session, first channel). */
static int chan_stat(const char *vm, const char *link, msgpack_zone *z, const msgpack_object **ch,
                     const msgpack_object **vstat)
{
        msgpack_object doc;
        if (pvt_stat(&plat, vm, "vrpq", z, &doc) < 0)
                return -1;
        const msgpack_object *vls = get(&doc, "vlinks");
        for (uint32_t i = 0; vls && i < vls->via.array.size; i++) {
                const msgpack_object *vl = &vls->via.array.ptr[i], *name = get(vl, "name");
                if (!name || name->via.str.size != strlen(link) || memcmp(name->via.str.ptr, link, strlen(link)))
                        continue;
                *vstat = get(vl, "stat");
                const msgpack_object *ss = get(*vstat, "sessions");
                if (!ss || ss->via.array.size < 1)
                        return -1;
                const msgpack_object *cs = get(&ss->via.array.ptr[0], "channels");
                if (!cs || cs->via.array.size < 1)
                        return -1;
                *ch = &cs->via.array.ptr[0];
                return 0;
        }
        return -1;
}

static int srv_stat(void *arg)
{
        VrpqSession *s;
        VrpqChan *c;
        VrpqReq *reqs[256];
        int avail, rc;
        CHK_OK(vrpqSessionAccept(SRV0, NULL, NULL, &s));
        CHK_OK(vrpqChanAccept(s, NULL, NULL, &c));
        vt_set_flag(&sh->flag[2], 1);
        CHK(vt_wait_flag(&sh->flag[2], 2, 10000) == 0);
        while ((rc = vrpqReceive(c, reqs, 256, &avail)) == 0)
                ;
        CHK(rc == -ECONNRESET);
        vrpqChanDestroy(c);
        vrpqSessionDestroy(s);
        return 0;
}

static int clt_stat(void *arg)
{
        VrpqSession *s;
        VrpqChan *c;
        void *in;
        CHK_OK(vrpqSessionCreate(CLT, NULL, 0, &s));
        CHK_OK(vrpqChanCreate(s, NULL, 0, &c));
        CHK(vt_wait_flag(&sh->flag[2], 1, 5000) == 0);
        for (int i = 0; i < 100; i++) {
                CHK_OK(vrpqParamAlloc(c, 12, 0, &in));
                CHK_OK(vrpqPostAndNotify(c, P_INT, in));
        }
        vt_set_flag(&sh->flag[3], 1);
        CHK(vt_wait_flag(&sh->flag[3], 2, 20000) == 0);
        CHK_OK(vrpqChanDestroy(c));
        CHK_OK(vrpqSessionDestroy(s));
        return 0;
}

static void test_stat(void)
{
        reset_shared();
        pid_t sp = pvt_spawn(&plat, "vm2", srv_stat, NULL);
        pid_t cp = pvt_spawn(&plat, "vm3", clt_stat, NULL);
        CU_ASSERT_EQUAL_FATAL(vt_wait_flag(&sh->flag[3], 1, 5000), 0);
        /* 100 requests of 16 bytes of parameters wait in the ring. */
        const char *vms[] = { "vm2", "vm3" };
        for (int i = 0; i < 2; i++) {
                msgpack_zone z;
                msgpack_zone_init(&z, 4096);
                const msgpack_object *ch = NULL, *vs = NULL;
                CU_ASSERT_EQUAL(chan_stat(vms[i], "vm2-vm3-vogl0", &z, &ch, &vs), 0);
                if (ch) {
                        CU_ASSERT_EQUAL(getu(ch, "ring"), 16384);
                        CU_ASSERT_EQUAL(getu(ch, "stacked"), 100);
                        CU_ASSERT_EQUAL(getu(ch, "posted"), 100);
                        CU_ASSERT_EQUAL(getu(ch, "received"), 0);
                        CU_ASSERT_EQUAL(getu(ch, "port"), 262144);
                        CU_ASSERT_EQUAL(getu(ch, "pmem_used"), 1600);
                        CU_ASSERT(getu(ch, "xirqs_sent") + getu(ch, "xirqs_suppressed") >= 100);
                        CU_ASSERT_EQUAL(getu(vs, "channels"), 1);
                        CU_ASSERT_EQUAL(getu(vs, "pmem"), 2u << 20);
                        CU_ASSERT_EQUAL(getu(vs, "stacked"), 100);
                }
                msgpack_zone_destroy(&z);
        }
        const char *pvctl = getenv("PVCTL_BIN");
        static char out[65536], err[4096];
        const char *a1[] = { pvctl, "stat", "vrpq", NULL };
        CU_ASSERT_EQUAL(pvt_run(&plat, "vm2", a1, out, sizeof(out), err, sizeof(err), 5000), 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "vm2-vm3-vogl0"));
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "vm2-vm5-vogl1"));
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "100/16384"));
        const char *a2[] = { pvctl, "stat", "vrpq", "--json", NULL };
        CU_ASSERT_EQUAL(pvt_run(&plat, "vm3", a2, out, sizeof(out), err, sizeof(err), 5000), 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"stacked\": 100"));
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"pmem_used\": 1600"));
        /* --watch: a line per interval with the occupancy plot (for 1.5 s:
         * a busy machine may start pvctl late). */
        const char *a3[] = { pvctl, "stat", "vrpq", "--watch", "0.1", NULL };
        pvt_run(&plat, "vm3", a3, out, sizeof(out), err, sizeof(err), 1500);
        int lines = 0;
        for (const char *p = out; (p = strstr(p, "vm2-vm3-vogl0")); p++)
                lines++;
        CU_ASSERT(lines >= 3);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "|"));

        vt_set_flag(&sh->flag[2], 2);
        /* Received: nothing stacked; the peak stays. */
        msgpack_zone z;
        msgpack_zone_init(&z, 4096);
        const msgpack_object *ch = NULL, *vs = NULL;
        long long deadline = pvt_now_ms() + 5000;
        while (pvt_now_ms() < deadline) {
                msgpack_zone_destroy(&z);
                msgpack_zone_init(&z, 4096);
                if (chan_stat("vm2", "vm2-vm3-vogl0", &z, &ch, &vs) == 0 && getu(ch, "received") == 100)
                        break;
                vt_sleep_ms(20);
        }
        CU_ASSERT_EQUAL(getu(ch, "received"), 100);
        CU_ASSERT_EQUAL(getu(ch, "stacked"), 0);
        CU_ASSERT_EQUAL(getu(ch, "stacked_peak"), 100);
        CU_ASSERT_EQUAL(getu(ch, "pmem_peak"), 1600);
        msgpack_zone_destroy(&z);
        vt_set_flag(&sh->flag[3], 2);
        CU_ASSERT_EQUAL(pvt_wait(cp, 10000), 0);
        CU_ASSERT_EQUAL(pvt_wait(sp, 10000), 0);
        /* Everything freed on both ends. */
        assert_idle();
}

static const struct pvt_test tests[] = {
        { "sessions, channels and their info", test_sessions_channels_info },
        { "bad arguments", test_bad_arguments },
        { "two client VMs at once", test_two_client_vms },
        { "every kind of request, callbacks", test_request_kinds },
        { "full ring and port, -E2BIG, -ENOSPC", test_full_ring_and_port },
        { "session limit: -EMFILE", test_session_limit },
        { "pvctl stat vrpq", test_stat },
        { NULL, NULL },
};

static const struct pvt_suite suites[] = {
        { "vrpq", suite_init, suite_fini, tests, 0 },
        { NULL, NULL, NULL, NULL, 0 },
};

int main(int argc, char **argv)
{
        return pvt_main(argc, argv, suites);
}

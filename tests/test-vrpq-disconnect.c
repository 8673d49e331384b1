/* VRPQ disconnections in every direction, across real pvd processes: the
 * client program or the server program killed, the server destroying its
 * channel or session, the client destroying its session, either VM's pvd
 * killed. Every blocked or later call on the other side returns
 * -ECONNRESET promptly, and both pvds free what the dead side held (their
 * statistics are empty and their fd counts back where they were). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <CUnit/CUnit.h>

#include "pvt-run.h"
#include "vrpq-test.h"

#define SRV "vrpq-srv-vogl0"
#define CLT "vrpq-clt-vogl0"
#define SRV_SM "vrpq-srv-vsmall0"
#define CLT_SM "vrpq-clt-vsmall0"
#define P_ASYNC VRPQ_PROC_ID(2, 1)
#define P_SYNC  VRPQ_PROC_ID(2, 2)
#define PROMPT_MS 2000          /* "promptly" */

static struct pvt_platform plat;
static int fds_vm2, fds_vm3;
static struct vt_shared *sh;

/* Shared slots. */
enum { F_READY, F_GO, F_DONE, F_READY2 };
enum {
        V_RC, V_T,              /* the main waiter: its return and when */
        V_RC2, V_T2,            /* a second waiter */
        V_RC3,                  /* later calls */
        V_RC4,                  /* a channel created after the end */
        V_DESTROY_T,            /* when the client destroyed its session */
        V_FULL_RC, V_FULL_T,    /* a client blocked on a full ring */
        V_WAIT_RC, V_WAIT_T,    /* a server program waiting for a session */
        V_CB_RC, V_CB_T, V_CB_POST, /* a client waiting for callbacks */
        V_GO2_T,                /* when the client let the server destroy its session */
};

static int start_vm(const char *vm)
{
        if (pvt_pvd_start(&plat, vm, NULL) < 0)
                return -1;
        return 0;
}

static int suite_init(void)
{
        sh = vt_shared_new();
        if (!sh || pvt_platform_init(&plat, "test-2clients") < 0 || start_vm("vm2") < 0 || start_vm("vm3") < 0 ||
            pvt_wait_vlink(&plat, "vm3", NULL, "ON", 5000) < 0)
                goto fail;
        vt_sleep_ms(50); /* the status queries' connections are closed */
        fds_vm2 = pvt_fd_count_of(pvt_vm(&plat, "vm2")->pid);
        fds_vm3 = pvt_fd_count_of(pvt_vm(&plat, "vm3")->pid);
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

static void reset(void)
{
        memset((void *)sh, 0, sizeof(*sh));
}

/* Both pvds hold nothing any more, and no fd more than at the start. */
static void assert_freed(void)
{
        long long deadline = pvt_now_ms() + 3000;
        int h2, h3, f2, f3;
        do {
                /* Counted before asking for statistics: pvd closes the
                 * control connection of a query a moment after it. */
                vt_sleep_ms(20);
                f2 = pvt_fd_count_of(pvt_vm(&plat, "vm2")->pid);
                f3 = pvt_fd_count_of(pvt_vm(&plat, "vm3")->pid);
                h2 = vt_held(&plat, "vm2");
                h3 = vt_held(&plat, "vm3");
        } while ((h2 || h3 || f2 != fds_vm2 || f3 != fds_vm3) && pvt_now_ms() < deadline);
        CU_ASSERT_EQUAL(h2, 0);
        CU_ASSERT_EQUAL(h3, 0);
        CU_ASSERT_EQUAL(f2, fds_vm2);
        CU_ASSERT_EQUAL(f3, fds_vm3);
        if (f2 != fds_vm2 || f3 != fds_vm3) {
                char cmd[256];
                snprintf(cmd, sizeof(cmd), "ls -l /proc/%d/fd /proc/%d/fd >&2", (int)pvt_vm(&plat, "vm2")->pid,
                         (int)pvt_vm(&plat, "vm3")->pid);
                if (system(cmd) != 0)
                        fprintf(stderr, "(cannot list the fds)\n");
        }
}

static void assert_prompt(int vrc, int vt, long long t0)
{
        CU_ASSERT_EQUAL(sh->v[vrc], -ECONNRESET);
        CU_ASSERT(sh->v[vt] >= t0 && sh->v[vt] - t0 < PROMPT_MS);
}

/* ---- pieces of programs ------------------------------------------------------------------ */

static int open_client(const char *dev, VrpqSession **s, VrpqChan **c)
{
        CHK_OK(vrpqSessionCreate(dev, NULL, 0, s));
        CHK_OK(vrpqChanCreate(*s, NULL, 0, c));
        return 0;
}

static int open_server(const char *dev, VrpqSession **s, VrpqChan **c)
{
        CHK_OK(vrpqSessionAccept(dev, NULL, NULL, s));
        CHK_OK(vrpqChanAccept(*s, NULL, NULL, c));
        return 0;
}

/* A server that receives until the end, recording how it ended. */
static int record_receive(VrpqChan *c, int vrc, int vt)
{
        VrpqReq *reqs[16];
        int avail, rc;
        while ((rc = vrpqReceive(c, reqs, 16, &avail)) == 0)
                ;
        sh->v[vt] = pvt_now_ms();
        sh->v[vrc] = rc;
        return 0;
}

static void *accept_thread(void *p)
{
        VrpqChan *c;
        int rc = vrpqChanAccept(p, NULL, NULL, &c);
        sh->v[V_T2] = pvt_now_ms();
        sh->v[V_RC2] = rc;
        if (rc == 0)
                vrpqChanDestroy(c);
        return NULL;
}

/* Client that posts a few requests and then idles (killed by the test). */
static int clt_idle(void *arg)
{
        VrpqSession *s;
        VrpqChan *c;
        CHK(open_client(CLT, &s, &c) == 0);
        for (int i = 0; i < 10; i++)
                CHK_OK(vrpqPostAndNotify(c, P_ASYNC, NULL));
        vt_set_flag(&sh->flag[F_READY2], 1);
        for (;;)
                pause();
}

/* Server: receives until the end, with a second thread in vrpqChanAccept. */
static int srv_receive(void *arg)
{
        VrpqSession *s;
        VrpqChan *c;
        CHK(open_server(SRV, &s, &c) == 0);
        pthread_t t;
        CHK(pthread_create(&t, NULL, accept_thread, s) == 0);
        vt_set_flag(&sh->flag[F_READY], 1);
        record_receive(c, V_RC, V_T);
        pthread_join(t, NULL);
        /* Later calls too. */
        VrpqReq *reqs[1];
        int avail;
        sh->v[V_RC3] = vrpqReceiveTimeout(c, reqs, 1, &avail, 0);
        vrpqChanDestroy(c);
        vrpqSessionDestroy(s);
        return 0;
}

/* The client program dies: the server blocked in vrpqReceive and in
 * vrpqChanAccept learns it. */
static void test_client_program_killed(void)
{
        reset();
        pid_t sp = pvt_spawn(&plat, "vm2", srv_receive, NULL);
        pid_t cp = pvt_spawn(&plat, "vm3", clt_idle, NULL);
        CU_ASSERT_EQUAL_FATAL(vt_wait_flag(&sh->flag[F_READY2], 1, 5000), 0);
        CU_ASSERT_EQUAL_FATAL(vt_wait_flag(&sh->flag[F_READY], 1, 5000), 0);
        vt_sleep_ms(100);
        long long t0 = pvt_now_ms();
        pvt_kill(cp, SIGKILL);
        CU_ASSERT_EQUAL(pvt_wait(cp, 5000), 128 + SIGKILL);
        CU_ASSERT_EQUAL(pvt_wait(sp, 5000), 0);
        assert_prompt(V_RC, V_T, t0);
        assert_prompt(V_RC2, V_T2, t0);
        CU_ASSERT_EQUAL(sh->v[V_RC3], -ECONNRESET);
        assert_freed();
}

/* A server that takes one synchronous request and never answers. */
static int srv_hold(void *arg)
{
        VrpqSession *s;
        VrpqChan *c;
        VrpqReq *reqs[4];
        int avail;
        int mode = (int)(intptr_t)arg;
        CHK(open_server(mode == 3 ? SRV_SM : SRV, &s, &c) == 0);
        if (mode != 3) {
                CHK_OK(vrpqReceive(c, reqs, 4, &avail));
                CHK(reqs[avail - 1]->procId == P_SYNC);
        }
        vt_inc_flag(&sh->flag[F_READY]);
        CHK(vt_wait_flag(&sh->flag[F_GO], 1, 10000) == 0);
        if (mode == 1) {
                /* Destroy the channel, then (later) the session. */
                CHK_OK(vrpqChanDestroy(c));
                CHK(vt_wait_flag(&sh->flag[F_GO], 2, 10000) == 0);
                CHK_OK(vrpqSessionDestroy(s));
                return 0;
        }
        for (;;)
                pause();
}

struct cbwait {
        VrpqChan *c;
        int rc;
        long long t;
};

static int never(void *ctx, nku32_f proc, void *in, void *out)
{
        return 0;
}

static void *cb_thread(void *p)
{
        struct cbwait *w = p;
        w->rc = vrpqCallbackHandle(w->c, never, NULL, -1);
        w->t = pvt_now_ms();
        return NULL;
}

/* Client blocked in vrpqCall (and, on a second channel, in
 * vrpqCallbackHandle from another thread). */
static int clt_call(void *arg)
{
        VrpqSession *s;
        VrpqChan *c, *c2;
        void *in;
        int mode = (int)(intptr_t)arg;
        CHK(open_client(CLT, &s, &c) == 0);
        CHK_OK(vrpqChanCreate(s, NULL, 0, &c2));
        struct cbwait w = { .c = c2 };
        pthread_t t;
        CHK(pthread_create(&t, NULL, cb_thread, &w) == 0);
        CHK_OK(vrpqParamAlloc(c, 4, 4, &in));
        int rc = vrpqCall(c, P_SYNC, in, NULL);
        sh->v[V_T] = pvt_now_ms();
        sh->v[V_RC] = rc;
        /* Every later call on the channel. */
        sh->v[V_RC3] = vrpqPost(c, P_ASYNC, NULL) == -ECONNRESET && vrpqParamAlloc(c, 4, 0, &in) == -ECONNRESET &&
                       vrpqCall(c, P_SYNC, NULL, NULL) == -ECONNRESET && vrpqNotify(c) == -ECONNRESET;
        if (mode == 1) {
                /* The channel ended, the session not yet: c2 still works. */
                CHK(vrpqPostAndNotify(c2, P_ASYNC, NULL) == 0);
                sh->v[V_GO2_T] = pvt_now_ms();
                vt_set_flag(&sh->flag[F_GO], 2);
        }
        pthread_join(t, NULL);
        sh->v[V_T2] = w.t;
        sh->v[V_RC2] = w.rc;
        VrpqChan *c3;
        sh->v[V_RC4] = vrpqChanCreate(s, NULL, 0, &c3);
        vrpqChanDestroy(c2);
        vrpqChanDestroy(c);
        vrpqSessionDestroy(s);
        return 0;
}

/* The server program dies while the client waits in vrpqCall. */
static void test_server_program_killed(void)
{
        reset();
        pid_t sp = pvt_spawn(&plat, "vm2", srv_hold, (void *)0);
        pid_t cp = pvt_spawn(&plat, "vm3", clt_call, (void *)0);
        CU_ASSERT_EQUAL_FATAL(vt_wait_flag(&sh->flag[F_READY], 1, 5000), 0);
        vt_sleep_ms(100);
        long long t0 = pvt_now_ms();
        pvt_kill(sp, SIGKILL);
        CU_ASSERT_EQUAL(pvt_wait(sp, 5000), 128 + SIGKILL);
        CU_ASSERT_EQUAL(pvt_wait(cp, 5000), 0);
        assert_prompt(V_RC, V_T, t0);
        assert_prompt(V_RC2, V_T2, t0);
        CU_ASSERT_EQUAL(sh->v[V_RC3], 1);
        CU_ASSERT_EQUAL(sh->v[V_RC4], -ECONNRESET);
        assert_freed();
}

/* The server destroys the channel (the client's call returns), then the
 * session (the client's other channel and the session end). */
static void test_server_destroys(void)
{
        reset();
        pid_t sp = pvt_spawn(&plat, "vm2", srv_hold, (void *)1);
        pid_t cp = pvt_spawn(&plat, "vm3", clt_call, (void *)1);
        CU_ASSERT_EQUAL_FATAL(vt_wait_flag(&sh->flag[F_READY], 1, 5000), 0);
        vt_sleep_ms(100);
        long long t0 = pvt_now_ms();
        vt_set_flag(&sh->flag[F_GO], 1);
        CU_ASSERT_EQUAL(vt_wait_flag(&sh->flag[F_GO], 2, 5000), 0);
        CU_ASSERT_EQUAL(pvt_wait(sp, 5000), 0);
        CU_ASSERT_EQUAL(pvt_wait(cp, 5000), 0);
        assert_prompt(V_RC, V_T, t0);
        assert_prompt(V_RC2, V_T2, sh->v[V_GO2_T]);
        CU_ASSERT_EQUAL(sh->v[V_RC3], 1);
        CU_ASSERT_EQUAL(sh->v[V_RC4], -ECONNRESET);
        assert_freed();
}

/* The client destroys its session: the server drains what was posted, then
 * its vrpqReceive and vrpqChanAccept return -ECONNRESET. */
static int clt_destroy(void *arg)
{
        VrpqSession *s;
        VrpqChan *c;
        CHK(open_client(CLT, &s, &c) == 0);
        CHK(vt_wait_flag(&sh->flag[F_READY], 1, 5000) == 0);
        vt_sleep_ms(100);
        for (int i = 0; i < 10; i++)
                CHK_OK(vrpqPost(c, P_ASYNC, NULL));
        sh->v[V_DESTROY_T] = pvt_now_ms();
        CHK_OK(vrpqSessionDestroy(s));
        /* The channel's handle outlives its session: it reports the end. */
        CHK(vrpqPost(c, P_ASYNC, NULL) == -ECONNRESET);
        CHK_OK(vrpqChanDestroy(c));
        return 0;
}

static void test_client_destroys_session(void)
{
        reset();
        pid_t sp = pvt_spawn(&plat, "vm2", srv_receive, NULL);
        pid_t cp = pvt_spawn(&plat, "vm3", clt_destroy, NULL);
        CU_ASSERT_EQUAL(pvt_wait(cp, 5000), 0);
        CU_ASSERT_EQUAL(pvt_wait(sp, 5000), 0);
        assert_prompt(V_RC, V_T, sh->v[V_DESTROY_T]);
        assert_prompt(V_RC2, V_T2, sh->v[V_DESTROY_T]);
        assert_freed();
}

/* The client VM's pvd is killed: the server program learns it at once,
 * and so does the client program (its pvd is gone). */
static int clt_wait_cb(void *arg)
{
        VrpqSession *s;
        VrpqChan *c;
        CHK(open_client(CLT, &s, &c) == 0);
        vt_set_flag(&sh->flag[F_READY2], 1);
        int rc = vrpqCallbackHandle(c, never, NULL, -1);
        sh->v[V_CB_T] = pvt_now_ms();
        sh->v[V_CB_RC] = rc;
        sh->v[V_CB_POST] = vrpqPost(c, P_ASYNC, NULL);
        vrpqChanDestroy(c);
        vrpqSessionDestroy(s);
        return 0;
}

static void restart(const char *vm)
{
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, vm, NULL), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm3", "vm2-vm3-vogl0", "ON", 5000), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm2", "vm2-vm3-vogl0", "ON", 5000), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm2", "vm2-vm3-vsmall0", "ON", 5000), 0);
        vt_sleep_ms(50);
        if (strcmp(vm, "vm2") == 0)
                fds_vm2 = pvt_fd_count_of(pvt_vm(&plat, "vm2")->pid);
        else
                fds_vm3 = pvt_fd_count_of(pvt_vm(&plat, "vm3")->pid);
}

static void test_client_pvd_killed(void)
{
        reset();
        pid_t sp = pvt_spawn(&plat, "vm2", srv_receive, NULL);
        pid_t cp = pvt_spawn(&plat, "vm3", clt_wait_cb, NULL);
        CU_ASSERT_EQUAL_FATAL(vt_wait_flag(&sh->flag[F_READY], 1, 5000), 0);
        CU_ASSERT_EQUAL_FATAL(vt_wait_flag(&sh->flag[F_READY2], 1, 5000), 0);
        vt_sleep_ms(100);
        long long t0 = pvt_now_ms();
        CU_ASSERT(pvt_pvd_stop(&plat, "vm3", SIGKILL) != -1);
        CU_ASSERT_EQUAL(pvt_wait(sp, 5000), 0);
        CU_ASSERT_EQUAL(pvt_wait(cp, 5000), 0);
        assert_prompt(V_RC, V_T, t0);
        assert_prompt(V_RC2, V_T2, t0);
        assert_prompt(V_CB_RC, V_CB_T, t0);
        CU_ASSERT_EQUAL(sh->v[V_CB_POST], -ECONNRESET);
        restart("vm3");
        assert_freed();
}

/* A second server program waits for a session. */
static int srv_wait_session(void *arg)
{
        VrpqSession *s;
        int rc = vrpqSessionAccept(SRV, NULL, NULL, &s);
        sh->v[V_WAIT_T] = pvt_now_ms();
        sh->v[V_WAIT_RC] = rc;
        if (rc == 0)
                vrpqSessionDestroy(s);
        return 0;
}

/* Client blocked posting into a full ring (vsmall: 16 slots). */
static int clt_full(void *arg)
{
        VrpqSession *s;
        VrpqChan *c;
        CHK(open_client(CLT_SM, &s, &c) == 0);
        for (int i = 0; i < 16; i++)
                CHK_OK(vrpqPost(c, P_ASYNC, NULL));
        vt_set_flag(&sh->flag[F_READY2], 1);
        int rc = vrpqPost(c, P_ASYNC, NULL);
        sh->v[V_FULL_T] = pvt_now_ms();
        sh->v[V_FULL_RC] = rc;
        vrpqChanDestroy(c);
        vrpqSessionDestroy(s);
        return 0;
}

/* The server VM's pvd is killed: a client in vrpqCall, a client posting
 * into a full ring, and a server program waiting for a session all learn
 * it at once. */
static void test_server_pvd_killed(void)
{
        reset();
        pid_t sp = pvt_spawn(&plat, "vm2", srv_hold, (void *)0);
        pid_t sp3 = pvt_spawn(&plat, "vm2", srv_hold, (void *)3);
        pid_t cp = pvt_spawn(&plat, "vm3", clt_call, (void *)0);
        pid_t cp2 = pvt_spawn(&plat, "vm3", clt_full, NULL);
        CU_ASSERT_EQUAL_FATAL(vt_wait_flag(&sh->flag[F_READY], 2, 5000), 0);
        CU_ASSERT_EQUAL_FATAL(vt_wait_flag(&sh->flag[F_READY2], 1, 5000), 0);
        pid_t sw = pvt_spawn(&plat, "vm2", srv_wait_session, NULL);
        vt_sleep_ms(200);
        long long t0 = pvt_now_ms();
        CU_ASSERT(pvt_pvd_stop(&plat, "vm2", SIGKILL) != -1);
        CU_ASSERT_EQUAL(pvt_wait(cp2, 5000), 0);
        assert_prompt(V_FULL_RC, V_FULL_T, t0);
        CU_ASSERT_EQUAL(pvt_wait(cp, 5000), 0);
        assert_prompt(V_RC, V_T, t0);
        assert_prompt(V_RC2, V_T2, t0);
        CU_ASSERT_EQUAL(pvt_wait(sw, 5000), 0);
        assert_prompt(V_WAIT_RC, V_WAIT_T, t0);
        /* While the server VM is down, a new session is refused at once. */
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm3", "vm2-vm3-vogl0", "OFF", 2000), 0);
        pvt_use_vm(&plat, "vm3");
        VrpqSession *s;
        CU_ASSERT_EQUAL(vrpqSessionCreate(CLT, NULL, 0, &s), -ENOTCONN);
        CU_ASSERT_PTR_NOT_NULL(strstr(pvLastError(), "vm2"));
        unsetenv("PVD_RUNTIME_DIR");
        pvt_kill(sp, SIGKILL);
        pvt_kill(sp3, SIGKILL);
        pvt_wait(sp, 5000);
        pvt_wait(sp3, 5000);
        restart("vm2");
        assert_freed();
}

static const struct pvt_test tests[] = {
        { "client program killed", test_client_program_killed },
        { "server program killed", test_server_program_killed },
        { "server destroys channel, then session", test_server_destroys },
        { "client destroys session", test_client_destroys_session },
        { "client pvd killed", test_client_pvd_killed },
        { "server pvd killed", test_server_pvd_killed },
        { NULL, NULL },
};

static const struct pvt_suite suites[] = {
        { "vrpq-disconnect", suite_init, suite_fini, tests, 0 },
        { NULL, NULL, NULL, NULL, 0 },
};

int main(int argc, char **argv)
{
        return pvt_main(argc, argv, suites);
}

/* Every error a program can get from pvd names its real cause in
 * pvLastError(), and pvStrError() never contradicts it (test-2clients
 * platform). One test per cause a program meets when it reaches pvd:
 * nobody there, a stale socket, no such node, no VUMEM server program, the
 * vlink down; and when an object ends under it: the peer program gone, the
 * vlink gone, its own pvd gone, pvd dropping the connection. Limits
 * (-EMFILE, -ENFILE) are checked in test-limits, refusals of each driver
 * in their suites; here each cause is told apart from the others.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "pv/vbpipe.h"
#include "pv/vrpq.h"
#include "pv/vumem.h"
#include "pvt-run.h"
#include "vrpq-test.h"

#define CLT "vrpq-clt-vogl0"
#define SRV "vrpq-srv-vogl0"
#define PROC VRPQ_PROC_ID(1, 1)

static struct pvt_platform plat;
static struct vt_shared *sh;

static int suite_init(void)
{
        sh = vt_shared_new();
        if (!sh || pvt_platform_init(&plat, "test-2clients") < 0 || pvt_pvd_start(&plat, "vm2", NULL) < 0 ||
            pvt_pvd_start(&plat, "vm3", NULL) < 0 || pvt_pvd_start(&plat, "vm4", NULL) < 0 ||
            pvt_wait_vlink(&plat, "vm3", NULL, "ON", 5000) < 0) {
                pvt_platform_fini(&plat);
                return -1;
        }
        return 0;
}

static int suite_fini(void)
{
        munmap((void *)sh, sizeof(*sh));
        return pvt_platform_fini(&plat) ? -1 : 0;
}

/* diag is want, pvLastError() has every needle and none of the wrong
 * causes. */
static void check(int diag, int want, const char *const *needles, const char *const *wrong)
{
        const char *e = pvLastError();
        if (diag != want)
                fprintf(stderr, "\n    got %d (%s), want %d ", diag, e, want);
        CU_ASSERT_EQUAL(diag, want);
        for (const char *const *n = needles; n && *n; n++) {
                bool said = strstr(e, *n) != NULL;
                if (!said) {
                        fputs("\n    \"", stderr);
                        fputs(e, stderr);
                        fputs("\" does not say \"", stderr);
                        fputs(*n, stderr);
                        fputs("\" ", stderr);
                }
                CU_ASSERT(said);
        }
        for (int i = 0; wrong && wrong[i]; i++)
                CU_ASSERT_PTR_NULL(strstr(e, wrong[i]));
        CU_ASSERT(strlen(pvStrError(diag)) > 10);
}

#define NEEDLES(...) ((const char *const[]){ __VA_ARGS__, NULL })

/* ---- reaching pvd ------------------------------------------------------------------- */

static void test_no_pvd(void)
{
        char dir[256];
        snprintf(dir, sizeof(dir), "%s/empty", plat.dir);
        CU_ASSERT_FATAL(mkdir(dir, 0755) == 0);
        setenv("PVD_RUNTIME_DIR", dir, 1);
        VrpqSession *s;
        check(vrpqSessionCreate(CLT, NULL, 0, &s), -ECONNREFUSED, NEEDLES("no pvd is running in", dir),
              NEEDLES("server program"));
        /* A socket left by a pvd that died. */
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", dir, CLT);
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        CU_ASSERT_FATAL(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
        close(fd);
        check(vrpqSessionCreate(CLT, NULL, 0, &s), -ECONNREFUSED, NEEDLES("pvd is not running", "stale socket"),
              NULL);
        unlink(sa.sun_path);
        rmdir(dir);
        unsetenv("PVD_RUNTIME_DIR");
}

static void test_no_node(void)
{
        pvt_use_vm(&plat, "vm3");
        VrpqSession *s;
        check(vrpqSessionCreate("/dev/vrpq-clt-nothing0", NULL, 0, &s), -ENOENT,
              NEEDLES("vrpq-clt-nothing0", "no such device node"), NEEDLES("not running"));
        check(vbpipeOpen("vbpipe7", O_RDWR) < 0 ? -errno : 0, -ENOENT, NEEDLES("vbpipe7"), NULL);
        unsetenv("PVD_RUNTIME_DIR");
}

/* -ECONNREFUSED for a missing VUMEM server program: the text and the
 * diag's sentence name the server, not a pvd that is not running. */
static void test_no_vumem_server(void)
{
        pvt_use_vm(&plat, "vm3");
        VumemSession *s;
        check(vumemSessionCreate("vumem-clt-vsmall0", &s), -ECONNREFUSED,
              NEEDLES("no VUMEM server program serves", "vumemServerCreate"), NEEDLES("pvd is not running"));
        CU_ASSERT_PTR_NOT_NULL(strstr(pvStrError(-ECONNREFUSED), "server program"));
        unsetenv("PVD_RUNTIME_DIR");
}

static void test_vlink_down(void)
{
        CU_ASSERT_FATAL(pvt_pvd_stop(&plat, "vm2", SIGTERM) == 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm3", "vm2-vm3-vogl0", "OFF", 3000), 0);
        pvt_use_vm(&plat, "vm3");
        VrpqSession *s;
        VumemSession *u;
        check(vrpqSessionCreate(CLT, NULL, 0, &s), -ENOTCONN, NEEDLES("vlink to vm2 is down"), NULL);
        check(vumemSessionCreate("vumem-clt-vogl0", &u), -ENOTCONN, NEEDLES("vm2-vm3-vogl0", "OFF"), NULL);
        unsetenv("PVD_RUNTIME_DIR");
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm2", NULL), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm3", NULL, "ON", 5000), 0);
}

/* ---- an object ends under the program ----------------------------------------------- */

/* The server program: accepts a session and a channel, answers one call,
 * then (flag 1) waits to be told to leave. */
static int server(void *arg)
{
        VrpqSession *s;
        VrpqChan *c;
        void *shm;
        VrpqReq *reqs[4];
        int avail;
        CHK_OK(vrpqSessionAccept(SRV, NULL, NULL, &s));
        CHK_OK(vrpqChanAccept(s, NULL, NULL, &c));
        CHK_OK(vrpqShmMap(s, &shm));
        CHK_OK(vrpqReceive(c, reqs, 4, &avail));
        CHK(avail == 1);
        CHK_OK(vrpqReply(c, reqs[0]));
        vt_set_flag(&sh->flag[0], 1);
        vt_wait_flag(&sh->flag[1], 1, 20000);
        return 0; /* leaves without destroying anything */
}

/* A client with a working channel (one call done). */
static int client_open(VrpqSession **s, VrpqChan **c)
{
        void *in, *out;
        pvt_use_vm(&plat, "vm3");
        int rc = vrpqSessionCreate(CLT, NULL, 0, s);
        if (!rc)
                rc = vrpqChanCreate(*s, NULL, 0, c);
        if (!rc)
                rc = vrpqParamAlloc(*c, 4, 4, &in);
        if (!rc)
                rc = vrpqCall(*c, PROC, in, &out);
        return rc;
}

static void client_close(VrpqSession *s, VrpqChan *c)
{
        vrpqChanDestroy(c);
        vrpqSessionDestroy(s);
        unsetenv("PVD_RUNTIME_DIR");
}

static int call(VrpqChan *c)
{
        void *in, *out;
        int rc = vrpqParamAlloc(c, 4, 4, &in);
        return rc ? rc : vrpqCall(c, PROC, in, &out);
}

static void test_peer_program_gone(void)
{
        memset((void *)sh, 0, sizeof(*sh));
        pid_t srv = pvt_spawn(&plat, "vm2", server, NULL);
        VrpqSession *s;
        VrpqChan *c;
        CU_ASSERT_EQUAL_FATAL(client_open(&s, &c), 0);
        CU_ASSERT_EQUAL(vt_wait_flag(&sh->flag[0], 1, 5000), 0);
        vt_set_flag(&sh->flag[1], 1);
        CU_ASSERT_EQUAL(pvt_wait(srv, 5000), 0);
        check(call(c), -ECONNRESET, NEEDLES("the server program destroyed", "or went away"),
              NEEDLES("vlink", "pvd stopped"));
        client_close(s, c);
}

static void test_vlink_gone(void)
{
        memset((void *)sh, 0, sizeof(*sh));
        pid_t srv = pvt_spawn(&plat, "vm2", server, NULL);
        VrpqSession *s;
        VrpqChan *c;
        CU_ASSERT_EQUAL_FATAL(client_open(&s, &c), 0);
        CU_ASSERT_EQUAL(vt_wait_flag(&sh->flag[0], 1, 5000), 0);
        CU_ASSERT(pvt_pvd_stop(&plat, "vm2", SIGKILL) >= 0);
        check(call(c), -ECONNRESET, NEEDLES("the vlink to vm2 went down"), NEEDLES("server program"));
        client_close(s, c);
        vt_set_flag(&sh->flag[1], 1);
        pvt_wait(srv, 5000);
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm2", NULL), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm3", NULL, "ON", 5000), 0);
}

static void test_own_pvd_gone(void)
{
        memset((void *)sh, 0, sizeof(*sh));
        pid_t srv = pvt_spawn(&plat, "vm2", server, NULL);
        VrpqSession *s;
        VrpqChan *c;
        CU_ASSERT_EQUAL_FATAL(client_open(&s, &c), 0);
        CU_ASSERT_EQUAL(vt_wait_flag(&sh->flag[0], 1, 5000), 0);
        CU_ASSERT(pvt_pvd_stop(&plat, "vm3", SIGKILL) >= 0);
        check(call(c), -ECONNRESET, NEEDLES("pvd stopped"), NEEDLES("server program"));
        client_close(s, c);
        vt_set_flag(&sh->flag[1], 1);
        pvt_wait(srv, 5000);
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm3", NULL), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm3", NULL, "ON", 5000), 0);
}

static void test_pvctl_errors(void)
{
        msgpack_zone z;
        msgpack_object doc;
        msgpack_zone_init(&z, 1024);
        check(pvt_stat(&plat, "vm3", "frobnicator", &z, &doc), -ENOENT, NEEDLES("no driver called frobnicator"),
              NULL);
        msgpack_zone_destroy(&z);
}

static const struct pvt_test tests[] = {
        { "no pvd, a stale socket: -ECONNREFUSED, said so", test_no_pvd },
        { "no such device node: -ENOENT", test_no_node },
        { "no VUMEM server program: -ECONNREFUSED names the server", test_no_vumem_server },
        { "the vlink is down: -ENOTCONN", test_vlink_down },
        { "the peer program went away: -ECONNRESET names it", test_peer_program_gone },
        { "the vlink went down under a channel: -ECONNRESET names it", test_vlink_gone },
        { "the program's own pvd died: -ECONNRESET names it", test_own_pvd_gone },
        { "pvctl: an unknown driver", test_pvctl_errors },
        { NULL, NULL },
};

static const struct pvt_suite suites[] = {
        { "errors", suite_init, suite_fini, tests, 0 },
        { NULL, NULL, NULL, NULL, 0 },
};

int main(int argc, char **argv)
{
        return pvt_main(argc, argv, suites);
}

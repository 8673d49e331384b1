/* pvd at its limits, and who sees what on the control node (test-limits
 * platform: vm2 lets one user hold 12 connections, 4 per node; vm3 as
 * many as its descriptors allow; vm4 shows status to root and group 4):
 *   - a user at its limit is refused with -EMFILE and the reason, while
 *     another user still gets in;
 *   - pvd near the end of its descriptors refuses new connections with
 *     -ENFILE and the reason, logs that once a second at most, keeps
 *     serving the connections it has, and is back to its descriptors when
 *     they close; at a real EMFILE too (its limit lowered under it), and
 *     without spinning;
 *   - a user sees only its own programs in pvctl status and stat; root and
 *     the control group see all; pvd,status = "group" keeps others out.
 * Switching users needs root: those checks are skipped otherwise.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "conn.h"
#include "pv-msg.h"
#include "pv/pvclient.h"
#include "pv/vrpq.h"
#include "pvt-run.h"
#include "pvtest.h"

#define NOBODY 65534
#define FD_LIMIT 256     /* vm3's RLIMIT_NOFILE: 64 kept for the vlinks, so connections stop near 192 */

static struct pvt_platform plat;

static int suite_init(void)
{
        if (pvt_platform_init(&plat, "test-limits") < 0)
                goto fail;
        chmod(plat.dir, 0755); /* reached as nobody */
        if (pvt_pvd_start(&plat, "vm2", NULL) < 0 || pvt_pvd_start(&plat, "vm4", NULL) < 0)
                goto fail;
        plat.nofile = FD_LIMIT;
        int rc = pvt_pvd_start(&plat, "vm3", NULL);
        plat.nofile = 0;
        if (rc < 0 || pvt_wait_vlink(&plat, "vm3", NULL, "ON", 5000) < 0)
                goto fail;
        return 0;
fail:
        pvt_platform_fini(&plat);
        return -1;
}

static int suite_fini(void)
{
        return pvt_platform_fini(&plat) ? -1 : 0;
}

/* ---- helpers ------------------------------------------------------------------ */

static uint64_t getu(const msgpack_object *m, const char *key)
{
        const msgpack_object *v = pvt_get(m, key);
        return v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? v->via.u64 : (uint64_t)-1;
}

/* A call on a connection of ours: the diag. */
static int call_status(struct pv_conn *c)
{
        static char buf[PV_MSG_DOC_MAX];
        struct pv_msg req, resp;
        pv_msg_init(&req, PV_OP_STATUS);
        int rc = pvc_conn_call(c, &req, &resp, buf, sizeof(buf));
        if (rc == 0)
                pv_msg_close_fds(&resp);
        return rc;
}

/* Open node of vm and make one status call (pvd answers a refused
 * connection's first call with the refusal; other nodes answer a status
 * request by dropping the connection, which is fine here: the connection
 * only has to be counted). 0 with *out kept open, or the diag. */
static int hold(const char *vm, const char *node, struct pv_conn **out)
{
        pvt_use_vm(&plat, vm);
        int rc = pvc_conn_open(node, out);
        if (rc < 0)
                return rc;
        if (strcmp(node, "control") == 0) {
                rc = call_status(*out);
        } else {
                /* A refusal is the first thing such a connection reads. */
                struct pollfd pf = { .fd = (*out)->fd, .events = POLLIN };
                if (poll(&pf, 1, 100) == 1) {
                        static char buf[4096];
                        struct pv_msg m;
                        rc = pv_msg_recv((*out)->fd, &m, buf, sizeof(buf), MSG_DONTWAIT);
                        if (rc == 0) {
                                rc = pv_msg_diag(&m);
                                char text[512] = "";
                                pv_msg_get_str(&m, PV_K_MSG, text, sizeof(text));
                                pvc_error(rc, "%s", text);
                                pv_msg_close_fds(&m);
                        }
                }
        }
        if (rc < 0) {
                pvc_conn_close(*out);
                *out = NULL;
        }
        return rc;
}

/* CPU time (user + system, in clock ticks) of a process. */
static long long cpu_ticks(pid_t pid)
{
        char path[64], buf[1024];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        if (pvt_read_file(path, buf, sizeof(buf)) <= 0)
                return -1;
        const char *p = strrchr(buf, ')');
        unsigned long long ut = 0, st = 0;
        if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
                return -1;
        return (long long)(ut + st);
}

/* Lines of vm's log that contain s. */
static int log_lines(const char *vm, const char *s)
{
        static char buf[1 << 20];
        if (pvt_read_file(pvt_vm(&plat, vm)->log, buf, sizeof(buf)) < 0)
                return -1;
        int n = 0;
        for (char *p = buf; (p = strstr(p, s)); p += strlen(s))
                n++;
        return n;
}

/* pvd's descriptors once its closing connections are gone: settles within
 * timeout_ms at want, or returns what it has. */
static int pvd_fds_settle(const char *vm, int want, int timeout_ms)
{
        long long end = pvt_now_ms() + timeout_ms;
        int n;
        while ((n = pvt_fd_count_of(pvt_vm(&plat, vm)->pid)) != want && pvt_now_ms() < end)
                usleep(20000);
        return n;
}

/* ---- one user's limits ------------------------------------------------------------------ */

static int other_user_gets_in(void *arg)
{
        (void)arg;
        if (setgroups(0, NULL) < 0 || setgid(NOBODY) < 0 || setuid(NOBODY) < 0)
                return 10;
        struct pv_conn *c;
        int rc = hold("vm2", "control", &c);
        if (rc < 0) {
                fprintf(stderr, "nobody refused: %s\n", pvLastError());
                return 11;
        }
        pvc_conn_close(c);
        return 0;
}

static void test_user_limits(void)
{
        struct pv_conn *c[16] = { 0 }, *x;
        int n = 0;
        /* vm2: 4 per node, 12 in all. */
        for (int i = 0; i < 4; i++)
                CU_ASSERT_EQUAL(hold("vm2", "vrpq-srv-vlim0", &c[n++]), 0);
        CU_ASSERT_EQUAL(hold("vm2", "vrpq-srv-vlim0", &x), -EMFILE);
        CU_ASSERT_PTR_NOT_NULL(strstr(pvLastError(), "4 connections to this device node"));
        CU_ASSERT_PTR_NOT_NULL(strstr(pvLastError(), "pvd,limits"));
        for (int i = 0; i < 4; i++)
                CU_ASSERT_EQUAL(hold("vm2", "vumem-srv-vlim0", &c[n++]), 0);
        for (int i = 0; i < 4; i++)
                CU_ASSERT_EQUAL(hold("vm2", "control", &c[n++]), 0);
        /* 12 held: the 13th, to any node, is one too many. */
        CU_ASSERT_EQUAL(hold("vm2", "control", &x), -EMFILE);
        CU_ASSERT_PTR_NOT_NULL(strstr(pvLastError(), "12 connections to pvd"));
        CU_ASSERT_EQUAL(-EMFILE, hold("vm2", "vumem-srv-vlim0", &x));

        /* What one user holds does not keep another out. */
        if (geteuid() == 0) {
                pid_t pid = pvt_spawn(&plat, "vm2", other_user_gets_in, NULL);
                CU_ASSERT_EQUAL(pvt_wait(pid, 5000), 0);
        }
        /* Connections that were let in are served. */
        CU_ASSERT_EQUAL(call_status(c[8]), 0);

        for (int i = 0; i < n; i++)
                pvc_conn_close(c[i]);
        /* Room again once they are closed. */
        int rc = -1;
        for (int tries = 0; tries < 50 && rc; tries++) {
                rc = hold("vm2", "vrpq-srv-vlim0", &x);
                if (rc)
                        usleep(20000);
        }
        CU_ASSERT_EQUAL_FATAL(rc, 0);
        pvc_conn_close(x);
        msgpack_zone z;
        msgpack_object doc;
        msgpack_zone_init(&z, 4096);
        CU_ASSERT_EQUAL_FATAL(pvt_status(&plat, "vm2", &z, &doc), 0);
        const msgpack_object *lim = pvt_get(&doc, "limits");
        CU_ASSERT_EQUAL(getu(lim, "connections_per_user"), 12);
        CU_ASSERT_EQUAL(getu(lim, "node_connections_per_user"), 4);
        CU_ASSERT(getu(lim, "refused_user_limit") >= 3);
        msgpack_zone_destroy(&z);
}

/* ---- out of descriptors ----------------------------------------------------------------- */

/* A raw connection to vm3's control that sent a status request: fd, or -1
 * when the connect found no room (a full backlog). */
static int raw_request(void)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/control", pvt_vm(&plat, "vm3")->rt);
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -1;
        struct pv_msg m;
        pv_msg_init(&m, PV_OP_STATUS);
        pv_msg_set_u(&m, PV_K_SEQ, 1);
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || pv_msg_send(fd, &m) < 0) {
                close(fd);
                return -1;
        }
        return fd;
}

/* What came back on a raw connection: 1 an answer, the (negative) diag of
 * a refusal with its text in why, 0 nothing yet. */
static int raw_outcome(int fd, char *why, size_t len)
{
        static char buf[PV_MSG_DOC_MAX];
        struct pv_msg m;
        int rc = pv_msg_recv(fd, &m, buf, sizeof(buf), MSG_DONTWAIT);
        if (rc == -EAGAIN)
                return 0;
        if (rc < 0)
                return rc;
        int op = (int)pv_msg_op(&m), diag = pv_msg_diag(&m);
        why[0] = 0;
        pv_msg_get_str(&m, PV_K_MSG, why, len);
        pv_msg_close_fds(&m);
        return op == PV_OP_NONE ? (diag < 0 ? diag : -ECONNRESET) : 1;
}

struct flood {
        int fd[1024];
        bool done[1024];
        int n, answered, refused_nfile, other, other_rc;
        char why[512];
};

static void flood(struct flood *f, int count)
{
        memset(f, 0, sizeof(*f));
        for (int i = 0; i < count && f->n < 1024; i++) {
                int fd = raw_request();
                if (fd >= 0)
                        f->fd[f->n++] = fd;
                else
                        usleep(2000); /* the backlog is full: pvd is busy refusing */
        }
        /* Every connection that got in hears back, once. */
        long long end = pvt_now_ms() + 5000;
        int pending;
        do {
                pending = 0;
                for (int i = 0; i < f->n; i++) {
                        struct pollfd pf = { .fd = f->fd[i], .events = POLLIN };
                        if (f->done[i])
                                continue;
                        if (poll(&pf, 1, 0) != 1) {
                                pending++;
                                continue;
                        }
                        char why[512];
                        int rc = raw_outcome(f->fd[i], why, sizeof(why));
                        f->done[i] = true;
                        if (rc == 1) {
                                f->answered++;
                        } else if (rc == -ENFILE) {
                                f->refused_nfile++;
                                memcpy(f->why, why, sizeof(why));
                        } else {
                                f->other++;
                                f->other_rc = rc;
                        }
                }
                if (pending)
                        usleep(20000);
        } while (pending && pvt_now_ms() < end);
        printf("\n    %d connections: %d answered, %d refused with -ENFILE, %d else (%d), %d without answer ",
               f->n, f->answered, f->refused_nfile, f->other, f->other_rc, pending);
}

static void flood_close(struct flood *f)
{
        for (int i = 0; i < f->n; i++)
                close(f->fd[i]);
        f->n = 0;
}

static void test_out_of_fds(void)
{
        pid_t pvd = pvt_vm(&plat, "vm3")->pid;
        usleep(100000);
        int base = pvt_fd_count_of(pvd);
        CU_ASSERT_FATAL(base > 0 && base < FD_LIMIT / 2);
        struct pv_conn *held;
        CU_ASSERT_EQUAL_FATAL(hold("vm3", "control", &held), 0);

        static struct flood f;
        flood(&f, 600);
        /* Some got in, the rest were told why; none was left hanging. */
        CU_ASSERT(f.answered > 50);
        CU_ASSERT(f.answered < FD_LIMIT);
        CU_ASSERT(f.refused_nfile > 100);
        CU_ASSERT_EQUAL(f.other, 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(f.why, "file descriptor"));
        CU_ASSERT_PTR_NOT_NULL(strstr(f.why, "LimitNOFILE"));
        /* pvd goes on serving what it has: a connection of before, the
         * vlink. */
        CU_ASSERT_EQUAL(call_status(held), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm2", NULL, "ON", 1000), 0);
        /* Logged, but not once per refusal. */
        int lines = log_lines("vm3", "refusing connections");
        CU_ASSERT(lines >= 1 && lines <= 5);

        flood_close(&f);
        pvc_conn_close(held);
        CU_ASSERT_EQUAL(pvd_fds_settle("vm3", base, 3000), base);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm3", NULL, "ON", 1000), 0);
}

static void test_emfile(void)
{
        pid_t pvd = pvt_vm(&plat, "vm3")->pid;
        usleep(100000);
        int base = pvt_fd_count_of(pvd);
        struct pv_conn *held;
        CU_ASSERT_EQUAL_FATAL(hold("vm3", "control", &held), 0);
        /* Lower pvd's limit under it: accept now fails with EMFILE, below
         * the reserve pvd keeps for itself. */
        struct rlimit low = { (rlim_t)base + 8, FD_LIMIT }, old;
        CU_ASSERT_EQUAL_FATAL(prlimit(pvd, RLIMIT_NOFILE, &low, &old), 0);
        long long t0 = cpu_ticks(pvd);
        static struct flood f;
        flood(&f, 300);
        CU_ASSERT(f.refused_nfile > 100);
        CU_ASSERT_EQUAL(f.other, 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(f.why, "run out of file descriptors"));
        CU_ASSERT_EQUAL(call_status(held), 0);
        /* Nothing waits, nothing spins: idle for a second. */
        long long t1 = cpu_ticks(pvd);
        sleep(1);
        long long t2 = cpu_ticks(pvd);
        long hz = sysconf(_SC_CLK_TCK);
        printf("\n    pvd's CPU: %lld ticks in the flood, %lld idle (of %ld a second) ", t1 - t0, t2 - t1, hz);
        CU_ASSERT(t2 - t1 <= hz / 10);
        int lines = log_lines("vm3", "out of file descriptors");
        CU_ASSERT(lines >= 1 && lines <= 5);

        flood_close(&f);
        CU_ASSERT_EQUAL(prlimit(pvd, RLIMIT_NOFILE, &old, NULL), 0);
        pvc_conn_close(held);
        CU_ASSERT_EQUAL(pvd_fds_settle("vm3", base, 3000), base);
        /* Accepting again. */
        CU_ASSERT_EQUAL(hold("vm3", "control", &held), 0);
        if (held)
                pvc_conn_close(held);
}

/* ---- who sees what ------------------------------------------------------------------------ */

struct seen {
        int status_rc, stat_rc, own_shown, root_shown, hidden, root_program_named;
        int vm4_rc, vm4_root_shown;
};
static struct seen *seen;

static void look(const char *vm, int *rc, int *own, int *root, int *hidden)
{
        msgpack_zone z;
        msgpack_object doc;
        msgpack_zone_init(&z, 4096);
        *rc = pvt_status(&plat, vm, &z, &doc);
        *own = *root = 0;
        if (*rc == 0) {
                const msgpack_object *progs = pvt_get(&doc, "programs");
                for (uint32_t i = 0; progs && i < progs->via.array.size; i++) {
                        uint64_t uid = getu(&progs->via.array.ptr[i], "uid");
                        *own += uid == getuid();
                        *root += uid == 0;
                }
                if (hidden)
                        *hidden = (int)getu(&doc, "programs_hidden");
        }
        msgpack_zone_destroy(&z);
}

/* As nobody (with group 4 if groups): what status and stat show. */
static int viewer(void *arg)
{
        gid_t g4 = 4;
        if (setgroups(arg ? 1 : 0, &g4) < 0 || setgid(NOBODY) < 0 || setuid(NOBODY) < 0)
                return 10;
        /* A program of nobody's own on vm3. */
        struct pv_conn *mine;
        pvt_use_vm(&plat, "vm3");
        if (pvc_conn_open("vrpq-clt-vlim0", &mine) < 0)
                return 11;
        usleep(50000);
        look("vm3", &seen->status_rc, &seen->own_shown, &seen->root_shown, &seen->hidden);
        msgpack_zone z;
        msgpack_object doc;
        msgpack_zone_init(&z, 4096);
        seen->stat_rc = pvt_stat(&plat, "vm3", "vrpq", &z, &doc);
        if (seen->stat_rc == 0) {
                const msgpack_object *vls = pvt_get(&doc, "vlinks");
                for (uint32_t i = 0; vls && i < vls->via.array.size; i++) {
                        const msgpack_object *ss = pvt_get(pvt_get(&vls->via.array.ptr[i], "stat"), "sessions");
                        for (uint32_t j = 0; ss && j < ss->via.array.size; j++) {
                                const msgpack_object *p = pvt_get(&ss->via.array.ptr[j], "program");
                                seen->root_program_named += p && p->type == MSGPACK_OBJECT_STR && p->via.str.size;
                        }
                }
        }
        msgpack_zone_destroy(&z);
        int own;
        look("vm4", &seen->vm4_rc, &own, &seen->vm4_root_shown, NULL);
        pvc_conn_close(mine);
        return 0;
}

static void test_who_sees_what(void)
{
        if (geteuid() != 0) {
                pvt_skip("needs root to look as another user");
                return;
        }
        seen = mmap(NULL, sizeof(*seen), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        CU_ASSERT_FATAL(seen != MAP_FAILED);
        /* Root's programs: a VRPQ session on vm3, a connection to vm4. */
        pvt_use_vm(&plat, "vm3");
        VrpqSession *s;
        CU_ASSERT_EQUAL_FATAL(vrpqSessionCreate("vrpq-clt-vlim0", NULL, 0, &s), 0);
        struct pv_conn *c4;
        CU_ASSERT_EQUAL_FATAL(hold("vm4", "control", &c4), 0);

        /* nobody: its own program, not root's; vm4 keeps it out. */
        memset(seen, 0, sizeof(*seen));
        pid_t pid = pvt_spawn(&plat, "vm3", viewer, NULL);
        CU_ASSERT_EQUAL(pvt_wait(pid, 10000), 0);
        CU_ASSERT_EQUAL(seen->status_rc, 0);
        CU_ASSERT_EQUAL(seen->own_shown, 2); /* its connection, and the one asking */
        CU_ASSERT_EQUAL(seen->root_shown, 0);
        CU_ASSERT(seen->hidden >= 1);
        CU_ASSERT_EQUAL(seen->stat_rc, 0);
        CU_ASSERT_EQUAL(seen->root_program_named, 0);
        CU_ASSERT_EQUAL(seen->vm4_rc, -EACCES);

        /* nobody in group 4, the control group of vm4: sees all there. */
        memset(seen, 0, sizeof(*seen));
        pid = pvt_spawn(&plat, "vm3", viewer, (void *)1);
        CU_ASSERT_EQUAL(pvt_wait(pid, 10000), 0);
        CU_ASSERT_EQUAL(seen->vm4_rc, 0);
        CU_ASSERT(seen->vm4_root_shown >= 1);
        CU_ASSERT_EQUAL(seen->root_shown, 0); /* vm3's control group is root's own */

        /* root sees everything. */
        int rc, own, root;
        look("vm3", &rc, &own, &root, NULL);
        CU_ASSERT_EQUAL(rc, 0);
        CU_ASSERT(root >= 1);
        pvc_conn_close(c4);
        CU_ASSERT_EQUAL(vrpqSessionDestroy(s), 0);
        munmap(seen, sizeof(*seen));
}

/* Refused connections that never send their request wait for it in pvd
 * (so that they read why): they must not keep pvd from stopping. */
static void test_stop_with_refused_waiting(void)
{
        int fds[8], n = 0;
        for (int i = 0; i < 8; i++) {
                struct sockaddr_un sa = { .sun_family = AF_UNIX };
                snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/vrpq-srv-vlim0", pvt_vm(&plat, "vm2")->rt);
                fds[n] = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
                if (fds[n] >= 0 && connect(fds[n], (struct sockaddr *)&sa, sizeof(sa)) == 0)
                        n++;
                else if (fds[n] >= 0)
                        close(fds[n]);
        }
        CU_ASSERT_EQUAL(n, 8); /* 4 held, 4 refused and waiting */
        usleep(100000);
        long long t0 = pvt_now_ms();
        int st = pvt_pvd_stop(&plat, "vm2", SIGTERM);
        CU_ASSERT(st == 0);
        CU_ASSERT(pvt_now_ms() - t0 < 2000);
        for (int i = 0; i < n; i++)
                close(fds[i]);
        CU_ASSERT_EQUAL(pvt_pvd_start(&plat, "vm2", NULL), 0);
}

static const struct pvt_test tests[] = {
        { "one user's limits: -EMFILE with the reason, others go on", test_user_limits },
        { "near the end of pvd's descriptors: refused with a reason, served, logged once a second",
          test_out_of_fds },
        { "accept fails with EMFILE: refused with a reason, no spinning", test_emfile },
        { "other users' programs are hidden; the control group and root see all", test_who_sees_what },
        { "pvd stops with refused connections waiting", test_stop_with_refused_waiting },
        { NULL, NULL },
};

static const struct pvt_suite suites[] = {
        { "limits", suite_init, suite_fini, tests, 0 },
        { NULL, NULL, NULL, NULL, 0 },
};

int main(int argc, char **argv)
{
        return pvt_main(argc, argv, suites);
}

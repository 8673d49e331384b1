/* pvload: every resource a program can make pvd hold, taken to its limit,
 * while honest programs of every driver work beside (campaign.h) on other
 * nodes. Each round, one user takes in vm3 (and vm2, vm4):
 *   - connections to the control node, until refused (-EMFILE, its
 *     node-connections limit);
 *   - VRPQ sessions on vrpq-clt-vsmall0, until -EMFILE (VRPQ_SESSIONS_MAX);
 *   - VRPQ channels of one session, until its memory is taken (the
 *     session's own where the hypervisor slices memory, else the
 *     vlink's: -ENOSPC) or VRPQ_CHANNELS_MAX;
 *   - VUMEM sessions on vumem-clt-vsmall0 (a server program serves it),
 *     until -EUSERS, and buffers of one session until the pdev is full
 *     (-ENOSPC);
 *   - a second open of vbpipe1 (-EBUSY);
 *   - requests from a program that never reads its answers (pvd drops it);
 * each refusal must name its limit in pvLastError(). Meanwhile a held
 * control connection gets its status answered, and the honest programs go
 * on. Everything is then released: every pvd is back to its descriptors
 * and memfds.
 *
 *   pvload [--duration SECONDS] [-v]        (default: one round)
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "campaign.h"
#include "conn.h"
#include "pv-msg.h"
#include "pv/vbpipe.h"
#include "pv/vrpq.h"
#include "pv/vumem.h"

#define HOLD_MAX 8192

static const char usage[] = "usage: pvload [--duration SECONDS] [--keep-logs] [-v]\n"
                            "Take every resource a program can make pvd hold to its limit, beside honest\n"
                            "programs; check the refusals, the answers and that all comes back.\n";

static struct cp cp;
static struct pv_conn *watch;          /* held on vm3's control: pvd must keep answering it */
static double worst_status_ms;
static int bad;

#define EXPECT(cond, ...)                                                                                       \
        do {                                                                                                    \
                if (!(cond)) {                                                                                  \
                        fprintf(stderr, "pvload: %s:%d: ", __FILE__, __LINE__);                                 \
                        fprintf(stderr, __VA_ARGS__);                                                           \
                        fprintf(stderr, " (last error: %s)\n", pvLastError());                                  \
                        bad++;                                                                                  \
                }                                                                                               \
        } while (0)

/* pvd answers a held connection, and the honest programs work. */
static void still_serving(const char *when)
{
        static char buf[PV_MSG_DOC_MAX];
        struct pv_msg req, resp;
        pv_msg_init(&req, PV_OP_STATUS);
        int64_t t0 = cp_now_ns();
        int rc = pvc_conn_call(watch, &req, &resp, buf, sizeof(buf));
        double ms = (double)(cp_now_ns() - t0) / 1e6;
        worst_status_ms = ms > worst_status_ms ? ms : worst_status_ms;
        EXPECT(rc == 0, "%s: the held control connection got %d", when, rc);
        EXPECT(cp_all_flowing(&cp, cp_now_ns(), 5000) == 0, "%s: the honest programs stopped", when);
}

static int connect_raw(const char *vm, const char *node)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", pvt_vm(&cp.plat, vm)->rt, node);
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                close(fd);
                return -1;
        }
        return fd;
}

static unsigned load_connections(void)
{
        static struct pv_conn *c[HOLD_MAX];
        unsigned n = 0;
        int rc = 0;
        pvt_use_vm(&cp.plat, "vm3");
        while (n < HOLD_MAX) {
                if ((rc = pvc_conn_open("control", &c[n])) < 0)
                        break;
                static char buf[PV_MSG_DOC_MAX];
                struct pv_msg req, resp;
                pv_msg_init(&req, PV_OP_STATUS);
                rc = pvc_conn_call(c[n], &req, &resp, buf, sizeof(buf));
                if (rc < 0) {
                        pvc_conn_close(c[n]);
                        break;
                }
                n++;
        }
        EXPECT(rc == -EMFILE && strstr(pvLastError(), "connections to this device node"),
               "connections: the %u-th got %d", n + 1, rc);
        still_serving("at the connection limit");
        for (unsigned i = 0; i < n; i++)
                pvc_conn_close(c[i]);
        return n;
}

static unsigned load_vrpq(unsigned *nchan)
{
        static VrpqSession *s[VRPQ_SESSIONS_MAX + 1];
        static VrpqChan *ch[VRPQ_CHANNELS_MAX + 1];
        unsigned n = 0, k = 0;
        int rc = 0;
        pvt_use_vm(&cp.plat, "vm3");
        while (n <= VRPQ_SESSIONS_MAX && (rc = vrpqSessionCreate("vrpq-clt-vsmall0", NULL, 0, &s[n])) == 0)
                n++;
        EXPECT(rc == -EMFILE && n == VRPQ_SESSIONS_MAX && strstr(pvLastError(), "sessions"),
               "VRPQ sessions: %u, then %d", n, rc);
        still_serving("at the VRPQ session limit");
        for (unsigned i = 1; i < n; i++)
                vrpqSessionDestroy(s[i]);
        while (n && k <= VRPQ_CHANNELS_MAX && (rc = vrpqChanCreate(s[0], NULL, 0, &ch[k])) == 0)
                k++;
        EXPECT((rc == -ENOSPC && strstr(pvLastError(), "vrpq-")) || (rc == -EMFILE && k == VRPQ_CHANNELS_MAX),
               "VRPQ channels: %u, then %d", k, rc);
        still_serving("at the VRPQ channel limit");
        for (unsigned i = 0; i < k; i++)
                vrpqChanDestroy(ch[i]);
        if (n)
                vrpqSessionDestroy(s[0]);
        *nchan = k;
        return n;
}

static unsigned load_vumem(unsigned *nbuf)
{
        static VumemSession *s[1100];
        static VumemBufferHd b[4096];
        unsigned n = 0, k = 0;
        int rc = 0;
        pvt_use_vm(&cp.plat, "vm3");
        while (n < 1100 && (rc = vumemSessionCreate("vumem-clt-vsmall0", &s[n])) == 0)
                n++;
        EXPECT(rc == -EUSERS && strstr(pvLastError(), "sessions"), "VUMEM sessions: %u, then %d", n, rc);
        still_serving("at the VUMEM session limit");
        for (unsigned i = 1; i < n; i++)
                vumemSessionDestroy(s[i]);
        struct {
                uint64_t seed;
                uint32_t size, pad;
        } t = { 1, 4096, 0 };
        while (n && k < 4096 && (rc = vumemBufferAlloc(s[0], &t, sizeof(t), &b[k])) == 0)
                k++;
        EXPECT(rc == -ENOSPC && strstr(pvLastError(), "vumem-pdev"), "VUMEM buffers: %u, then %d", k, rc);
        still_serving("with the pdev full");
        for (unsigned i = 0; i < k; i++)
                vumemBufferFree(b[i]);
        if (n)
                vumemSessionDestroy(s[0]);
        *nbuf = k;
        return n;
}

static void load_vbpipe(void)
{
        pvt_use_vm(&cp.plat, "vm4");
        int a = vbpipeOpen("vbpipe1", O_RDWR | O_NONBLOCK);
        int b = vbpipeOpen("vbpipe1", O_RDWR | O_NONBLOCK);
        EXPECT(a >= 0 && b < 0 && errno == EBUSY && strstr(pvLastError(), "open already"),
               "vbpipe1: a second open of an end gave %d", b);
        if (a >= 0)
                vbpipeClose(a);
        if (b >= 0)
                vbpipeClose(b);
}

/* A program that sends requests and never reads the answers: pvd drops
 * it once its socket is full, and nothing else. Returns the requests it
 * got in. */
static unsigned load_deaf(void)
{
        int fd = connect_raw("vm3", "control");
        unsigned n = 0;
        while (fd >= 0 && n < 1000000) {
                struct pv_msg m;
                pv_msg_init(&m, PV_OP_STATUS);
                pv_msg_set_u(&m, PV_K_SEQ, n + 1);
                struct pollfd pf = { .fd = fd, .events = POLLOUT };
                if (poll(&pf, 1, 2000) != 1 || (pf.revents & (POLLHUP | POLLERR)))
                        break;
                if (pv_msg_send(fd, &m) < 0)
                        break;
                n++;
        }
        EXPECT(n < 1000000, "a program that does not read was never dropped");
        if (fd >= 0)
                close(fd);
        still_serving("after a program that does not read");
        return n;
}

int main(int argc, char **argv)
{
        struct cp_options o;
        int rc = cp_options(argc, argv, &o, 1, usage);
        if (rc)
                return rc;
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
                rl.rlim_cur = rl.rlim_max;
                setrlimit(RLIMIT_NOFILE, &rl);
        }
        if (rl.rlim_cur < 4096) {
                printf("pvload: RLIMIT_NOFILE is %lu here; the connection limit needs 4096: skipped\n",
                       (unsigned long)rl.rlim_cur);
                return 77;
        }
        signal(SIGPIPE, SIG_IGN);
        if (cp_start(&cp, false) < 0) {
                cp_stop(&cp);
                return 1;
        }
        usleep(200000);
        struct cp_res base[3];
        for (int i = 0; i < 3; i++)
                cp_res(pvt_vm(&cp.plat, cp_vms[i])->pid, &base[i]);
        int64_t t0 = cp_now_ns();
        for (int k = 0; k < CP_NPROGS; k++)
                cp_spawn(&cp, (enum cp_prog)k);
        struct cp_slot *srv_slot = mmap(NULL, sizeof(*srv_slot), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                                        -1, 0);
        pid_t srv = fork();
        if (srv == 0) {
                signal(SIGINT, SIG_DFL);
                signal(SIGTERM, SIG_DFL);
                setenv("PVD_RUNTIME_DIR", pvt_vm(&cp.plat, "vm2")->rt, 1);
                _exit(cp_vumem_serve(cp.sh, srv_slot, "vumem-srv-vsmall0"));
        }
        pvt_use_vm(&cp.plat, "vm3");
        if (cp_all_flowing(&cp, t0, 15000) < 0 || pvc_conn_open("control", &watch) < 0) {
                cp_stop(&cp);
                return 1;
        }
        int64_t until = cp_now_ns() + (int64_t)(o.duration_s * 1e9);
        unsigned rounds = 0;
        do {
                unsigned nchan, nbuf;
                unsigned conns = load_connections();
                unsigned vsess = load_vrpq(&nchan);
                unsigned usess = load_vumem(&nbuf);
                load_vbpipe();
                unsigned deaf = load_deaf();
                if (o.verbose || rounds == 0)
                        printf("pvload: round %u: %u connections, %u VRPQ sessions, %u channels, %u VUMEM sessions, "
                               "%u buffers, then each refused with its reason; a program that does not read was "
                               "dropped after %u requests\n",
                               rounds, conns, vsess, nchan, usess, nbuf, deaf);
                rounds++;
        } while (cp_now_ns() < until && !bad && !cp_interrupted);

        const char *died = cp_pvd_died(&cp);
        pvc_conn_close(watch);
        bad += cp_stop_programs(&cp);
        pvt_kill(srv, SIGTERM);
        pvt_wait(srv, 3000);
        for (int i = 0; !died && i < 3; i++) {
                struct cp_res now;
                cp_res_settle(&cp, cp_vms[i], &base[i], 5000, &now);
                printf("pvd %s: fds %d -> %d, memfds %d -> %d\n", cp_vms[i], base[i].fds, now.fds, base[i].memfds,
                       now.memfds);
                bad += cp_leaked(&cp, cp_vms[i], &base[i], &now);
        }
        printf("pvload: %u rounds; status answered within %.1f ms at worst; %s crashed\n", rounds, worst_status_ms,
               died ? died : "nothing");
        bad += cp_stop(&cp) + (died != NULL);
        munmap(srv_slot, sizeof(*srv_slot));
        printf("pvload: %s\n", bad ? "FAILED" : "OK");
        return bad ? 1 : 0;
}

/* pvhv against peers that speak its protocol through the client module pvd
 * uses (two sides joining, ringing each other, leaving, coming back), the
 * header it writes, and hostile peers: junk on the socket, fds sent to it,
 * a second peer for a side, many connections at once, a connect/close
 * storm, a peer that never reads, a peer that scribbles the whole memory.
 * After each, pvhv still serves the legitimate peers and holds no more fds.
 * The platform is tests/config/good-hv-heap.dts (vlink memories of 1 MiB).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "config.h"
#include "pvd.h"
#include "pvhv-test.h"

#define LINK "vm2-vm3-vogl0"
#define WAIT 5000

static char dtb[512];
static struct pv_platform *plat;

/* Start pvhv; a test that cannot start it fails here. */
#define START(p) CU_ASSERT_EQUAL_FATAL(pvhvt_start(p, dtb), 0)
#define STOP(p) CU_ASSERT_EQUAL(pvhvt_stop(p), 0)

static struct ivsock *join(struct pvhvt *p, const char *vm)
{
        struct ivsock *s = NULL;
        int rc = pvhvt_join(p, LINK, vm, &s, WAIT);
        if (rc < 0)
                fprintf(stderr, "\n    join %s as %s: %s\n", LINK, vm, strerror(-rc));
        CU_ASSERT_EQUAL(rc, 0);
        return s;
}

/* A raw connection to a side's socket. */
static int raw_connect(struct pvhvt *p, const char *vm)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        pvhvt_sock(p, LINK, vm, sa.sun_path, sizeof(sa.sun_path));
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CU_ASSERT_FATAL(fd >= 0);
        CU_ASSERT_EQUAL_FATAL(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        return fd;
}

/* Wait for the end of a raw connection: 0 once pvhv closed it. */
static int wait_eof(int fd, int timeout_ms)
{
        long long deadline = pvhvt_now_ms() + timeout_ms;
        char buf[256];
        union {
                struct cmsghdr align;
                char b[CMSG_SPACE(sizeof(int) * 8)];
        } cm;
        while (pvhvt_now_ms() < deadline) {
                struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
                struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b,
                                     .msg_controllen = sizeof(cm.b) };
                ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
                for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); n > 0 && c; c = CMSG_NXTHDR(&mh, c))
                        for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
                                int rfd;
                                memcpy(&rfd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                                close(rfd);
                        }
                if (n == 0 || (n < 0 && errno == ECONNRESET))
                        return 0;
                if (n < 0)
                        pvhvt_sleep_ms(2);
        }
        return -ETIMEDOUT;
}

/* Wait for pvhv to hold want fds (it closes a peer's in the loop's next
 * turn, after the log line). */
static int wait_fds(const struct pvhvt *p, int want)
{
        long long deadline = pvhvt_now_ms() + WAIT;
        while (pvhvt_fd_count(p->pid) != want && pvhvt_now_ms() < deadline)
                pvhvt_sleep_ms(5);
        return pvhvt_fd_count(p->pid);
}

/* Read s until its connection ends: the error that ended it. */
static int wait_closed(struct ivsock *s)
{
        long long deadline = pvhvt_now_ms() + WAIT;
        int rc;
        while ((rc = pvhvt_pump(s)) >= 0 && pvhvt_now_ms() < deadline)
                pvhvt_sleep_ms(2);
        return rc;
}

static bool alive(const struct pvhvt *p)
{
        return kill(p->pid, 0) == 0 && waitpid(p->pid, NULL, WNOHANG) == 0;
}

/* ---- two peers ------------------------------------------------------------- */

/* The header pvhv writes is what pvd computes from the same platform. */
static void check_hdr(const struct pv_ivshm_hdr *h, uint64_t mem_size)
{
        const struct pv_vlink_cfg *cfg = NULL;
        for (unsigned i = 0; i < plat->nvlinks; i++)
                if (strcmp(plat->vlinks[i].link_name, LINK) == 0)
                        cfg = &plat->vlinks[i];
        CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
        size_t sizes[PV_REGION_COUNT];
        uint64_t region[PV_REGION_COUNT];
        struct pv_ivshm_hdr want;
        pv_vlink_cfg_region_sizes(cfg, sizes);
        for (int r = 0; r < PV_REGION_COUNT; r++)
                region[r] = sizes[r];
        memset(&want, 0, sizeof(want));
        CU_ASSERT_EQUAL_FATAL(pv_ivshm_layout(region, cfg->hv_heap, &want), 0);
        CU_ASSERT_EQUAL(h->magic, PV_IVSHM_MAGIC);
        CU_ASSERT_EQUAL(h->version, PV_IVSHM_VERSION);
        CU_ASSERT_EQUAL(h->size, want.size);
        CU_ASSERT_EQUAL(h->size, mem_size);
        CU_ASSERT_EQUAL(h->vectors, PV_IVSHM_VECTORS);
        CU_ASSERT_STRING_EQUAL(h->link_name, LINK);
        CU_ASSERT_STRING_EQUAL(h->vm[PV_SERVER], "vm2");
        CU_ASSERT_STRING_EQUAL(h->vm[PV_CLIENT], "vm3");
        CU_ASSERT_EQUAL(memcmp(h->side, want.side, sizeof(want.side)), 0);
        CU_ASSERT_EQUAL(memcmp(h->region, want.region, sizeof(want.region)), 0);
        CU_ASSERT_EQUAL(memcmp(h->heap, want.heap, sizeof(want.heap)), 0);
        for (int s = 0; s < 2; s++) {
                uint32_t id = h->presence[s].peer_id;
                CU_ASSERT(id <= PV_IVSHM_PEER_ID_MAX);
                CU_ASSERT(id == 0 || PV_IVSHM_PEER_SIDE(id) == (uint32_t)s);
        }
}

static uint32_t id_of(const struct ivsock *s)
{
        return (uint32_t)ivsock_own_id(s);
}

static void test_two_peers(void)
{
        struct pvhvt p;
        unsigned ev;
        START(&p);
        struct ivsock *a = join(&p, "vm2");
        CU_ASSERT_PTR_NOT_NULL_FATAL(a);
        CU_ASSERT_EQUAL(id_of(a), PV_IVSHM_PEER_ID_FIRST(PV_SERVER));
        CU_ASSERT_EQUAL(ivsock_peers(a, NULL, 0), 0);
        struct pv_ivshm_hdr *ha = pvhvt_map_hdr(a);
        CU_ASSERT_PTR_NOT_NULL_FATAL(ha);
        CU_ASSERT_EQUAL(ha->presence[PV_SERVER].present, 1);
        CU_ASSERT_EQUAL(ha->presence[PV_SERVER].peer_id, id_of(a));
        CU_ASSERT_EQUAL(ha->presence[PV_SERVER].conn_gen, 1);
        CU_ASSERT_EQUAL(ha->presence[PV_CLIENT].present, 0);
        CU_ASSERT_EQUAL(ha->presence[PV_CLIENT].peer_id, 0);

        /* The other side joins: each has the other's vectors. */
        struct ivsock *b = join(&p, "vm3");
        CU_ASSERT_PTR_NOT_NULL_FATAL(b);
        CU_ASSERT_EQUAL(id_of(b), PV_IVSHM_PEER_ID_FIRST(PV_CLIENT));
        CU_ASSERT_TRUE(ivsock_peer_present(b, id_of(a)));
        CU_ASSERT_EQUAL(pvhvt_wait_ev(a, IVSOCK_EV_PEER_JOINED, &ev, WAIT), 0);
        uint32_t ids[4];
        CU_ASSERT_EQUAL(ivsock_peers(a, ids, 4), 1);
        CU_ASSERT_EQUAL(ids[0], id_of(b));
        CU_ASSERT_EQUAL(pvhvt_wait_ring(ivsock_own_vector_fd(a, PV_IVSHM_VEC_LINK), WAIT), 1);
        struct pv_ivshm_hdr *hb = pvhvt_map_hdr(b);
        CU_ASSERT_PTR_NOT_NULL_FATAL(hb);
        check_hdr(hb, ivsock_mem_size(b));
        CU_ASSERT_EQUAL(hb->presence[PV_SERVER].present, 1);
        CU_ASSERT_EQUAL(hb->presence[PV_CLIENT].present, 1);
        CU_ASSERT_EQUAL(hb->presence[PV_CLIENT].peer_id, id_of(b));
        CU_ASSERT_EQUAL(hb->presence[PV_CLIENT].conn_gen, 1);
        hb->reserved0 = 0x5a5a; /* one memory: a sees what b writes */
        CU_ASSERT_EQUAL(ha->reserved0, 0x5a5a);

        /* They ring each other. */
        for (int i = 0; i < 3; i++)
                CU_ASSERT_EQUAL(ivsock_ring(a, id_of(b), PV_IVSHM_VEC_XIRQ), 0);
        CU_ASSERT_EQUAL(pvhvt_counter(ivsock_own_vector_fd(b, PV_IVSHM_VEC_XIRQ)), 3);
        CU_ASSERT_EQUAL(pvhvt_counter(ivsock_own_vector_fd(b, PV_IVSHM_VEC_LINK)), 0);
        CU_ASSERT_EQUAL(ivsock_ring(b, id_of(a), PV_IVSHM_VEC_LINK), 0);
        CU_ASSERT_EQUAL(pvhvt_counter(ivsock_own_vector_fd(a, PV_IVSHM_VEC_LINK)), 1);

        /* b leaves: a is told, rung, and the header says so. Keep a copy of
         * b's own vector to see that its next connection gets fresh ones. */
        int old_vec = dup(ivsock_own_vector_fd(b, PV_IVSHM_VEC_XIRQ));
        uint32_t old_id = id_of(b);
        munmap(hb, PV_IVSHM_PAGE);
        ivsock_close(b);
        CU_ASSERT_EQUAL(pvhvt_wait_ev(a, IVSOCK_EV_PEER_LEFT, &ev, WAIT), 0);
        CU_ASSERT_FALSE(ivsock_peer_present(a, old_id));
        CU_ASSERT_EQUAL(ivsock_peers(a, NULL, 0), 0);
        CU_ASSERT_EQUAL(ha->presence[PV_CLIENT].present, 0);
        CU_ASSERT_EQUAL(ha->presence[PV_CLIENT].peer_id, old_id);
        CU_ASSERT_EQUAL(pvhvt_wait_ring(ivsock_own_vector_fd(a, PV_IVSHM_VEC_LINK), WAIT), 1);
        CU_ASSERT_EQUAL(pvhvt_wait_log(&p, "vm3 left", 1, WAIT), 0);
        CU_ASSERT_EQUAL(pvhvt_log_count(&p, "vm3 OFF, told the other side"), 1);

        /* b comes back: the next id of its side (never one a saw leave), a
         * new connection number, fresh eventfds. */
        b = join(&p, "vm3");
        CU_ASSERT_PTR_NOT_NULL_FATAL(b);
        CU_ASSERT_EQUAL(id_of(b), old_id + 2);
        CU_ASSERT_EQUAL(pvhvt_wait_ev(a, IVSOCK_EV_PEER_JOINED, &ev, WAIT), 0);
        CU_ASSERT_TRUE(ivsock_peer_present(a, id_of(b)));
        CU_ASSERT_EQUAL(ha->presence[PV_CLIENT].present, 1);
        CU_ASSERT_EQUAL(ha->presence[PV_CLIENT].peer_id, id_of(b));
        CU_ASSERT_EQUAL(ha->presence[PV_CLIENT].conn_gen, 2);
        CU_ASSERT_EQUAL(ivsock_ring(a, id_of(b), PV_IVSHM_VEC_XIRQ), 0);
        CU_ASSERT_EQUAL(pvhvt_counter(ivsock_own_vector_fd(b, PV_IVSHM_VEC_XIRQ)), 1);
        CU_ASSERT_EQUAL(pvhvt_counter(old_vec), 0);
        close(old_vec);
        CU_ASSERT_EQUAL(pvhvt_log_count(&p, "vm3 joined"), 2);

        /* pvhv stops: both see the end of their connection. */
        munmap(ha, PV_IVSHM_PAGE);
        STOP(&p);
        CU_ASSERT_EQUAL(wait_closed(a), -ECONNRESET);
        CU_ASSERT_EQUAL(wait_closed(b), -ECONNRESET);
        ivsock_close(a);
        ivsock_close(b);
}

/* ---- hostile peers ------------------------------------------------------------- */

static void test_junk(void)
{
        struct pvhvt p;
        START(&p);
        struct ivsock *a = join(&p, "vm2");
        CU_ASSERT_PTR_NOT_NULL_FATAL(a);
        int fds = pvhvt_fd_count(p.pid);

        /* A peer on vm3's socket that writes to it is dropped. */
        int h = raw_connect(&p, "vm3");
        CU_ASSERT_EQUAL(pvhvt_wait_ev(a, IVSOCK_EV_PEER_JOINED, NULL, WAIT), 0);
        CU_ASSERT_EQUAL(write(h, "hello, pvhv", 11), 11);
        CU_ASSERT_EQUAL(wait_eof(h, WAIT), 0);
        close(h);
        CU_ASSERT_EQUAL(pvhvt_wait_ev(a, IVSOCK_EV_PEER_LEFT, NULL, WAIT), 0);
        CU_ASSERT_EQUAL(pvhvt_log_count(&p, "it sent 11 bytes, but the ivshmem protocol is one-way"), 1);

        /* One that sends fds: they are closed with it. */
        h = raw_connect(&p, "vm3");
        int efd = eventfd(0, EFD_CLOEXEC);
        uint64_t junk = 0;
        union {
                struct cmsghdr align;
                char b[CMSG_SPACE(sizeof(int) * 3)];
        } cm;
        memset(&cm, 0, sizeof(cm));
        struct iovec iov = { .iov_base = &junk, .iov_len = sizeof(junk) };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b, .msg_controllen = sizeof(cm.b) };
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * 3);
        int three[3] = { efd, efd, efd };
        memcpy(CMSG_DATA(c), three, sizeof(three));
        CU_ASSERT_EQUAL(sendmsg(h, &mh, MSG_NOSIGNAL), 8);
        close(efd);
        CU_ASSERT_EQUAL(wait_eof(h, WAIT), 0);
        close(h);
        CU_ASSERT_EQUAL(pvhvt_wait_log(&p, "it sent 8 bytes and fds", 1, WAIT), 0);

        /* The legitimate peer comes and a is served as before. */
        struct ivsock *b = join(&p, "vm3");
        CU_ASSERT_PTR_NOT_NULL_FATAL(b);
        CU_ASSERT_EQUAL(pvhvt_wait_ev(a, IVSOCK_EV_PEER_JOINED, NULL, WAIT), 0);
        CU_ASSERT_EQUAL(ivsock_ring(b, id_of(a), PV_IVSHM_VEC_XIRQ), 0);
        CU_ASSERT_EQUAL(pvhvt_wait_ring(ivsock_own_vector_fd(a, PV_IVSHM_VEC_XIRQ), WAIT), 1);

        /* A second peer for vm3 while b is there: refused at once; b and a
         * go on. */
        h = raw_connect(&p, "vm3");
        CU_ASSERT_EQUAL(wait_eof(h, WAIT), 0);
        close(h);
        CU_ASSERT_EQUAL(pvhvt_wait_log(&p, "a second peer for vm3", 1, WAIT), 0);
        CU_ASSERT_EQUAL(pvhvt_log_count(&p, "refused (one peer per side)"), 1);
        CU_ASSERT_EQUAL(pvhvt_pump(b), 0);
        CU_ASSERT_TRUE(ivsock_peer_present(b, id_of(a)));
        CU_ASSERT_EQUAL(ivsock_ring(a, id_of(b), PV_IVSHM_VEC_XIRQ), 0);
        CU_ASSERT_EQUAL(pvhvt_wait_ring(ivsock_own_vector_fd(b, PV_IVSHM_VEC_XIRQ), WAIT), 1);

        ivsock_close(b);
        CU_ASSERT_EQUAL(pvhvt_wait_ev(a, IVSOCK_EV_PEER_LEFT, NULL, WAIT), 0);
        CU_ASSERT_EQUAL(pvhvt_wait_log(&p, "vm3 left", 3, WAIT), 0);
        CU_ASSERT_EQUAL(wait_fds(&p, fds), fds);
        ivsock_close(a);
        STOP(&p);
}

/* Many connections to one side at once: the first is the peer, the others
 * are refused, and the side serves again once it leaves. */
static void test_many_at_once(void)
{
        enum { N = 40 };
        struct pvhvt p;
        START(&p);
        char path[256];
        pvhvt_sock(&p, LINK, "vm3", path, sizeof(path));
        struct ivsock *s[N];
        for (int i = 0; i < N; i++) {
                int rc;
                while ((rc = ivsock_connect(path, &s[i])) == -EAGAIN)
                        pvhvt_sleep_ms(2); /* the backlog is full: pvhv is accepting */
                CU_ASSERT_EQUAL_FATAL(rc, 0);
        }
        int ready = 0, refused = 0;
        for (int i = 0; i < N; i++) {
                int rc = pvhvt_wait_ev(s[i], IVSOCK_EV_READY, NULL, WAIT);
                ready += rc == 0;
                refused += rc == -ECONNRESET;
        }
        CU_ASSERT_EQUAL(ready, 1);
        CU_ASSERT_EQUAL(refused, N - 1);
        CU_ASSERT_EQUAL(pvhvt_log_count(&p, "a second peer for vm3"), N - 1);
        for (int i = 0; i < N; i++)
                ivsock_close(s[i]);
        CU_ASSERT_EQUAL(pvhvt_wait_log(&p, "vm3 left", 1, WAIT), 0);
        struct ivsock *b = join(&p, "vm3");
        CU_ASSERT_PTR_NOT_NULL(b);
        ivsock_close(b);
        STOP(&p);
}

/* Connections opened and closed in a storm while the other side is
 * there: it follows every join and leave, and both keep working. */
static void test_storm(void)
{
        enum { N = 300 };
        struct pvhvt p;
        START(&p);
        char path[256];
        pvhvt_sock(&p, LINK, "vm3", path, sizeof(path));
        struct ivsock *a = join(&p, "vm2");
        CU_ASSERT_PTR_NOT_NULL_FATAL(a);
        int fds = pvhvt_fd_count(p.pid);
        for (int i = 0; i < N; i++) {
                struct ivsock *s;
                int rc;
                while ((rc = ivsock_connect(path, &s)) == -EAGAIN) {
                        CU_ASSERT_EQUAL_FATAL(pvhvt_pump(a) >= 0, true);
                        pvhvt_sleep_ms(1); /* the backlog is full */
                }
                CU_ASSERT_EQUAL_FATAL(rc, 0);
                ivsock_close(s);
                CU_ASSERT_EQUAL_FATAL(pvhvt_pump(a) >= 0, true);
        }
        /* Every storm connection joined and left, or was refused while
         * another was there: vm3 ends absent. */
        struct pv_ivshm_hdr *h = pvhvt_map_hdr(a);
        CU_ASSERT_PTR_NOT_NULL_FATAL(h);
        long long deadline = pvhvt_now_ms() + WAIT;
        while (pvhvt_now_ms() < deadline &&
               (pvhvt_log_count(&p, "vm3 joined") + pvhvt_log_count(&p, "a second peer for vm3") < N ||
                pvhvt_log_count(&p, "vm3 left") < pvhvt_log_count(&p, "vm3 joined"))) {
                CU_ASSERT_EQUAL_FATAL(pvhvt_pump(a) >= 0, true);
                pvhvt_sleep_ms(5);
        }
        CU_ASSERT_EQUAL(pvhvt_log_count(&p, "vm3 joined") + pvhvt_log_count(&p, "a second peer for vm3"), N);
        CU_ASSERT_EQUAL(pvhvt_log_count(&p, "vm3 left"), pvhvt_log_count(&p, "vm3 joined"));
        CU_ASSERT(pvhvt_log_count(&p, "vm3 joined") > 0);
        CU_ASSERT_EQUAL(pvhvt_pump(a) >= 0, true);
        CU_ASSERT_EQUAL(ivsock_peers(a, NULL, 0), 0);
        CU_ASSERT_EQUAL(h->presence[PV_CLIENT].present, 0);
        CU_ASSERT_EQUAL(h->presence[PV_CLIENT].conn_gen, (uint32_t)pvhvt_log_count(&p, "vm3 joined"));
        CU_ASSERT_EQUAL(wait_fds(&p, fds), fds);

        struct ivsock *b = join(&p, "vm3");
        CU_ASSERT_PTR_NOT_NULL_FATAL(b);
        CU_ASSERT_EQUAL(pvhvt_wait_ev(a, IVSOCK_EV_PEER_JOINED, NULL, WAIT), 0);
        CU_ASSERT_EQUAL(ivsock_ring(a, id_of(b), PV_IVSHM_VEC_XIRQ), 0);
        CU_ASSERT_EQUAL(pvhvt_wait_ring(ivsock_own_vector_fd(b, PV_IVSHM_VEC_XIRQ), WAIT), 1);
        munmap(h, PV_IVSHM_PAGE);
        ivsock_close(a);
        ivsock_close(b);
        STOP(&p);
}

/* A peer that never reads its socket is dropped once it is full; its side
 * serves the next peer. */
static void test_no_reader(void)
{
        struct pvhvt p;
        START(&p);
        struct ivsock *a = join(&p, "vm2");
        CU_ASSERT_PTR_NOT_NULL_FATAL(a);
        int cycles = 0;
        while (pvhvt_log_count(&p, "it does not read its socket; dropping it") == 0 && cycles < 5000) {
                struct ivsock *b = join(&p, "vm3");
                CU_ASSERT_PTR_NOT_NULL_FATAL(b);
                ivsock_close(b);
                cycles++;
                CU_ASSERT_EQUAL_FATAL(pvhvt_wait_log(&p, "vm3 left", cycles, WAIT), 0);
        }
        CU_ASSERT(cycles < 5000);
        CU_ASSERT_EQUAL(pvhvt_log_count(&p, "vm2 left"), 1);
        /* a finds the end of its connection after what was queued. */
        CU_ASSERT_EQUAL(wait_closed(a), -ECONNRESET);
        ivsock_close(a);
        a = join(&p, "vm2");
        CU_ASSERT_PTR_NOT_NULL(a);
        ivsock_close(a);
        STOP(&p);
}

/* pvhv never reads the memory: a peer that scribbles all of it, header
 * included, hurts nobody; the next peer to join finds pvhv's header. */
static void test_scribble(void)
{
        struct pvhvt p;
        START(&p);
        struct ivsock *a = join(&p, "vm2");
        CU_ASSERT_PTR_NOT_NULL_FATAL(a);
        uint64_t size = ivsock_mem_size(a);
        uint8_t *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, ivsock_mem_fd(a), 0);
        CU_ASSERT_FATAL(m != MAP_FAILED);
        memset(m, 0xa5, size);
        pvhvt_sleep_ms(20);
        CU_ASSERT_TRUE(alive(&p));

        struct ivsock *b = join(&p, "vm3");
        CU_ASSERT_PTR_NOT_NULL_FATAL(b);
        const struct pv_ivshm_hdr *h = (const struct pv_ivshm_hdr *)m;
        check_hdr(h, size);
        CU_ASSERT_EQUAL(h->presence[PV_SERVER].present, 1);
        CU_ASSERT_EQUAL(h->presence[PV_SERVER].conn_gen, 1);
        CU_ASSERT_EQUAL(h->presence[PV_CLIENT].present, 1);
        CU_ASSERT_EQUAL(h->presence[PV_CLIENT].conn_gen, 1);
        CU_ASSERT_EQUAL(m[size - 1], 0xa5); /* the rest is the peers' business */
        CU_ASSERT_EQUAL(pvhvt_wait_ev(a, IVSOCK_EV_PEER_JOINED, NULL, WAIT), 0);
        CU_ASSERT_EQUAL(ivsock_ring(b, id_of(a), PV_IVSHM_VEC_XIRQ), 0);
        CU_ASSERT_EQUAL(pvhvt_wait_ring(ivsock_own_vector_fd(a, PV_IVSHM_VEC_XIRQ), WAIT), 1);
        munmap(m, size);
        ivsock_close(a);
        ivsock_close(b);
        STOP(&p);
}

/* Joins, leaves, refusals and junk, many times over: pvhv ends with the
 * fds it started with. */
static void test_fd_leak(void)
{
        enum { N = 50 };
        struct pvhvt p;
        START(&p);
        int fds = pvhvt_fd_count(p.pid);
        CU_ASSERT(fds > 0);
        for (int i = 0; i < N; i++) {
                struct ivsock *a = join(&p, "vm2"), *b = join(&p, "vm3");
                CU_ASSERT_PTR_NOT_NULL_FATAL(a);
                CU_ASSERT_PTR_NOT_NULL_FATAL(b);
                int h = raw_connect(&p, "vm3"); /* refused */
                CU_ASSERT_EQUAL(wait_eof(h, WAIT), 0);
                close(h);
                ivsock_close(b);
                CU_ASSERT_EQUAL_FATAL(pvhvt_wait_ev(a, IVSOCK_EV_PEER_LEFT, NULL, WAIT), 0);
                h = raw_connect(&p, "vm3"); /* joins, then sends junk */
                CU_ASSERT_EQUAL(write(h, "x", 1), 1);
                CU_ASSERT_EQUAL(wait_eof(h, WAIT), 0);
                close(h);
                ivsock_close(a);
                CU_ASSERT_EQUAL_FATAL(pvhvt_wait_log(&p, "vm2 left", i + 1, WAIT), 0);
        }
        CU_ASSERT_EQUAL(pvhvt_wait_log(&p, "vm3 left", 2 * N, WAIT), 0);
        CU_ASSERT_EQUAL(pvhvt_log_count(&p, "a second peer for vm3"), N);
        CU_ASSERT_EQUAL(wait_fds(&p, fds), fds);
        STOP(&p);
}

/* ---- the command ---------------------------------------------------------------- */

static int run(const char *const *argv, char *out, size_t cap)
{
        int pfd[2];
        if (pipe2(pfd, O_CLOEXEC) < 0)
                return -errno;
        pid_t pid = fork();
        if (pid == 0) {
                dup2(pfd[1], 1);
                dup2(pfd[1], 2);
                execv(argv[0], (char *const *)argv);
                _exit(127);
        }
        close(pfd[1]);
        size_t n = 0;
        ssize_t r;
        while (n + 1 < cap && (r = read(pfd[0], out + n, cap - 1 - n)) > 0)
                n += (size_t)r;
        out[n] = 0;
        close(pfd[0]);
        int st;
        waitpid(pid, &st, 0);
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void test_second_pvhv(void)
{
        struct pvhvt p;
        char out[2048];
        START(&p);
        const char *bin = getenv("PVHV_BIN");
        const char *argv[] = { bin, "--config", dtb, "--dir", p.sock_dir, NULL };
        CU_ASSERT_EQUAL(run(argv, out, sizeof(out)), 1);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "another pvhv (pid "));
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "stop it first"));
        CU_ASSERT_TRUE(alive(&p));
        struct ivsock *a = join(&p, "vm2"); /* the first still serves */
        CU_ASSERT_PTR_NOT_NULL(a);
        ivsock_close(a);
        STOP(&p);
}

static void test_qemu_args(void)
{
        char out[2048], want[2048], cwd[512];
        const char *bin = getenv("PVHV_BIN");
        CU_ASSERT_FATAL(getcwd(cwd, sizeof(cwd)) != NULL);
        const char *argv[] = { bin, "--config", dtb, "--dir", "rel,dir", "--qemu-args", "vm3", NULL };
        CU_ASSERT_EQUAL(run(argv, out, sizeof(out)), 0);
        /* vm3's vlinks in tree order; a comma in the path doubled for QEMU. */
        snprintf(want, sizeof(want),
                 "-chardev socket,id=pv-vm2-vm3-vogl0,path=%s/rel,,dir/vm2-vm3-vogl0.vm3.sock "
                 "-device ivshmem-doorbell,chardev=pv-vm2-vm3-vogl0,vectors=2\n"
                 "-chardev socket,id=pv-vm2-vm3-vdef0,path=%s/rel,,dir/vm2-vm3-vdef0.vm3.sock "
                 "-device ivshmem-doorbell,chardev=pv-vm2-vm3-vdef0,vectors=2\n",
                 cwd, cwd);
        CU_ASSERT_STRING_EQUAL(out, want);
        const char *argv2[] = { bin, "--config", dtb, "--dir", "/x", "--qemu-args", "vm9", NULL };
        CU_ASSERT_EQUAL(run(argv2, out, sizeof(out)), 2);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "no VM called \"vm9\" (this platform has: vm2, vm3, vm4)"));
        const char *argv3[] = { bin, "--config", "/nonexistent.dtb", "--dir", "/x", NULL };
        CU_ASSERT_EQUAL(run(argv3, out, sizeof(out)), 1);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "/nonexistent.dtb: cannot open"));
}

int main(void)
{
        static const struct {
                const char *name;
                CU_TestFunc fn;
        } tests[] = {
                { "two peers join, ring, leave and come back", test_two_peers },
                { "junk, fds and a second peer", test_junk },
                { "many connections at once", test_many_at_once },
                { "connect/close storm", test_storm },
                { "a peer that never reads", test_no_reader },
                { "a peer scribbles the whole memory", test_scribble },
                { "no fd leaks over many joins", test_fd_leak },
                { "a second pvhv on one directory", test_second_pvhv },
                { "--qemu-args", test_qemu_args },
        };
        const char *fixtures = getenv("PV_TEST_FIXTURES");
        if (!fixtures || !getenv("PVHV_BIN")) {
                fprintf(stderr, "PV_TEST_FIXTURES or PVHV_BIN unset; run via meson test\n");
                return 77;
        }
        snprintf(dtb, sizeof(dtb), "%s/config-good-hv-heap.dtb", fixtures);
        plat = malloc(sizeof(*plat));
        char err[512];
        if (!plat || pv_config_load_file(dtb, plat, err, sizeof(err)) < 0) {
                fprintf(stderr, "%s\n", err);
                return 1;
        }
        signal(SIGPIPE, SIG_IGN);
        int fds_before = pvhvt_fd_count(getpid());
        if (CU_initialize_registry() != CUE_SUCCESS)
                return 1;
        CU_pSuite suite = CU_add_suite("pvhv", NULL, NULL);
        if (!suite)
                return 1;
        for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
                if (!CU_add_test(suite, tests[i].name, tests[i].fn))
                        return 1;
        CU_basic_set_mode(CU_BRM_VERBOSE);
        CU_basic_run_tests();
        unsigned failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
        CU_cleanup_registry();
        free(plat);
        if (pvhvt_fd_count(getpid()) != fds_before) {
                fprintf(stderr, "fd leak: %d open before, %d after\n", fds_before, pvhvt_fd_count(getpid()));
                failed++;
        }
        return failed ? 1 : 0;
}

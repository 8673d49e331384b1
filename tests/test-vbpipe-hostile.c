/* VBPIPE under a hostile peer (DESIGN §5), across real pvds
 * (test-2clients: vm2 serves vbpipe0, vm4 is the client):
 *   - a third mapping of the vbpipe memory writes impossible ring indices
 *     (a producer index beyond the consumer's plus the ring size, or behind
 *     it; a consumer index beyond the producer's) while the programs
 *     stream both ways: the pvd that reads the index says so in its log
 *     and resets the vlink, neither pvd dies, the programs get the bytes
 *     that were really sent, then EOF and EPIPE, never garbage or a hang;
 *   - a fake vm4 pvd sends a FIN beyond (or behind) the bytes it produced:
 *     vm2's pvd resets the vlink, its program reads what was produced,
 *     then EOF; other impossible control messages reset the vlink too.
 * After each, the pipe works again once the vlink is back.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "pv-bytering.h"
#include "hv/emu-proto.h"
#include "pv-ring.h"
#include "pvt-run.h"
#include "pvtest.h"
#include "vbpipe-proto.h"
#include "vbpipe-stream.h"
#include "vbpipe-test.h"

#define LINK "vm2-vm4-vbpipe0"

static struct pvt_platform plat;

static bool pvd_alive(const char *vm)
{
        msgpack_zone zone;
        msgpack_object doc;
        msgpack_zone_init(&zone, 4096);
        pid_t pid = pvt_vm(&plat, vm)->pid;
        bool ok = pid && waitpid(pid, NULL, WNOHANG) == 0 && pvt_status(&plat, vm, &zone, &doc) == 0;
        msgpack_zone_destroy(&zone);
        return ok;
}

/* How often vm's log says what. */
static int log_count(const char *vm, const char *what)
{
        static char log[1 << 20];
        if (pvt_read_file(pvt_vm(&plat, vm)->log, log, sizeof(log)) < 0)
                return 0;
        int n = 0;
        for (const char *s = log; (s = strstr(s, what)); s++)
                n++;
        return n;
}

/* The vbpipe memory of the vlink as it is now: the server's memfd, found
 * through /proc and mapped a third time. */
static void *map_vbpipe(size_t *size)
{
        char want[96];
        snprintf(want, sizeof(want), "pvd-%s-r%d", LINK, PV_REGION_VBPIPE);
        int fd = pvt_open_emu_object(pvt_vm(&plat, "vm2")->pid, want);
        if (fd < 0)
                return NULL;
        void *base = pvt_map_emu_object(fd, size);
        close(fd);
        return base;
}

static void wait_link_on(void)
{
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm2", LINK, "ON", 10000), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm4", LINK, "ON", 10000), 0);
}

/* ---- impossible ring indices ------------------------------------------------------ */

enum scribble { PROD_AHEAD, PROD_BEHIND, CONS_AHEAD };

struct bad_index {
        const char *what;
        bool c2s;               /* the client -> server ring, else server -> client */
        enum scribble how;
        const char *reader;     /* the pvd that reads that index */
};

static const struct bad_index bad_indices[] = {
        { "vm4's producer index beyond vm2's consumer index + the ring size", true, PROD_AHEAD, "vm2" },
        { "vm4's producer index behind vm2's consumer index", true, PROD_BEHIND, "vm2" },
        { "vm4's consumer index beyond vm2's producer index", false, CONS_AHEAD, "vm2" },
        { "vm2's producer index beyond vm4's consumer index + the ring size", false, PROD_AHEAD, "vm4" },
        { "vm2's consumer index beyond vm4's producer index", true, CONS_AHEAD, "vm4" },
};

/* Far enough from the honest index that no progress of the honest side
 * makes it plausible again. */
#define FAR 0x40000000u

static void scribble(struct pv_ring_hdr *r, enum scribble how)
{
        switch (how) {
        case PROD_AHEAD:
                __atomic_store_n(&r->prod, __atomic_load_n(&r->cons, __ATOMIC_RELAXED) + FAR, __ATOMIC_RELEASE);
                break;
        case PROD_BEHIND:
                __atomic_store_n(&r->prod, __atomic_load_n(&r->cons, __ATOMIC_RELAXED) - FAR, __ATOMIC_RELEASE);
                break;
        case CONS_AHEAD:
                __atomic_store_n(&r->cons, __atomic_load_n(&r->prod, __ATOMIC_RELAXED) + FAR, __ATOMIC_RELEASE);
                break;
        }
}

static void test_bad_indices(void)
{
        for (size_t k = 0; k < sizeof(bad_indices) / sizeof(bad_indices[0]); k++) {
                const struct bad_index *c = &bad_indices[k];
                int before = log_count(c->reader, "impossible");
                pid_t a, b;
                vbt_start_streams(&a, &b);
                size_t size;
                struct vbpipe_region *h = map_vbpipe(&size);
                CU_ASSERT_PTR_NOT_NULL_FATAL(h);
                CU_ASSERT_EQUAL(h->magic, VBPIPE_MAGIC);
                /* The honest side rewrites its index as it goes: keep
                 * scribbling until the reader has seen ours. */
                long long end = pvt_now_ms() + VBT_PROMPT_MS;
                bool seen = false;
                while (!seen && pvt_now_ms() < end) {
                        for (int i = 0; i < 256; i++)
                                scribble(c->c2s ? &h->c2s : &h->s2c, c->how);
                        seen = log_count(c->reader, "impossible") > before;
                }
                munmap(h, size);
                if (!seen)
                        printf("\n    %s: %s's pvd did not notice ", c->what, c->reader);
                CU_ASSERT(seen);
                vbt_check_survivor(a, 0, c->what, false);
                vbt_check_survivor(b, 1, c->what, false);
                CU_ASSERT(pvd_alive("vm2"));
                CU_ASSERT(pvd_alive("vm4"));
                CU_ASSERT(log_count(c->reader, "resetting the link") > 0);
                wait_link_on();
                vbt_conversation();
        }
}

/* ---- a fake vm4 that lies about where its bytes end --------------------------------- */

struct fake {
        int sock;
        int fds[PV_EMU_MAX_FDS];
        unsigned nfds;
        uint8_t *ctl, *mem;
        size_t ctl_size, mem_size;
        int xirq_tx;            /* client -> server */
        struct pv_ring tx, rx;  /* control rings */
        struct pv_ring data;    /* client -> server bytes */
};

static int emu_send(int sock, uint32_t type)
{
        struct pv_emu_msg m;
        memset(&m, 0, sizeof(m));
        m.magic = PV_EMU_MAGIC;
        m.version = PV_EMU_VERSION;
        m.type = type;
        snprintf(m.client_vm, sizeof(m.client_vm), "vm4");
        snprintf(m.server_vm, sizeof(m.server_vm), "vm2");
        snprintf(m.link_name, sizeof(m.link_name), LINK);
        return send(sock, &m, sizeof(m), MSG_NOSIGNAL) == sizeof(m) ? 0 : -errno;
}

static int fake_join(struct fake *f)
{
        memset(f, 0, sizeof(*f));
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s.sock", plat.platform_dir, LINK);
        f->sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (f->sock < 0 || connect(f->sock, (struct sockaddr *)&sa, sizeof(sa)) < 0 || emu_send(f->sock, PV_EMU_JOIN))
                return -EIO;
        struct pv_emu_msg m;
        union {
                char b[CMSG_SPACE(sizeof(int) * PV_EMU_MAX_FDS)];
                struct cmsghdr a;
        } u;
        struct iovec iov = { .iov_base = &m, .iov_len = sizeof(m) };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof(u.b) };
        struct pollfd pf = { .fd = f->sock, .events = POLLIN };
        if (poll(&pf, 1, 3000) != 1 || recvmsg(f->sock, &mh, MSG_CMSG_CLOEXEC) != sizeof(m))
                return -EIO;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
                for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int) && f->nfds < PV_EMU_MAX_FDS; i++)
                        memcpy(&f->fds[f->nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        if (m.type != PV_EMU_HELLO || !(m.region_mask & (1u << PV_REGION_VBPIPE)) || f->nfds < 4)
                return -EPROTO;
        /* Regions in order (CTL first), then the two control xIRQs. */
        unsigned k = 0;
        for (int i = 0; i < PV_REGION_COUNT; i++) {
                if (!(m.region_mask & (1u << i)))
                        continue;
                void *p = mmap(NULL, m.region_size[i], PROT_READ | PROT_WRITE, MAP_SHARED, f->fds[k++],
                               (off_t)m.region_offset[i]);
                if (p == MAP_FAILED)
                        return -errno;
                if (i == PV_REGION_CTL) {
                        f->ctl = p;
                        f->ctl_size = m.region_size[i];
                } else if (i == PV_REGION_VBPIPE) {
                        f->mem = p;
                        f->mem_size = m.region_size[i];
                } else {
                        munmap(p, m.region_size[i]);
                }
        }
        f->xirq_tx = f->fds[k + 1];
        struct pv_vlink_ctl *ctl = (struct pv_vlink_ctl *)f->ctl;
        pv_ring_init(&f->tx, &ctl->c2s, f->ctl + PV_CTL_C2S_DATA, PV_CTL_RING_SIZE, false);
        pv_ring_init(&f->rx, &ctl->s2c, f->ctl + PV_CTL_S2C_DATA, PV_CTL_RING_SIZE, false);
        struct vbpipe_region *h = (struct vbpipe_region *)f->mem;
        pv_ring_init(&f->data, &h->c2s, f->mem + vbpipe_c2s_data(h->ring_size), h->ring_size, false);
        return emu_send(f->sock, PV_EMU_READY);
}

static void fake_fini(struct fake *f)
{
        if (f->ctl)
                munmap(f->ctl, f->ctl_size);
        if (f->mem)
                munmap(f->mem, f->mem_size);
        for (unsigned i = 0; i < f->nfds; i++)
                close(f->fds[i]);
        if (f->sock > 0)
                close(f->sock);
}

static void fake_notify(struct fake *f)
{
        uint64_t one = 1;
        CU_ASSERT(write(f->xirq_tx, &one, sizeof(one)) == sizeof(one));
}

static void fake_send(struct fake *f, uint32_t type, uint32_t gen, uint32_t peer_gen, uint32_t index)
{
        struct vbpipe_msg m = { .gen = gen, .peer_gen = peer_gen, .index = index };
        CU_ASSERT_EQUAL(pv_ring_send(&f->tx, PV_TAG(PV_DRV_VBPIPE, type), &m, sizeof(m)), 0);
        fake_notify(f);
}

/* The server's next vbpipe message of that type (polling). */
static int fake_expect(struct fake *f, uint32_t type, struct vbpipe_msg *m)
{
        long long end = pvt_now_ms() + 5000;
        while (pvt_now_ms() < end) {
                uint32_t tag, len;
                uint8_t buf[PV_CTL_MSG_MAX];
                int rc = pv_ring_recv(&f->rx, &tag, buf, sizeof(buf), &len);
                if (rc == 0 && tag == PV_TAG(PV_DRV_VBPIPE, type) && len == sizeof(*m)) {
                        memcpy(m, buf, sizeof(*m));
                        return 0;
                }
                if (rc < 0 && rc != -EAGAIN)
                        return rc;
                if (rc == -EAGAIN)
                        usleep(1000);
        }
        return -ETIMEDOUT;
}

/* Bytes of vm4's stream into the client -> server ring. */
static void fake_produce(struct fake *f, struct vbs_stream *st, uint32_t n)
{
        struct iovec iov[2];
        int cnt;
        CU_ASSERT_FATAL(pv_bytering_wspan(&f->data, iov, &cnt) >= n);
        uint32_t left = n;
        for (int i = 0; i < cnt && left; i++) {
                size_t k = iov[i].iov_len < left ? iov[i].iov_len : left;
                vbs_fill(st, iov[i].iov_base, k);
                left -= (uint32_t)k;
        }
        pv_bytering_produce(&f->data, n);
        fake_notify(f);
}

/* vm4's pvd replaced by the fake, a reader in vm2 waiting in its open,
 * the fake's end 1 announced and offered a PAIR (not yet accepted). The
 * reader's pid; *srv_end: the server's end. */
static pid_t fake_with_reader(struct fake *f, uint32_t *srv_end)
{
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_stop(&plat, "vm4", SIGTERM), 0);
        CU_ASSERT_EQUAL_FATAL(fake_join(f), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm2", LINK, "ON", 5000), 0);
        pid_t a = vbt_run(0, "vm2", VBT_READ, false);
        struct vbpipe_msg m;
        CU_ASSERT_EQUAL_FATAL(fake_expect(f, VBPIPE_MSG_OPEN, &m), 0);
        *srv_end = m.gen;
        fake_send(f, VBPIPE_MSG_OPEN, 1, 0, 0);
        CU_ASSERT_EQUAL_FATAL(fake_expect(f, VBPIPE_MSG_PAIR, &m), 0);
        CU_ASSERT_EQUAL(m.gen, *srv_end);
        CU_ASSERT_EQUAL(m.peer_gen, 1);
        return a;
}

/* A FIN that claims bytes never produced, ahead of or behind what was. */
static void fin_lie(uint32_t produced, uint32_t claimed)
{
        int before = log_count("vm2", "impossible message");
        struct fake f;
        uint32_t srv_end;
        pid_t a = fake_with_reader(&f, &srv_end);
        fake_send(&f, VBPIPE_MSG_ACCEPT, 1, srv_end, 0);
        CU_ASSERT(VBT_WAIT_FOR(vbt_pg[0].opened, 5000));
        struct vbs_stream st;
        vbs_init(&st, vbt_seed(1));
        fake_produce(&f, &st, produced);
        /* Let vm2 move them to its program first, or not: either way they
         * are the program's. */
        usleep(50 * 1000);
        fake_send(&f, VBPIPE_MSG_FIN, 1, 0, claimed);
        CU_ASSERT_EQUAL(pvt_wait(a, VBT_PROMPT_MS), 0);
        CU_ASSERT_FALSE(vbt_pg[0].wrong);
        CU_ASSERT_EQUAL(vbt_pg[0].got, produced);
        CU_ASSERT_EQUAL(vbt_pg[0].rerr, 0);
        CU_ASSERT_EQUAL(vbt_pg[0].werr2, EPIPE);
        CU_ASSERT(log_count("vm2", "impossible message") > before);
        CU_ASSERT(pvd_alive("vm2"));
        fake_fini(&f);
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm4", NULL), 0);
        wait_link_on();
        vbt_conversation();
}

/* The server drops the fake (closes the link socket) within ms. */
static bool fake_dropped(struct fake *f, int ms)
{
        long long end = pvt_now_ms() + ms;
        while (pvt_now_ms() < end) {
                struct pollfd pf = { .fd = f->sock, .events = POLLIN };
                if (poll(&pf, 1, 50) == 1) {
                        struct pv_emu_msg m;
                        ssize_t n = recv(f->sock, &m, sizeof(m), MSG_DONTWAIT);
                        if (n == 0 || (n < 0 && errno != EAGAIN))
                                return true;
                }
        }
        return false;
}

/* Messages no honest pvd sends, each on a fresh link: each resets it. */
static void test_bad_messages(void)
{
        static const struct {
                const char *what;
                uint32_t type, len, gen, peer_gen, index;
                bool open_first;
        } bad[] = {
                { "an unknown message type", 99, sizeof(struct vbpipe_msg), 1, 0, 0, false },
                { "a message of the wrong length", VBPIPE_MSG_OPEN, 8, 1, 0, 0, false },
                { "an OPEN of an end that is not new", VBPIPE_MSG_OPEN, sizeof(struct vbpipe_msg), 1, 0, 0, true },
                { "a PAIR from the client", VBPIPE_MSG_PAIR, sizeof(struct vbpipe_msg), 1, 1, 0, true },
                { "an ACCEPT of a PAIR never offered", VBPIPE_MSG_ACCEPT, sizeof(struct vbpipe_msg), 1, 1, 0, true },
                { "a STOP of an end never announced", VBPIPE_MSG_STOP, sizeof(struct vbpipe_msg), 7, 0, 0, false },
                { "a FIN of an end never announced", VBPIPE_MSG_FIN, sizeof(struct vbpipe_msg), 7, 0, 0, false },
                { "an OPEN with an index", VBPIPE_MSG_OPEN, sizeof(struct vbpipe_msg), 1, 0, 5, false },
        };
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_stop(&plat, "vm4", SIGTERM), 0);
        for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
                int before = log_count("vm2", "vbpipe vbpipe0:");
                struct fake f;
                CU_ASSERT_EQUAL_FATAL(fake_join(&f), 0);
                CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm2", LINK, "ON", 5000), 0);
                if (bad[k].open_first)
                        fake_send(&f, VBPIPE_MSG_OPEN, 1, 0, 0);
                struct vbpipe_msg m = { .gen = bad[k].gen, .peer_gen = bad[k].peer_gen, .index = bad[k].index };
                CU_ASSERT_EQUAL(pv_ring_send(&f.tx, PV_TAG(PV_DRV_VBPIPE, bad[k].type), &m, bad[k].len), 0);
                fake_notify(&f);
                bool dropped = fake_dropped(&f, 3000);
                if (!dropped)
                        printf("\n    %s: the link stays up ", bad[k].what);
                CU_ASSERT(dropped);
                CU_ASSERT(log_count("vm2", "vbpipe vbpipe0:") > before);
                CU_ASSERT(pvd_alive("vm2"));
                fake_fini(&f);
                CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm2", LINK, "OFF", 5000), 0);
        }
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm4", NULL), 0);
        wait_link_on();
        vbt_conversation();
}

/* The client refuses a PAIR (its end closed before the PAIR came: STOP and
 * FIN, no ACCEPT): the server's program goes on waiting, and its open
 * returns with the client's next end, whose bytes it reads. */
static void test_pair_refused(void)
{
        int before = log_count("vm2", "impossible message");
        struct fake f;
        uint32_t srv_end;
        pid_t a = fake_with_reader(&f, &srv_end);
        struct vbpipe_msg m;
        fake_send(&f, VBPIPE_MSG_STOP, 1, 0, 0);
        fake_send(&f, VBPIPE_MSG_FIN, 1, 0, 0);
        usleep(200 * 1000);
        CU_ASSERT_EQUAL(vbt_pg[0].opened, 0);   /* no conversation with end 1 */
        fake_send(&f, VBPIPE_MSG_OPEN, 2, 0, 0);
        CU_ASSERT_EQUAL_FATAL(fake_expect(&f, VBPIPE_MSG_PAIR, &m), 0);
        CU_ASSERT_EQUAL(m.gen, srv_end);
        CU_ASSERT_EQUAL(m.peer_gen, 2);
        usleep(100 * 1000);
        CU_ASSERT_EQUAL(vbt_pg[0].opened, 0);   /* offered, not yet taken */
        fake_send(&f, VBPIPE_MSG_ACCEPT, 2, srv_end, 0);
        CU_ASSERT(VBT_WAIT_FOR(vbt_pg[0].opened, 5000));
        struct vbs_stream st;
        vbs_init(&st, vbt_seed(1));
        fake_produce(&f, &st, 3000);
        fake_send(&f, VBPIPE_MSG_FIN, 2, 0, 3000);
        CU_ASSERT_EQUAL(pvt_wait(a, VBT_PROMPT_MS), 0);
        CU_ASSERT_FALSE(vbt_pg[0].wrong);
        CU_ASSERT_EQUAL(vbt_pg[0].got, 3000);
        CU_ASSERT_EQUAL(vbt_pg[0].rerr, 0);
        CU_ASSERT_EQUAL(log_count("vm2", "impossible message"), before);
        CU_ASSERT(pvd_alive("vm2"));
        fake_fini(&f);
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm4", NULL), 0);
        wait_link_on();
        vbt_conversation();
}

static void test_fin_ahead(void)
{
        fin_lie(1000, 1000 + 4096);
}

static void test_fin_behind(void)
{
        fin_lie(1000, 500);
}

static int suite_init(void)
{
        vbt_direct = false;
        return vbt_suite_init(&plat);
}

static int suite_init_direct(void)
{
        vbt_direct = true;
        return vbt_suite_init(&plat);
}

static int suite_fini(void)
{
        return vbt_suite_fini("test-vbpipe-hostile");
}

static const struct pvt_test tests[] = {
        { "impossible ring indices from a third mapping: reset, EOF and EPIPE, no garbage", test_bad_indices },
        { "a FIN beyond the bytes produced: reset, the bytes, then EOF", test_fin_ahead },
        { "a FIN behind the bytes produced: reset, the bytes, then EOF", test_fin_behind },
        { "impossible control messages reset the vlink", test_bad_messages },
        { "a PAIR the client refuses: the server's open waits for the next end", test_pair_refused },
        { NULL, NULL },
};

/* Each test twice: programs using read and write, then direct access. */
static const struct pvt_suite suites[] = {
        { "vbpipe-hostile (read and write)", suite_init, suite_fini, tests, 0 },
        { "vbpipe-hostile (direct access)", suite_init_direct, suite_fini, tests, 0 },
        { NULL, NULL, NULL, NULL, 0 },
};

int main(int argc, char **argv)
{
        pvt_need_emu("its fake VM speaks the emu backend's link protocol and its third mappings open the emu "
                     "backend's memfds (test-ivshmem-hostile does the same on ivshmem)");
        return pvt_main(argc, argv, suites);
}

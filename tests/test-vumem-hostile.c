/* VUMEM under hostile input (demo platform):
 *   - a fake client VM (this test speaks hv-emu and the control ring as
 *     vm3's pvd) sends vm2's pvd impossible requests: each fails alone,
 *     vm2 keeps serving;
 *   - a fake server VM (this test as vm2's pvd, in front of the real vm3)
 *     answers with corrupt pdev records, grants and messages: each
 *     request fails with -EPROTO, vm3's pvd and the program survive;
 *   - a third mapping of the pdev region scribbles in it while a client
 *     allocates: only -EPROTO or success, and every buffer the server
 *     answered comes back as a FREE;
 *   - a server program that bypasses the library answers with memory that
 *     cannot be shared: the client gets -EFAULT, pvd survives.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "pvt-run.h"
#include "conn.h"
#include "hv/emu-proto.h"
#include "pv-msg.h"
#include "pv-ring.h"
#include "pv-vlink.h"
#include "pv/vumem-server.h"
#include "pv/vumem.h"
#include "vumem-lane.h"
#include "vumem-test.h"

#define LINK "vm2-vm3-vogl0"
#define CLT  "vumem-clt-vogl0"
#define SRV  "vumem-srv-vogl0"

static struct pvt_platform plat;

static int suite_init(void)
{
        tev_init();
        if (pvt_platform_init(&plat, "demo") == 0)
                return 0;
        /* CUnit does not run the teardown of a suite whose set-up failed. */
        tev_fini();
        pvt_platform_fini(&plat);
        return -1;
}

static int suite_fini(void)
{
        tev_fini();
        int left = pvt_platform_fini(&plat);
        return left ? -1 : 0;
}

static bool pvd_alive(const char *vm)
{
        msgpack_zone zone;
        msgpack_object doc;
        msgpack_zone_init(&zone, 4096);
        bool ok = pvt_vm(&plat, vm)->pid && pvt_status(&plat, vm, &zone, &doc) == 0;
        msgpack_zone_destroy(&zone);
        return ok;
}

/* ---- a fake pvd: one end of the link socket and the control rings ------------------ */

#define MAX_GRANTS 64

struct fake {
        int sock;
        int region_fd[PV_REGION_COUNT];
        uint64_t off[PV_REGION_COUNT];
        size_t size[PV_REGION_COUNT];
        uint8_t *base[PV_REGION_COUNT];
        int xirq_tx, xirq_rx;
        struct pv_ring tx, rx;
        struct { uint32_t id; int fd; uint64_t off, size; } grant[MAX_GRANTS];
        int ngrants;
        struct { uint32_t id; int fd; } stash[MAX_GRANTS]; /* fds before their announcement */
        int nstash;
        uint32_t next_grant;
};

static void fake_init(struct fake *f)
{
        memset(f, 0, sizeof(*f));
        f->sock = f->xirq_tx = f->xirq_rx = -1;
        for (int i = 0; i < PV_REGION_COUNT; i++)
                f->region_fd[i] = -1;
}

static void fake_fini(struct fake *f)
{
        for (int i = 0; i < PV_REGION_COUNT; i++) {
                if (f->base[i])
                        munmap(f->base[i], f->size[i]);
                if (f->region_fd[i] >= 0)
                        close(f->region_fd[i]);
        }
        for (int i = 0; i < f->ngrants; i++)
                close(f->grant[i].fd);
        for (int i = 0; i < f->nstash; i++)
                close(f->stash[i].fd);
        if (f->sock >= 0)
                close(f->sock);
        if (f->xirq_tx >= 0)
                close(f->xirq_tx);
        if (f->xirq_rx >= 0)
                close(f->xirq_rx);
        fake_init(f);
}

static void emu_init(struct pv_emu_msg *m, uint32_t type)
{
        memset(m, 0, sizeof(*m));
        m->magic = PV_EMU_MAGIC;
        m->version = PV_EMU_VERSION;
        m->type = type;
}

static int emu_sendfds(int sock, const struct pv_emu_msg *m, const int *fds, unsigned n)
{
        union {
                char b[CMSG_SPACE(sizeof(int) * PV_EMU_MAX_FDS)];
                struct cmsghdr a;
        } u;
        struct iovec iov = { .iov_base = (void *)m, .iov_len = sizeof(*m) };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        if (n) {
                memset(&u, 0, sizeof(u));
                mh.msg_control = u.b;
                mh.msg_controllen = CMSG_SPACE(sizeof(int) * n);
                struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int) * n);
                memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
        }
        return sendmsg(sock, &mh, MSG_NOSIGNAL) == (ssize_t)sizeof(*m) ? 0 : -errno;
}

/* One link message (fds into fds[], count in *n), waiting up to ms. */
static int emu_recvfds(int sock, struct pv_emu_msg *m, int *fds, unsigned *n, int ms)
{
        struct pollfd pf = { .fd = sock, .events = POLLIN };
        if (poll(&pf, 1, ms) != 1)
                return -ETIMEDOUT;
        union {
                char b[CMSG_SPACE(sizeof(int) * PV_EMU_MAX_FDS)];
                struct cmsghdr a;
        } u;
        struct iovec iov = { .iov_base = m, .iov_len = sizeof(*m) };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof(u.b) };
        ssize_t r = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        *n = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); r > 0 && c; c = CMSG_NXTHDR(&mh, c))
                for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++)
                        memcpy(&fds[(*n)++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        if (r == 0)
                return -ECONNRESET;
        return r == (ssize_t)sizeof(*m) ? 0 : -EIO;
}

static int map_regions(struct fake *f, const struct pv_emu_msg *hello, int *fds, unsigned nfds, bool server)
{
        unsigned k = 0;
        for (int i = 0; i < PV_REGION_COUNT; i++) {
                if (!(hello->region_mask & (1u << i)))
                        continue;
                f->region_fd[i] = fds[k++];
                f->size[i] = hello->region_size[i];
                f->off[i] = hello->region_offset[i];
                f->base[i] = mmap(NULL, f->size[i], PROT_READ | PROT_WRITE, MAP_SHARED, f->region_fd[i],
                                  (off_t)f->off[i]);
                if (f->base[i] == MAP_FAILED)
                        return -errno;
        }
        if (k + 2 != nfds)
                return -EPROTO;
        uint8_t *ctl = f->base[PV_REGION_CTL];
        struct pv_vlink_ctl *h = (struct pv_vlink_ctl *)ctl;
        if (server) {
                /* eventfds are ours to make in that case: close what came */
                close(fds[k]);
                close(fds[k + 1]);
                pv_ring_init(&f->tx, &h->s2c, ctl + PV_CTL_S2C_DATA, PV_CTL_RING_SIZE, false);
                pv_ring_init(&f->rx, &h->c2s, ctl + PV_CTL_C2S_DATA, PV_CTL_RING_SIZE, false);
        } else {
                f->xirq_rx = fds[k];
                f->xirq_tx = fds[k + 1];
                pv_ring_init(&f->tx, &h->c2s, ctl + PV_CTL_C2S_DATA, PV_CTL_RING_SIZE, false);
                pv_ring_init(&f->rx, &h->s2c, ctl + PV_CTL_S2C_DATA, PV_CTL_RING_SIZE, false);
        }
        return 0;
}

/* Join the real vm2 as vm3: its memory, mapped. */
static int fake_join(struct fake *f, bool ready)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s.sock", plat.platform_dir, LINK);
        f->sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (connect(f->sock, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                return -errno;
        struct pv_emu_msg m;
        emu_init(&m, PV_EMU_JOIN);
        snprintf(m.client_vm, sizeof(m.client_vm), "vm3");
        snprintf(m.server_vm, sizeof(m.server_vm), "vm2");
        snprintf(m.link_name, sizeof(m.link_name), LINK);
        if (emu_sendfds(f->sock, &m, NULL, 0) < 0)
                return -EIO;
        int fds[PV_EMU_MAX_FDS];
        unsigned n;
        if (emu_recvfds(f->sock, &m, fds, &n, 3000) < 0 || m.type != PV_EMU_HELLO)
                return -EPROTO;
        int rc = map_regions(f, &m, fds, n, !ready);
        if (rc < 0 || !ready)
                return rc;
        emu_init(&m, PV_EMU_READY);
        return emu_sendfds(f->sock, &m, NULL, 0);
}

static void fake_notify(struct fake *f)
{
        uint64_t one = 1;
        if (write(f->xirq_tx, &one, sizeof(one)) != sizeof(one))
                CU_FAIL("xirq");
}

static void fake_send(struct fake *f, uint32_t type, const void *msg, uint32_t len)
{
        CU_ASSERT_EQUAL(pv_ring_send(&f->tx, PV_TAG(PV_DRV_VUMEM, type), msg, len), 0);
        fake_notify(f);
}

/* Link messages waiting (fds of the peer's grants): keep them for their
 * announcements on the ring. */
static void fake_drain_link(struct fake *f)
{
        struct pv_emu_msg m;
        int fds[PV_EMU_MAX_FDS];
        unsigned n;
        while (emu_recvfds(f->sock, &m, fds, &n, 0) == 0) {
                if (m.type == PV_EMU_FD && m.kind == PV_EMU_KIND_GRANT && n == 1 && f->nstash < MAX_GRANTS) {
                        f->stash[f->nstash].id = m.id;
                        f->stash[f->nstash].fd = fds[0];
                        f->nstash++;
                        continue;
                }
                for (unsigned i = 0; i < n; i++)
                        close(fds[i]);
        }
}

/* The peer's backend announced a grant on the ring: its fd came first. */
static void fake_announced(struct fake *f, uint32_t type, const void *msg, uint32_t len)
{
        struct pv_emu_ann a;
        if (type != PV_EMU_ANN_GRANT_NEW || len != sizeof(a) || f->ngrants >= MAX_GRANTS)
                return;
        memcpy(&a, msg, sizeof(a));
        fake_drain_link(f);
        for (int i = 0; i < f->nstash; i++)
                if (f->stash[i].id == a.id) {
                        f->grant[f->ngrants].id = a.id;
                        f->grant[f->ngrants].fd = f->stash[i].fd;
                        f->grant[f->ngrants].off = a.offset;
                        f->grant[f->ngrants].size = a.size;
                        f->ngrants++;
                        f->stash[i] = f->stash[--f->nstash];
                        return;
                }
}

/* The next VUMEM message from the peer, polling (we never announce sleep). */
static int fake_recv(struct fake *f, uint32_t *type, void *buf, uint32_t cap, uint32_t *len, int ms)
{
        long long end = pvt_now_ms() + ms;
        while (pvt_now_ms() < end) {
                fake_drain_link(f);
                uint32_t tag;
                int rc = pv_ring_recv(&f->rx, &tag, buf, cap, len);
                if (rc == 0 && PV_TAG_DRV(tag) == PV_DRV_VUMEM) {
                        *type = PV_TAG_TYPE(tag);
                        return 0;
                }
                if (rc == 0 && PV_TAG_DRV(tag) == PV_DRV_CORE)
                        fake_announced(f, PV_TAG_TYPE(tag), buf, *len);
                if (rc == 0)
                        continue;
                if (rc != -EAGAIN)
                        return rc;
                usleep(1000);
        }
        return -ETIMEDOUT;
}

static struct vumem_m_reply reply_for(struct fake *f, uint32_t req)
{
        struct vumem_m_reply r;
        memset(&r, 0xee, sizeof(r));
        uint32_t type, len;
        for (;;) {
                if (fake_recv(f, &type, &r, sizeof(r), &len, 3000) < 0) {
                        CU_FAIL("no reply");
                        r.diag = 1;
                        return r;
                }
                if (type == VUMEM_MSG_REPLY && len == sizeof(r) && r.req == req)
                        return r;
        }
}

/* ---- a fake client VM against the real vm2 --------------------------------------------- */

static void test_fake_client(void)
{
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm2", NULL), 0);
        int diag;
        pid_t srv = tsrv_start(&plat, "vm2", SRV, 0, &diag);
        CU_ASSERT_FATAL(srv > 0 && diag == 0);
        struct fake f;
        fake_init(&f);
        CU_ASSERT_EQUAL_FATAL(fake_join(&f, true), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm2", LINK, "ON", 3000), 0);

        struct vumem_m_session_open so = { .req = 1, .session = 42, .pid = 1 };
        fake_send(&f, VUMEM_MSG_SESSION_OPEN, &so, sizeof(so));
        struct vumem_m_reply r = reply_for(&f, 1);
        CU_ASSERT_EQUAL(r.diag, 0);
        /* Again with the same id: refused. */
        so.req = 2;
        fake_send(&f, VUMEM_MSG_SESSION_OPEN, &so, sizeof(so));
        CU_ASSERT_EQUAL(reply_for(&f, 2).diag, -EPROTO);

        /* Oversized alloc, unknown session, unknown handle, unknown id. */
        struct vumem_m_alloc al;
        memset(&al, 0, sizeof(al));
        al.req = 3;
        al.session = 42;
        al.alloc_size = 100000;
        fake_send(&f, VUMEM_MSG_ALLOC, &al, sizeof(al));
        CU_ASSERT_EQUAL(reply_for(&f, 3).diag, -EPROTO);
        al.req = 4;
        al.session = 43;
        al.alloc_size = 0;
        fake_send(&f, VUMEM_MSG_ALLOC, &al, sizeof(al));
        CU_ASSERT_EQUAL(reply_for(&f, 4).diag, -ECONNRESET);
        struct vumem_m_free fr = { .req = 5, .handle = 12345, .session = 42 };
        fake_send(&f, VUMEM_MSG_FREE, &fr, sizeof(fr));
        CU_ASSERT_EQUAL(reply_for(&f, 5).diag, -ENOENT);
        struct vumem_m_access ac = { .req = 6, .session = 42, .id = 0x1234 };
        fake_send(&f, VUMEM_MSG_ACCESS, &ac, sizeof(ac));
        CU_ASSERT_EQUAL(reply_for(&f, 6).diag, -ENOENT);
        /* Truncated and unknown messages. */
        uint32_t shortmsg[3] = { 7, 0, 0 };
        fake_send(&f, VUMEM_MSG_ALLOC, shortmsg, sizeof(shortmsg));
        CU_ASSERT_EQUAL(reply_for(&f, 7).diag, -EPROTO);
        shortmsg[0] = 8;
        fake_send(&f, 99, shortmsg, sizeof(shortmsg));
        CU_ASSERT_EQUAL(reply_for(&f, 8).diag, -EPROTO);

        /* A real allocation: the record in the pdev names a grant we got. */
        struct talloc t = { .op = TA_MEMFD, .size = 8192, .fill = 0x2d };
        memset(&al, 0, sizeof(al));
        al.req = 9;
        al.session = 42;
        al.alloc_size = sizeof(t);
        memcpy(al.alloc, &t, sizeof(t));
        fake_send(&f, VUMEM_MSG_ALLOC, &al, sizeof(al));
        r = reply_for(&f, 9);
        CU_ASSERT_EQUAL_FATAL(r.diag, 0);
        const uint8_t *cells = f.base[PV_REGION_VUMEM] + VUMEM_PDEV_HDR;
        struct vumem_pdev_rec rec;
        struct vumem_pdev_ext ext;
        memcpy(&rec, cells + (size_t)r.rec_cell * VUMEM_CELL, sizeof(rec));
        memcpy(&ext, cells + (size_t)rec.ext_cell * VUMEM_CELL, sizeof(ext));
        CU_ASSERT_EQUAL(rec.id, r.id);
        CU_ASSERT_EQUAL(rec.size, 8192);
        fake_drain_link(&f);
        bool found = false;
        for (int i = 0; i < f.ngrants; i++)
                if (f.grant[i].id == ext.gref) {
                        CU_ASSERT(ext.offset + ext.len <= f.grant[i].size);
                        uint8_t *p = mmap(NULL, ext.len, PROT_READ, MAP_SHARED, f.grant[i].fd,
                                          (off_t)(f.grant[i].off + ext.offset));
                        CU_ASSERT_FATAL(p != MAP_FAILED);
                        CU_ASSERT_EQUAL(p[rec.pgoff], 0x2d);
                        munmap(p, ext.len);
                        found = true;
                }
        CU_ASSERT(found);
        /* Free of a handle of another session; a flood of made-up ids. */
        so.req = 10;
        so.session = 77;
        fake_send(&f, VUMEM_MSG_SESSION_OPEN, &so, sizeof(so));
        CU_ASSERT_EQUAL(reply_for(&f, 10).diag, 0);
        fr = (struct vumem_m_free){ .req = 11, .handle = r.handle, .session = 77 };
        fake_send(&f, VUMEM_MSG_FREE, &fr, sizeof(fr));
        CU_ASSERT_EQUAL(reply_for(&f, 11).diag, -ENOENT);
        for (uint32_t i = 0; i < 500; i++) {
                ac = (struct vumem_m_access){ .req = 100 + i, .session = 77, .id = ((uint64_t)rand() << 32) ^ i };
                CU_ASSERT_EQUAL(pv_ring_send(&f.tx, PV_TAG(PV_DRV_VUMEM, VUMEM_MSG_ACCESS), &ac, sizeof(ac)), 0);
                if (i % 64 == 63) {
                        fake_notify(&f);
                        CU_ASSERT_EQUAL(reply_for(&f, 100 + i).diag, -ENOENT);
                }
        }
        fake_notify(&f);
        CU_ASSERT_EQUAL(reply_for(&f, 599).diag, -ENOENT);
        CU_ASSERT(pvd_alive("vm2"));

        /* The fake VM goes: the server hears of the buffer it held. */
        struct tev ev;
        tev_flush();
        fake_fini(&f);
        CU_ASSERT_EQUAL(tev_wait(TEV_FREE, 0, 2000, &ev), 0);
        CU_ASSERT_EQUAL(ev.id, r.id);
        CU_ASSERT(pvd_alive("vm2"));
        tsrv_kill(srv);
}

/* ---- a server program that bypasses the library ---------------------------------------- */

struct alloc_arg {
        int rc;
        char err[256];
};

static void *alloc_thread(void *argp)
{
        struct alloc_arg *a = argp;
        VumemSession *s;
        VumemBufferHd b;
        a->rc = vumemSessionCreate(CLT, &s);
        if (a->rc == 0) {
                struct talloc t = { .op = TA_POOL, .size = 4096 };
                a->rc = vumemBufferAlloc(s, &t, sizeof(t), &b);
                snprintf(a->err, sizeof(a->err), "%s", pvLastError());
                vumemSessionDestroy(s);
        }
        return NULL;
}

/* Answer the next ALLOC with object key, offset and size as given, raw;
 * with fd >= 0 attached (which no RESPOND carries). */
static int raw_answer(struct pv_conn *c, uint64_t key, int fd, uint64_t off, uint64_t size, uint32_t bogus_id)
{
        struct pv_msg req, resp;
        static char buf[8192];
        uint64_t id = 0, cmd = 0;
        do {
                /* One request at a time; FREEs of refused answers come too: skip them. */
                pv_msg_init(&req, VUMEM_OP_NEXT);
                pv_msg_set_u(&req, PV_K_SEQ, 1);
                pv_msg_set_u(&req, PV_K_COUNT, 1);
                if (pv_msg_send(c->fd, &req) < 0)
                        return -EIO;
                do {
                        if (pv_msg_recv(c->fd, &resp, buf, sizeof(buf), 0) < 0)
                                return -EIO;
                } while (pv_msg_op(&resp) != VUMEM_OP_REQUEST);
                pv_msg_get_u(&resp, PV_K_ID, &id);
                pv_msg_get_u(&resp, PV_K_COUNT, &cmd);
        } while (cmd != VUMEM_CMD_BUFFER_ALLOC);
        pv_msg_init(&req, VUMEM_OP_RESPOND);
        pv_msg_set_u(&req, PV_K_SEQ, 999);
        pv_msg_set_u(&req, PV_K_ID, bogus_id ? bogus_id : id);
        pv_msg_set_i(&req, PV_K_DIAG, 0);
        pv_msg_set_u(&req, PV_K_VALUE2, 0x1000);
        pv_msg_set_u(&req, PV_K_SIZE, size);
        pv_msg_set_u(&req, PV_K_VALUE, key);
        pv_msg_set_u(&req, PV_K_OFFSET, off);
        pv_msg_set_u(&req, PV_K_OFFSET2, 0);
        if (fd >= 0)
                pv_msg_add_fd(&req, fd);
        return pv_msg_send(c->fd, &req);
}

/* REGISTER fd raw (MEM_ALLOC when fd < 0): the key, or pvd's diag with
 * its sentence in err. */
static int64_t raw_register(struct pv_conn *c, int fd, uint64_t size, char *err, size_t errlen)
{
        struct pv_msg req, resp;
        static char buf[8192];
        uint32_t op = fd >= 0 ? VUMEM_OP_REGISTER : VUMEM_OP_MEM_ALLOC;
        pv_msg_init(&req, op);
        pv_msg_set_u(&req, PV_K_SEQ, 77);
        pv_msg_set_u(&req, PV_K_SIZE, size);
        if (fd >= 0)
                pv_msg_add_fd(&req, fd);
        if (pv_msg_send(c->fd, &req) < 0)
                return -EIO;
        do {
                if (pv_msg_recv(c->fd, &resp, buf, sizeof(buf), 0) < 0)
                        return -EIO;
                pv_msg_close_fds(&resp);
        } while (pv_msg_op(&resp) != op);
        err[0] = 0;
        pv_msg_get_str(&resp, PV_K_MSG, err, errlen);
        uint64_t key = 0;
        int diag = pv_msg_diag(&resp);
        if (diag < 0)
                return diag;
        return pv_msg_get_u(&resp, PV_K_VALUE, &key) == 0 ? (int64_t)key : -EPROTO;
}

static void test_raw_server(void)
{
        CU_ASSERT_FATAL(pvd_alive("vm2"));
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm3", NULL), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm3", LINK, "ON", 5000), 0);
        pvt_use_vm(&plat, "vm2");
        struct pv_conn *c;
        CU_ASSERT_EQUAL_FATAL(pvc_conn_open(SRV, &c), 0);
        struct pv_msg req, resp;
        char buf[8192];
        pv_msg_init(&req, VUMEM_OP_SERVER_OPEN);
        resp.nfds = 0;
        CU_ASSERT_EQUAL_FATAL(pvc_conn_call(c, &req, &resp, buf, sizeof(buf)), 0);

        /* Memory that cannot be shared is refused when it is registered. */
        int pfd[2];
        char err[256];
        CU_ASSERT_FATAL(pipe2(pfd, O_CLOEXEC) == 0);
        int unsealed = memfd_create("unsealed", MFD_CLOEXEC);
        CU_ASSERT(ftruncate(unsealed, 8192) == 0);
        int sealed = memfd_create("sealed", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        CU_ASSERT(ftruncate(sealed, 8192) == 0);
        CU_ASSERT(fcntl(sealed, F_ADD_SEALS, F_SEAL_SHRINK) == 0);
        if (foreign_mem_off()) {
                /* Memory the backend did not make: never, and it says why. */
                CU_ASSERT_EQUAL(raw_register(c, sealed, 8192, err, sizeof(err)), -EOPNOTSUPP);
                CU_ASSERT_PTR_NOT_NULL(strstr(err, "cannot share memory it did not make"));
        } else {
                CU_ASSERT_EQUAL(raw_register(c, pfd[0], 4096, err, sizeof(err)), -EINVAL);
                CU_ASSERT_PTR_NOT_NULL(strstr(err, "not memory VUMEM can share"));
                CU_ASSERT_EQUAL(raw_register(c, unsealed, 4096, err, sizeof(err)), -EPERM);
                CU_ASSERT_PTR_NOT_NULL(strstr(err, "not sealed against shrinking"));
                CU_ASSERT_EQUAL(raw_register(c, sealed, 16384, err, sizeof(err)), -EINVAL); /* beyond its end */
                CU_ASSERT(raw_register(c, sealed, 8192, err, sizeof(err)) > 0);
        }
        /* 8192 bytes of the backend's. */
        int64_t key = raw_register(c, -1, 8192, err, sizeof(err));
        CU_ASSERT_FATAL(key > 0);
        /* Answers outside registered memory fail the client's call alone. */
        struct { uint64_t key; uint64_t off, size; } cases[] = {
                { (uint64_t)key + 1000, 0, 4096 }, /* no such object */
                { (uint64_t)key, 8192, 4096 },     /* beyond its end */
                { (uint64_t)key, 4096, 8192 },     /* across its end */
                { (uint64_t)key, 100, 4096 },      /* unaligned map offset */
        };
        pvt_use_vm(&plat, "vm3");
        for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct alloc_arg a = { 0 };
                pthread_t th;
                pthread_create(&th, NULL, alloc_thread, &a);
                CU_ASSERT_EQUAL(raw_answer(c, cases[i].key, -1, cases[i].off, cases[i].size, 0), 0);
                pthread_join(th, NULL);
                CU_ASSERT_EQUAL(a.rc, -EFAULT);
                CU_ASSERT_PTR_NOT_NULL(strstr(a.err, "cannot share"));
        }
        /* An fd on an answer (no answer carries one): the server program is
         * dropped, the client's call ends. */
        struct alloc_arg a = { 0 };
        pthread_t th;
        pthread_create(&th, NULL, alloc_thread, &a);
        CU_ASSERT_EQUAL(raw_answer(c, (uint64_t)key, sealed, 0, 4096, 0), 0);
        pthread_join(th, NULL);
        CU_ASSERT_EQUAL(a.rc, -ECONNRESET);
        pvc_conn_close(c);
        /* An answer to a request never given: the same. */
        pvt_use_vm(&plat, "vm2");
        CU_ASSERT_EQUAL_FATAL(pvc_conn_open(SRV, &c), 0);
        pv_msg_init(&req, VUMEM_OP_SERVER_OPEN);
        resp.nfds = 0;
        CU_ASSERT_EQUAL_FATAL(pvc_conn_call(c, &req, &resp, buf, sizeof(buf)), 0);
        key = raw_register(c, -1, 8192, err, sizeof(err));
        CU_ASSERT(key > 0);
        pvt_use_vm(&plat, "vm3");
        memset(&a, 0, sizeof(a));
        pthread_create(&th, NULL, alloc_thread, &a);
        CU_ASSERT_EQUAL(raw_answer(c, (uint64_t)key, -1, 0, 4096, 0xdead), 0);
        pthread_join(th, NULL);
        CU_ASSERT_EQUAL(a.rc, -ECONNRESET);
        close(pfd[0]);
        close(pfd[1]);
        close(unsealed);
        close(sealed);
        pvc_conn_close(c);
        CU_ASSERT(pvd_alive("vm2"));
        CU_ASSERT(pvd_alive("vm3"));
}

/* A client allocates four buffers and ends its session. */
static void *alloc4_thread(void *argp)
{
        struct alloc_arg *a = argp;
        VumemSession *s;
        VumemBufferHd b;
        a->rc = vumemSessionCreate(CLT, &s);
        for (int i = 0; i < 4 && a->rc == 0; i++) {
                struct talloc t = { .op = TA_POOL, .size = 4096 };
                a->rc = vumemBufferAlloc(s, &t, sizeof(t), &b);
        }
        snprintf(a->err, sizeof(a->err), "%s", pvLastError());
        if (a->rc == 0)
                vumemSessionDestroy(s);
        return NULL;
}

/* A server program that takes VUMEM_OP_FREES hears of the frees that wait
 * together in one message, each with what it answered. */
static void test_raw_server_frees(void)
{
        CU_ASSERT_FATAL(pvd_alive("vm2") && pvd_alive("vm3"));
        pvt_use_vm(&plat, "vm2");
        struct pv_conn *c;
        CU_ASSERT_EQUAL_FATAL(pvc_conn_open(SRV, &c), 0);
        struct pv_msg req, resp;
        static char buf[8192];
        pv_msg_init(&req, VUMEM_OP_SERVER_OPEN);
        pv_msg_set_u(&req, PV_K_FLAGS, VUMEM_SERVER_FREES);
        resp.nfds = 0;
        CU_ASSERT_EQUAL_FATAL(pvc_conn_call(c, &req, &resp, buf, sizeof(buf)), 0);
        char err[256];
        int64_t key = raw_register(c, -1, 4 * 4096, err, sizeof(err));
        CU_ASSERT_FATAL(key > 0);
        pv_msg_init(&req, VUMEM_OP_NEXT);
        pv_msg_set_u(&req, PV_K_SEQ, 1);
        pv_msg_set_u(&req, PV_K_COUNT, 16);
        CU_ASSERT_FATAL(pv_msg_send(c->fd, &req) == 0);
        pvt_use_vm(&plat, "vm3");
        struct alloc_arg a = { 0 };
        pthread_t th;
        pthread_create(&th, NULL, alloc4_thread, &a);
        int allocs = 0, frees = 0, batches = 0, bad = 0;
        uint64_t seen = 0; /* which of the four answers came back */
        while (frees < 4 && !bad) {
                struct pollfd pf = { .fd = c->fd, .events = POLLIN };
                if (poll(&pf, 1, 5000) != 1 || pv_msg_recv(c->fd, &resp, buf, sizeof(buf), 0) < 0)
                        break;
                pv_msg_close_fds(&resp);
                uint64_t id = 0, cmd = 0;
                const void *p;
                uint32_t len;
                if (pv_msg_op(&resp) == VUMEM_OP_FREES) {
                        if (pv_msg_get_b(&resp, PV_K_DATA, &p, &len) < 0 || !len ||
                            len % sizeof(struct vumem_free_ent)) {
                                bad++;
                                break;
                        }
                        batches += len > sizeof(struct vumem_free_ent);
                        for (uint32_t k = 0; k < len / sizeof(struct vumem_free_ent); k++) {
                                struct vumem_free_ent e;
                                memcpy(&e, (const uint8_t *)p + k * sizeof(e), sizeof(e));
                                uint64_t i = e.vaddr / 0x10000 - 1;
                                bad += i >= 4 || e.vaddr % 0x10000 || e.size != 4096 || !e.buf_id ||
                                       (seen & (1ull << i));
                                seen |= i < 4 ? 1ull << i : 0;
                                frees++;
                        }
                        continue;
                }
                if (pv_msg_op(&resp) != VUMEM_OP_REQUEST || pv_msg_get_u(&resp, PV_K_ID, &id) < 0 ||
                    pv_msg_get_u(&resp, PV_K_COUNT, &cmd) < 0)
                        continue;
                if (cmd == VUMEM_CMD_BUFFER_FREE) {
                        uint64_t vaddr = 0;
                        pv_msg_get_u(&resp, PV_K_VALUE2, &vaddr);
                        uint64_t i = vaddr / 0x10000 - 1;
                        bad += i >= 4 || (seen & (1ull << i));
                        seen |= i < 4 ? 1ull << i : 0;
                        frees++;
                        continue;
                }
                /* The n-th ALLOC: page n of the object, at server address (n+1) * 64 KiB. */
                pv_msg_init(&req, VUMEM_OP_RESPOND);
                pv_msg_set_u(&req, PV_K_SEQ, 2);
                pv_msg_set_u(&req, PV_K_ID, id);
                pv_msg_set_i(&req, PV_K_DIAG, 0);
                pv_msg_set_u(&req, PV_K_VALUE2, (uint64_t)(allocs + 1) * 0x10000);
                pv_msg_set_u(&req, PV_K_SIZE, 4096);
                pv_msg_set_u(&req, PV_K_VALUE, (uint64_t)key);
                pv_msg_set_u(&req, PV_K_OFFSET, (uint64_t)allocs * 4096);
                pv_msg_set_u(&req, PV_K_OFFSET2, 0);
                allocs++;
                CU_ASSERT(pv_msg_send(c->fd, &req) == 0);
        }
        pthread_join(th, NULL);
        CU_ASSERT_EQUAL(a.rc, 0);
        CU_ASSERT_EQUAL(allocs, 4);
        CU_ASSERT_EQUAL(frees, 4);
        CU_ASSERT_EQUAL(seen, 0xf);
        CU_ASSERT_EQUAL(bad, 0);
        /* The session's end freed all four at once: one message for them. */
        CU_ASSERT(batches >= 1);
        pvc_conn_close(c);
        CU_ASSERT(pvd_alive("vm2"));
        CU_ASSERT(pvd_alive("vm3"));
}

/* ---- a third mapping of the pdev region ------------------------------------------------- */

static atomic_bool scribbling;

static size_t pdev_size;

static void *scribbler(void *arg)
{
        uint8_t *cells = (uint8_t *)arg + VUMEM_PDEV_HDR;
        for (unsigned v = 1; atomic_load(&scribbling); v++)
                memset(cells, (int)(v * 37), pdev_size - VUMEM_PDEV_HDR);
        return NULL;
}

/* vm2's pdev memfd of the vogl vlink, opened through /proc. */

static int open_pdev(pid_t pvd)
{
        char want[96];
        snprintf(want, sizeof(want), "pvd-%s-r%d", LINK, PV_REGION_VUMEM);
        return pvt_open_emu_object(pvd, want);
}

static void test_pdev_scribbler(void)
{
        int diag;
        tev_flush();
        pid_t srv = tsrv_start(&plat, "vm2", SRV, 0, &diag);
        CU_ASSERT_FATAL(srv > 0 && diag == 0);
        int pfd = open_pdev(pvt_vm(&plat, "vm2")->pid);
        CU_ASSERT_FATAL(pfd >= 0);
        uint8_t *pdev = pvt_map_emu_object(pfd, &pdev_size);
        CU_ASSERT_FATAL(pdev != NULL);
        pvt_use_vm(&plat, "vm3");
        VumemSession *s;
        /* Allocations through pvd: those read the pdev (the lane's are in
         * test_lane_scribbler). */
        setenv("PVCLIENT_VUMEM_LANE", "0", 1);
        CU_ASSERT_EQUAL_FATAL(vumemSessionCreate(CLT, &s), 0);
        unsetenv("PVCLIENT_VUMEM_LANE");
        atomic_store(&scribbling, true);
        pthread_t th;
        pthread_create(&th, NULL, scribbler, pdev);
        int ok = 0, eproto = 0, other = 0;
        /* Bounded in time too: on a loaded machine an allocation can take
         * milliseconds while the scribbler keeps a core busy. */
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int i = 0; i < 3000 && (eproto < 5 || i < 50); i++) {
                clock_gettime(CLOCK_MONOTONIC, &t1);
                if (eproto > 0 && t1.tv_sec - t0.tv_sec > 20)
                        break;
                struct talloc t = { .op = TA_POOL, .size = 4096, .fill = 0x61 };
                VumemBufferHd b;
                uint8_t *p;
                int rc = vumemBufferAlloc(s, &t, sizeof(t), &b);
                if (rc == 0) {
                        ok++;
                        /* What passed the checks is the real buffer. */
                        CU_ASSERT(vumemBufferMap(b, (void **)&p) == 0 && p[0] == 0x61 && p[4095] == 0x61);
                        vumemBufferFree(b);
                } else if (rc == -EPROTO) {
                        eproto++;
                } else {
                        other++;
                }
        }
        atomic_store(&scribbling, false);
        pthread_join(th, NULL);
        printf("\n    (scribbled pdev: %d allocations passed the checks, %d failed with EPROTO) ", ok, eproto);
        CU_ASSERT(eproto > 0);
        CU_ASSERT_EQUAL(other, 0);
        /* Without the scribbler, all is well again. */
        for (int i = 0; i < 20; i++) {
                struct talloc t = { .op = TA_POOL, .size = 4096, .fill = 0x62 };
                VumemBufferHd b;
                CU_ASSERT_EQUAL(vumemBufferAlloc(s, &t, sizeof(t), &b), 0);
        }
        CU_ASSERT_EQUAL(vumemSessionDestroy(s), 0);
        /* Every buffer the server answered came back once. */
        int allocs = tev_count(TEV_ALLOC, 0, 300);
        int frees = tev_count(TEV_FREE, 0, 1000);
        CU_ASSERT_EQUAL(allocs, ok + eproto + 20);
        CU_ASSERT_EQUAL(frees, allocs);
        munmap(pdev, pdev_size);
        close(pfd);
        CU_ASSERT(pvd_alive("vm2"));
        CU_ASSERT(pvd_alive("vm3"));
        tsrv_kill(srv);
}

/* ---- a third mapping of a session's lane ------------------------------------------------- */

/* Lies in the CPU hints only: any value, each store. */
static void *hint_scribbler(void *arg)
{
        struct vumem_lane *l = arg;
        for (uint32_t v = 1; atomic_load(&scribbling); v = v * 1103515245u + 12345u) {
                atomic_store_explicit((_Atomic uint32_t *)&l->clt_cpu, v, memory_order_relaxed);
                atomic_store_explicit((_Atomic uint32_t *)&l->srv_cpu, v >> 7, memory_order_relaxed);
        }
        return NULL;
}

static void *lane_scribbler(void *arg)
{
        uint8_t *ans = (uint8_t *)arg + offsetof(struct vumem_lane, ans);
        for (unsigned v = 1; atomic_load(&scribbling); v++)
                memset(ans, (int)(v * 37), sizeof(struct vumem_lane_ans));
        return NULL;
}

/* Something else in a VM writes over the answers on a lane: each answer
 * the client library takes is either the real buffer or -EPROTO (then the
 * session goes through pvd); nothing the server answered is lost. */
static void test_lane_scribbler(void)
{
        int diag;
        tev_flush();
        pid_t srv = tsrv_start(&plat, "vm2", SRV, 0, &diag);
        CU_ASSERT_FATAL(srv > 0 && diag == 0);
        pvt_use_vm(&plat, "vm3");
        VumemSession *s;
        CU_ASSERT_EQUAL_FATAL(vumemSessionCreate(CLT, &s), 0);
        int lfd = -ENOENT;
        for (int i = 0; i < 100 && lfd < 0; i++) {
                lfd = pvt_open_emu_object(pvt_vm(&plat, "vm2")->pid, "pvd-vumem-lane");
                if (lfd < 0)
                        usleep(10000);
        }
        CU_ASSERT_FATAL(lfd >= 0);
        size_t lane_size;
        uint8_t *lane = pvt_map_emu_object(lfd, &lane_size);
        CU_ASSERT_FATAL(lane != NULL && lane_size == VUMEM_LANE_SIZE);
        /* First a clean one: the lane serves. */
        struct talloc t = { .op = TA_POOL, .size = 4096, .fill = 0x61 };
        VumemBufferHd b;
        uint8_t *p;
        CU_ASSERT_EQUAL(vumemBufferAlloc(s, &t, sizeof(t), &b), 0);
        CU_ASSERT(vumemBufferFree(b) == 0);
        uint32_t seq0 = ((struct vumem_lane *)lane)->ans_seq;
        CU_ASSERT(seq0 > 0);
        /* On the emulated platform both sides run on one kernel: each pvd
         * says so to its program, and each library has written its CPU
         * (plus one) on the lane; with the capability off, neither does. */
        const struct vumem_lane *l = (const struct vumem_lane *)lane;
        long ncpu = sysconf(_SC_NPROCESSORS_CONF);
        const char *off = getenv("PVD_HV_CAPS_OFF");
        if (off && (strstr(off, "one_kernel") || strstr(off, "all"))) {
                CU_ASSERT_EQUAL(l->clt_cpu, 0);
                CU_ASSERT_EQUAL(l->srv_cpu, 0);
        } else {
                CU_ASSERT(l->clt_cpu >= 1 && l->clt_cpu <= (uint32_t)ncpu);
                CU_ASSERT(l->srv_cpu >= 1 && l->srv_cpu <= (uint32_t)ncpu);
        }
        /* Lying hints change when a side yields, nothing else. */
        atomic_store(&scribbling, true);
        pthread_t th;
        pthread_create(&th, NULL, hint_scribbler, lane);
        int hint_ok = 0;
        for (int i = 0; i < 100; i++) {
                t = (struct talloc){ .op = TA_POOL, .size = 4096, .fill = 0x62 };
                if (vumemBufferAlloc(s, &t, sizeof(t), &b) == 0) {
                        hint_ok++;
                        CU_ASSERT(vumemBufferMap(b, (void **)&p) == 0 && p[0] == 0x62 && p[4095] == 0x62);
                        vumemBufferFree(b);
                }
        }
        atomic_store(&scribbling, false);
        pthread_join(th, NULL);
        CU_ASSERT_EQUAL(hint_ok, 100);
        CU_ASSERT_EQUAL(tev_count(TEV_ALLOC, 0, 300), 101);
        CU_ASSERT_EQUAL(tev_count(TEV_FREE, 0, 1000), 101);
        tev_flush();
        atomic_store(&scribbling, true);
        pthread_create(&th, NULL, lane_scribbler, lane);
        int ok = 0, eproto = 0, other = 0;
        for (int i = 0; i < 200; i++) {
                t = (struct talloc){ .op = TA_POOL, .size = 4096, .fill = 0x61 };
                int rc = vumemBufferAlloc(s, &t, sizeof(t), &b);
                if (rc == 0) {
                        ok++;
                        CU_ASSERT(vumemBufferMap(b, (void **)&p) == 0 && p[0] == 0x61 && p[4095] == 0x61);
                        vumemBufferFree(b);
                } else if (rc == -EPROTO) {
                        eproto++;
                        CU_ASSERT_PTR_NOT_NULL(strstr(pvLastError(), "lane"));
                } else {
                        other++;
                }
        }
        atomic_store(&scribbling, false);
        pthread_join(th, NULL);
        printf("\n    (scribbled lane: %d allocations passed the checks, %d failed with EPROTO) ", ok, eproto);
        CU_ASSERT(eproto > 0);
        CU_ASSERT_EQUAL(other, 0);
        CU_ASSERT_EQUAL(ok + eproto, 200);
        CU_ASSERT_EQUAL(vumemSessionDestroy(s), 0);
        /* Every buffer the server answered came back once, also those
         * whose answer the client could not read. */
        int allocs = tev_count(TEV_ALLOC, 0, 300);
        int frees = tev_count(TEV_FREE, 0, 1000);
        CU_ASSERT_EQUAL(allocs, ok + eproto);
        CU_ASSERT_EQUAL(frees, allocs);
        munmap(lane, VUMEM_LANE_SIZE);
        close(lfd);
        CU_ASSERT(pvd_alive("vm2"));
        CU_ASSERT(pvd_alive("vm3"));
        tsrv_kill(srv);
}

/* ---- a fake server VM in front of the real vm3 ------------------------------------------ */

enum corruption { C_NONE, C_CELL, C_ID, C_EXTENT, C_GREF, C_DMABUF, C_SHORT, C_DIAG, C_COUNT };

static const char *const corruption_name[] = { "none", "record cell out of the pdev", "record id", "extent beyond grant",
                                               "unknown grant", "dma-buf flag on a memfd", "short reply", "positive diag" };

struct clt_arg {
        int rc[C_COUNT];
        int reset_rc;
};

static void *fake_server_client(void *argp)
{
        struct clt_arg *a = argp;
        VumemSession *s;
        if (vumemSessionCreate(CLT, &s)) {
                for (int i = 0; i < C_COUNT; i++)
                        a->rc[i] = 1;
                return NULL;
        }
        for (int i = 0; i < C_COUNT; i++) {
                VumemBufferHd b;
                uint8_t *p;
                uint32_t x = 0;
                a->rc[i] = vumemBufferAlloc(s, &x, sizeof(x), &b);
                if (a->rc[i] == 0) {
                        if (vumemBufferMap(b, (void **)&p) || p[0] != 0x99)
                                a->rc[i] = 2;
                        vumemBufferFree(b);
                }
        }
        VumemBufferHd b;
        a->reset_rc = vumemBufferAccess(s, 1, &b); /* after a SESSION_RESET */
        vumemSessionDestroy(s);
        return NULL;
}

/* A grant as the emu backend makes it: the fd on the socket, then the
 * announcement on the control ring. */
static void fake_grant(struct fake *f, int fd, uint64_t off, uint64_t size, uint32_t *gref)
{
        struct pv_emu_msg m;
        emu_init(&m, PV_EMU_FD);
        m.kind = PV_EMU_KIND_GRANT;
        m.id = *gref = ++f->next_grant;
        CU_ASSERT_EQUAL(emu_sendfds(f->sock, &m, &fd, 1), 0);
        struct pv_emu_ann a = { .id = m.id, .offset = off, .size = size };
        CU_ASSERT_EQUAL(pv_ring_send(&f->tx, PV_TAG(PV_DRV_CORE, PV_EMU_ANN_GRANT_NEW), &a, sizeof(a)), 0);
}

static void test_fake_server(void)
{
        /* The memory a real vm2 made for this vlink (so that every
         * driver's header is right), then vm2 goes and we take its place. */
        pvt_pvd_stop(&plat, "vm3", SIGTERM);
        struct fake f;
        fake_init(&f);
        CU_ASSERT_EQUAL_FATAL(fake_join(&f, false), 0);
        close(f.sock);
        f.sock = -1;
        pvt_pvd_stop(&plat, "vm2", SIGTERM);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s.sock", plat.platform_dir, LINK);
        unlink(sa.sun_path);
        int lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        CU_ASSERT_FATAL(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(lfd, 2) == 0);
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm3", NULL), 0);
        struct pollfd pf = { .fd = lfd, .events = POLLIN };
        CU_ASSERT_FATAL(poll(&pf, 1, 3000) == 1);
        f.sock = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        struct pv_emu_msg m;
        int fds[PV_EMU_MAX_FDS];
        unsigned n;
        CU_ASSERT_FATAL(emu_recvfds(f.sock, &m, fds, &n, 3000) == 0 && m.type == PV_EMU_JOIN);
        emu_init(&m, PV_EMU_HELLO);
        snprintf(m.link_name, sizeof(m.link_name), LINK);
        snprintf(m.server_vm, sizeof(m.server_vm), "vm2");
        snprintf(m.client_vm, sizeof(m.client_vm), "vm3");
        m.gen = 7;
        n = 0;
        for (int i = 0; i < PV_REGION_COUNT; i++)
                if (f.region_fd[i] >= 0) {
                        m.region_mask |= 1u << i;
                        m.region_size[i] = f.size[i];
                        m.region_offset[i] = f.off[i];
                        fds[n++] = f.region_fd[i];
                }
        int s2c = eventfd(0, EFD_CLOEXEC), c2s = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        fds[n++] = s2c;
        fds[n++] = c2s;
        CU_ASSERT_EQUAL_FATAL(emu_sendfds(f.sock, &m, fds, n), 0);
        f.xirq_tx = s2c;
        f.xirq_rx = c2s;
        CU_ASSERT_FATAL(emu_recvfds(f.sock, &m, fds, &n, 3000) == 0 && m.type == PV_EMU_READY);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm3", LINK, "ON", 3000), 0);

        pvt_use_vm(&plat, "vm3");
        struct clt_arg a;
        memset(&a, 0, sizeof(a));
        pthread_t th;
        pthread_create(&th, NULL, fake_server_client, &a);

        uint8_t buf[PV_CTL_MSG_MAX];
        uint32_t type, len;
        CU_ASSERT_FATAL(fake_recv(&f, &type, buf, sizeof(buf), &len, 3000) == 0 && type == VUMEM_MSG_SESSION_OPEN);
        struct vumem_m_session_open so;
        memcpy(&so, buf, sizeof(so));
        struct vumem_m_reply r;
        memset(&r, 0, sizeof(r));
        r.req = so.req;
        r.session_id = 5;
        fake_send(&f, VUMEM_MSG_REPLY, &r, sizeof(r));

        uint8_t *cells = f.base[PV_REGION_VUMEM] + VUMEM_PDEV_HDR;
        uint32_t ncells = vumem_pdev_ncells(f.size[PV_REGION_VUMEM]);
        int mem = memfd_create("fake", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        CU_ASSERT(ftruncate(mem, 65536) == 0 && fcntl(mem, F_ADD_SEALS, F_SEAL_SHRINK) == 0);
        uint8_t *mp = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_SHARED, mem, 0);
        memset(mp, 0x99, 65536);
        munmap(mp, 65536);
        int loose = memfd_create("loose", MFD_CLOEXEC);
        CU_ASSERT(ftruncate(loose, 65536) == 0);
        int frees = 0;
        for (int c = 0; c < C_COUNT; c++) {
                for (;;) {
                        CU_ASSERT_FATAL(fake_recv(&f, &type, buf, sizeof(buf), &len, 3000) == 0);
                        if (type == VUMEM_MSG_ALLOC)
                                break;
                        frees += type == VUMEM_MSG_FREE;
                }
                struct vumem_m_alloc al;
                memcpy(&al, buf, sizeof(al));
                uint32_t gref;
                fake_grant(&f, mem, 8192, 16384, &gref);
                uint32_t cell = (uint32_t)c * 2;
                /* The chunk: 8192 bytes at 4096 of the grant. */
                struct vumem_pdev_ext ext = { .kind = VUMEM_EXT_KIND, .gref = gref, .offset = 4096, .len = 8192 };
                struct vumem_pdev_rec rec = { .kind = VUMEM_REC_KIND, .id = 0x1000 + (uint64_t)c, .size = 5000,
                                              .ext_count = 1, .ext_cell = cell + 1 };
                memset(&r, 0, sizeof(r));
                r.req = al.req;
                r.handle = 100 + (uint32_t)c;
                r.rec_cell = cell;
                r.id = rec.id;
                r.size = rec.size;
                switch (c) {
                case C_CELL:
                        r.rec_cell = ncells + 5;
                        break;
                case C_ID:
                        rec.id ^= 1;
                        break;
                case C_EXTENT:
                        ext.len = 4u << 20;
                        break;
                case C_GREF:
                        ext.gref = 4242;
                        break;
                case C_DMABUF:
                        rec.flags = VUMEM_BUF_DMABUF; /* the grant is a memfd */
                        break;
                case C_DIAG:
                        r.diag = 5;
                        break;
                default:
                        break;
                }
                memcpy(cells + (size_t)cell * VUMEM_CELL, &rec, sizeof(rec));
                memcpy(cells + (size_t)(cell + 1) * VUMEM_CELL, &ext, sizeof(ext));
                fake_send(&f, VUMEM_MSG_REPLY, &r, c == C_SHORT ? 24 : sizeof(r));
        }
        /* The server program "goes away". */
        struct vumem_m_session_reset rs;
        memset(&rs, 0, sizeof(rs));
        rs.session = so.session;
        rs.diag = -ECONNRESET;
        snprintf(rs.msg, sizeof(rs.msg), "fake server gone\x01\x7f");
        fake_send(&f, VUMEM_MSG_SESSION_RESET, &rs, sizeof(rs));
        pthread_join(th, NULL);
        for (int c = 0; c < C_COUNT; c++) {
                if (c == C_NONE) {
                        CU_ASSERT_EQUAL(a.rc[c], 0);
                } else if (a.rc[c] != -EPROTO) {
                        fprintf(stderr, "corruption \"%s\": %d\n", corruption_name[c], a.rc[c]);
                        CU_FAIL("a corrupt answer was not refused with EPROTO");
                }
        }
        CU_ASSERT_EQUAL(a.reset_rc, -ECONNRESET);
        /* Handles it refused were given back (and the good one freed). */
        long long end = pvt_now_ms() + 1000;
        while (frees < 5 && pvt_now_ms() < end) {
                if (fake_recv(&f, &type, buf, sizeof(buf), &len, 200) == 0)
                        frees += type == VUMEM_MSG_FREE;
        }
        CU_ASSERT(frees >= 5);
        CU_ASSERT(pvd_alive("vm3"));
        /* A grant of memory that may shrink under a mapping: the hypervisor
         * layer refuses it and vm3 drops the link (its socket closes). */
        uint32_t gref;
        fake_grant(&f, loose, 0, 65536, &gref);
        fake_notify(&f);
        struct pollfd hup = { .fd = f.sock, .events = POLLIN };
        long long until = pvt_now_ms() + 3000;
        bool dropped = false;
        while (!dropped && pvt_now_ms() < until && poll(&hup, 1, 100) >= 0) {
                int fds2[PV_EMU_MAX_FDS];
                unsigned n2 = 0;
                int rc = hup.revents ? emu_recvfds(f.sock, &m, fds2, &n2, 0) : 0;
                for (unsigned i = 0; i < n2; i++)
                        close(fds2[i]);
                dropped = rc == -ECONNRESET || (hup.revents & (POLLHUP | POLLERR));
        }
        CU_ASSERT(dropped);
        CU_ASSERT(pvd_alive("vm3"));
        close(mem);
        close(loose);
        fake_fini(&f);
        close(lfd);
        unlink(sa.sun_path);
        pvt_pvd_stop(&plat, "vm3", SIGTERM);
}

static const struct pvt_test tests[] = {
        { "fake client VM: bad requests fail alone", test_fake_client },
        { "raw server program: memory that cannot be shared", test_raw_server },
        { "raw server program: frees that wait together come in one message", test_raw_server_frees },
        { "third mapping scribbles on a session's lane", test_lane_scribbler },
        { "third mapping scribbles in the pdev", test_pdev_scribbler },
        { "fake server VM: corrupt records and answers", test_fake_server },
        { NULL, NULL },
};

static const struct pvt_suite suites[] = {
        { "vumem-hostile", suite_init, suite_fini, tests, 0 },
        { NULL, NULL, NULL, NULL, 0 },
};

int main(int argc, char **argv)
{
        pvt_need_emu("its fake VMs speak the emu backend's link protocol and its third mappings open the emu "
                     "backend's memfds (test-ivshmem-hostile does the same on ivshmem)");
        return pvt_main(argc, argv, suites);
}

/* A hostile peer VM: this test speaks the emulated hypervisor's link
 * protocol (daemon/hv/emu-proto.h) itself, as a fake client or server pvd, and
 * sends what an honest pvd never would: garbage, lies about identity and
 * memory, and a corrupt control ring. The real pvd must log, drop the
 * peer, keep serving, and take an honest peer afterwards. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "hv/emu-proto.h"
#include "pvtest.h"

static struct pvt_platform plat;
static int fds_before;

static int suite_init(void)
{
        fds_before = pvt_fd_count();
        return pvt_platform_init(&plat, "demo") < 0 ? -1 : 0;
}

static int suite_fini(void)
{
        int left = pvt_platform_fini(&plat);
        return left || pvt_fd_count() != fds_before ? -1 : 0;
}

static void link_path(const char *link, char *buf, size_t len)
{
        snprintf(buf, len, "%s/%s.sock", plat.platform_dir, link);
}

static int connect_link(const char *link)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        link_path(link, sa.sun_path, sizeof(sa.sun_path));
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                close(fd);
                return -errno;
        }
        return fd;
}

static void msg_init(struct pv_emu_msg *m, uint32_t type)
{
        memset(m, 0, sizeof(*m));
        m->magic = PV_EMU_MAGIC;
        m->version = PV_EMU_VERSION;
        m->type = type;
}

/* Wait until the other end closes fd (drops us). */
static bool dropped(int fd, int timeout_ms)
{
        long long end = pvt_now_ms() + timeout_ms;
        while (pvt_now_ms() < end) {
                struct pollfd pf = { .fd = fd, .events = POLLIN };
                if (poll(&pf, 1, 50) == 1) {
                        char buf[1024];
                        union {
                                char b[CMSG_SPACE(sizeof(int) * 8)];
                                struct cmsghdr a;
                        } u;
                        struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
                        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
                                             .msg_controllen = sizeof(u.b) };
                        ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
                        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); n > 0 && c; c = CMSG_NXTHDR(&mh, c)) {
                                int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
                                for (int i = 0; i < k; i++) {
                                        int f;
                                        memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                                        close(f);
                                }
                        }
                        if (n == 0 || (n < 0 && errno != EAGAIN))
                                return true;
                }
        }
        return false;
}

/* Alive and answering. */
static bool pvd_alive(const char *vm)
{
        msgpack_zone zone;
        msgpack_object doc;
        msgpack_zone_init(&zone, 4096);
        bool ok = pvt_vm(&plat, vm)->pid && kill(pvt_vm(&plat, vm)->pid, 0) == 0 &&
                  pvt_status(&plat, vm, &zone, &doc) == 0;
        msgpack_zone_destroy(&zone);
        return ok;
}

/* A fake client VM: garbage, a wrong identity, a wrong first message. */
static void test_fake_client_lies(void)
{
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm2", NULL), 0);
        int fd = connect_link("vm2-vm3-vogl0");
        CU_ASSERT_FATAL(fd >= 0);
        CU_ASSERT(send(fd, "\xde\xad\xbe\xef", 4, 0) == 4);
        CU_ASSERT(dropped(fd, 2000));
        close(fd);

        struct pv_emu_msg m;
        fd = connect_link("vm2-vm3-vogl0");
        msg_init(&m, PV_EMU_JOIN);
        snprintf(m.client_vm, sizeof(m.client_vm), "vm4"); /* not vm3 */
        snprintf(m.link_name, sizeof(m.link_name), "vm2-vm3-vogl0");
        CU_ASSERT(send(fd, &m, sizeof(m), 0) == sizeof(m));
        CU_ASSERT(dropped(fd, 2000));
        close(fd);

        fd = connect_link("vm2-vm3-vogl0");
        msg_init(&m, PV_EMU_READY); /* before JOIN */
        CU_ASSERT(send(fd, &m, sizeof(m), 0) == sizeof(m));
        CU_ASSERT(dropped(fd, 2000));
        close(fd);

        fd = connect_link("vm2-vm3-vogl0");
        msg_init(&m, PV_EMU_JOIN);
        m.version = 99;
        CU_ASSERT(send(fd, &m, sizeof(m), 0) == sizeof(m));
        CU_ASSERT(dropped(fd, 2000));
        close(fd);
        CU_ASSERT(pvd_alive("vm2"));
}

/* A fake client that joins properly, then corrupts the control ring the
 * server reads: the server resets the vlink (drops us) and goes on. */
static void test_fake_client_corrupts_ring(void)
{
        int fd = connect_link("vm2-vm3-vogl0");
        CU_ASSERT_FATAL(fd >= 0);
        struct pv_emu_msg m;
        msg_init(&m, PV_EMU_JOIN);
        snprintf(m.client_vm, sizeof(m.client_vm), "vm3");
        snprintf(m.link_name, sizeof(m.link_name), "vm2-vm3-vogl0");
        CU_ASSERT_FATAL(send(fd, &m, sizeof(m), 0) == sizeof(m));

        struct pv_emu_msg hello;
        union {
                char b[CMSG_SPACE(sizeof(int) * PV_EMU_MAX_FDS)];
                struct cmsghdr a;
        } u;
        struct iovec iov = { .iov_base = &hello, .iov_len = sizeof(hello) };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof(u.b) };
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        CU_ASSERT_FATAL(poll(&pf, 1, 2000) == 1);
        CU_ASSERT_FATAL(recvmsg(fd, &mh, MSG_CMSG_CLOEXEC) == sizeof(hello));
        CU_ASSERT_EQUAL(hello.type, PV_EMU_HELLO);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        CU_ASSERT_FATAL(c != NULL);
        int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int fds[PV_EMU_MAX_FDS];
        memcpy(fds, CMSG_DATA(c), sizeof(int) * (size_t)n);
        CU_ASSERT_FATAL(n >= 3);
        /* fds: regions in order (CTL first), then s2c and c2s eventfds. */
        size_t ctl_size = hello.region_size[PV_REGION_CTL];
        uint8_t *ctl = mmap(NULL, ctl_size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0],
                            (off_t)hello.region_offset[PV_REGION_CTL]);
        CU_ASSERT_FATAL(ctl != MAP_FAILED);
        struct pv_vlink_ctl *hdr = (struct pv_vlink_ctl *)ctl;
        CU_ASSERT_EQUAL(hdr->magic, PV_VLINK_MAGIC);
        /* The memory cannot be shrunk under the server: it is sealed. */
        CU_ASSERT(ftruncate(fds[0], 4096) < 0);

        msg_init(&m, PV_EMU_READY);
        CU_ASSERT(send(fd, &m, sizeof(m), 0) == sizeof(m));
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm2", "vm2-vm3-vogl0", "ON", 2000), 0);

        /* The client -> server ring: a producer index from nowhere. */
        hdr->c2s.prod = 0x7fff0001;
        uint64_t one = 1;
        CU_ASSERT(write(fds[n - 1], &one, sizeof(one)) == sizeof(one));
        CU_ASSERT(dropped(fd, 2000));
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm2", "vm2-vm3-vogl0", "OFF", 2000), 0);
        munmap(ctl, ctl_size);
        for (int i = 0; i < n; i++)
                close(fds[i]);
        close(fd);

        /* An honest vm3 is served afterwards. */
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm3", NULL), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm2", "vm2-vm3-vogl0", "ON", 5000), 0);
        char log[16384];
        pvt_read_file(pvt_vm(&plat, "vm2")->log, log, sizeof(log));
        CU_ASSERT_PTR_NOT_NULL(strstr(log, "corrupt"));
        CU_ASSERT_PTR_NOT_NULL(strstr(log, "resetting the link"));
        pvt_pvd_stop(&plat, "vm3", SIGTERM);
}

/* A fake server VM: vm4's pvd connects to us, and we lie in HELLO. */
static int fake_server_listen(const char *link)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        link_path(link, sa.sun_path, sizeof(sa.sun_path));
        unlink(sa.sun_path);
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4) < 0) {
                close(fd);
                return -errno;
        }
        return fd;
}

static int accept_join(int lfd)
{
        struct pollfd pf = { .fd = lfd, .events = POLLIN };
        if (poll(&pf, 1, 3000) != 1)
                return -ETIMEDOUT;
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        struct pv_emu_msg m;
        pf.fd = fd;
        if (poll(&pf, 1, 3000) != 1 || recv(fd, &m, sizeof(m), 0) != sizeof(m) || m.type != PV_EMU_JOIN) {
                close(fd);
                return -EPROTO;
        }
        return fd;
}

/* A HELLO announcing the regions of sizes[] (0: absent), as memfds that
 * are sealed or not. */
static void send_hello(int fd, const uint64_t sizes[PV_REGION_COUNT], bool seal)
{
        struct pv_emu_msg m;
        msg_init(&m, PV_EMU_HELLO);
        snprintf(m.link_name, sizeof(m.link_name), "vm2-vm4-vbpipe0");
        int fds[PV_EMU_MAX_FDS];
        unsigned n = 0;
        for (int r = 0; r < PV_REGION_COUNT; r++) {
                if (!sizes[r])
                        continue;
                m.region_mask |= 1u << r;
                m.region_size[r] = sizes[r];
                int mfd = memfd_create("liar", MFD_CLOEXEC | MFD_ALLOW_SEALING);
                CU_ASSERT(ftruncate(mfd, (off_t)sizes[r]) == 0);
                if (seal)
                        fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
                fds[n++] = mfd;
        }
        fds[n++] = eventfd(0, EFD_CLOEXEC);
        fds[n++] = eventfd(0, EFD_CLOEXEC);
        union {
                char b[CMSG_SPACE(sizeof(int) * PV_EMU_MAX_FDS)];
                struct cmsghdr a;
        } u;
        struct iovec iov = { .iov_base = &m, .iov_len = sizeof(m) };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
                             .msg_controllen = CMSG_SPACE(sizeof(int) * n) };
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * n);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
        sendmsg(fd, &mh, MSG_NOSIGNAL);
        for (unsigned i = 0; i < n; i++)
                close(fds[i]);
}

/* The region sizes the real server announces for a link: ask it, as a
 * fake client. */
static void real_sizes(const char *link, const char *client_vm, uint64_t sizes[PV_REGION_COUNT])
{
        int fd = connect_link(link);
        CU_ASSERT_FATAL(fd >= 0);
        struct pv_emu_msg m;
        msg_init(&m, PV_EMU_JOIN);
        snprintf(m.client_vm, sizeof(m.client_vm), "%s", client_vm);
        snprintf(m.link_name, sizeof(m.link_name), "%s", link);
        CU_ASSERT_FATAL(send(fd, &m, sizeof(m), 0) == sizeof(m));
        union {
                char b[CMSG_SPACE(sizeof(int) * PV_EMU_MAX_FDS)];
                struct cmsghdr a;
        } u;
        struct iovec iov = { .iov_base = &m, .iov_len = sizeof(m) };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof(u.b) };
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        CU_ASSERT_FATAL(poll(&pf, 1, 2000) == 1);
        CU_ASSERT_FATAL(recvmsg(fd, &mh, MSG_CMSG_CLOEXEC) == sizeof(m));
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
                for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
                        int f;
                        memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                        close(f);
                }
        memcpy(sizes, m.region_size, sizeof(m.region_size));
        close(fd);
}

static void test_fake_server_lies(void)
{
        /* vm2 is the real server of vm2-vm4-vbpipe0: learn the sizes it
         * announces, then stop it and take its place. */
        uint64_t sizes[PV_REGION_COUNT];
        real_sizes("vm2-vm4-vbpipe0", "vm4", sizes);
        CU_ASSERT(sizes[PV_REGION_CTL] > 0);
        pvt_pvd_stop(&plat, "vm2", SIGTERM);
        int lfd = fake_server_listen("vm2-vm4-vbpipe0");
        CU_ASSERT_FATAL(lfd >= 0);
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm4", NULL), 0);

        /* 1. HELLO with memory of the wrong size. */
        uint64_t wrong[PV_REGION_COUNT];
        memcpy(wrong, sizes, sizeof(wrong));
        wrong[PV_REGION_CTL] = 8192;
        int fd = accept_join(lfd);
        CU_ASSERT_FATAL(fd >= 0);
        send_hello(fd, wrong, true);
        CU_ASSERT(dropped(fd, 2000));
        close(fd);
        /* 2. The right sizes, but memory the server could shrink under us. */
        fd = accept_join(lfd);
        CU_ASSERT_FATAL(fd >= 0);
        send_hello(fd, sizes, false);
        CU_ASSERT(dropped(fd, 2000));
        close(fd);
        /* 3. The right sizes, sealed, but zeroes where the control header
         * belongs. */
        fd = accept_join(lfd);
        CU_ASSERT_FATAL(fd >= 0);
        send_hello(fd, sizes, true);
        CU_ASSERT(dropped(fd, 2000));
        close(fd);
        /* 4. Garbage. */
        fd = accept_join(lfd);
        CU_ASSERT_FATAL(fd >= 0);
        CU_ASSERT(send(fd, "garbage!", 8, 0) == 8);
        CU_ASSERT(dropped(fd, 2000));
        close(fd);

        CU_ASSERT(pvd_alive("vm4"));
        char log[16384];
        pvt_read_file(pvt_vm(&plat, "vm4")->log, log, sizeof(log));
        CU_ASSERT_PTR_NOT_NULL(strstr(log, "same platform file"));
        CU_ASSERT_PTR_NOT_NULL(strstr(log, "not a sealed memfd"));
        CU_ASSERT_PTR_NOT_NULL(strstr(log, "bad magic"));

        /* The real server returns: vm4 takes it. */
        close(lfd);
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm2", NULL), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm4", "vm2-vm4-vbpipe0", "ON", 5000), 0);
}

int main(void)
{
        pvt_need_emu("it speaks the emu backend's link protocol as a fake peer pvd");
        if (CU_initialize_registry() != CUE_SUCCESS)
                return 1;
        CU_pSuite s = CU_add_suite("hostile peer", suite_init, suite_fini);
        CU_add_test(s, "fake client: garbage and lies", test_fake_client_lies);
        CU_add_test(s, "fake client: corrupt control ring", test_fake_client_corrupts_ring);
        CU_add_test(s, "fake server: lies in HELLO", test_fake_server_lies);
        CU_basic_set_mode(CU_BRM_VERBOSE);
        CU_basic_run_tests();
        unsigned fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
        CU_cleanup_registry();
        return fails ? 1 : 0;
}

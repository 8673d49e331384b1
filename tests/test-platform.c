/* Integration tests of the foundation: the demo platform as real pvd
 * processes (vm2, vm3, vm4), vlink states through pvd deaths and restarts,
 * device nodes, pvctl, clean stops, refusals, and malformed control
 * messages.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "conn.h"
#include "pv-msg.h"
#include "pv/pvclient.h"
#include "pvt-run.h"
#include "pvtest.h"

#define LINK_VOGL   "vm2-vm3-vogl0"
#define LINK_VBPIPE "vm2-vm4-vbpipe0"

static struct pvt_platform plat;

static int suite_init(void)
{
        if (pvt_platform_init(&plat, "demo") < 0)
                return -1;
        return 0;
}

static int suite_fini(void)
{
        int left = pvt_platform_fini(&plat);
        return left ? -1 : 0;
}

static bool is_socket(const char *dir, const char *name)
{
        char path[512];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        return stat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}

static int count_sockets(const char *dir)
{
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "find %s -type s 2>/dev/null | wc -l", dir);
        FILE *f = popen(cmd, "r");
        int n = -1;
        if (f) {
                if (fscanf(f, "%d", &n) != 1)
                        n = -1;
                pclose(f);
        }
        return n;
}

static int connect_raw(const char *dir, const char *name)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", dir, name);
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                int e = errno;
                close(fd);
                return -e;
        }
        return fd;
}

static unsigned count_str(const char *hay, const char *needle)
{
        unsigned n = 0;
        for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
                n++;
        return n;
}

static uint64_t vlink_gen(const char *vm, const char *link)
{
        msgpack_zone zone;
        msgpack_object doc;
        uint64_t gen = 0;
        msgpack_zone_init(&zone, 4096);
        if (pvt_status(&plat, vm, &zone, &doc) == 0) {
                for (uint32_t i = 0; i < doc.via.map.size; i++) {
                        msgpack_object_kv *kv = &doc.via.map.ptr[i];
                        if (kv->key.via.str.size != 6 || memcmp(kv->key.via.str.ptr, "vlinks", 6))
                                continue;
                        for (uint32_t j = 0; j < kv->val.via.array.size; j++) {
                                msgpack_object *vl = &kv->val.via.array.ptr[j];
                                bool match = false;
                                uint64_t g = 0;
                                for (uint32_t k = 0; k < vl->via.map.size; k++) {
                                        msgpack_object_kv *e = &vl->via.map.ptr[k];
                                        if (e->key.via.str.size == 4 && !memcmp(e->key.via.str.ptr, "name", 4))
                                                match = e->val.via.str.size == strlen(link) &&
                                                        !memcmp(e->val.via.str.ptr, link, strlen(link));
                                        if (e->key.via.str.size == 10 && !memcmp(e->key.via.str.ptr, "generation", 10))
                                                g = e->val.via.u64;
                                }
                                if (match)
                                        gen = g;
                        }
                }
        }
        msgpack_zone_destroy(&zone);
        return gen;
}

/* Start order does not matter: a client VM that comes first waits. */
static void test_client_first(void)
{
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm4", NULL), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm4", LINK_VBPIPE, "ON", 300), -ETIMEDOUT);
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm2", NULL), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm4", LINK_VBPIPE, "ON", 5000), 0);
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm3", NULL), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm2", NULL, "ON", 5000), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm3", NULL, "ON", 5000), 0);
}

/* Every device node of the seed exists and accepts connections. */
static void test_device_nodes(void)
{
        struct pvt_vm *vm2 = pvt_vm(&plat, "vm2"), *vm3 = pvt_vm(&plat, "vm3"), *vm4 = pvt_vm(&plat, "vm4");
        const char *n2[] = { "vrpq-srv-vogl0", "vumem-srv-vogl0", "vbpipe0", "control" };
        const char *n3[] = { "vrpq-clt-vogl0", "vumem-clt-vogl0", "control" };
        const char *n4[] = { "vbpipe0", "control" };
        for (size_t i = 0; i < 4; i++) {
                CU_ASSERT(is_socket(vm2->rt, n2[i]));
                int fd = connect_raw(vm2->rt, n2[i]);
                CU_ASSERT(fd >= 0);
                if (fd >= 0)
                        close(fd);
        }
        for (size_t i = 0; i < 3; i++) {
                CU_ASSERT(is_socket(vm3->rt, n3[i]));
                int fd = connect_raw(vm3->rt, n3[i]);
                CU_ASSERT(fd >= 0);
                if (fd >= 0)
                        close(fd);
        }
        for (size_t i = 0; i < 2; i++)
                CU_ASSERT(is_socket(vm4->rt, n4[i]));
        CU_ASSERT(!is_socket(vm3->rt, "vbpipe0"));
        CU_ASSERT(!is_socket(vm4->rt, "vrpq-clt-vogl0"));
}

/* pvctl status: a table, and JSON whose vlinks each have "state": "ON". */
static void test_pvctl_status(void)
{
        const char *pvctl = getenv("PVCTL_BIN");
        static char out[65536], err[4096];
        const char *argv[] = { pvctl, "status", "--json", NULL };
        struct {
                const char *vm;
                unsigned vlinks;
                const char *node;
        } cases[] = { { "vm2", 2, "vrpq-srv-vogl0" }, { "vm3", 1, "vrpq-clt-vogl0" }, { "vm4", 1, "vbpipe0" } };
        for (size_t i = 0; i < 3; i++) {
                int st = pvt_run(&plat, cases[i].vm, argv, out, sizeof(out), err, sizeof(err), 5000);
                CU_ASSERT_EQUAL(st, 0);
                CU_ASSERT_EQUAL(count_str(out, "\"state\": \"ON\""), cases[i].vlinks);
                CU_ASSERT_PTR_NOT_NULL(strstr(out, cases[i].node));
                char vmkey[32];
                snprintf(vmkey, sizeof(vmkey), "\"vm\": \"%s\"", cases[i].vm);
                CU_ASSERT_PTR_NOT_NULL(strstr(out, vmkey));
        }
        const char *argv2[] = { pvctl, "status", NULL };
        int st = pvt_run(&plat, "vm2", argv2, out, sizeof(out), err, sizeof(err), 5000);
        CU_ASSERT_EQUAL(st, 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "VLINK"));
        CU_ASSERT_PTR_NOT_NULL(strstr(out, LINK_VOGL));
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "vrpq,vumem"));
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "vumem-srv-vogl0"));
        /* The backend, its capabilities (less those turned off) and its
         * facts. */
        const char *off = getenv("PVD_HV_CAPS_OFF");
        bool all_off = off && strstr(off, "all");
        if (strcmp(pvt_hv(), "emu") == 0) {
                CU_ASSERT_PTR_NOT_NULL(strstr(out, all_off ? "hypervisor emu: capabilities none; platform_dir="
                                                           : "hypervisor emu: capabilities one_kernel,foreign_mem,"
                                                             "slice; platform_dir="));
        } else {
                CU_ASSERT_PTR_NOT_NULL(strstr(out, "hypervisor ivshmem: capabilities none; face=host, ivshmem_dir="));
                CU_ASSERT_PTR_NOT_NULL(strstr(out, "no per-program memory"));
        }
        CU_ASSERT_PTR_NOT_NULL(strstr(out, plat.platform_dir));
}

/* The backend is chosen at start; its options go with it only. */
static void test_hv_choice(void)
{
        const char *pvd = getenv("PVD_BIN");
        static char out[4096], err[4096];
        const char *none[] = { pvd, "--config", plat.dtb, "--vm", "vm3", "--hv", "nonesuch", NULL };
        CU_ASSERT_EQUAL(pvt_run(&plat, NULL, none, out, sizeof(out), err, sizeof(err), 5000), 2);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "no hypervisor backend \"nonesuch\" (this pvd has: emu"));
        const char *help[] = { pvd, "--help", NULL };
        CU_ASSERT_EQUAL(pvt_run(&plat, NULL, help, out, sizeof(out), err, sizeof(err), 5000), 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "--hv emu:"));
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "--platform-dir DIR"));
        setenv("PVD_HV_CAPS_OFF", "one_kernel,nonesuch", 1);
        const char *caps[] = { pvd, "--config", plat.dtb, "--vm", "vm3", "--runtime-dir", "/nonexistent-pvd-test",
                               NULL };
        int st = pvt_run(&plat, NULL, caps, out, sizeof(out), err, sizeof(err), 5000);
        unsetenv("PVD_HV_CAPS_OFF");
        CU_ASSERT_EQUAL(st, 1);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "unknown capability \"nonesuch\""));
}

/* A peer pvd's death is seen at once; the vlink returns by itself. */
static void test_client_death_and_return(void)
{
        uint64_t gen = vlink_gen("vm2", LINK_VOGL);
        CU_ASSERT(gen >= 1);
        long long t0 = pvt_now_ms();
        CU_ASSERT(pvt_pvd_stop(&plat, "vm3", SIGKILL) != -1);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm2", LINK_VOGL, "OFF", 2000), 0);
        CU_ASSERT(pvt_now_ms() - t0 < 2000);
        /* The other vlink is not disturbed. */
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm2", LINK_VBPIPE, "ON", 100), 0);
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm3", NULL), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm2", LINK_VOGL, "ON", 5000), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm3", LINK_VOGL, "ON", 5000), 0);
        /* Fresh memory: a new generation. */
        CU_ASSERT(vlink_gen("vm2", LINK_VOGL) > gen);
}

/* pvd runs as SCHED_BATCH (its wake-ups never preempt a program), unless
 * PVD_SCHED=other; the programs it serves keep their own policy. */
static void test_sched_batch(void)
{
        struct pvt_vm *v = pvt_vm(&plat, "vm3");
        CU_ASSERT_EQUAL(sched_getscheduler(pvt_vm(&plat, "vm2")->pid), SCHED_BATCH);
        CU_ASSERT_EQUAL(sched_getscheduler(v->pid), SCHED_BATCH);
        CU_ASSERT_EQUAL(sched_getscheduler(0), SCHED_OTHER);
        CU_ASSERT(pvt_pvd_stop(&plat, "vm3", SIGTERM) != -1);
        setenv("PVD_SCHED", "other", 1);
        int rc = pvt_pvd_start(&plat, "vm3", NULL);
        unsetenv("PVD_SCHED");
        CU_ASSERT_EQUAL_FATAL(rc, 0);
        CU_ASSERT_EQUAL(sched_getscheduler(v->pid), SCHED_OTHER);
        CU_ASSERT(pvt_pvd_stop(&plat, "vm3", SIGTERM) != -1);
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm3", NULL), 0);
        CU_ASSERT_EQUAL(sched_getscheduler(v->pid), SCHED_BATCH);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm2", LINK_VOGL, "ON", 5000), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm3", LINK_VOGL, "ON", 5000), 0);
}

/* A second pvd for vm, refused: its error names the holder. */
static void second_pvd_says(const char *vm, const char *holder)
{
        const char *pvd = getenv("PVD_BIN");
        struct pvt_vm *v = pvt_vm(&plat, vm);
        static char out[4096], err[4096];
        const char *argv[] = { pvd, "--config", plat.dtb, "--vm", vm, "--runtime-dir", v->rt,
                               "--platform-dir", plat.platform_dir, NULL };
        CU_ASSERT_EQUAL(pvt_run(&plat, NULL, argv, out, sizeof(out), err, sizeof(err), 5000), 1);
        if (!strstr(err, holder))
                fprintf(stderr, "test-platform: wanted \"%s\" in: %s\n", holder, err);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, holder));
}

static void test_server_death_and_return(void)
{
        CU_ASSERT(pvt_pvd_stop(&plat, "vm2", SIGKILL) != -1);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm3", LINK_VOGL, "OFF", 2000), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm4", LINK_VBPIPE, "OFF", 2000), 0);
        /* The dead one's record, longer than the next one's: the lock
         * files are written over, not truncated (a truncation waits for
         * the disk's writeback of the last record). */
        char lock[300];
        snprintf(lock, sizeof(lock), "%s/pvd.lock", pvt_vm(&plat, "vm2")->rt);
        FILE *f = fopen(lock, "w");
        CU_ASSERT_PTR_NOT_NULL_FATAL(f);
        fprintf(f, "vm2, pid 2147483647 of a much longer record than any pvd writes\nand a second line\n");
        fclose(f);
        CU_ASSERT_EQUAL_FATAL(pvt_pvd_start(&plat, "vm2", NULL), 0);
        char holder[64];
        snprintf(holder, sizeof(holder), "another pvd (vm2, pid %d) already", (int)pvt_vm(&plat, "vm2")->pid);
        second_pvd_says("vm2", holder);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm3", LINK_VOGL, "ON", 5000), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm4", LINK_VBPIPE, "ON", 5000), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm2", NULL, "ON", 5000), 0);
}

/* A second pvd for the same VM and runtime directory refuses to start. */
static void test_second_pvd_refused(void)
{
        struct pvt_vm *vm3 = pvt_vm(&plat, "vm3");
        char holder[64];
        snprintf(holder, sizeof(holder), "another pvd (vm3, pid %d) already", (int)vm3->pid);
        second_pvd_says("vm3", holder);
        /* The running one is untouched. */
        CU_ASSERT(is_socket(vm3->rt, "vrpq-clt-vogl0"));
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm3", LINK_VOGL, "ON", 1000), 0);
}

/* Malformed control messages drop that one connection; pvd goes on and
 * leaks no fd. */
static void test_malformed_messages(void)
{
        struct pvt_vm *vm3 = pvt_vm(&plat, "vm3");
        /* Let pvd finish closing the connections of earlier status queries. */
        usleep(100000);
        int pvd_fds = pvt_fd_count_of(vm3->pid);
        CU_ASSERT(pvd_fds > 0);
        const char *nodes[] = { "control", "vrpq-clt-vogl0", "vumem-clt-vogl0" };
        for (size_t n = 0; n < 3; n++) {
                /* garbage, a truncated map, an unknown op, fds nobody
                 * announced, too many fds, a wrong type, an oversized
                 * datagram */
                for (int kind = 0; kind < 8; kind++) {
                        int fd = connect_raw(vm3->rt, nodes[n]);
                        CU_ASSERT_FATAL(fd >= 0);
                        uint8_t garbage[] = { 0xc1, 0xff, 0x00, 0x13 };
                        uint8_t trunc[] = { 0x83, 0x00, 0x01 };
                        if (kind == 7) {
                                /* garbage, then an empty datagram with fds that
                                 * pvd throws away unread when it drops us */
                                CU_ASSERT(send(fd, garbage, sizeof(garbage), 0) > 0);
                                int p[2];
                                CU_ASSERT_FATAL(pipe(p) == 0);
                                union {
                                        char buf[CMSG_SPACE(2 * sizeof(int))];
                                        struct cmsghdr a;
                                } u;
                                struct iovec iov = { .iov_base = garbage, .iov_len = 0 };
                                struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                                                     .msg_controllen = sizeof(u.buf) };
                                struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                                c->cmsg_level = SOL_SOCKET;
                                c->cmsg_type = SCM_RIGHTS;
                                c->cmsg_len = CMSG_LEN(2 * sizeof(int));
                                memcpy(CMSG_DATA(c), p, sizeof(p));
                                sendmsg(fd, &mh, 0); /* pvd may have dropped us already */
                                close(p[0]);
                                close(p[1]);
                        } else if (kind == 0) {
                                CU_ASSERT(send(fd, garbage, sizeof(garbage), 0) > 0);
                        } else if (kind == 1) {
                                CU_ASSERT(send(fd, trunc, sizeof(trunc), 0) > 0);
                        } else if (kind == 2) {
                                struct pv_msg m;
                                pv_msg_init(&m, 0xeee);
                                CU_ASSERT_EQUAL(pv_msg_send(fd, &m), 0);
                        } else if (kind == 5) {
                                /* {op: "status", seq: 1}: op must be an integer */
                                uint8_t wrong[] = { 0x82, 0x00, 0xa6, 's', 't', 'a', 't', 'u', 's', 0x01, 0x01 };
                                CU_ASSERT(send(fd, wrong, sizeof(wrong), 0) > 0);
                        } else if (kind == 6) {
                                static uint8_t big[PV_MSG_MAX + 4096];
                                memset(big, 0xc0, sizeof(big));
                                CU_ASSERT(send(fd, big, sizeof(big), 0) > 0);
                        } else {
                                int nfd = kind == 3 ? 2 : 12;
                                int p[12];
                                for (int k = 0; k < nfd; k += 2)
                                        CU_ASSERT_FATAL(pipe(p + k) == 0);
                                /* a valid status request, but with fds */
                                struct pv_msg m;
                                uint8_t enc[64];
                                size_t elen;
                                pv_msg_init(&m, PV_OP_STATUS);
                                CU_ASSERT_FATAL(pv_msg_encode(&m, enc, sizeof(enc), &elen) == 0);
                                struct iovec iov = { .iov_base = enc, .iov_len = elen };
                                union {
                                        char buf[CMSG_SPACE(12 * sizeof(int))];
                                        struct cmsghdr a;
                                } u;
                                struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                                                     .msg_controllen = CMSG_SPACE(nfd * sizeof(int)) };
                                struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                                c->cmsg_level = SOL_SOCKET;
                                c->cmsg_type = SCM_RIGHTS;
                                c->cmsg_len = CMSG_LEN(nfd * sizeof(int));
                                memcpy(CMSG_DATA(c), p, nfd * sizeof(int));
                                CU_ASSERT(sendmsg(fd, &mh, 0) > 0);
                                for (int k = 0; k < nfd; k++)
                                        close(p[k]);
                        }
                        /* pvd closes this connection (control answers unknown ops
                         * by closing too), saying why first: -EPROTO and a
                         * sentence, then the end. */
                        struct timeval tv = { .tv_sec = 2 };
                        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
                        static char buf[PV_MSG_MAX];
                        struct pv_msg last;
                        CU_ASSERT_EQUAL(pv_msg_recv(fd, &last, buf, sizeof(buf), 0), 0);
                        CU_ASSERT_EQUAL(pv_msg_op(&last), PV_OP_NONE);
                        CU_ASSERT_EQUAL(pv_msg_diag(&last), -EPROTO);
                        char why[256] = "";
                        pv_msg_get_str(&last, PV_K_MSG, why, sizeof(why));
                        CU_ASSERT_PTR_NOT_NULL(strstr(why, "pvd dropped this connection"));
                        ssize_t r;
                        while ((r = recv(fd, buf, sizeof(buf), 0)) > 0)
                                ;
                        CU_ASSERT_EQUAL(r, 0);
                        close(fd);
                }
        }
        /* Still serving, and every fd it received was closed. */
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm3", LINK_VOGL, "ON", 1000), 0);
        usleep(100000);
        int after = pvt_fd_count_of(vm3->pid);
        if (after != pvd_fds) {
                char cmd[64];
                snprintf(cmd, sizeof(cmd), "ls -l /proc/%d/fd >&2", (int)vm3->pid);
                fprintf(stderr, "pvd fds before %d after %d\n", pvd_fds, after);
                if (system(cmd) < 0)
                        perror("system");
        }
        CU_ASSERT_EQUAL(after, pvd_fds);
}

/* SIGTERM: exit 0, every socket removed, the peers see OFF. */
static void test_sigterm_clean(void)
{
        struct pvt_vm *vm4 = pvt_vm(&plat, "vm4");
        int st = pvt_pvd_stop(&plat, "vm4", SIGTERM);
        CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        CU_ASSERT_EQUAL(count_sockets(vm4->rt), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm2", LINK_VBPIPE, "OFF", 2000), 0);
        CU_ASSERT_EQUAL(pvt_pvd_start(&plat, "vm4", NULL), 0);
        CU_ASSERT_EQUAL(pvt_wait_vlink(&plat, "vm2", LINK_VBPIPE, "ON", 5000), 0);
        st = pvt_pvd_stop(&plat, "vm2", SIGINT);
        CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        CU_ASSERT_EQUAL(count_sockets(pvt_vm(&plat, "vm2")->rt), 0);
        CU_ASSERT_EQUAL(pvt_pvd_start(&plat, "vm2", NULL), 0);
}

/* READY=1 once set up, STOPPING=1 on SIGTERM, through NOTIFY_SOCKET. */
static void test_sd_notify(void)
{
        char dir[256], sock[300], rt[300];
        snprintf(dir, sizeof(dir), "%s/notify-test", plat.dir);
        CU_ASSERT_FATAL(mkdir(dir, 0700) == 0);
        snprintf(sock, sizeof(sock), "%s/notify", dir);
        snprintf(rt, sizeof(rt), "%s/rt", dir);
        int ns = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
        CU_ASSERT_FATAL(bind(ns, (struct sockaddr *)&sa, sizeof(sa)) == 0);
        char platdir[300];
        snprintf(platdir, sizeof(platdir), "%s/plat", dir);
        pid_t pid = fork();
        if (pid == 0) {
                setenv("NOTIFY_SOCKET", sock, 1);
                int fd = open("/dev/null", O_WRONLY);
                dup2(fd, 2);
                execl(getenv("PVD_BIN"), "pvd", "--config", plat.dtb, "--vm", "vm4", "--runtime-dir", rt,
                      "--platform-dir", platdir, (char *)NULL);
                _exit(127);
        }
        CU_ASSERT_FATAL(pid > 0);
        char buf[256];
        struct pollfd pf = { .fd = ns, .events = POLLIN };
        CU_ASSERT_EQUAL(poll(&pf, 1, 5000), 1);
        ssize_t n = recv(ns, buf, sizeof(buf) - 1, 0);
        CU_ASSERT(n > 0);
        buf[n > 0 ? n : 0] = 0;
        CU_ASSERT_PTR_NOT_NULL(strstr(buf, "READY=1"));
        /* Ready means the device nodes exist. */
        CU_ASSERT(is_socket(rt, "vbpipe0"));
        CU_ASSERT(is_socket(rt, "control"));
        pvt_kill(pid, SIGTERM);
        CU_ASSERT_EQUAL(poll(&pf, 1, 5000), 1);
        n = recv(ns, buf, sizeof(buf) - 1, 0);
        CU_ASSERT(n > 0);
        buf[n > 0 ? n : 0] = 0;
        CU_ASSERT_PTR_NOT_NULL(strstr(buf, "STOPPING=1"));
        CU_ASSERT_EQUAL(pvt_wait(pid, 5000), 0);
        close(ns);
        unlink(sock);
}

/* Bad configuration: non-zero exit, a clear message, nothing created. */
static void test_bad_config_creates_nothing(void)
{
        const char *pvd = getenv("PVD_BIN");
        char rt[300], pd[300], bad[300];
        static char out[4096], err[4096];
        snprintf(rt, sizeof(rt), "%s/never-rt", plat.dir);
        snprintf(pd, sizeof(pd), "%s/never-plat", plat.dir);
        snprintf(bad, sizeof(bad), "%s/garbage.dtb", plat.dir);
        FILE *f = fopen(bad, "w");
        CU_ASSERT_FATAL(f != NULL);
        fputs("this is not a device tree\n", f);
        fclose(f);

        const char *a1[] = { pvd, "--config", bad, "--vm", "vm2", "--runtime-dir", rt, "--platform-dir", pd, NULL };
        CU_ASSERT_EQUAL(pvt_run(&plat, NULL, a1, out, sizeof(out), err, sizeof(err), 5000), 1);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "garbage.dtb"));
        const char *a2[] = { pvd, "--config", plat.dtb, "--vm", "vm9", "--runtime-dir", rt, "--platform-dir", pd, NULL };
        CU_ASSERT_EQUAL(pvt_run(&plat, NULL, a2, out, sizeof(out), err, sizeof(err), 5000), 1);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "no VM called \"vm9\""));
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "vm2, vm3, vm4"));
        const char *a3[] = { pvd, "--vm", "vm2", NULL };
        CU_ASSERT_EQUAL(pvt_run(&plat, NULL, a3, out, sizeof(out), err, sizeof(err), 5000), 2);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "--config"));
        struct stat st;
        CU_ASSERT(stat(rt, &st) < 0 && errno == ENOENT);
        CU_ASSERT(stat(pd, &st) < 0 && errno == ENOENT);
        unlink(bad);

        const char *a4[] = { pvd, "--help", NULL };
        CU_ASSERT_EQUAL(pvt_run(&plat, NULL, a4, out, sizeof(out), err, sizeof(err), 5000), 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "--platform-dir"));
        const char *a5[] = { pvd, "--version", NULL };
        CU_ASSERT_EQUAL(pvt_run(&plat, NULL, a5, out, sizeof(out), err, sizeof(err), 5000), 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "pvd "));
}

/* Without pvd: a clear diagnostic, never a hang. */
static void test_no_daemon(void)
{
        const char *pvctl = getenv("PVCTL_BIN");
        static char out[4096], err[4096];
        char rt[300];
        snprintf(rt, sizeof(rt), "%s/nobody-home", plat.dir);
        const char *argv[] = { pvctl, "--runtime-dir", rt, "status", NULL };
        CU_ASSERT_EQUAL(pvt_run(&plat, NULL, argv, out, sizeof(out), err, sizeof(err), 5000), 1);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "no pvd is running"));

        setenv("PVD_RUNTIME_DIR", rt, 1);
        struct pv_conn *c;
        CU_ASSERT_EQUAL(pvc_conn_open("/dev/vrpq-clt-vogl0", &c), -ECONNREFUSED);
        /* A running pvd without that node: -ENOENT, naming the node. */
        pvt_use_vm(&plat, "vm4");
        CU_ASSERT_EQUAL(pvc_conn_open("/dev/vrpq-clt-vogl0", &c), -ENOENT);
        CU_ASSERT_PTR_NOT_NULL(strstr(pvLastError(), "vrpq-clt-vogl0: no such device node"));
        CU_ASSERT_EQUAL(pvc_conn_open("../etc/passwd", &c), -EINVAL);
        unsetenv("PVD_RUNTIME_DIR");
}

/* One connection used by several threads at once: every call gets its own
 * answer. */
struct shared_conn {
        struct pv_conn *c;
        int ok;
};

static void *status_caller(void *arg)
{
        struct shared_conn *sc = arg;
        static __thread char buf[PV_MSG_DOC_MAX];
        for (int i = 0; i < 200; i++) {
                struct pv_msg req, resp;
                pv_msg_init(&req, i % 2 ? PV_OP_STATUS : PV_OP_STAT);
                if (!(i % 2))
                        pv_msg_set_str(&req, PV_K_NAME, "vbpipe");
                if (pvc_conn_call(sc->c, &req, &resp, buf, sizeof(buf)) != 0)
                        return NULL;
                const void *d;
                uint32_t len;
                if (pv_msg_op(&resp) != pv_msg_op(&req) || pv_msg_get_b(&resp, PV_K_DOC, &d, &len) < 0)
                        return NULL;
                /* A stat document names its driver; a status one does not. */
                bool is_stat = memmem(d, len, "driver", 6) && memmem(d, len, "vbpipe", 6) && !memmem(d, len, "programs", 8);
                if (is_stat != !(i % 2))
                        return NULL;
        }
        __atomic_add_fetch(&sc->ok, 1, __ATOMIC_SEQ_CST);
        return NULL;
}

static void test_threads_share_a_connection(void)
{
        struct shared_conn sc = { 0 };
        pvt_use_vm(&plat, "vm4");
        CU_ASSERT_EQUAL_FATAL(pvc_conn_open("control", &sc.c), 0);
        pthread_t t[4];
        for (int i = 0; i < 4; i++)
                pthread_create(&t[i], NULL, status_caller, &sc);
        for (int i = 0; i < 4; i++)
                pthread_join(t[i], NULL);
        CU_ASSERT_EQUAL(sc.ok, 4);
        pvc_conn_close(sc.c);
        unsetenv("PVD_RUNTIME_DIR");
}

static const struct pvt_test tests[] = {
        { "client VM first, then servers", test_client_first },
        { "device nodes exist and accept", test_device_nodes },
        { "pvctl status table and JSON", test_pvctl_status },
        { "the hypervisor backend is chosen at start", test_hv_choice },
        { "client pvd killed and restarted", test_client_death_and_return },
        { "server pvd killed and restarted", test_server_death_and_return },
        { "second pvd for a VM refused", test_second_pvd_refused },
        { "pvd runs as SCHED_BATCH, or as told", test_sched_batch },
        { "malformed control messages", test_malformed_messages },
        { "threads share a connection", test_threads_share_a_connection },
        { "SIGTERM and SIGINT stop cleanly", test_sigterm_clean },
        { "READY=1 and STOPPING=1", test_sd_notify },
        { "bad configuration creates nothing", test_bad_config_creates_nothing },
        { "no daemon: clear errors", test_no_daemon },
        { NULL, NULL },
};

static const struct pvt_suite suites[] = {
        { "platform", suite_init, suite_fini, tests, 0 },
        { NULL, NULL, NULL, NULL, 0 },
};

int main(int argc, char **argv)
{
        return pvt_main(argc, argv, suites);
}

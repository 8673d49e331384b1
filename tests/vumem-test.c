/* VUMEM test support. See vumem-test.h. */
#include <errno.h>
#include <fcntl.h>
#include <linux/udmabuf.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pv/vumem-server.h"
#include "vumem-test.h"

static int ev_pipe[2] = { -1, -1 };
#define TEV_KEEP 4096
static struct tev kept[TEV_KEEP];
static int nkept;

void tev_init(void)
{
        if (ev_pipe[0] < 0 && pipe2(ev_pipe, O_CLOEXEC) < 0)
                abort();
        /* Room for the events of thousands of requests that a test counts
         * only at its end: with the default 64 KiB the server programs
         * would block in tev_send and stop answering. */
        fcntl(ev_pipe[1], F_SETPIPE_SZ, 1 << 20);
}

void tev_fini(void)
{
        if (ev_pipe[0] >= 0) {
                close(ev_pipe[0]);
                close(ev_pipe[1]);
        }
        ev_pipe[0] = ev_pipe[1] = -1;
        nkept = 0;
}

static void tev_send(struct tev *ev)
{
        if (write(ev_pipe[1], ev, sizeof(*ev)) != sizeof(*ev))
                _exit(99);
}

bool udmabuf_available(void)
{
        return access("/dev/udmabuf", R_OK | W_OK) == 0;
}

/* A udmabuf over a fresh sealed memfd, or -errno. */
static int make_udmabuf(size_t size)
{
        int dev = open("/dev/udmabuf", O_RDWR | O_CLOEXEC);
        if (dev < 0)
                return -errno;
        int mfd = memfd_create("udmabuf", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (mfd < 0 || ftruncate(mfd, (off_t)size) < 0 || fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK) < 0) {
                int e = -errno;
                close(dev);
                if (mfd >= 0)
                        close(mfd);
                return e;
        }
        struct udmabuf_create c = { .memfd = (uint32_t)mfd, .flags = UDMABUF_FLAGS_CLOEXEC, .offset = 0, .size = size };
        int fd = ioctl(dev, UDMABUF_CREATE, &c);
        int e = -errno;
        close(mfd);
        close(dev);
        return fd >= 0 ? fd : e;
}

/* The inode of the memory mapped at addr (from /proc/self/maps), 0 if
 * none: what a client's fd of the same pages must show. */
static ino_t ino_of(const void *addr)
{
        FILE *f = fopen("/proc/self/maps", "re");
        if (!f)
                return 0;
        char line[512];
        ino_t ino = 0;
        uintptr_t a = (uintptr_t)addr;
        while (!ino && fgets(line, sizeof(line), f)) {
                unsigned long lo, hi, inode;
                if (sscanf(line, "%lx-%lx %*s %*s %*s %lu", &lo, &hi, &inode) == 3 && a >= lo && a < hi)
                        ino = (ino_t)inode;
        }
        fclose(f);
        return ino;
}

bool foreign_mem_off(void)
{
        const char *off = getenv("PVD_HV_CAPS_OFF");
        /* Only the emu backend can share memory it did not make. */
        return strcmp(pvt_hv(), "emu") != 0 || (off && (strstr(off, "foreign_mem") || strstr(off, "all")));
}

struct srv_arg {
        const char *node;
        int index;
};

void child_close_fds(int keep)
{
        for (int fd = 3; fd < 4096; fd++)
                if (fd != keep)
                        close(fd);
}

static int server_main(void *argp)
{
        struct srv_arg *a = argp;
        child_close_fds(ev_pipe[1]);
        VumemServer *srv;
        struct tev ev = { .type = TEV_READY, .node = a->index };
        ev.diag = vumemServerCreate(a->node, &srv);
        tev_send(&ev);
        if (ev.diag)
                return 0;
        uint8_t *pool;
        if (vumemServerMemAlloc(srv, 4 << 20, (void **)&pool))
                return 2;
        size_t pool_next = 0;
        for (;;) {
                VumemReq req;
                VumemResp resp;
                int rc = vumemReceive(srv, &req);
                if (rc)
                        break;
                memset(&resp, 0, sizeof(resp));
                resp.header = req.header;
                memset(&ev, 0, sizeof(ev));
                ev.node = a->index;
                ev.session = req.header.sessionId;
                if (req.header.cmd == VUMEM_CMD_BUFFER_FREE) {
                        ev.type = TEV_FREE;
                        ev.id = req.bufferFree.bufferId;
                        ev.size = req.bufferFree.size;
                        memcpy(ev.head, req.bufferFree.vaddr, sizeof(ev.head));
                        /* Registered memory goes; pool memory stays. */
                        uint8_t *v = req.bufferFree.vaddr;
                        if (v < pool || v >= pool + (4 << 20))
                                vumemServerMemFree(srv, v);
                        tev_send(&ev);
                        vumemRespond(srv, &resp);
                        continue;
                }
                struct talloc t;
                memset(&t, 0, sizeof(t));
                memcpy(&t, req.bufferAlloc.alloc,
                       req.bufferAlloc.allocSize < sizeof(t) ? req.bufferAlloc.allocSize : sizeof(t));
                void *vaddr = NULL, *heap = NULL;
                uint8_t stack[256];
                size_t size = t.size;
                ev.type = TEV_ALLOC;
                switch (t.op) {
                case TA_MEMFD: {
                        /* Memory of its own, a memfd of the program's where
                         * the backend can share it, else the backend's. */
                        size_t len = (size + 4095) & ~(size_t)4095;
                        int fd = foreign_mem_off() ? -1 : memfd_create("test-buffer", MFD_CLOEXEC | MFD_ALLOW_SEALING);
                        if (foreign_mem_off() ? vumemServerMemAlloc(srv, len, &vaddr)
                                              : fd < 0 || ftruncate(fd, (off_t)len) < 0 ||
                                                        vumemServerFdRegister(srv, fd, len, &vaddr)) {
                                resp.diag = -ENOMEM;
                        } else {
                                ev.ino = ino_of(vaddr);
                                memset(vaddr, (int)t.fill, size);
                        }
                        if (fd >= 0)
                                close(fd);
                        break;
                }
                case TA_DMABUF: {
                        size_t len = (size + 4095) & ~(size_t)4095;
                        int fd = make_udmabuf(len);
                        if (fd < 0 || vumemServerFdRegister(srv, fd, len, &vaddr))
                                resp.diag = -ENODEV;
                        else
                                memset(vaddr, (int)t.fill, size);
                        if (fd >= 0)
                                close(fd);
                        break;
                }
                case TA_FOREIGN: {
                        size_t len = (size + 4095) & ~(size_t)4095;
                        int fd = memfd_create("test-foreign", MFD_CLOEXEC | MFD_ALLOW_SEALING);
                        int r = fd < 0 || ftruncate(fd, (off_t)len) < 0 ? -errno
                                                                         : vumemServerFdRegister(srv, fd, len, &vaddr);
                        if (r < 0) {
                                resp.diag = r;
                                ev.diag = r;
                                if (strstr(pvLastError(), "cannot share memory it did not make"))
                                        memcpy(ev.head, "did not make", 13);
                        } else {
                                memset(vaddr, (int)t.fill, size);
                        }
                        if (fd >= 0)
                                close(fd);
                        break;
                }
                case TA_POOL:
                        pool_next = (pool_next + 4095) & ~(size_t)4095;
                        if (pool_next + t.pgoff + size > (4u << 20))
                                pool_next = 0;
                        vaddr = pool + pool_next + t.pgoff;
                        pool_next += t.pgoff + size;
                        memset(vaddr, (int)t.fill, size);
                        break;
                case TA_MALLOC:
                        heap = malloc(size ? size : 1);
                        vaddr = heap;
                        break;
                case TA_STACK:
                        vaddr = stack;
                        size = sizeof(stack);
                        break;
                case TA_FAIL:
                        resp.diag = -ENOMEM;
                        break;
                case TA_HANG:
                        tev_send(&ev);
                        continue;
                default:
                        resp.diag = -EINVAL;
                }
                memcpy(&t.tag, "rewritten", 10);
                memcpy(resp.bufferAlloc.alloc, &t, sizeof(t));
                resp.bufferAlloc.allocSize = sizeof(t);
                resp.bufferAlloc.vaddr = vaddr;
                resp.bufferAlloc.size = size;
                rc = vumemRespond(srv, &resp);
                free(heap);
                if (rc) {
                        ev.type = TEV_RESPOND_ERR;
                        ev.diag = rc;
                        snprintf((char *)ev.head, sizeof(ev.head), "%.15s", strstr(pvLastError(), "cannot share") ?
                                 "cannot share" : pvLastError());
                }
                tev_send(&ev);
        }
        vumemServerDestroy(srv);
        return 0;
}

pid_t tsrv_start(struct pvt_platform *p, const char *vm, const char *node, int index, int *diag)
{
        tev_init();
        struct srv_arg a = { .node = node, .index = index };
        pid_t pid = pvt_spawn(p, vm, server_main, &a);
        if (pid < 0)
                return -errno;
        struct tev ev;
        if (tev_wait(TEV_READY, index, 5000, &ev) < 0) {
                tsrv_kill(pid);
                return -ETIMEDOUT;
        }
        *diag = ev.diag;
        if (ev.diag) {
                pvt_wait(pid, 5000);
                return 0;
        }
        return pid;
}

void tsrv_kill(pid_t pid)
{
        if (pid <= 0)
                return;
        kill(pid, SIGKILL);
        pvt_wait(pid, 5000);
}

static bool matches(const struct tev *e, int type, int node)
{
        return e->type == type && (node < 0 || e->node == node);
}

int tev_wait(int type, int node, int timeout_ms, struct tev *ev)
{
        for (int i = 0; i < nkept; i++)
                if (matches(&kept[i], type, node)) {
                        *ev = kept[i];
                        memmove(&kept[i], &kept[i + 1], (size_t)(nkept - i - 1) * sizeof(kept[0]));
                        nkept--;
                        return 0;
                }
        long long end = pvt_now_ms() + timeout_ms;
        for (;;) {
                long long left = end - pvt_now_ms();
                if (left < 0)
                        return -ETIMEDOUT;
                struct pollfd pf = { .fd = ev_pipe[0], .events = POLLIN };
                if (poll(&pf, 1, (int)left) != 1)
                        continue;
                struct tev e;
                if (read(ev_pipe[0], &e, sizeof(e)) != sizeof(e))
                        return -EIO;
                if (matches(&e, type, node)) {
                        *ev = e;
                        return 0;
                }
                if (nkept < TEV_KEEP)
                        kept[nkept++] = e;
        }
}

int tev_count(int type, int node, int ms)
{
        int n = 0;
        struct tev ev;
        long long end = pvt_now_ms() + ms;
        while (pvt_now_ms() < end && tev_wait(type, node, (int)(end - pvt_now_ms()), &ev) == 0)
                n++;
        return n;
}

void tev_flush(void)
{
        nkept = 0;
        for (;;) {
                struct pollfd pf = { .fd = ev_pipe[0], .events = POLLIN };
                struct tev e;
                if (poll(&pf, 1, 0) != 1 || read(ev_pipe[0], &e, sizeof(e)) != sizeof(e))
                        return;
        }
}

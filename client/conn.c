/* libpvclient's connection to pvd. See conn.h. */
#include <errno.h>
#include <stdint.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "conn.h"
#include "pv-config.h"

/* A VM's name as PVD_VM may give it: one path component. */
static bool vm_name_ok(const char *vm)
{
        return *vm && !strchr(vm, '/') && strcmp(vm, ".") != 0 && strcmp(vm, "..") != 0;
}

int pvc_runtime_dir(char *buf, size_t len)
{
        const char *d = getenv("PVD_RUNTIME_DIR");
        const char *vm = getenv("PVD_VM");
        int n;
        if (!d || !*d)
                d = PV_DEFAULT_RUNTIME_DIR;
        /* Several VMs' pvds on one host (pvd@VM.service) each have
         * /run/pvd/VM: PVD_VM names the VM whose nodes a program uses. */
        if (vm && *vm) {
                if (!vm_name_ok(vm)) {
                        snprintf(buf, len, "%s", d);
                        return pvc_error(-EINVAL, "PVD_VM=\"%s\" is not a VM name (expected e.g. vm3)", vm);
                }
                n = snprintf(buf, len, "%s/%s", d, vm);
        } else {
                n = snprintf(buf, len, "%s", d);
        }
        if (n < 0 || (size_t)n >= len)
                return pvc_error(-ENAMETOOLONG, "runtime directory %s%s%s: path too long for a socket", d,
                                 vm && *vm ? "/" : "", vm && *vm ? vm : "");
        return 0;
}

int pvc_dev_path(const char *dev, char *path, size_t plen, char *name, size_t nlen)
{
        if (!dev)
                return pvc_error(-EINVAL, "device name is NULL");
        const char *base = strncmp(dev, "/dev/", 5) == 0 ? dev + 5 : dev;
        if (!*base || strchr(base, '/') || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
                return pvc_error(-EINVAL, "\"%s\" is not a pvd device name (expected /dev/NAME or NAME)", dev);
        if (strlen(base) >= nlen)
                return pvc_error(-ENAMETOOLONG, "device name \"%s\" is too long", dev);
        char dir[PVC_PATH_MAX];
        int rc = pvc_runtime_dir(dir, sizeof(dir));
        if (rc < 0)
                return rc;
        int n = snprintf(path, plen, "%s/%s", dir, base);
        if (n < 0 || (size_t)n >= plen)
                return pvc_error(-ENAMETOOLONG, "%s/%s: path too long for a socket", dir, base);
        snprintf(name, nlen, "%s", base);
        return 0;
}

static int connect_path(const char *path, int *fdp)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                int e = errno;
                close(fd);
                return -e;
        }
        *fdp = fd;
        return 0;
}

/* Why a device node could not be reached, in the user's words. */
static int explain_connect_error(const char *name, const char *path, int rc)
{
        char dir[PVC_PATH_MAX];
        pvc_runtime_dir(dir, sizeof(dir));      /* checked by pvc_dev_path */
        if (rc == -ENOENT) {
                char ctl[PVC_PATH_MAX + 16];
                int fd;
                snprintf(ctl, sizeof(ctl), "%s/control", dir);
                if (connect_path(ctl, &fd) == 0) {
                        close(fd);
                        return pvc_error(-ENOENT,
                                         "%s: no such device node in %s; is this driver configured for this VM? "
                                         "(pvctl status lists the device nodes)", name, dir);
                }
                return pvc_error(-ECONNREFUSED,
                                 "%s: no pvd is running in %s (no control socket); start it (systemctl start pvd, "
                                 "or pvd@VM for one of several VMs) or set PVD_RUNTIME_DIR (and PVD_VM) to "
                                 "its runtime directory", name, dir);
        }
        if (rc == -ECONNREFUSED)
                return pvc_error(-ECONNREFUSED, "%s: pvd is not running (%s is a stale socket)", name, path);
        if (rc == -EACCES || rc == -EPERM)
                return pvc_error(-EACCES, "%s: permission denied on %s (see its owner and mode: ls -l %s)", name,
                                 path, path);
        return pvc_error(rc, "%s: cannot connect to %s: %s", name, path, strerror(-rc));
}

int pvc_conn_open(const char *dev, struct pv_conn **out)
{
        char path[PVC_PATH_MAX], name[PVC_NAME_MAX];
        int rc = pvc_dev_path(dev, path, sizeof(path), name, sizeof(name));
        if (rc < 0)
                return rc;
        int fd;
        rc = connect_path(path, &fd);
        if (rc < 0)
                return explain_connect_error(name, path, rc);
        struct pv_conn *c = calloc(1, sizeof(*c));
        if (!c) {
                close(fd);
                return pvc_error(-ENOMEM, "out of memory");
        }
        c->fd = fd;
        pthread_mutex_init(&c->lock, NULL);
        snprintf(c->name, sizeof(c->name), "%s", name);
        snprintf(c->path, sizeof(c->path), "%s", path);
        *out = c;
        return 0;
}

void pvc_conn_close(struct pv_conn *c)
{
        if (!c)
                return;
        close(c->fd);
        pthread_mutex_destroy(&c->lock);
        free(c);
}

/* pvd's last word before it closes a connection: a message with no
 * operation, whose diag and text say why. */
static int refusal_of(struct pv_conn *c, struct pv_msg *m)
{
        int diag = pv_msg_diag(m);
        char text[256];
        pv_msg_close_fds(m);
        if (diag >= 0)
                diag = -ECONNRESET;
        if (pv_msg_get_str(m, PV_K_MSG, text, sizeof(text)) == 0)
                return pvc_error(diag, "%s", text);
        return pvc_error(diag, "%s: refused by pvd (%s)", c->name, strerror(-diag));
}

/* pvd closed the connection under us: it may have said why. */
static int closed_reason(struct pv_conn *c, struct pv_msg *resp, void *buf, size_t cap)
{
        int rc = pv_msg_recv(c->fd, resp, buf, cap, MSG_DONTWAIT);
        if (rc == 0 && pv_msg_op(resp) == PV_OP_NONE)
                return refusal_of(c, resp);
        if (rc == 0)
                pv_msg_close_fds(resp);
        return pvc_error(-ECONNRESET, "%s: pvd closed the connection (pvd stopped, or the object or its peer is gone)",
                         c->name);
}

int pvc_conn_post(struct pv_conn *c, struct pv_msg *req)
{
        pthread_mutex_lock(&c->lock);
        uint32_t seq = ++c->seq;
        if (seq == 0)
                seq = ++c->seq;
        pv_msg_set_u(req, PV_K_SEQ, seq);
        int rc = pv_msg_send(c->fd, req);
        if (rc == -EPIPE || rc == -ECONNRESET)
                rc = pvc_error(-ECONNRESET, "%s: pvd closed the connection (pvd stopped, or the object or its peer "
                               "is gone)", c->name);
        else if (rc < 0)
                rc = pvc_error(rc, "%s: cannot send to pvd: %s", c->name, strerror(-rc));
        pthread_mutex_unlock(&c->lock);
        return rc;
}

int pvc_conn_call(struct pv_conn *c, struct pv_msg *req, struct pv_msg *resp, void *buf, size_t cap)
{
        int rc;
        pthread_mutex_lock(&c->lock);
        uint32_t seq = ++c->seq;
        if (seq == 0)
                seq = ++c->seq;
        pv_msg_set_u(req, PV_K_SEQ, seq);
        rc = pv_msg_send(c->fd, req);
        if (rc == -EPIPE || rc == -ECONNRESET) {
                rc = closed_reason(c, resp, buf, cap);
                goto out;
        }
        if (rc < 0) {
                rc = pvc_error(rc, "%s: cannot send to pvd: %s", c->name, strerror(-rc));
                goto out;
        }
        for (;;) {
                rc = pv_msg_recv(c->fd, resp, buf, cap, 0);
                if (rc == -EINTR)
                        continue;
                if (rc == -ECONNRESET) {
                        rc = pvc_error(-ECONNRESET,
                                       "%s: pvd closed the connection (pvd stopped, or the object or its peer is gone)",
                                       c->name);
                        goto out;
                }
                if (rc < 0) {
                        rc = pvc_error(rc, "%s: bad answer from pvd: %s", c->name, strerror(-rc));
                        goto out;
                }
                if (pv_msg_op(resp) == PV_OP_NONE) {
                        rc = refusal_of(c, resp);
                        goto out;
                }
                uint64_t rseq;
                if (pv_msg_get_u(resp, PV_K_SEQ, &rseq) == 0 && rseq == seq)
                        break;
                /* A stale answer to a call that was interrupted: skip it. */
                pv_msg_close_fds(resp);
        }
        rc = pv_msg_diag(resp);
        if (rc < 0) {
                char text[512];
                if (pv_msg_get_str(resp, PV_K_MSG, text, sizeof(text)) == 0)
                        pvc_error(rc, "%s", text);
                else
                        pvc_error(rc, "%s: %s", c->name, strerror(-rc));
        }
out:
        pthread_mutex_unlock(&c->lock);
        return rc;
}

int pvc_map(int fd, uint64_t offset, uint64_t len, void **out)
{
        uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE);
        struct stat st;
        if (fd < 0 || !len || offset % pg || offset > (uint64_t)INT64_MAX || len > SIZE_MAX || fstat(fd, &st) < 0)
                return -EINVAL;
        off_t end = S_ISREG(st.st_mode) ? st.st_size : lseek(fd, 0, SEEK_END);
        if (end >= 0) {
                /* The last partial page of a file maps whole. */
                uint64_t have = ((uint64_t)end + pg - 1) / pg * pg;
                if (offset > have || len > have - offset)
                        return -EPROTO;
        }
        void *p = mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)offset);
        if (p == MAP_FAILED)
                return -errno;
        *out = p;
        return 0;
}

int pvc_wait_fd(int fd, int conn_fd, int timeout_ms)
{
        struct pollfd p[2] = {
                { .fd = fd, .events = POLLIN },
                { .fd = conn_fd, .events = 0 }, /* hang-up only */
        };
        int n = poll(p, conn_fd >= 0 ? 2 : 1, timeout_ms);
        if (n < 0)
                return -errno;
        if (n == 0)
                return 0;
        if (conn_fd >= 0 && (p[1].revents & (POLLHUP | POLLERR | POLLNVAL)))
                return -ECONNRESET;
        if (p[0].revents & (POLLERR | POLLNVAL))
                return -EBADF;
        return 1;
}

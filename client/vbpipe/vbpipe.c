/* VBPIPE, program side: ask pvd for this VM's end of a vbpipe and hand the
 * program the socket pvd gives. See <pv/vbpipe.h> and proto/vbpipe-proto.h. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "pv/vbpipe.h"
#include "vbpipe-direct.h"
#include "vbpipe-proto.h"

static int fail(int diag)
{
        errno = -diag;
        return -1;
}

int vbpipeOpen(const char *name, int flags)
{
        pvc_error_clear();
        int acc = flags & O_ACCMODE;
        if (acc != O_RDONLY && acc != O_WRONLY && acc != O_RDWR)
                return fail(pvc_error(-EINVAL, "vbpipeOpen: access mode must be O_RDONLY, O_WRONLY or O_RDWR"));
        struct pv_conn *c;
        int rc = pvc_conn_open(name, &c);
        if (rc < 0)
                return fail(rc);
        struct pv_msg req, resp;
        char buf[4096];
        pv_msg_init(&req, PV_OP_VBPIPE_OPEN);
        pv_msg_set_u(&req, PV_K_FLAGS, (flags & O_NONBLOCK ? VBPIPE_OPEN_NONBLOCK : 0) |
                                      (flags & O_DIRECT ? VBPIPE_OPEN_DIRECT : 0));
        pv_msg_init(&resp, PV_OP_NONE);
        /* A blocking open is answered when the peer's end is open. */
        rc = pvc_conn_call(c, &req, &resp, buf, sizeof(buf));
        uint64_t info = 0, size = 0, mem_off = 0, page_off = 0;
        if (rc == 0) {
                pv_msg_get_u(&resp, PV_K_FLAGS, &info);
                pv_msg_get_u(&resp, PV_K_SIZE, &size);
                pv_msg_get_u(&resp, PV_K_OFFSET, &mem_off);
                pv_msg_get_u(&resp, PV_K_OFFSET2, &page_off);
        }
        bool direct = (info & VBPIPE_INFO_DIRECT) && resp.nfds == 4 && size <= UINT32_MAX;
        if (rc == 0 && resp.nfds != 1 && !direct) {
                pv_msg_close_fds(&resp);
                rc = pvc_error(-EPROTO, "%s: pvd answered the open without the pipe's descriptor", c->name);
        }
        char dev[PVC_NAME_MAX];
        snprintf(dev, sizeof(dev), "%s", c->name);
        pvc_conn_close(c);
        if (rc < 0) {
                pv_msg_close_fds(&resp);
                return fail(rc);
        }
        int fd = resp.fds[0];
        /* Received close-on-exec; open(2) leaves it to O_CLOEXEC. */
        if (!(flags & O_CLOEXEC) && fcntl(fd, F_SETFD, 0) < 0)
                goto sys_fail;
        if ((flags & O_NONBLOCK) && fcntl(fd, F_SETFL, O_NONBLOCK) < 0)
                goto sys_fail;
        if (acc == O_RDONLY)
                shutdown(fd, SHUT_WR);
        else if (acc == O_WRONLY)
                shutdown(fd, SHUT_RD);
        /* Without it (a mapping that fails) the end works the same,
         * through pvd. */
        if (direct && (flags & O_DIRECT))
                vbpd_attach(fd, resp.fds[1], page_off, resp.fds[2], mem_off, resp.fds[3], (uint32_t)size, acc,
                            info & VBPIPE_INFO_ANY, info & VBPIPE_INFO_REMOTE);
        else
                for (unsigned i = 1; i < resp.nfds; i++)
                        close(resp.fds[i]);
        return fd;
sys_fail:
        rc = -errno;
        close(fd);
        for (unsigned i = 1; i < resp.nfds; i++)
                close(resp.fds[i]);
        return fail(pvc_error(rc, "%s: %s", dev, strerror(-rc)));
}

ssize_t vbpipeRead(int fd, void *buf, size_t count)
{
        ssize_t r;
        if (vbpd_read(fd, buf, count, &r))
                return r;
        return read(fd, buf, count);
}

ssize_t vbpipeWrite(int fd, const void *buf, size_t count)
{
        ssize_t r;
        if (vbpd_write(fd, buf, count, &r))
                return r;
        return write(fd, buf, count);
}

int vbpipeClose(int fd)
{
        vbpd_forget(fd);
        return close(fd);
}

/* VBPIPE: a byte pipe between two VMs that behaves like a Unix pipe.
 *
 *   int fd = vbpipeOpen("/dev/vbpipe0", O_RDWR);
 *
 * name is "/dev/NAME" or "NAME", NAME being the `name=` of the vbpipe's
 * info in this VM (the device node in $PVD_RUNTIME_DIR, default /run/pvd).
 * The result is a real file descriptor (a UNIX stream socket whose other
 * end pvd holds): read, write, poll, select, epoll, fcntl, ioctl(FIONREAD)
 * and close are the POSIX calls, and children inherit it.
 *
 *  - The open is a rendezvous: it returns when the other VM's end is open
 *    too. With O_NONBLOCK it returns at once, and the descriptor becomes
 *    writable when the peer arrives.
 *  - read blocks while the pipe is empty and, unless the vbpipe's info has
 *    flag 'a', until the whole count has arrived (fewer bytes only at EOF,
 *    on a signal or with O_NONBLOCK). write blocks while the pipe is full.
 *  - When the other program closes, read returns what is left, then 0;
 *    write fails with EPIPE (and SIGPIPE). The same when the other VM or
 *    its pvd goes away. Then close, and open again for a new conversation.
 *  - O_RDONLY / O_WRONLY open one direction (the other is shut: writes
 *    fail with EPIPE, reads return 0); O_RDWR both. O_CLOEXEC as for open;
 *    O_CREAT, O_TRUNC, O_EXCL, O_APPEND and O_NOCTTY are ignored, as for a
 *    FIFO.
 *
 * Returns the descriptor, or -1 with errno set: ENOENT (no such vbpipe in
 * this VM), ECONNREFUSED (pvd is not running), EACCES, EBUSY (this end is
 * open already), ECONNRESET (pvd went away during the open), EINVAL.
 * pvLastError() says more.
 *
 * Direct access (O_DIRECT): vbpipeRead and vbpipeWrite are read(2) and
 * write(2) with the same results, faster. On an end opened with O_DIRECT
 * they copy straight between the buffer and the pipe's rings in shared
 * memory while both sides are busy, with no daemon and no wake-up on the
 * way (a blocking call spins up to PVCLIENT_VBPIPE_SPIN_US microseconds,
 * 50 by default, before it sleeps). Mixing them with read, write, poll,
 * epoll and FIONREAD on the same descriptor is fine: bytes keep their
 * order. On any other descriptor they are read(2) and write(2). Close
 * such an end with vbpipeClose, which also lets go of its shared memory:
 * a call finds its end without a system call, so after a plain close(2)
 * the number stays the end's for vbpipeRead and vbpipeWrite (which may
 * still reach the pipe while pvd lends its rings) until vbpipeClose.
 * Programs run under pvrun(1) get all this for their open, read, write
 * and close.
 */
#ifndef PV_VBPIPE_H
#define PV_VBPIPE_H

#include <sys/types.h>

#include <pv/pvclient.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Open this VM's end of the vbpipe name ("/dev/vbpipe0" or "vbpipe0"): a
 * rendezvous with the other VM's end. flags as for open(2), plus O_DIRECT
 * for direct access. Returns the descriptor, or -1 with errno set. */
int vbpipeOpen(const char *name, int flags);
/* read(2) of an end: straight from the pipe's ring in shared memory on an
 * end opened with O_DIRECT while pvd lends it, through the socket
 * otherwise. Returns the bytes read, 0 at end of file, or -1 with errno. */
ssize_t vbpipeRead(int fd, void *buf, size_t count);
/* write(2) of an end, straight into the ring as vbpipeRead reads. Returns
 * the bytes written, or -1 with errno (EPIPE once the peer closed). */
ssize_t vbpipeWrite(int fd, const void *buf, size_t count);
/* Close an end and let go of its shared memory. Returns 0, or -1 with
 * errno. */
int vbpipeClose(int fd);

#ifdef __cplusplus
}
#endif

#endif

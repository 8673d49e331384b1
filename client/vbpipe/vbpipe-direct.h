/* VBPIPE direct access, program side (internal to libpvclient and libpvrun).
 *
 * An end opened with vbpipeOpen may come with its direct page, the vlink's
 * vbpipe memory and a doorbell (proto/vbpipe-proto.h, "direct access").
 * vbpd_read and vbpd_write then copy between the caller's buffer and the
 * byte rings themselves while pvd lends them, and go through the socket
 * otherwise. Ends are found by fd in a table, with no system call; a call
 * that goes to the socket first checks that the fd is still the end's
 * (not closed with close(2) and reused), and drops it from the table if
 * not.
 */
#ifndef PVC_VBPIPE_DIRECT_H
#define PVC_VBPIPE_DIRECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Register fd's direct access: page_fd, mem_fd and bell_fd are taken (closed
 * here, or kept for the doorbell). acc: O_RDONLY, O_WRONLY or O_RDWR.
 * remote: the peer runs on another kernel (VBPIPE_INFO_REMOTE).
 * Returns 0 or a negative errno (the end then simply has none). */
int vbpd_attach(int fd, int page_fd, uint64_t page_off, int mem_fd, uint64_t mem_off, int bell_fd, uint32_t ring_size,
                int acc, bool any, bool remote);

/* fd is closed, or becomes another file: forget it. */
void vbpd_forget(int fd);

/* Read or write through the rings when fd is a registered end and pvd
 * lends them: returns 1 with *res the result (and errno set when -1), or
 * 0 when the caller must use read(2) or write(2) itself. */
int vbpd_read(int fd, void *buf, size_t n, ssize_t *res);
int vbpd_write(int fd, const void *buf, size_t n, ssize_t *res);

#endif

/* libpvclient's connection to pvd: one SOCK_SEQPACKET socket to a device
 * node, request/response with fd passing. Internal to the library. */
#ifndef PVC_CONN_H
#define PVC_CONN_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "pv-msg.h"

#define PVC_NAME_MAX 64
#define PVC_PATH_MAX 108

struct pv_conn {
        int fd;
        pthread_mutex_t lock;   /* one request/response at a time */
        uint32_t seq;
        char name[PVC_NAME_MAX];
        char path[PVC_PATH_MAX];
};

/* The runtime directory whose nodes programs use: $PVD_RUNTIME_DIR (default
 * /run/pvd), or $PVD_RUNTIME_DIR/$PVD_VM when PVD_VM is set. Always fills
 * buf; -EINVAL (a PVD_VM that is no name), -ENAMETOOLONG. */
int pvc_runtime_dir(char *buf, size_t len);

/* "/dev/NAME" or "NAME" -> runtime directory/NAME. -EINVAL, -ENAMETOOLONG. */
int pvc_dev_path(const char *dev, char *path, size_t plen, char *name, size_t nlen);

/* Connect to a device node. Errors carry a message (pvLastError). */
int pvc_conn_open(const char *dev, struct pv_conn **out);
void pvc_conn_close(struct pv_conn *c);

/* Send req (seq set here) and wait for its response into resp, whose
 * bytes values point into buf (cap bytes). Returns the response's diag (0 or
 * negative) or a transport error: -ECONNRESET when pvd closed the
 * connection. The response's fds belong to the caller (also on a negative
 * diag: close them with pv_msg_close_fds). A failed diag's PV_K_MSG becomes
 * pvLastError(). */
int pvc_conn_call(struct pv_conn *c, struct pv_msg *req, struct pv_msg *resp, void *buf, size_t cap);

/* Send req (seq set here) without waiting: for requests pvd does not
 * answer. Same transport errors as pvc_conn_call. */
int pvc_conn_post(struct pv_conn *c, struct pv_msg *req);

/* Set this thread's pvLastError() (and print it if PVCLIENT_DEBUG is set).
 * Returns diag, for "return pvc_error(-EINVAL, ...)". */
int pvc_error(int diag, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void pvc_error_clear(void);

/* Map len bytes of shared memory at offset of fd (pvd hands memory out as
 * fd, offset, length), read/write, after checking that the memory holds
 * them (so that no access can fault). 0 with *out, or -errno. */
int pvc_map(int fd, uint64_t offset, uint64_t len, void **out);

/* Wait until fd is readable or the connection's socket hangs up; timeout_ms
 * < 0 waits forever. 1 readable, 0 timeout, -ECONNRESET hang-up, -EINTR. */
int pvc_wait_fd(int fd, int conn_fd, int timeout_ms);

#endif

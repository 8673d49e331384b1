/* pvhv: the hypervisor side of a platform on a QEMU host. For every vlink
 * of the platform device tree it owns one shared memory (layout and header
 * in proto/pv-ivshmem.h) and serves QEMU's ivshmem server protocol on one
 * socket per side, DIR/LINK.VM.sock, so that it knows which side joined.
 *
 * Single-threaded on one libuv loop. pvhv only writes the shared memory,
 * never reads it: what it wrote it keeps in its own copy (hdr).
 */
#ifndef PVHV_H
#define PVHV_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/un.h>

#include <uv.h>

#include "config.h"
#include "pv-ivshmem.h"
#include "watch.h"

struct pvhv;
struct pvhv_link;

/* One side of a vlink: its socket and the peer connected to it. */
struct pvhv_side {
        struct pvhv_link *link;
        enum pv_side side;
        const char *vm;                     /* the VM of that side */
        char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
        struct pvd_watch *listen;           /* the socket, while serving */
        bool listen_paused;                 /* out of fds: accept again later */
        struct pvd_watch *conn;             /* the peer, or NULL */
        pid_t pid;                          /* its pid (SO_PEERCRED), for the log */
        uint32_t id;                        /* its peer id (the last one once it left) */
        uint32_t next_id;                   /* the id the side's next peer gets */
        uint32_t ids_seen;                  /* other-side ids this peer was given */
        int vec[PV_IVSHM_VECTORS];          /* its vectors' eventfds (created by pvhv), or -1 */
        bool knows_other;                   /* it was given the other side's vectors */
        uint64_t joins, refused, dropped;
};

struct pvhv_link {
        struct pvhv *hv;
        const struct pv_vlink_cfg *cfg;
        int mem_fd;                         /* the memfd, sealed against shrink and grow */
        struct pv_ivshm_hdr hdr;            /* pvhv's copy of the header it writes */
        struct pv_ivshm_hdr *map;           /* the header page of the memory: written only */
        struct pvhv_side side[2];           /* [PV_SERVER], [PV_CLIENT] */
};

#define PVHV_DIR_MAX 96

struct pvhv_options {
        const char *config;
        const char *dir;
        int log_level;
};

struct pvhv {
        uv_loop_t *loop;
        struct pv_platform *plat;
        char dir[PVHV_DIR_MAX];
        struct pvhv_link *links;
        unsigned nlinks;
        uv_signal_t sig[3];
        uv_timer_t resume;                  /* re-arms paused sockets */
        uv_timer_t restore;                 /* rewrites the headers */
        int lock_fd;
        bool stopping;
};

/* pvhv.c: run until SIGTERM/SIGINT. 0 after a clean stop, 1 when it could
 * not start (the reason is logged). */
int pvhv_run(const struct pvhv_options *opt);
/* Print the QEMU options that attach vm's vlinks served from dir. 0, or
 * 1 / 2 with the reason on stderr. */
int pvhv_print_qemu_args(const char *config, const char *dir, const char *vm);
/* DIR/LINK.VM.sock in buf: 0, or -ENAMETOOLONG when it does not fit a UNIX
 * socket address. */
int pvhv_sock_path(const char *dir, const struct pv_vlink_cfg *cfg, const char *vm, char *buf, size_t len);
/* Call pvhv_side_resume on every side in a moment. */
void pvhv_resume_later(struct pvhv *hv);

/* pvhv-side.c: serving one side. */
int pvhv_side_listen(struct pvhv_side *s);
void pvhv_side_stop(struct pvhv_side *s);
/* Accept again on sockets paused for want of fds. */
void pvhv_side_resume(struct pvhv_side *s);
/* Write pvhv's copy of the header into the memory, whole (a peer may have
 * scribbled on it). */
void pvhv_link_write_hdr(struct pvhv_link *l);

#endif

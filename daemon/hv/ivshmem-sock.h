/* A peer's side of QEMU's ivshmem server protocol (proto/pv-ivshmem.h),
 * as pvd's ivshmem backend speaks it to pvhv over DIR/LINK.VM.sock: one
 * connection, non-blocking and incremental so that it runs in a libuv loop.
 *
 * The server is not trusted: anything malformed (a wrong version, an fd
 * where none belongs or none where one must be, more vectors than
 * PV_IVSHM_VECTORS, ids out of range, memory that is not a sealed
 * power-of-two memfd, an fd that is not an eventfd, more peers at once than
 * IVSOCK_MAX_PEERS, a peer leaving that never joined, truncated messages,
 * several fds with one message) fails with -EPROTO, closes every fd that
 * came with the bad message, and leaves the connection dead (every later
 * ivsock_read returns the same error; ivsock_close it). The fds it keeps
 * (memory, vectors) are its own until ivsock_close.
 */
#ifndef PV_IVSHMEM_SOCK_H
#define PV_IVSHMEM_SOCK_H

#include <stdbool.h>
#include <stdint.h>

#include "pv-ivshmem.h"

/* Other peers known at once: on a vlink there is one (the other side),
 * which pvhv always announces gone before a new one joins. */
#define IVSOCK_MAX_PEERS 3

/* What an ivsock_read call changed (bits in *events). */
enum {
        IVSOCK_EV_READY = 1u << 0,       /* own id, memory and own vectors now all here */
        IVSOCK_EV_PEER_JOINED = 1u << 1, /* a peer's vectors are all here */
        IVSOCK_EV_PEER_LEFT = 1u << 2,   /* a peer left; its vectors are closed */
};

struct ivsock;

/* Connect to a server socket (non-blocking, close-on-exec). 0 or -errno
 * (-ENOENT: no server there yet; -EAGAIN: its backlog is full). */
int ivsock_connect(const char *path, struct ivsock **out);
/* The socket: watch it for readable, then call ivsock_read. */
int ivsock_fd(const struct ivsock *s);
/* Read and handle what is there (at most a bounded number of messages per
 * call: call again while the socket stays readable). Sets *events (may be
 * NULL). 0; -EPROTO for anything malformed (ivsock_error says what);
 * -ECONNRESET when the server closed the connection; another -errno from
 * recvmsg. */
int ivsock_read(struct ivsock *s, unsigned *events);
/* Own id, memory and own vectors received. */
bool ivsock_ready(const struct ivsock *s);
int ivsock_own_id(const struct ivsock *s);          /* -1 before it came */
int ivsock_mem_fd(const struct ivsock *s);          /* -1 before it came; owned by the module */
uint64_t ivsock_mem_size(const struct ivsock *s);   /* a power of two, 0 before */
/* Own vector vec: becomes readable when a peer rings it (read 8 bytes to
 * clear it). -1 while absent. Owned by the module (non-blocking). */
int ivsock_own_vector_fd(const struct ivsock *s, unsigned vec);
/* Peer's vector vec: write to it to ring that peer. -1 while absent. */
int ivsock_peer_vector_fd(const struct ivsock *s, uint32_t peer, unsigned vec);
/* All of that peer's vectors are here (it joined and has not left). */
bool ivsock_peer_present(const struct ivsock *s, uint32_t peer);
/* The ids of the peers present (at most max of them): how many there are. */
unsigned ivsock_peers(const struct ivsock *s, uint32_t *ids, unsigned max);
/* Ring vector vec of peer: 0, -ENOTCONN when that peer is not there. */
int ivsock_ring(const struct ivsock *s, uint32_t peer, unsigned vec);
/* Why the last -EPROTO, for a log line ("" when none). */
const char *ivsock_error(const struct ivsock *s);
/* Close the connection and every fd the module holds. NULL is accepted. */
void ivsock_close(struct ivsock *s);

#endif

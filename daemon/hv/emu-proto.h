/* The emulated hypervisor's wire format (hv/emu.c): what two pvds of one
 * host say about one vlink. It carries only what a hypervisor gives: vlink
 * memory (memfds), xIRQs (eventfds), grants of memory (memfd or dma-buf
 * fds) and, by the socket's life, peer state.
 *
 * The vlink's UNIX socket "<platform dir>/<link name>.sock" (SOCK_SEQPACKET,
 * one struct pv_emu_msg per datagram):
 *   client -> server  JOIN     "I am <client vm> for <link>"
 *   server -> client  HELLO    regions (one memfd per present region, in
 *                              region order, each region at region_offset
 *                              of its memfd) + 2 eventfds: the
 *                              server->client and client->server control
 *                              xIRQs
 *   client -> server  READY    regions mapped: the vlink is ON
 *   either            FD       kind + id + 1 fd: the object of an
 *                              announcement (below) that follows on the
 *                              control ring
 *
 * Announcements travel on the vlink's control ring (pvd_vlink_send_hv), so
 * they are ordered with the drivers' messages (hv.h, ordering rule): a
 * grant is known to the peer before any message that names it, and a
 * revoke is seen after every message sent before it. The fd of a NEW goes
 * on the socket first; a receiver that reads the NEW before its fd arrived
 * waits for it (the socket is never full for long: its reader drains it
 * whatever the ring does, and a sender queues what does not fit, in order).
 */
#ifndef PV_EMU_PROTO_H
#define PV_EMU_PROTO_H

#include <stdint.h>

#include "pv-vlink.h"

#define PV_EMU_MAGIC   0x554d4550u /* "PEMU" */
#define PV_EMU_VERSION 2u
#define PV_EMU_MAX_FDS (PV_REGION_COUNT + 2)
/* Where every memory object the emu backend makes starts in its memfd
 * (its regions and mem_alloc's objects): one page in, so that a program
 * that ignores the offset it is handed fails in every test. */
#define PV_EMU_MEM_OFFSET 4096u

enum pv_emu_type {
        PV_EMU_JOIN = 1,
        PV_EMU_HELLO,
        PV_EMU_READY,
        PV_EMU_FD,
};

enum pv_emu_fd_kind { PV_EMU_KIND_XIRQ = 1, PV_EMU_KIND_GRANT = 2 };

struct pv_emu_msg {
        uint32_t magic;
        uint32_t type;
        uint32_t version;
        uint32_t id;                            /* FD: the xIRQ or grant id */
        uint32_t kind;                          /* FD: enum pv_emu_fd_kind */
        uint32_t gen;                           /* HELLO: memory generation */
        uint32_t region_mask;                   /* HELLO: bit per region present */
        uint32_t reserved;
        uint64_t region_size[PV_REGION_COUNT];  /* HELLO */
        uint64_t region_offset[PV_REGION_COUNT];/* HELLO: page-aligned */
        char server_vm[64];                     /* JOIN, HELLO */
        char client_vm[64];
        char link_name[128];
};

/* Announcements on the control ring (pvd_vlink_send_hv types). */
enum pv_emu_ann_type {
        PV_EMU_ANN_XIRQ_NEW = 1,    /* struct pv_emu_ann: id */
        PV_EMU_ANN_XIRQ_FREE,       /* id */
        PV_EMU_ANN_GRANT_NEW,       /* id, offset, size, flags */
        PV_EMU_ANN_GRANT_REVOKE,    /* id */
};

struct pv_emu_ann {
        uint32_t id;
        uint32_t flags;             /* GRANT_NEW: HV_MEM_DMABUF */
        uint64_t offset;            /* GRANT_NEW: of the range in the fd (page-aligned) */
        uint64_t size;              /* GRANT_NEW: bytes (pages) */
};

#endif

/* The emulated hypervisor's link protocol (hv/emu.c): what two pvds say over
 * the UNIX socket of one vlink in the platform directory. It carries only
 * what a hypervisor gives: vlink memory (memfds), xIRQs (eventfds), grants of
 * memory (memfd or dma-buf fds) and, by the socket's life, peer state.
 *
 *   client -> server  JOIN          "I am <client vm> for <link>"
 *   server -> client  HELLO         regions (one memfd per present region,
 *                                   in region order) + 2 eventfds: the
 *                                   server->client and client->server
 *                                   control xIRQs
 *   client -> server  READY         regions mapped: the vlink is ON
 *   either            XIRQ_NEW      id + 1 eventfd      XIRQ_FREE   id
 *   either            GRANT_NEW     id, offset, size + 1 fd
 *                                   GRANT_REVOKE id
 * Every message is one struct pv_emu_msg datagram (SOCK_SEQPACKET).
 */
#ifndef PV_EMU_H
#define PV_EMU_H

#include <stdint.h>

#include "pv-vlink.h"

#define PV_EMU_MAGIC   0x554d4550u /* "PEMU" */
#define PV_EMU_VERSION 1u
#define PV_EMU_MAX_FDS (PV_REGION_COUNT + 2)

enum pv_emu_type {
        PV_EMU_JOIN = 1,
        PV_EMU_HELLO,
        PV_EMU_READY,
        PV_EMU_XIRQ_NEW,
        PV_EMU_XIRQ_FREE,
        PV_EMU_GRANT_NEW,
        PV_EMU_GRANT_REVOKE,
};

struct pv_emu_msg {
        uint32_t magic;
        uint32_t type;
        uint32_t version;
        uint32_t id;                          /* xIRQ or grant id */
        uint64_t offset;                      /* GRANT_NEW */
        uint64_t size;                        /* GRANT_NEW */
        uint32_t gen;                         /* HELLO: memory generation */
        uint32_t region_mask;                 /* HELLO: bit per region present */
        uint64_t region_size[PV_REGION_COUNT];/* HELLO */
        char server_vm[64];                   /* JOIN, HELLO */
        char client_vm[64];
        char link_name[128];
};

#endif

/* The hypervisor layer: what pvd needs from "the hypervisor" to run a
 * vlink, behind one small interface with one implementation per platform:
 *   emu.c      VMs as processes on one Linux host (memfd, eventfd, a UNIX
 *              socket per vlink in the platform directory)
 * Between VMs travels only what a hypervisor gives: memory regions, xIRQs,
 * grants of memory, and peer state. Driver messages go through the rings in
 * vlink memory (pvd_vlink_send), never through the backend.
 *
 * The backend reports to the core with pvd_vlink_set_state() (OFF -> RESET
 * while the peer's memory is being set up -> ON; OFF when the peer goes) and
 * pvd_vlink_xirq() (the peer's control xIRQ). Before the state goes ON, the
 * backend has mapped every region in vl->region[] (fresh memory each time).
 *
 * Ordering guarantee: a grant or xIRQ made before a driver message that
 * names it is known to the peer's backend by the time the peer's core
 * delivers that message.
 */
#ifndef PVD_HV_H
#define PVD_HV_H

#include <stdint.h>

struct pvd_vlink;

struct hv_backend {
        const char *name;
        /* 1 if the programs of both sides run on the CPUs of one kernel (a
         * CPU number means the same CPU on either side). */
        int one_kernel;
        /* Start running the vlink (listen for / connect to the peer). */
        int (*start)(struct pvd_vlink *vl);
        /* Tear it down (pvd stopping): the peer sees OFF. */
        void (*stop)(struct pvd_vlink *vl);
        /* Drop the peer and start over (after a protocol violation). */
        void (*reset)(struct pvd_vlink *vl);
        /* Send the control xIRQ to the peer. */
        int (*notify)(struct pvd_vlink *vl);
        /* A new xIRQ shared with the peer, for programs: *fd is an eventfd
         * (owned by the backend until xirq_free), id names it in driver
         * messages. Either side may allocate; ids are per allocating side. */
        int (*xirq_alloc)(struct pvd_vlink *vl, uint32_t *id, int *fd);
        /* An xIRQ the peer allocated: -ENOENT if unknown. fd stays owned by
         * the backend. */
        int (*xirq_get)(struct pvd_vlink *vl, uint32_t id, int *fd);
        void (*xirq_free)(struct pvd_vlink *vl, uint32_t id);
        /* Grant the peer access to size bytes at offset of the memory object
         * fd (memfd or dma-buf). The backend keeps its own reference. */
        int (*grant)(struct pvd_vlink *vl, int fd, uint64_t offset, uint64_t size, uint32_t *gref);
        /* A grant of the peer's: -ENOENT if unknown or revoked. */
        int (*grant_get)(struct pvd_vlink *vl, uint32_t gref, int *fd, uint64_t *offset, uint64_t *size);
        void (*grant_revoke)(struct pvd_vlink *vl, uint32_t gref);
        /* Statistics for pvctl status (optional): pack one msgpack map. */
        void (*status)(struct pvd_vlink *vl, void *msgpack_packer);
};

extern const struct hv_backend hv_emu;

#endif

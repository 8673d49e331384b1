/* Vlink memory: the regions of one vlink and the control region's layout.
 *
 * A vlink's memory is a set of regions, each created by the server end's
 * pvd (the "hypervisor" of the emu backend) and shared with the client end:
 *   PV_REGION_CTL    pvd <-> pvd message rings (one per direction)
 *   PV_REGION_VRPQ   VRPQ request rings and PMEM, mapped into programs
 *   PV_REGION_VUMEM  VUMEM bookkeeping (vumem-pdev)
 *   PV_REGION_VBPIPE vbpipe byte rings
 * Only the control region is always present; each driver's region exists
 * when the vlink's info asks for that driver. Both ends compute every size
 * from their own configuration, and refuse memory of another size.
 */
#ifndef PV_VLINK_H
#define PV_VLINK_H

#include <stdint.h>

#include "pv-ring.h"

enum pv_region_id {
        PV_REGION_CTL = 0,
        PV_REGION_VRPQ,
        PV_REGION_VUMEM,
        PV_REGION_VBPIPE,
        PV_REGION_COUNT
};

#define PV_VLINK_MAGIC    0x4b4e4c56u /* "VLNK" */
#define PV_VLINK_VERSION  2u  /* 2: ring headers of three cache lines */
#define PV_CTL_RING_SIZE  (64u * 1024)
#define PV_CTL_MSG_MAX    (8u * 1024)  /* largest driver message on the control rings */

/* Region PV_REGION_CTL. Written by the server end's pvd when it creates the
 * memory; the client end checks magic and version once, then only the ring
 * headers are live. */
struct pv_vlink_ctl {
        uint32_t magic;
        uint32_t version;
        uint32_t ring_size;
        uint32_t reserved[13];
        struct pv_ring_hdr s2c;     /* server -> client */
        struct pv_ring_hdr c2s;     /* client -> server */
};

#define PV_CTL_S2C_DATA   4096u
#define PV_CTL_C2S_DATA   (PV_CTL_S2C_DATA + PV_CTL_RING_SIZE)
#define PV_CTL_REGION_SIZE (PV_CTL_C2S_DATA + PV_CTL_RING_SIZE)

/* Drivers, and the tags of their messages on the control rings. */
enum pv_drv_id { PV_DRV_CORE = 0, PV_DRV_VRPQ = 1, PV_DRV_VUMEM = 2, PV_DRV_VBPIPE = 3, PV_DRV_COUNT };

#define PV_TAG(drv, type)  (((uint32_t)(drv) << 16) | ((type) & 0xffffu))
#define PV_TAG_DRV(tag)    ((tag) >> 16)
#define PV_TAG_TYPE(tag)   ((tag) & 0xffffu)

#endif

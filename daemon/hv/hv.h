/* The hypervisor layer: what pvd needs from "the hypervisor" to run a
 * vlink, behind one small interface with one implementation per platform,
 * chosen at start with `pvd --hv NAME`:
 *   emu.c      VMs as processes on one Linux host (memfds, eventfds, a UNIX
 *              socket per vlink in a platform directory)
 *   ivshmem.c  QEMU's ivshmem-doorbell: one shared memory and doorbells per
 *              vlink, served by pvhv (proto/pv-ivshmem.h)
 *
 * Between VMs travels only what a hypervisor gives: memory it owns, xIRQs,
 * grants of that memory, and peer state. Driver messages go through the
 * control rings in vlink memory (pvd_vlink_send), never through the
 * backend.
 *
 * What a backend must provide
 *   - start/stop/reset of a vlink, and its state reported to the core with
 *     pvd_vlink_set_state() (OFF -> RESET while the memory is set up -> ON;
 *     OFF when the peer goes). Before the state goes ON, every region in
 *     vl->region[] is mapped: fresh (zeroed, then initialised by the server
 *     end's core) at each ON.
 *   - the control xIRQ both ways (notify; the peer's arrives as
 *     pvd_vlink_xirq()).
 *   - xIRQs for programs (xirq_alloc/xirq_get/xirq_free): an eventfd per
 *     side. A program signals the peer's program by writing its side's
 *     eventfd and waits by reading it; whether the two sides' eventfds are
 *     one object or the backend relays between them is the backend's
 *     business.
 *   - memory: grantable memory made by the backend (mem_alloc), named
 *     everywhere as a struct hv_mem (fd, offset, size); grants of a range
 *     of such memory to the peer (grant, grant_get, grant_revoke).
 *
 * What a backend may refuse
 *   - memory it did not make (a program's memfd, a dma-buf): mem_import
 *     is NULL or returns -EOPNOTSUPP unless the backend has
 *     HV_CAP_FOREIGN_MEM;
 *   - granting memory of another vlink (-EOPNOTSUPP), more memory than its
 *     heap holds (-ENOMEM), more grants or xIRQs than it can name (-ENOSPC).
 *
 * Ordering rule: whatever the backend announces to the peer (a grant, an
 * xIRQ, their end) is known to the peer before any control-ring message
 * sent after it is delivered, under any load, and nothing announced is
 * dropped when a socket or ring is full: it waits, in order. Backends get
 * this from the core: announcements travel on the control ring itself
 * (pvd_vlink_send_hv, delivered in ring order to the peer's ring_msg), and
 * a ring_msg that needs something still in flight outside the ring (an fd
 * on a socket) returns -EAGAIN: the core stops reading the ring until the
 * backend calls pvd_vlink_rx_resume().
 *
 * Capabilities are facts a driver may rely on only when the backend says
 * so (pvd_hv_caps()); each has a fallback, and PVD_HV_CAPS_OFF (a list of
 * names, or "all") turns them off to test those fallbacks.
 */
#ifndef PVD_HV_H
#define PVD_HV_H

#include <stdbool.h>
#include <stdint.h>

struct pvd;
struct pvd_vlink;

/* Memory named by a backend: size bytes at offset of fd (both page
 * multiples). Programs map fd at offset; the fd may reach memory beyond
 * the range (a whole BAR), so a backend without HV_CAP_SLICE cannot keep a
 * program to its own objects. */
struct hv_mem {
        int fd;
        uint64_t offset;
        uint64_t size;
        uint32_t flags;         /* HV_MEM_* */
        uint32_t id;            /* the backend's name for it */
};

#define HV_XIRQ_TX      1u      /* this side signals through the xIRQ */
#define HV_XIRQ_RX      2u      /* this side is signalled through it */

#define HV_MEM_FOREIGN  1u      /* imported, not made by the backend */
#define HV_MEM_DMABUF   2u      /* a dma-buf (cache operations apply) */

enum hv_cap {
        /* Programs of both sides run on the CPUs of one kernel: a CPU
         * number means the same CPU on either side (used to choose between
         * polling and yielding). */
        HV_CAP_ONE_KERNEL = 1u << 0,
        /* Memory the backend did not make (a program's sealed memfd, a
         * dma-buf) can be granted to the peer. */
        HV_CAP_FOREIGN_MEM = 1u << 1,
        /* Each memory object is its own fd: a program handed one cannot
         * reach another's. */
        HV_CAP_SLICE = 1u << 2,
};
#define HV_CAP_ALL (HV_CAP_ONE_KERNEL | HV_CAP_FOREIGN_MEM | HV_CAP_SLICE)

/* A command-line option of a backend: --NAME ARG, default from $ENV. */
struct hv_option {
        const char *name;
        const char *arg;
        const char *help;
        const char *env;
};

#define HV_MAX_OPTIONS 4

struct hv_backend {
        const char *name;
        const char *summary;                    /* one line for --help */
        const struct hv_option *options;        /* NULL-terminated list, or NULL */
        unsigned caps;                          /* HV_CAP_* */

        /* pvd starts (after the configuration is read, before any vlink
         * starts): values[i] is options[i]'s value (NULL: not given and no
         * environment default). Backend-wide state goes in pvd->hv_priv. */
        int (*init)(struct pvd *pvd, const char *const *values);
        /* pvd stops, after every vlink stopped. */
        void (*fini)(struct pvd *pvd);

        /* Start running the vlink (join the peer, set up memory). */
        int (*start)(struct pvd_vlink *vl);
        /* Tear it down (pvd stopping): the peer sees OFF. */
        void (*stop)(struct pvd_vlink *vl);
        /* Drop the peer and start over (after a protocol violation). */
        void (*reset)(struct pvd_vlink *vl);
        /* Send the control xIRQ to the peer. */
        int (*notify)(struct pvd_vlink *vl);
        /* An announcement from the peer's backend, in ring order (a private
         * copy, still hostile). 0, -EAGAIN (not yet: call
         * pvd_vlink_rx_resume() when it can be taken), or -EPROTO. */
        int (*ring_msg)(struct pvd_vlink *vl, uint32_t type, const void *msg, uint32_t len);

        /* A new xIRQ shared with the peer, for programs: *fd is this side's
         * eventfd (owned by the backend until xirq_free), id names it in
         * driver messages. dir is this side's use of it: HV_XIRQ_TX (its
         * programs write the eventfd to signal the peer's) or HV_XIRQ_RX
         * (they read it; the peer's programs signal); the peer's end has
         * the other use. Either side may allocate; ids are per side. */
        int (*xirq_alloc)(struct pvd_vlink *vl, unsigned dir, uint32_t *id, int *fd);
        /* This side's eventfd of an xIRQ the peer allocated: -ENOENT if
         * unknown. fd stays owned by the backend. */
        int (*xirq_get)(struct pvd_vlink *vl, uint32_t id, int *fd);
        void (*xirq_free)(struct pvd_vlink *vl, uint32_t id);

        /* Grantable memory of at least size bytes (page-rounded), zeroed;
         * out->fd is the caller's to close with mem_free. name is for
         * diagnostics. */
        int (*mem_alloc)(struct pvd_vlink *vl, uint64_t size, const char *name, struct hv_mem *out);
        /* Memory the backend did not make (fd is the caller's and stays
         * so): -EOPNOTSUPP without HV_CAP_FOREIGN_MEM, -EINVAL/-EPERM when
         * fd is not memory that can be shared safely (a memfd must be
         * sealed against shrinking). out->fd is a duplicate. Optional. */
        int (*mem_import)(struct pvd_vlink *vl, int fd, uint64_t size, struct hv_mem *out);
        /* Give back memory of mem_alloc or mem_import (closes m->fd). Grants
         * of it must be revoked first. vl may be NULL when its vlink is
         * gone (the memory outlived it). */
        void (*mem_free)(struct pvd_vlink *vl, struct hv_mem *m);
        /* Grant the peer len bytes at off (page multiples, relative to m).
         * The backend keeps what it needs (the caller may free m after the
         * grant is revoked). */
        int (*grant)(struct pvd_vlink *vl, const struct hv_mem *m, uint64_t off, uint64_t len, uint32_t *gref);
        /* A grant of the peer's: -ENOENT if unknown or revoked. out->fd
         * stays owned by the backend (duplicate it to keep it). */
        int (*grant_get)(struct pvd_vlink *vl, uint32_t gref, struct hv_mem *out);
        void (*grant_revoke)(struct pvd_vlink *vl, uint32_t gref);

        /* Statistics for pvctl status (optional): pack one msgpack map. */
        void (*status)(struct pvd_vlink *vl, void *msgpack_packer);
        /* Backend-wide facts for pvctl status (optional): one map. */
        void (*global_status)(struct pvd *pvd, void *msgpack_packer);
};

extern const struct hv_backend hv_emu;
extern const struct hv_backend hv_ivshmem;
/* Every backend, NULL-terminated, the default first. */
extern const struct hv_backend *const hv_backends[];

const struct hv_backend *hv_backend_find(const char *name);
/* "emu, ivshmem": the names, for messages. */
const char *hv_backend_names(char *buf, unsigned len);
/* Capability names ("one_kernel", ...) <-> bits. */
const char *hv_cap_name(unsigned bit);
/* Parse "one_kernel,slice" or "all" into bits: 0, or -EINVAL (*bad names
 * the first unknown word). */
int hv_caps_parse(const char *s, unsigned *bits, const char **bad);

#endif

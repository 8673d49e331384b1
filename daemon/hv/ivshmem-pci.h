/* The guest face of a vlink's ivshmem-doorbell PCI device (1af4:1110), for
 * pvd's ivshmem backend inside a QEMU guest: find the device whose BAR2
 * starts with a pv_ivshm_hdr (proto/pv-ivshmem.h) naming a vlink, hold it
 * through VFIO (vfio-pci with a virtual IOMMU: its MSI-X vectors arrive as
 * eventfds), ring the peers' doorbells through BAR0, and hand out BAR2 as
 * memory only.
 *
 * BAR2 is memory any guest of the vlink can write at any time, header
 * included: the header is copied once into a local and checked before any
 * use, and what ivpci_header() returns is that checked copy. The registers
 * of BAR0 are QEMU's (IVPosition is checked all the same).
 *
 * The memory fd is the device's sysfs resource2 file, never the VFIO device
 * fd: the latter would let whoever holds it reset the device or reroute its
 * interrupts, the former maps memory and nothing else (QEMU-NOTES: it
 * still maps while vfio-pci holds the device).
 *
 * Needs root (sysfs, /dev/vfio). Not thread-safe; ivpci_ring() may be called
 * from any thread while the device is open.
 */
#ifndef PV_IVSHMEM_PCI_H
#define PV_IVSHMEM_PCI_H

#include <stddef.h>
#include <stdint.h>

#include "pv-ivshmem.h"

#define IVPCI_VENDOR      0x1af4
#define IVPCI_DEVICE      0x1110
#define IVPCI_BDF_MAX     32      /* "0000:00:03.0" and room to spare */
#define IVPCI_VECTORS_MAX 64      /* MSI-X vectors routed; more are left off */
/* BAR0 registers (QEMU's docs/specs/ivshmem-spec.rst). */
#define IVPCI_REG_IVPOSITION 8
#define IVPCI_REG_DOORBELL   12

struct ivpci;

struct ivpci_opts {
        /* Where sysfs is mounted (default "/sys"): tests point it at a tree
         * of their own. */
        const char *sysfs;
        /* Where the vfio device nodes are (default "/dev/vfio"). */
        const char *vfio_dir;
        /* Use this device ("0000:00:03.0") instead of searching; its header
         * must still name the vlink. */
        const char *bdf;
};

/* Find the ivshmem device whose header names vlink link_name, bind it to
 * vfio-pci if no driver has it, open its VFIO container, group and device,
 * reach BAR0, route each MSI-X vector to an eventfd, set Bus Master Enable
 * (vfio-pci leaves it clear and QEMU then drops every MSI-X write), and map
 * BAR2. opts may be NULL. 0, or -errno with a sentence in err saying what
 * happened and what to do: -ENOENT no device names the vlink, -EPROTO its
 * header is inconsistent, -EBUSY the device or its IOMMU group is held by
 * another driver or process, -ENODEV no VFIO or no IOMMU group. */
int ivpci_open(const char *link_name, const struct ivpci_opts *opts, struct ivpci **out,
               char *err, size_t errlen);
void ivpci_close(struct ivpci *d);

const char *ivpci_bdf(const struct ivpci *d);
/* The header as read once and checked at open. */
const struct pv_ivshm_hdr *ivpci_header(const struct ivpci *d);
/* BAR2: an fd that maps the memory (resource2, O_RDWR | O_CLOEXEC; owned
 * by the module: dup it to keep it), its size (a power of two, the
 * header's size), and the module's own shared mapping of all of it. */
int ivpci_mem_fd(const struct ivpci *d);
uint64_t ivpci_mem_size(const struct ivpci *d);
void *ivpci_mem(const struct ivpci *d);
/* This guest's peer id on the vlink's ivshmem server (BAR0 IVPosition). */
uint32_t ivpci_own_id(const struct ivpci *d);
/* MSI-X vectors routed (at most IVPCI_VECTORS_MAX) and the eventfd each
 * raises (non-blocking, close-on-exec, owned by the module: read 8 bytes to
 * clear it); -1 for a vector beyond. */
unsigned ivpci_vectors(const struct ivpci *d);
int ivpci_vector_fd(const struct ivpci *d, unsigned vec);
/* Ring vector vec of peer peer_id (BAR0 doorbell). -EINVAL if either does
 * not fit the register's 16 bits. */
int ivpci_ring(struct ivpci *d, uint32_t peer_id, unsigned vec);

/* The parts of ivpci_open that need no VFIO, for tests. */

/* Checks a header copied out of a BAR of bar_size bytes: magic, version,
 * size, vectors, NUL-terminated names, and every span page-aligned, inside
 * the BAR, past the header page and overlapping no other. */
int ivpci_header_check(const struct pv_ivshm_hdr *h, uint64_t bar_size, char *err, size_t errlen);
/* The ivshmem device of sysfs whose header names link_name: its address in
 * bdf, its checked header in *hdr. Errors as ivpci_open. */
int ivpci_find(const char *sysfs, const char *link_name, char bdf[IVPCI_BDF_MAX],
               struct pv_ivshm_hdr *hdr, char *err, size_t errlen);

#endif

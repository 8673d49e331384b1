/* Platform configuration: the hypervisor device tree (DTB) read with libfdt.
 *
 * The tree has a /vms node; each child is a VM named by its node name
 * ("vm2") with a "vdevs" child (labelled vm2_vdevs in conf/platform.dtsi).
 * Each vdev node is one end of a vlink: the node that other nodes point at
 * with peer-phandle is the server end, the pointing node is the client end
 * (DESIGN 2, the seed's vogl_be / vogl@fe). `compatible` (on the server end)
 * picks the driver: "vbpipe" for a byte pipe, any other name (vogl, vomx,
 * ...) for a VRPQ and/or VUMEM vlink depending on its info properties.
 *
 * The whole platform is validated at load time, so that a bad tree stops
 * pvd before it creates anything. Errors name the node and property.
 */
#ifndef PVD_CONFIG_H
#define PVD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PV_NAME_MAX     64   /* VM names, compatible strings, device names */
#define PV_PATH_MAX     256  /* device-tree paths */
#define PV_INFO_RAW_MAX 256
#define PV_MAX_VMS      64
#define PV_MAX_VLINKS   256

/* Limits on sizes found in info properties (larger is a config error). */
#define PV_VRPQ_REQS_MAX   (1u << 20)            /* requests */
#define PV_VRPQ_PMEM_MAX   (256ull << 20)        /* bytes */
#define PV_VUMEM_PDEV_MAX  (16ull << 20)         /* bytes */
#define PV_VUMEM_PDEV_MIN  4096ull
#define PV_VRPQ_PMEM_MIN   4096ull
#define PV_VRPQ_REQS_MIN   16u
#define PV_VBPIPE_SIZE_MIN 4096ull
#define PV_VBPIPE_SIZE_MAX (64ull << 20)
#define PV_VBPIPE_SIZE_DEF (256ull << 10)
#define PV_WAKEUP_MS_MAX   60000u
#define PV_HV_HEAP_MAX     (4ull << 30)          /* bytes per side */

/* The two ends of a vlink. */
enum pv_side { PV_SERVER = 0, PV_CLIENT = 1 };

enum pv_vlink_kind {
        PV_VLINK_VDEV,   /* VRPQ and/or VUMEM (vogl, vomx, ...) */
        PV_VLINK_VBPIPE, /* byte pipe */
};

/* A parsed `info` property (a list of strings). Fields are separated by ';'
 * or ',' and are `key=value`, except the leading positional fields of the
 * vbpipe form "flags;size;minor;key=value;...", where empty fields keep the
 * defaults. Sizes take K, M or G suffixes (powers of 1024). */
struct pv_info {
        char raw[PV_INFO_RAW_MAX]; /* the strings joined by "; ", for display */
        /* VRPQ / VUMEM */
        bool has_vrpq;             /* vrpq-reqs or vrpq-pmem given (both then set) */
        uint32_t vrpq_reqs;        /* request ring capacity, in requests */
        uint64_t vrpq_pmem;        /* parameter memory, bytes */
        bool has_vumem;            /* vumem-pdev given */
        uint64_t vumem_pdev;       /* bookkeeping memory, bytes */
        /* vbpipe */
        bool vbpipe_any;           /* flag 'a': a read returns what is there */
        uint64_t vbpipe_size;      /* ring size per direction, bytes (power of two) */
        int vbpipe_minor;          /* -1 when not given */
        uint32_t wakeup_ms;        /* 0 when not given */
        char name[PV_NAME_MAX];    /* name=, "" when not given */
        /* any vlink */
        uint64_t hv_heap;          /* hv-heap=, page-rounded; 0 when not given */
};

/* Who may open the device nodes of one vlink end: properties
 * `pvd,owner` (user name or number), `pvd,group` (group name or number) and
 * `pvd,mode` (cell, e.g. <0660>) on the vdev node. Names are resolved by pvd
 * when it starts, not here. */
struct pv_access {
        char owner[PV_NAME_MAX]; /* "" = pvd's own user */
        char group[PV_NAME_MAX]; /* "" = group "pvd" if there is one, else pvd's own */
        uint32_t mode;           /* default 0660 */
};

struct pv_vm_cfg {
        char name[PV_NAME_MAX];
};

struct pv_vlink_cfg {
        unsigned id;                        /* index in pv_platform.vlinks */
        enum pv_vlink_kind kind;
        char compatible[PV_NAME_MAX];       /* "vogl", "vbpipe", ... */
        unsigned vm[2];                     /* [PV_SERVER], [PV_CLIENT]: VM index */
        char path[2][PV_PATH_MAX];          /* device-tree path of each end */
        struct pv_info info[2];             /* each end's info (a client's may be empty) */
        struct pv_access access[2];
        /* For VDEV vlinks: N in "vrpq-srv-<compatible>N" (server end: counts
         * this VM's server vlinks of this compatible, in tree order of the
         * server node, then of the client node) and in
         * "vrpq-clt-<compatible>N" (client end: counts this VM's client
         * vlinks of this compatible, in tree order). */
        unsigned index[2];
        /* For VBPIPE vlinks: each end's device name: info name=, else
         * "vbpipe<minor>", else "vbpipe<index>" (index: the end's rank among
         * this VM's vbpipe ends). Unique within a VM. */
        char pipe_name[2][PV_NAME_MAX];
        /* Platform-wide unique name: "<server vm>-<client vm>-<compatible><server index>"
         * for VDEV, "<server vm>-<client vm>-<server pipe name>" for VBPIPE.
         * Names the emulated hypervisor's link socket. */
        char link_name[PV_NAME_MAX * 2];
        /* Effective parameters (from the server end's info; a client end
         * that sets the same key must agree, else it is a config error). */
        uint32_t vrpq_reqs;                 /* 0: no VRPQ on this vlink */
        uint64_t vrpq_pmem;
        uint64_t vumem_pdev;                /* 0: no VUMEM on this vlink */
        uint64_t vbpipe_size;               /* per direction */
        /* Grantable memory of each side on backends that carve grants from
         * the vlink's memory (ivshmem): info hv-heap=, else
         * PV_IVSHM_HEAP_VUMEM_DEFAULT on vlinks with VUMEM (its buffers come
         * from there), else PV_IVSHM_HEAP_DEFAULT. Page-rounded. */
        uint64_t hv_heap;
};

struct pv_platform {
        unsigned nvms;
        struct pv_vm_cfg vms[PV_MAX_VMS];
        unsigned nvlinks;
        struct pv_vlink_cfg vlinks[PV_MAX_VLINKS];
};

/* Load and validate a whole platform. 0, or a negative errno with a
 * one-line message in err: "<file>: <dt path>: property <p>: <problem>". */
int pv_config_load_file(const char *path, struct pv_platform *plat, char *err, size_t errlen);
int pv_config_load_blob(const void *blob, size_t size, const char *what,
                        struct pv_platform *plat, char *err, size_t errlen);

/* Index of the VM called name, or -1. */
int pv_config_vm_find(const struct pv_platform *plat, const char *name);

/* Parse one size: decimal or 0x hex, optional K/M/G suffix, within
 * [min, max]. 0, -EINVAL (unparsable) or -ERANGE (out of range). */
int pv_parse_size(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Parse an info property (n strings). vbpipe selects the positional form.
 * 0 or -EINVAL with a message naming the field. */
int pv_info_parse(const char *const *strs, unsigned n, bool vbpipe,
                  struct pv_info *out, char *err, size_t errlen);

/* Device node names of one end. For VDEV vlinks, driver is "vrpq" or
 * "vumem" ("vrpq-srv-vogl0"); for VBPIPE it is ignored (the pipe name).
 * Returns -ENOENT if that end has no such driver. */
int pv_config_dev_name(const struct pv_vlink_cfg *vl, enum pv_side side,
                       const char *driver, char *buf, size_t len);

#endif

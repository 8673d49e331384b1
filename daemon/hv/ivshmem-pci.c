/* hv/ivshmem-pci.c: a vlink's ivshmem-doorbell PCI device seen from inside
 * a QEMU guest (see ivshmem-pci.h): found through sysfs by the header in
 * its BAR2, held through VFIO for the doorbell register and the MSI-X
 * vectors, its memory handed out as the sysfs resource2 file.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/pci_regs.h>
#include <linux/vfio.h>

#include "hv/ivshmem-pci.h"

struct ivpci {
        char bdf[IVPCI_BDF_MAX];
        struct pv_ivshm_hdr hdr;        /* checked copy */
        int container, group, dev;      /* VFIO */
        int mem_fd;                     /* resource2 */
        void *mem;
        uint64_t mem_size;
        volatile uint32_t *regs;        /* BAR0 mapped, or NULL: pread/pwrite */
        size_t regs_len;
        uint64_t regs_off;              /* BAR0's offset in the device fd */
        uint32_t own_id;
        unsigned nvec;
        int vec_fd[IVPCI_VECTORS_MAX];
};

static void seterr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
        va_list ap;
        if (!err || !errlen)
                return;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
}

/* ---- the header ---------------------------------------------------------- */

static int name_ok(const char *s, size_t cap)
{
        return memchr(s, '\0', cap) != NULL;
}

static int is_pow2(uint64_t x)
{
        return x && !(x & (x - 1));
}

int ivpci_header_check(const struct pv_ivshm_hdr *h, uint64_t bar_size, char *err, size_t errlen)
{
        const uint64_t pg = PV_IVSHM_PAGE;
        if (h->magic != PV_IVSHM_MAGIC) {
                seterr(err, errlen, "no pvd header (magic 0x%08x)", h->magic);
                return -EPROTO;
        }
        if (h->version != PV_IVSHM_VERSION) {
                seterr(err, errlen, "header version %u, this pvd knows %u: run the same pvd release as pvhv",
                       h->version, PV_IVSHM_VERSION);
                return -EPROTO;
        }
        if (h->size != bar_size || !is_pow2(bar_size) || bar_size < PV_IVSHM_MIN_SIZE) {
                seterr(err, errlen, "header says %llu bytes, the BAR has %llu",
                       (unsigned long long)h->size, (unsigned long long)bar_size);
                return -EPROTO;
        }
        if (h->vectors != PV_IVSHM_VECTORS) {
                seterr(err, errlen, "header says %u doorbell vectors, pvd uses %u", h->vectors, PV_IVSHM_VECTORS);
                return -EPROTO;
        }
        if (!name_ok(h->link_name, sizeof(h->link_name)) || !h->link_name[0] ||
            !name_ok(h->vm[0], sizeof(h->vm[0])) || !name_ok(h->vm[1], sizeof(h->vm[1]))) {
                seterr(err, errlen, "a name in the header is empty or not NUL-terminated");
                return -EPROTO;
        }
        /* Every span: where it is, for the overlap check below. */
        struct { const char *what; int i; struct pv_ivshm_span s; } sp[2 + PV_REGION_COUNT + 2];
        unsigned n = 0;
        for (int s = 0; s < 2; s++)
                sp[n++] = (typeof(sp[0])){ "side", s, h->side[s] };
        for (int r = 0; r < PV_REGION_COUNT; r++)
                sp[n++] = (typeof(sp[0])){ "region", r, h->region[r] };
        for (int s = 0; s < 2; s++)
                sp[n++] = (typeof(sp[0])){ "heap", s, h->heap[s] };
        for (unsigned i = 0; i < n; i++) {
                uint64_t off = sp[i].s.offset, sz = sp[i].s.size;
                int region = sp[i].what[0] == 'r';
                if (sz == 0 && region)
                        continue;       /* an absent region */
                if (sz == 0 || off % pg || sz % pg || off < pg || off > bar_size || sz > bar_size - off) {
                        seterr(err, errlen, "%s %d of the header (offset %llu, %llu bytes) is not inside the "
                               "%llu-byte BAR past the header page", sp[i].what, sp[i].i,
                               (unsigned long long)off, (unsigned long long)sz, (unsigned long long)bar_size);
                        return -EPROTO;
                }
                for (unsigned j = 0; j < i; j++) {
                        uint64_t o2 = sp[j].s.offset, s2 = sp[j].s.size;
                        if (s2 == 0)
                                continue;
                        if (off < o2 + s2 && o2 < off + sz) {
                                seterr(err, errlen, "%s %d and %s %d of the header overlap", sp[j].what, sp[j].i,
                                       sp[i].what, sp[i].i);
                                return -EPROTO;
                        }
                }
        }
        return 0;
}

/* ---- sysfs ---------------------------------------------------------------- */

static int read_hex(const char *path, unsigned long *v)
{
        char buf[32];
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        int e = errno;
        close(fd);
        if (n <= 0)
                return n < 0 ? -e : -EIO;
        buf[n] = '\0';
        char *end;
        errno = 0;
        *v = strtoul(buf, &end, 16);
        return errno || end == buf ? -EIO : 0;
}

static int write_str(const char *path, const char *s)
{
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        ssize_t n = write(fd, s, strlen(s));
        int e = errno;
        close(fd);
        return n < 0 ? -e : 0;
}

/* The last component of a sysfs symlink (driver, iommu_group): "" if none. */
static void link_name_of(const char *path, char *out, size_t len)
{
        char buf[PATH_MAX];
        ssize_t n = readlink(path, buf, sizeof(buf) - 1);
        out[0] = '\0';
        if (n <= 0)
                return;
        buf[n] = '\0';
        const char *b = strrchr(buf, '/');
        snprintf(out, len, "%s", b ? b + 1 : buf);
}

/* Opens BAR2 of device bdf: the fd (O_RDWR) and the BAR's size. */
static int open_bar2(const char *sysfs, const char *bdf, int *fd_out, uint64_t *size)
{
        char path[PATH_MAX];
        struct stat st;
        snprintf(path, sizeof(path), "%s/bus/pci/devices/%s/resource2", sysfs, bdf);
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0 || st.st_size <= 0) {
                close(fd);
                return -EIO;
        }
        *fd_out = fd;
        *size = (uint64_t)st.st_size;
        return 0;
}

/* Copies the header of device bdf into *h (one read of the shared page). */
static int read_header(const char *sysfs, const char *bdf, struct pv_ivshm_hdr *h, uint64_t *bar_size)
{
        int fd;
        int rc = open_bar2(sysfs, bdf, &fd, bar_size);
        if (rc < 0)
                return rc;
        if (*bar_size < PV_IVSHM_PAGE) {
                close(fd);
                return -EPROTO;
        }
        void *p = mmap(NULL, PV_IVSHM_PAGE, PROT_READ, MAP_SHARED, fd, 0);
        rc = p == MAP_FAILED ? -errno : 0;
        close(fd);
        if (rc < 0)
                return rc;
        memcpy(h, p, sizeof(*h));
        munmap(p, PV_IVSHM_PAGE);
        return 0;
}

static int is_ivshmem(const char *sysfs, const char *bdf)
{
        char path[PATH_MAX];
        unsigned long vendor, device;
        snprintf(path, sizeof(path), "%s/bus/pci/devices/%s/vendor", sysfs, bdf);
        if (read_hex(path, &vendor) < 0)
                return 0;
        snprintf(path, sizeof(path), "%s/bus/pci/devices/%s/device", sysfs, bdf);
        if (read_hex(path, &device) < 0)
                return 0;
        return vendor == IVPCI_VENDOR && device == IVPCI_DEVICE;
}

/* Appends "; " and a note to what the search saw (for the -ENOENT sentence). */
static void note(char *seen, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void note(char *seen, size_t len, const char *fmt, ...)
{
        size_t used = strlen(seen);
        if (used + 3 >= len)
                return;
        if (used)
                used += (size_t)snprintf(seen + used, len - used, "; ");
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(seen + used, len - used, fmt, ap);
        va_end(ap);
}

int ivpci_find(const char *sysfs, const char *link_name, char bdf[IVPCI_BDF_MAX],
               struct pv_ivshm_hdr *hdr, char *err, size_t errlen)
{
        char dir[PATH_MAX], seen[512] = "", why[256];
        snprintf(dir, sizeof(dir), "%s/bus/pci/devices", sysfs);
        DIR *d = opendir(dir);
        if (!d) {
                seterr(err, errlen, "%s: %s (is sysfs mounted?)", dir, strerror(errno));
                return -ENODEV;
        }
        int found = 0, rc = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
                if (e->d_name[0] == '.' || strlen(e->d_name) >= IVPCI_BDF_MAX || !is_ivshmem(sysfs, e->d_name))
                        continue;
                struct pv_ivshm_hdr h;
                uint64_t bar;
                int r = read_header(sysfs, e->d_name, &h, &bar);
                if (r < 0) {
                        note(seen, sizeof(seen), "%s: BAR2 unreadable (%s)", e->d_name, strerror(-r));
                        continue;
                }
                /* The name decides which device is the vlink's; the rest of
                 * the header is checked only on the device that matches. */
                if (h.magic != PV_IVSHM_MAGIC || !name_ok(h.link_name, sizeof(h.link_name))) {
                        note(seen, sizeof(seen), "%s: no pvd header", e->d_name);
                        continue;
                }
                if (strcmp(h.link_name, link_name) != 0) {
                        note(seen, sizeof(seen), "%s: vlink %s", e->d_name, h.link_name);
                        continue;
                }
                if (found) {
                        seterr(err, errlen, "ivshmem devices %s and %s both name vlink %s: check the QEMU "
                               "options (pvhv --qemu-args)", bdf, e->d_name, link_name);
                        rc = -EEXIST;
                        goto out;
                }
                if (ivpci_header_check(&h, bar, why, sizeof(why)) < 0) {
                        seterr(err, errlen, "ivshmem device %s (vlink %s): %s", e->d_name, link_name, why);
                        rc = -EPROTO;
                        goto out;
                }
                snprintf(bdf, IVPCI_BDF_MAX, "%s", e->d_name);
                *hdr = h;
                found = 1;
        }
        if (!found) {
                seterr(err, errlen, "no ivshmem PCI device names vlink %s (%s); start the guest with pvhv's "
                       "options (pvhv --qemu-args VM)", link_name, seen[0] ? seen : "no ivshmem device at all");
                rc = -ENOENT;
        }
out:
        closedir(d);
        return rc;
}

/* Binds bdf to vfio-pci unless it is already; a device another driver
 * holds is left alone. */
static int bind_vfio(const char *sysfs, const char *bdf, char *err, size_t errlen)
{
        char path[PATH_MAX], drv[64];
        snprintf(path, sizeof(path), "%s/bus/pci/devices/%s/driver", sysfs, bdf);
        link_name_of(path, drv, sizeof(drv));
        if (strcmp(drv, "vfio-pci") == 0)
                return 0;
        if (drv[0]) {
                seterr(err, errlen, "ivshmem device %s is held by driver %s; unbind it (echo %s > "
                       "%s/bus/pci/devices/%s/driver/unbind) so that pvd can give it to vfio-pci",
                       bdf, drv, bdf, sysfs, bdf);
                return -EBUSY;
        }
        snprintf(path, sizeof(path), "%s/bus/pci/drivers/vfio-pci", sysfs);
        if (access(path, F_OK) < 0) {
                seterr(err, errlen, "the vfio-pci driver is not loaded: modprobe vfio-pci (and vfio_iommu_type1)");
                return -ENODEV;
        }
        snprintf(path, sizeof(path), "%s/bus/pci/devices/%s/driver_override", sysfs, bdf);
        int rc = write_str(path, "vfio-pci");
        if (rc == 0) {
                snprintf(path, sizeof(path), "%s/bus/pci/drivers_probe", sysfs);
                rc = write_str(path, bdf);
        }
        snprintf(path, sizeof(path), "%s/bus/pci/devices/%s/driver", sysfs, bdf);
        link_name_of(path, drv, sizeof(drv));
        if (strcmp(drv, "vfio-pci") != 0) {
                seterr(err, errlen, "cannot bind ivshmem device %s to vfio-pci (%s); does it have an IOMMU "
                       "group? A QEMU guest needs -M q35 -device intel-iommu and intel_iommu=on",
                       bdf, rc < 0 ? strerror(-rc) : "the driver refused it");
                return -ENODEV;
        }
        return 0;
}

/* ---- VFIO ----------------------------------------------------------------- */

static int region_info(int dev, unsigned index, struct vfio_region_info *ri)
{
        memset(ri, 0, sizeof(*ri));
        ri->argsz = sizeof(*ri);
        ri->index = index;
        return ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, ri) < 0 ? -errno : 0;
}

static int open_vfio(struct ivpci *d, const char *sysfs, const char *vfio_dir, char *err, size_t errlen)
{
        char path[PATH_MAX], group[32];
        snprintf(path, sizeof(path), "%s/bus/pci/devices/%s/iommu_group", sysfs, d->bdf);
        link_name_of(path, group, sizeof(group));
        if (!group[0]) {
                seterr(err, errlen, "ivshmem device %s has no IOMMU group: the guest needs a virtual IOMMU "
                       "(QEMU -M q35 -device intel-iommu, kernel option intel_iommu=on)", d->bdf);
                return -ENODEV;
        }
        snprintf(path, sizeof(path), "%s/vfio", vfio_dir);
        d->container = open(path, O_RDWR | O_CLOEXEC);
        if (d->container < 0) {
                int e = errno;
                seterr(err, errlen, "%s: %s (load vfio and vfio_iommu_type1)", path, strerror(e));
                return -e;
        }
        if (ioctl(d->container, VFIO_GET_API_VERSION) != VFIO_API_VERSION) {
                seterr(err, errlen, "%s: unknown VFIO API version", path);
                return -ENODEV;
        }
        unsigned long type = VFIO_TYPE1v2_IOMMU;
        if (ioctl(d->container, VFIO_CHECK_EXTENSION, type) <= 0) {
                type = VFIO_TYPE1_IOMMU;
                if (ioctl(d->container, VFIO_CHECK_EXTENSION, type) <= 0) {
                        seterr(err, errlen, "VFIO has no type1 IOMMU: load vfio_iommu_type1");
                        return -ENODEV;
                }
        }
        snprintf(path, sizeof(path), "%s/%s", vfio_dir, group);
        d->group = open(path, O_RDWR | O_CLOEXEC);
        if (d->group < 0) {
                int e = errno;
                seterr(err, errlen, "%s (IOMMU group of ivshmem device %s): %s%s", path, d->bdf, strerror(e),
                       e == EBUSY ? "; another process holds it (a second pvd?)" : "");
                return -e;
        }
        struct vfio_group_status gs = { .argsz = sizeof(gs) };
        if (ioctl(d->group, VFIO_GROUP_GET_STATUS, &gs) < 0 || !(gs.flags & VFIO_GROUP_FLAGS_VIABLE)) {
                seterr(err, errlen, "IOMMU group %s of ivshmem device %s has devices not bound to vfio-pci; "
                       "bind them all or give the device a group of its own", group, d->bdf);
                return -EBUSY;
        }
        if (ioctl(d->group, VFIO_GROUP_SET_CONTAINER, &d->container) < 0 ||
            ioctl(d->container, VFIO_SET_IOMMU, type) < 0) {
                int e = errno;
                seterr(err, errlen, "IOMMU group %s: cannot set up its VFIO container: %s", group, strerror(e));
                return -e;
        }
        d->dev = ioctl(d->group, VFIO_GROUP_GET_DEVICE_FD, d->bdf);
        if (d->dev < 0) {
                int e = errno;
                seterr(err, errlen, "ivshmem device %s: VFIO gives no device fd: %s", d->bdf, strerror(e));
                return -e;
        }
        fcntl(d->dev, F_SETFD, FD_CLOEXEC);
        return 0;
}

static uint32_t reg_read(const struct ivpci *d, unsigned off)
{
        if (d->regs)
                return d->regs[off / 4];
        uint32_t v = UINT32_MAX;
        if (pread(d->dev, &v, sizeof(v), (off_t)(d->regs_off + off)) != (ssize_t)sizeof(v))
                return UINT32_MAX;
        return v;
}

/* BAR0 (registers), Bus Master Enable, MSI-X vectors to eventfds. */
static int setup_device(struct ivpci *d, char *err, size_t errlen)
{
        struct vfio_device_info di = { .argsz = sizeof(di) };
        if (ioctl(d->dev, VFIO_DEVICE_GET_INFO, &di) < 0 || !(di.flags & VFIO_DEVICE_FLAGS_PCI) ||
            di.num_regions <= VFIO_PCI_CONFIG_REGION_INDEX || di.num_irqs <= VFIO_PCI_MSIX_IRQ_INDEX) {
                seterr(err, errlen, "ivshmem device %s: VFIO does not describe it as a PCI device", d->bdf);
                return -ENODEV;
        }
        struct vfio_region_info ri;
        int rc = region_info(d->dev, VFIO_PCI_BAR0_REGION_INDEX, &ri);
        if (rc < 0 || ri.size < IVPCI_REG_DOORBELL + 4) {
                seterr(err, errlen, "ivshmem device %s: BAR0 has no doorbell register", d->bdf);
                return rc < 0 ? rc : -ENODEV;
        }
        d->regs_off = ri.offset;
        if (ri.flags & VFIO_REGION_INFO_FLAG_MMAP) {
                void *p = mmap(NULL, ri.size, PROT_READ | PROT_WRITE, MAP_SHARED, d->dev, (off_t)ri.offset);
                if (p != MAP_FAILED) {
                        d->regs = p;    /* else: pread/pwrite, slower but the same */
                        d->regs_len = ri.size;
                }
        }

        /* Bus Master Enable: without it QEMU drops the MSI-X messages. */
        rc = region_info(d->dev, VFIO_PCI_CONFIG_REGION_INDEX, &ri);
        uint16_t cmd;
        if (rc < 0 || pread(d->dev, &cmd, sizeof(cmd), (off_t)(ri.offset + PCI_COMMAND)) != sizeof(cmd)) {
                seterr(err, errlen, "ivshmem device %s: cannot read its PCI command register", d->bdf);
                return rc < 0 ? rc : -EIO;
        }
        cmd |= PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
        if (pwrite(d->dev, &cmd, sizeof(cmd), (off_t)(ri.offset + PCI_COMMAND)) != sizeof(cmd)) {
                seterr(err, errlen, "ivshmem device %s: cannot set Bus Master Enable", d->bdf);
                return -EIO;
        }

        struct vfio_irq_info ii = { .argsz = sizeof(ii), .index = VFIO_PCI_MSIX_IRQ_INDEX };
        if (ioctl(d->dev, VFIO_DEVICE_GET_IRQ_INFO, &ii) < 0 || ii.count == 0 ||
            !(ii.flags & VFIO_IRQ_INFO_EVENTFD)) {
                seterr(err, errlen, "ivshmem device %s has no MSI-X vectors: it must be an ivshmem-doorbell "
                       "device (QEMU -device ivshmem-doorbell,vectors=%u)", d->bdf, PV_IVSHM_VECTORS);
                return -ENODEV;
        }
        d->nvec = ii.count < IVPCI_VECTORS_MAX ? ii.count : IVPCI_VECTORS_MAX;
        if (d->nvec < d->hdr.vectors) {
                seterr(err, errlen, "ivshmem device %s has %u MSI-X vectors, the vlink needs %u (QEMU "
                       "-device ivshmem-doorbell,vectors=%u)", d->bdf, d->nvec, d->hdr.vectors, d->hdr.vectors);
                return -ENODEV;
        }
        char buf[sizeof(struct vfio_irq_set) + IVPCI_VECTORS_MAX * sizeof(int32_t)];
        struct vfio_irq_set *set = (struct vfio_irq_set *)buf;
        int32_t fds[IVPCI_VECTORS_MAX];
        for (unsigned v = 0; v < d->nvec; v++) {
                d->vec_fd[v] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                if (d->vec_fd[v] < 0) {
                        int e = errno;
                        seterr(err, errlen, "ivshmem device %s: eventfd: %s", d->bdf, strerror(e));
                        return -e;
                }
                fds[v] = d->vec_fd[v];
        }
        set->argsz = (uint32_t)(sizeof(*set) + d->nvec * sizeof(int32_t));
        set->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
        set->index = VFIO_PCI_MSIX_IRQ_INDEX;
        set->start = 0;
        set->count = d->nvec;
        memcpy(set->data, fds, d->nvec * sizeof(int32_t));
        if (ioctl(d->dev, VFIO_DEVICE_SET_IRQS, set) < 0) {
                int e = errno;
                seterr(err, errlen, "ivshmem device %s: cannot route its MSI-X vectors: %s", d->bdf, strerror(e));
                return -e;
        }

        uint32_t pos = reg_read(d, IVPCI_REG_IVPOSITION);
        if (pos > PV_IVSHM_PEER_ID_MAX) {
                seterr(err, errlen, "ivshmem device %s: IVPosition %d: QEMU is not connected to an ivshmem "
                       "server (is pvhv running?)", d->bdf, (int32_t)pos);
                return -ENOTCONN;
        }
        d->own_id = pos;
        return 0;
}

/* ---- the device ----------------------------------------------------------- */

int ivpci_open(const char *link_name, const struct ivpci_opts *opts, struct ivpci **out,
               char *err, size_t errlen)
{
        const char *sysfs = opts && opts->sysfs ? opts->sysfs : "/sys";
        const char *vfio_dir = opts && opts->vfio_dir ? opts->vfio_dir : "/dev/vfio";
        struct ivpci *d = calloc(1, sizeof(*d));
        char why[256];
        int rc;
        if (!d) {
                seterr(err, errlen, "out of memory");
                return -ENOMEM;
        }
        d->container = d->group = d->dev = d->mem_fd = -1;
        for (unsigned v = 0; v < IVPCI_VECTORS_MAX; v++)
                d->vec_fd[v] = -1;

        if (opts && opts->bdf) {
                uint64_t bar;
                if (strlen(opts->bdf) >= IVPCI_BDF_MAX || strchr(opts->bdf, '/') || !is_ivshmem(sysfs, opts->bdf)) {
                        seterr(err, errlen, "%s is not an ivshmem PCI device (%04x:%04x)", opts->bdf,
                               IVPCI_VENDOR, IVPCI_DEVICE);
                        rc = -ENOENT;
                        goto fail;
                }
                snprintf(d->bdf, sizeof(d->bdf), "%s", opts->bdf);
                rc = read_header(sysfs, d->bdf, &d->hdr, &bar);
                if (rc < 0) {
                        seterr(err, errlen, "ivshmem device %s: cannot map BAR2: %s", d->bdf, strerror(-rc));
                        goto fail;
                }
                if ((rc = ivpci_header_check(&d->hdr, bar, why, sizeof(why))) < 0) {
                        seterr(err, errlen, "ivshmem device %s: %s", d->bdf, why);
                        goto fail;
                }
                if (strcmp(d->hdr.link_name, link_name) != 0) {
                        seterr(err, errlen, "ivshmem device %s serves vlink %s, not %s", d->bdf,
                               d->hdr.link_name, link_name);
                        rc = -ENOENT;
                        goto fail;
                }
        } else if ((rc = ivpci_find(sysfs, link_name, d->bdf, &d->hdr, err, errlen)) < 0) {
                goto fail;
        }

        if ((rc = bind_vfio(sysfs, d->bdf, err, errlen)) < 0 ||
            (rc = open_vfio(d, sysfs, vfio_dir, err, errlen)) < 0 ||
            (rc = setup_device(d, err, errlen)) < 0)
                goto fail;

        rc = open_bar2(sysfs, d->bdf, &d->mem_fd, &d->mem_size);
        if (rc == 0 && d->mem_size != d->hdr.size)
                rc = -EPROTO;   /* the BAR changed size under us */
        if (rc < 0) {
                seterr(err, errlen, "ivshmem device %s: cannot open BAR2 again: %s", d->bdf, strerror(-rc));
                goto fail;
        }
        d->mem = mmap(NULL, d->mem_size, PROT_READ | PROT_WRITE, MAP_SHARED, d->mem_fd, 0);
        if (d->mem == MAP_FAILED) {
                rc = -errno;
                d->mem = NULL;
                seterr(err, errlen, "ivshmem device %s: cannot map BAR2 (%llu bytes): %s", d->bdf,
                       (unsigned long long)d->mem_size, strerror(-rc));
                goto fail;
        }
        *out = d;
        return 0;
fail:
        ivpci_close(d);
        return rc;
}

void ivpci_close(struct ivpci *d)
{
        if (!d)
                return;
        if (d->dev >= 0 && d->nvec) {
                struct vfio_irq_set set = {
                        .argsz = sizeof(set),
                        .flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
                        .index = VFIO_PCI_MSIX_IRQ_INDEX,
                        .start = 0,
                        .count = 0,
                };
                ioctl(d->dev, VFIO_DEVICE_SET_IRQS, &set);
        }
        for (unsigned v = 0; v < IVPCI_VECTORS_MAX; v++)
                if (d->vec_fd[v] >= 0)
                        close(d->vec_fd[v]);
        if (d->mem)
                munmap(d->mem, d->mem_size);
        if (d->regs)
                munmap((void *)d->regs, d->regs_len);
        if (d->mem_fd >= 0)
                close(d->mem_fd);
        if (d->dev >= 0)
                close(d->dev);
        if (d->group >= 0)
                close(d->group);
        if (d->container >= 0)
                close(d->container);
        free(d);
}

const char *ivpci_bdf(const struct ivpci *d) { return d->bdf; }
const struct pv_ivshm_hdr *ivpci_header(const struct ivpci *d) { return &d->hdr; }
int ivpci_mem_fd(const struct ivpci *d) { return d->mem_fd; }
uint64_t ivpci_mem_size(const struct ivpci *d) { return d->mem_size; }
void *ivpci_mem(const struct ivpci *d) { return d->mem; }
uint32_t ivpci_own_id(const struct ivpci *d) { return d->own_id; }
unsigned ivpci_vectors(const struct ivpci *d) { return d->nvec; }

int ivpci_vector_fd(const struct ivpci *d, unsigned vec)
{
        return vec < d->nvec ? d->vec_fd[vec] : -1;
}

int ivpci_ring(struct ivpci *d, uint32_t peer_id, unsigned vec)
{
        if (peer_id > PV_IVSHM_PEER_ID_MAX || vec > 0xffff)
                return -EINVAL;
        uint32_t v = peer_id << 16 | vec;
        if (d->regs) {
                d->regs[IVPCI_REG_DOORBELL / 4] = v;
                return 0;
        }
        ssize_t n = pwrite(d->dev, &v, sizeof(v), (off_t)(d->regs_off + IVPCI_REG_DOORBELL));
        return n == (ssize_t)sizeof(v) ? 0 : n < 0 ? -errno : -EIO;
}

/* Platform configuration: read and validate the hypervisor device tree
 * (libfdt) into struct pv_platform. See config.h for the rules. Every error
 * names the file, the node's path and the property. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libfdt.h>

#include "config.h"

#define CFG_FILE_MAX   (16u << 20)
#define CFG_MAX_VDEVS  (2 * PV_MAX_VLINKS)
#define CFG_MAX_INFO   16

struct vdev {
        int off;                    /* node offset */
        unsigned vm;
        char path[PV_PATH_MAX];
        bool has_compat;
        char compat[PV_NAME_MAX];
        bool has_peer;
        uint32_t peer;              /* phandle */
        bool mark_server, mark_client;
        bool is_server;             /* some client points at it */
        struct pv_info info;
        struct pv_access access;
};

struct cfg {
        const void *fdt;
        const char *what;
        char *err;
        size_t errlen;
        struct pv_platform *plat;
        struct vdev *vdevs;
        unsigned nvdevs;
};

static int cfg_err(struct cfg *c, const char *path, const char *prop, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
static int cfg_err(struct cfg *c, const char *path, const char *prop, const char *fmt, ...)
{
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (path && prop)
                snprintf(c->err, c->errlen, "%s: %s: property %s: %s", c->what, path, prop, msg);
        else if (path)
                snprintf(c->err, c->errlen, "%s: %s: %s", c->what, path, msg);
        else
                snprintf(c->err, c->errlen, "%s: %s", c->what, msg);
        return -EINVAL;
}

static void node_path(const void *fdt, int off, char *buf, size_t len)
{
        if (fdt_get_path(fdt, off, buf, (int)len) < 0)
                snprintf(buf, len, "(node at offset %d)", off);
}

/* A string property: present, NUL-terminated inside the property, short. */
static int get_str(struct cfg *c, int off, const char *path, const char *prop, char *buf, size_t len, bool *present)
{
        int plen;
        const char *v = fdt_getprop(c->fdt, off, prop, &plen);
        *present = v != NULL;
        if (!v)
                return 0;
        if (plen <= 0 || v[plen - 1] != 0)
                return cfg_err(c, path, prop, "not a NUL-terminated string");
        if (strlen(v) >= len)
                return cfg_err(c, path, prop, "\"%s\" is longer than %zu bytes", v, len - 1);
        snprintf(buf, len, "%s", v);
        return 0;
}

static int get_u32(struct cfg *c, int off, const char *path, const char *prop, uint32_t *out, bool *present)
{
        int plen;
        const fdt32_t *v = fdt_getprop(c->fdt, off, prop, &plen);
        *present = v != NULL;
        if (!v)
                return 0;
        if (plen != 4)
                return cfg_err(c, path, prop, "must be one cell (<N>), has %d bytes", plen);
        *out = fdt32_to_cpu(*v);
        return 0;
}

static bool valid_ident(const char *s, bool lower_only)
{
        if (!*s)
                return false;
        for (; *s; s++) {
                char ch = *s;
                bool ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' ||
                          (!lower_only && ((ch >= 'A' && ch <= 'Z') || ch == '.'));
                if (!ok)
                        return false;
        }
        return true;
}

static int read_vdev(struct cfg *c, unsigned vm, int off)
{
        if (c->nvdevs == CFG_MAX_VDEVS)
                return cfg_err(c, NULL, NULL, "more than %d vdev nodes", CFG_MAX_VDEVS);
        struct vdev *v = &c->vdevs[c->nvdevs];
        memset(v, 0, sizeof(*v));
        v->off = off;
        v->vm = vm;
        node_path(c->fdt, off, v->path, sizeof(v->path));

        int rc = get_str(c, off, v->path, "compatible", v->compat, sizeof(v->compat), &v->has_compat);
        if (rc < 0)
                return rc;
        if (v->has_compat && !valid_ident(v->compat, true))
                return cfg_err(c, v->path, "compatible", "\"%s\" is not a driver name ([a-z0-9_-]+)", v->compat);
        rc = get_u32(c, off, v->path, "peer-phandle", &v->peer, &v->has_peer);
        if (rc < 0)
                return rc;
        v->mark_server = fdt_getprop(c->fdt, off, "server", NULL) != NULL;
        v->mark_client = fdt_getprop(c->fdt, off, "client", NULL) != NULL;
        if (v->mark_server && v->mark_client)
                return cfg_err(c, v->path, "server", "a node is either the server or the client end, not both");
        if (v->mark_client && !v->has_peer)
                return cfg_err(c, v->path, "client", "a client end needs peer-phandle = <&server_label>");
        if (v->mark_server && v->has_peer)
                return cfg_err(c, v->path, "peer-phandle", "a server end has no peer-phandle (the client end points "
                               "at the server end)");
        if (!v->has_compat && !v->has_peer)
                return cfg_err(c, v->path, NULL, "neither compatible (a server end) nor peer-phandle (a client end)");

        const char *strs[CFG_MAX_INFO];
        int n = fdt_stringlist_count(c->fdt, off, "info");
        if (n == -FDT_ERR_NOTFOUND)
                n = 0;
        else if (n < 0)
                return cfg_err(c, v->path, "info", "not a list of NUL-terminated strings");
        if (n > CFG_MAX_INFO)
                return cfg_err(c, v->path, "info", "more than %d strings", CFG_MAX_INFO);
        for (int i = 0; i < n; i++) {
                strs[i] = fdt_stringlist_get(c->fdt, off, "info", i, NULL);
                if (!strs[i])
                        return cfg_err(c, v->path, "info", "string %d unreadable", i);
        }
        /* The driver is not known yet for a client end without compatible:
         * parse with the server's kind later (see resolve()). Keep the
         * strings' offsets: parse both forms now and pick. */
        char perr[256];
        bool vbpipe = v->has_compat && strcmp(v->compat, "vbpipe") == 0;
        if (v->has_compat && pv_info_parse(strs, (unsigned)n, vbpipe, &v->info, perr, sizeof(perr)) < 0)
                return cfg_err(c, v->path, "info", "%s", perr);

        bool present;
        rc = get_str(c, off, v->path, "pvd,owner", v->access.owner, sizeof(v->access.owner), &present);
        if (rc == 0)
                rc = get_str(c, off, v->path, "pvd,group", v->access.group, sizeof(v->access.group), &present);
        if (rc < 0)
                return rc;
        v->access.mode = 0660;
        rc = get_u32(c, off, v->path, "pvd,mode", &v->access.mode, &present);
        if (rc < 0)
                return rc;
        if (v->access.mode > 0777)
                return cfg_err(c, v->path, "pvd,mode", "%#o is not a file mode (at most 0777)", v->access.mode);
        c->nvdevs++;
        return 0;
}

/* Parse a client end's info with the kind of its server end. */
static int parse_client_info(struct cfg *c, struct vdev *v, bool vbpipe)
{
        const char *strs[CFG_MAX_INFO];
        int n = fdt_stringlist_count(c->fdt, v->off, "info");
        if (n == -FDT_ERR_NOTFOUND)
                n = 0;
        for (int i = 0; i < n; i++)
                strs[i] = fdt_stringlist_get(c->fdt, v->off, "info", i, NULL);
        char perr[256];
        if (pv_info_parse(strs, (unsigned)(n > 0 ? n : 0), vbpipe, &v->info, perr, sizeof(perr)) < 0)
                return cfg_err(c, v->path, "info", "%s", perr);
        return 0;
}

static struct vdev *vdev_at(struct cfg *c, int off)
{
        for (unsigned i = 0; i < c->nvdevs; i++)
                if (c->vdevs[i].off == off)
                        return &c->vdevs[i];
        return NULL;
}

static int cmp_vlink(const void *a, const void *b)
{
        const unsigned *x = a, *y = b;
        /* keys: server vdev index, client VM, client vdev index */
        for (int i = 0; i < 3; i++)
                if (x[i] != y[i])
                        return x[i] < y[i] ? -1 : 1;
        return 0;
}

static const char *vm_name(struct cfg *c, unsigned vm)
{
        return c->plat->vms[vm].name;
}

static int add_dev_name(struct cfg *c, char (*names)[PV_NAME_MAX], const char **paths, unsigned *n, const char *name,
                        const char *path, unsigned vm)
{
        if (strcmp(name, "control") == 0)
                return cfg_err(c, path, NULL, "\"control\" is pvd's own socket; choose another device name");
        for (unsigned i = 0; i < *n; i++)
                if (strcmp(names[i], name) == 0)
                        return cfg_err(c, path, NULL, "device name %s is already used in %s by %s", name,
                                       vm_name(c, vm), paths[i]);
        snprintf(names[*n], PV_NAME_MAX, "%s", name);
        paths[*n] = path;
        (*n)++;
        return 0;
}

/* Pair the ends into vlinks and derive names, indices and parameters. */
static int resolve(struct cfg *c)
{
        struct pv_platform *plat = c->plat;
        unsigned keys[PV_MAX_VLINKS][4];
        unsigned nk = 0;

        for (unsigned i = 0; i < c->nvdevs; i++) {
                struct vdev *v = &c->vdevs[i];
                if (!v->has_peer)
                        continue;
                int t = fdt_node_offset_by_phandle(c->fdt, v->peer);
                if (t < 0)
                        return cfg_err(c, v->path, "peer-phandle", "no node has phandle %#x", v->peer);
                struct vdev *s = vdev_at(c, t);
                char tpath[PV_PATH_MAX];
                node_path(c->fdt, t, tpath, sizeof(tpath));
                if (!s)
                        return cfg_err(c, v->path, "peer-phandle", "points at %s, which is not a vdev node "
                                       "(a child of a VM's vdevs)", tpath);
                if (s->has_peer)
                        return cfg_err(c, v->path, "peer-phandle", "points at %s, a client end (it has peer-phandle)",
                                       tpath);
                if (s->mark_client)
                        return cfg_err(c, v->path, "peer-phandle", "points at %s, which is marked client", tpath);
                if (s->vm == v->vm)
                        return cfg_err(c, v->path, "peer-phandle", "points at %s: both ends are in %s", tpath,
                                       vm_name(c, v->vm));
                if (!s->has_compat)
                        return cfg_err(c, tpath, "compatible", "missing on a server end");
                if (v->has_compat && strcmp(v->compat, s->compat))
                        return cfg_err(c, v->path, "compatible", "\"%s\" differs from its server end's \"%s\"",
                                       v->compat, s->compat);
                if (nk == PV_MAX_VLINKS)
                        return cfg_err(c, NULL, NULL, "more than %d vlinks", PV_MAX_VLINKS);
                s->is_server = true;
                keys[nk][0] = (unsigned)(s - c->vdevs);
                keys[nk][1] = v->vm;
                keys[nk][2] = i;
                keys[nk][3] = 0;
                nk++;
        }
        qsort(keys, nk, sizeof(keys[0]), cmp_vlink);

        for (unsigned k = 0; k < nk; k++) {
                struct vdev *s = &c->vdevs[keys[k][0]], *cl = &c->vdevs[keys[k][2]];
                struct pv_vlink_cfg *vl = &plat->vlinks[plat->nvlinks];
                memset(vl, 0, sizeof(*vl));
                vl->id = plat->nvlinks++;
                bool vbpipe = strcmp(s->compat, "vbpipe") == 0;
                vl->kind = vbpipe ? PV_VLINK_VBPIPE : PV_VLINK_VDEV;
                snprintf(vl->compatible, sizeof(vl->compatible), "%s", s->compat);
                vl->vm[PV_SERVER] = s->vm;
                vl->vm[PV_CLIENT] = cl->vm;
                snprintf(vl->path[PV_SERVER], PV_PATH_MAX, "%s", s->path);
                snprintf(vl->path[PV_CLIENT], PV_PATH_MAX, "%s", cl->path);
                if (!cl->has_compat) {
                        int rc = parse_client_info(c, cl, vbpipe);
                        if (rc < 0)
                                return rc;
                }
                vl->info[PV_SERVER] = s->info;
                vl->info[PV_CLIENT] = cl->info;
                vl->access[PV_SERVER] = s->access;
                vl->access[PV_CLIENT] = cl->access;
                const struct pv_info *si = &s->info, *ci = &cl->info;
                if (vbpipe) {
                        vl->vbpipe_size = si->vbpipe_size;
                        if (ci->vbpipe_size != si->vbpipe_size && ci->vbpipe_size != PV_VBPIPE_SIZE_DEF)
                                return cfg_err(c, cl->path, "info", "ring size %llu differs from the server end's %llu",
                                               (unsigned long long)ci->vbpipe_size,
                                               (unsigned long long)si->vbpipe_size);
                        continue;
                }
                if (!si->has_vrpq && !si->has_vumem)
                        return cfg_err(c, s->path, "info", "gives no vrpq-reqs/vrpq-pmem nor vumem-pdev: "
                                       "a %s vlink needs VRPQ or VUMEM parameters", s->compat);
                if ((ci->has_vrpq && (ci->vrpq_reqs != si->vrpq_reqs || ci->vrpq_pmem != si->vrpq_pmem)) ||
                    (ci->has_vumem && ci->vumem_pdev != si->vumem_pdev))
                        return cfg_err(c, cl->path, "info", "differs from the server end's info (%s)", si->raw);
                vl->vrpq_reqs = si->has_vrpq ? si->vrpq_reqs : 0;
                vl->vrpq_pmem = si->has_vrpq ? si->vrpq_pmem : 0;
                vl->vumem_pdev = si->has_vumem ? si->vumem_pdev : 0;
        }

        /* Client index: the client end's rank among its VM's client ends of
         * the same compatible, in tree order (the vlink order follows the
         * servers). */
        for (unsigned i = 0; i < plat->nvlinks; i++) {
                struct pv_vlink_cfg *vl = &plat->vlinks[i];
                if (vl->kind != PV_VLINK_VDEV)
                        continue;
                unsigned idx = 0;
                for (unsigned j = 0; j < plat->nvlinks; j++) {
                        const struct pv_vlink_cfg *o = &plat->vlinks[j];
                        if (o->kind == PV_VLINK_VDEV && o->vm[PV_CLIENT] == vl->vm[PV_CLIENT] &&
                            strcmp(o->compatible, vl->compatible) == 0 &&
                            strcmp(o->path[PV_CLIENT], vl->path[PV_CLIENT]) != 0 &&
                            fdt_path_offset(c->fdt, o->path[PV_CLIENT]) < fdt_path_offset(c->fdt, vl->path[PV_CLIENT]))
                                idx++;
                }
                vl->index[PV_CLIENT] = idx;
        }
        /* Server indices, names, uniqueness, per VM. */
        for (unsigned vm = 0; vm < plat->nvms; vm++) {
                char names[PV_MAX_VLINKS * 2][PV_NAME_MAX];
                const char *paths[PV_MAX_VLINKS * 2];
                unsigned nn = 0, pipes = 0;
                for (unsigned i = 0; i < plat->nvlinks; i++) {
                        struct pv_vlink_cfg *vl = &plat->vlinks[i];
                        for (int side = PV_SERVER; side <= PV_CLIENT; side++) {
                                if (vl->vm[side] != vm)
                                        continue;
                                if (vl->kind == PV_VLINK_VBPIPE) {
                                        const struct pv_info *in = &vl->info[side];
                                        if (in->name[0])
                                                snprintf(vl->pipe_name[side], PV_NAME_MAX, "%s", in->name);
                                        else if (in->vbpipe_minor >= 0)
                                                snprintf(vl->pipe_name[side], PV_NAME_MAX, "vbpipe%d", in->vbpipe_minor);
                                        else
                                                snprintf(vl->pipe_name[side], PV_NAME_MAX, "vbpipe%u", pipes);
                                        pipes++;
                                        int rc = add_dev_name(c, names, paths, &nn, vl->pipe_name[side],
                                                              vl->path[side], vm);
                                        if (rc < 0)
                                                return rc;
                                        continue;
                                }
                                if (side == PV_SERVER) {
                                        unsigned idx = 0;
                                        for (unsigned j = 0; j < i; j++)
                                                idx += plat->vlinks[j].kind == PV_VLINK_VDEV &&
                                                       plat->vlinks[j].vm[PV_SERVER] == vm &&
                                                       strcmp(plat->vlinks[j].compatible, vl->compatible) == 0;
                                        vl->index[side] = idx;
                                }
                                for (int d = 0; d < 2; d++) {
                                        char dev[PV_NAME_MAX * 2];
                                        if (pv_config_dev_name(vl, (enum pv_side)side, d ? "vumem" : "vrpq", dev,
                                                               sizeof(dev)) < 0)
                                                continue;
                                        if (strlen(dev) >= PV_NAME_MAX)
                                                return cfg_err(c, vl->path[side], "compatible",
                                                               "device name %s is too long", dev);
                                        int rc = add_dev_name(c, names, paths, &nn, dev, vl->path[side], vm);
                                        if (rc < 0)
                                                return rc;
                                }
                        }
                }
        }
        for (unsigned i = 0; i < plat->nvlinks; i++) {
                struct pv_vlink_cfg *vl = &plat->vlinks[i];
                char name[sizeof(vl->link_name)], what[PV_NAME_MAX + 16];
                if (vl->kind == PV_VLINK_VBPIPE)
                        snprintf(what, sizeof(what), "%s", vl->pipe_name[PV_SERVER]);
                else
                        snprintf(what, sizeof(what), "%s%u", vl->compatible, vl->index[PV_SERVER]);
                snprintf(name, sizeof(name), "%s-%s-%s", vm_name(c, vl->vm[PV_SERVER]), vm_name(c, vl->vm[PV_CLIENT]),
                         what);
                memcpy(vl->link_name, name, sizeof(name));
        }
        return 0;
}

int pv_config_load_blob(const void *blob, size_t size, const char *what, struct pv_platform *plat, char *err,
                        size_t errlen)
{
        struct cfg c = { .fdt = blob, .what = what, .err = err, .errlen = errlen, .plat = plat };
        memset(plat, 0, sizeof(*plat));
        if (size == 0)
                return cfg_err(&c, NULL, NULL, "empty file, not a device tree blob");
        if (size < sizeof(struct fdt_header))
                return cfg_err(&c, NULL, NULL, "%zu bytes: too short for a device tree blob", size);
        if (fdt_magic(blob) != FDT_MAGIC)
                return cfg_err(&c, NULL, NULL, "not a device tree blob (bad magic %#x; compile the .dts with dtc)",
                               fdt_magic(blob));
        if (fdt_totalsize(blob) > size)
                return cfg_err(&c, NULL, NULL, "truncated: the header says %u bytes, the file has %zu",
                               fdt_totalsize(blob), size);
        int rc = fdt_check_header(blob);
        if (rc == 0)
                rc = fdt_check_full(blob, size);
        if (rc < 0)
                return cfg_err(&c, NULL, NULL, "corrupt device tree blob: %s", fdt_strerror(rc));

        int vms = fdt_path_offset(blob, "/vms");
        if (vms < 0)
                return cfg_err(&c, "/", NULL, "no /vms node: the platform has no VM");
        int vm;
        fdt_for_each_subnode(vm, blob, vms) {
                const char *name = fdt_get_name(blob, vm, NULL);
                char path[PV_PATH_MAX];
                node_path(blob, vm, path, sizeof(path));
                if (!name || !valid_ident(name, false) || strlen(name) >= PV_NAME_MAX)
                        return cfg_err(&c, path, NULL, "a VM's node name must be a short name ([A-Za-z0-9_.-]+)");
                for (unsigned i = 0; i < plat->nvms; i++)
                        if (strcmp(plat->vms[i].name, name) == 0)
                                return cfg_err(&c, path, NULL, "two VMs are called %s", name);
                if (plat->nvms == PV_MAX_VMS)
                        return cfg_err(&c, path, NULL, "more than %d VMs", PV_MAX_VMS);
                snprintf(plat->vms[plat->nvms++].name, PV_NAME_MAX, "%s", name);
        }

        c.vdevs = calloc(CFG_MAX_VDEVS, sizeof(*c.vdevs));
        if (!c.vdevs)
                return cfg_err(&c, NULL, NULL, "out of memory");
        unsigned idx = 0;
        fdt_for_each_subnode(vm, blob, vms) {
                int vdevs = fdt_subnode_offset(blob, vm, "vdevs");
                if (vdevs >= 0) {
                        int d;
                        fdt_for_each_subnode(d, blob, vdevs) {
                                rc = read_vdev(&c, idx, d);
                                if (rc < 0)
                                        goto out;
                        }
                }
                idx++;
        }
        rc = resolve(&c);
out:
        free(c.vdevs);
        if (rc < 0)
                memset(plat, 0, sizeof(*plat));
        return rc;
}

int pv_config_load_file(const char *path, struct pv_platform *plat, char *err, size_t errlen)
{
        const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
                return -errno;
        }
        struct stat st;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > CFG_FILE_MAX) {
                snprintf(err, errlen, "%s: not a regular file of at most %u bytes", path, CFG_FILE_MAX);
                close(fd);
                return -EINVAL;
        }
        size_t size = (size_t)st.st_size;
        void *buf = malloc(size ? size : 1);
        if (!buf) {
                close(fd);
                snprintf(err, errlen, "%s: out of memory", path);
                return -ENOMEM;
        }
        size_t got = 0;
        while (got < size) {
                ssize_t n = read(fd, (char *)buf + got, size - got);
                if (n <= 0)
                        break;
                got += (size_t)n;
        }
        close(fd);
        int rc = pv_config_load_blob(buf, got, base, plat, err, errlen);
        free(buf);
        return rc;
}

int pv_config_vm_find(const struct pv_platform *plat, const char *name)
{
        for (unsigned i = 0; i < plat->nvms; i++)
                if (strcmp(plat->vms[i].name, name) == 0)
                        return (int)i;
        return -1;
}

int pv_config_dev_name(const struct pv_vlink_cfg *vl, enum pv_side side, const char *driver, char *buf, size_t len)
{
        if (vl->kind == PV_VLINK_VBPIPE) {
                snprintf(buf, len, "%s", vl->pipe_name[side]);
                return 0;
        }
        bool vrpq = strcmp(driver, "vrpq") == 0, vumem = strcmp(driver, "vumem") == 0;
        if ((vrpq && !vl->vrpq_reqs) || (vumem && !vl->vumem_pdev) || (!vrpq && !vumem))
                return -ENOENT;
        snprintf(buf, len, "%s-%s-%s%u", driver, side == PV_SERVER ? "srv" : "clt", vl->compatible, vl->index[side]);
        return 0;
}

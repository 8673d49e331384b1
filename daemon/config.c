/* The platform loader: reads the hypervisor device tree (DTB) with libfdt,
 * checks all of it, and turns its vdev nodes into the VMs and vlinks of
 * struct pv_platform. See config.h for the rules.
 *
 * Every configuration error is -EINVAL with one line naming the file, the
 * node and the property; I/O errors keep their errno.
 */
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
#include "info.h"
#include "pv-ivshmem.h"

/* Far above any real platform; keeps a wrong --config (a disk image, a
 * device) from being read whole into memory. */
#define CONFIG_FILE_MAX (16u << 20)
#define INFO_STRS_MAX   32
#define MODE_DEFAULT    0660u

/* One child of a VM's vdevs node. Strings point into the blob. */
struct vdev {
        int off;
        unsigned vm;
        char path[PV_PATH_MAX];
        bool has_peer, marked_server, marked_client;
        uint32_t peer;             /* phandle from peer-phandle */
        int server;                /* client end: vdev index of its server, else -1 */
        int first_client;          /* server end: first vdev pointing here, else -1 */
        const char *compatible;    /* first string, NULL when absent */
        const char *info[INFO_STRS_MAX];
        unsigned ninfo;
        struct pv_info pinfo;
        unsigned given;            /* PV_INFO_GAVE_* of pinfo */
        struct pv_access access;
};

/* A device name of one VM, for the duplicate check. */
struct devname {
        unsigned vm;
        char name[PV_NAME_MAX];
        const char *path;
        const char *prop;
};

struct loader {
        const void *fdt;
        const char *what;
        char *err;
        size_t errlen;
        struct pv_platform *plat;
        struct vdev *vdevs;
        unsigned nvdevs, cap;
        unsigned srv[PV_MAX_VLINKS]; /* vdev index of each vlink's server end */
        unsigned clt[PV_MAX_VLINKS]; /* ... and of its client end */
};

/* "<file>: <path>: property <prop>: <problem>"; path and prop optional. */
__attribute__((format(printf, 4, 5)))
static int fail(struct loader *ld, const char *path, const char *prop, const char *fmt, ...)
{
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (ld->errlen == 0)
                return -EINVAL;
        if (path && prop)
                snprintf(ld->err, ld->errlen, "%s: %s: property %s: %s", ld->what, path, prop, msg);
        else if (path)
                snprintf(ld->err, ld->errlen, "%s: %s: %s", ld->what, path, msg);
        else
                snprintf(ld->err, ld->errlen, "%s: %s", ld->what, msg);
        return -EINVAL;
}

/* ---- the blob as a whole ------------------------------------------------ */

static int check_blob(struct loader *ld, const void *blob, size_t size)
{
        if (size == 0)
                return fail(ld, NULL, NULL, "empty file (expected a device tree blob compiled by dtc)");
        if (size < sizeof(fdt32_t) || fdt_magic(blob) != FDT_MAGIC) {
                if (size < sizeof(fdt32_t))
                        return fail(ld, NULL, NULL, "not a device tree blob (%zu bytes)", size);
                return fail(ld, NULL, NULL, "not a device tree blob (bad magic 0x%08x; compile the .dts with dtc)",
                            fdt_magic(blob));
        }
        /* fdt_check_header reads the whole header before it checks totalsize. */
        if (size < sizeof(struct fdt_header))
                return fail(ld, NULL, NULL, "truncated: %zu bytes, shorter than a device tree header", size);
        size_t total = fdt_totalsize(blob);
        if (size < total)
                return fail(ld, NULL, NULL, "truncated: header says %zu bytes, file has %zu", total, size);
        int rc = fdt_check_header(blob);
        if (rc < 0)
                return fail(ld, NULL, NULL, "bad device tree header: %s", fdt_strerror(rc));
#ifdef PV_HAVE_FDT_CHECK_FULL
        rc = fdt_check_full(blob, total);
        if (rc < 0)
                return fail(ld, NULL, NULL, "corrupt device tree: %s", fdt_strerror(rc));
#else
        /* Without fdt_check_full, walk every node once: libfdt checks each
         * tag it steps over. */
        int off = 0, depth = 0;
        while ((off = fdt_next_node(blob, off, &depth)) >= 0)
                ;
        if (off != -FDT_ERR_NOTFOUND)
                return fail(ld, NULL, NULL, "corrupt device tree: %s", fdt_strerror(off));
#endif
        return 0;
}

/* ---- properties ----------------------------------------------------------- */

/* A string property: every string must end inside the property (a hostile
 * tree may leave the last one unterminated). *out is its first string, or
 * NULL when the property is absent. */
static int get_string(struct loader *ld, const struct vdev *v, const char *prop, const char **out)
{
        int len;
        const char *s = fdt_getprop(ld->fdt, v->off, prop, &len);
        *out = NULL;
        if (!s) {
                if (len == -FDT_ERR_NOTFOUND)
                        return 0;
                return fail(ld, v->path, prop, "%s", fdt_strerror(len));
        }
        if (len == 0)
                return fail(ld, v->path, prop, "empty; expected a string");
        if (s[len - 1] != '\0')
                return fail(ld, v->path, prop, "string not NUL-terminated inside the property");
        *out = s;
        return 0;
}

static int get_compatible(struct loader *ld, struct vdev *v)
{
        char q[96];
        const char *s;
        int rc = get_string(ld, v, "compatible", &s);
        if (rc < 0 || !s)
                return rc;
        size_t len = strlen(s);
        bool ok = len > 0 && len < PV_NAME_MAX;
        for (size_t i = 0; ok && i < len; i++)
                ok = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' ||
                     s[i] == '-';
        if (!ok)
                return fail(ld, v->path, "compatible",
                            "\"%s\" is not \"vbpipe\" nor a driver name (1 to %d of [a-z0-9_-])",
                            pv_str_safe(s, len, q, sizeof(q)), PV_NAME_MAX - 1);
        v->compatible = s;
        return 0;
}

static int get_info(struct loader *ld, struct vdev *v)
{
        int n = fdt_stringlist_count(ld->fdt, v->off, "info");
        if (n == -FDT_ERR_NOTFOUND)
                return 0;
        if (n < 0)
                return fail(ld, v->path, "info", "not a list of NUL-terminated strings");
        if (n > INFO_STRS_MAX)
                return fail(ld, v->path, "info", "more than %d strings", INFO_STRS_MAX);
        for (int i = 0; i < n; i++) {
                v->info[i] = fdt_stringlist_get(ld->fdt, v->off, "info", i, NULL);
                if (!v->info[i])
                        return fail(ld, v->path, "info", "string %d unreadable", i);
        }
        v->ninfo = (unsigned)n;
        return 0;
}

/* pvd,owner / pvd,group: user or group names (or numbers) resolved later. */
static int get_principal(struct loader *ld, const struct vdev *v, const char *prop, char *out)
{
        char q[96];
        const char *s;
        int rc = get_string(ld, v, prop, &s);
        if (rc < 0 || !s)
                return rc;
        size_t len = strlen(s);
        bool ok = len > 0 && len < PV_NAME_MAX;
        for (size_t i = 0; ok && i < len; i++)
                ok = s[i] > ' ' && s[i] < 0x7f && s[i] != '/' && s[i] != ':';
        if (!ok)
                return fail(ld, v->path, prop, "\"%s\" is not a user or group name of 1 to %d characters",
                            pv_str_safe(s, len, q, sizeof(q)), PV_NAME_MAX - 1);
        memcpy(out, s, len + 1);
        return 0;
}

static int get_cell(struct loader *ld, const struct vdev *v, const char *prop, bool *present,
                    uint32_t *out)
{
        int len;
        const fdt32_t *p = fdt_getprop(ld->fdt, v->off, prop, &len);
        *present = false;
        if (!p) {
                if (len == -FDT_ERR_NOTFOUND)
                        return 0;
                return fail(ld, v->path, prop, "%s", fdt_strerror(len));
        }
        if (len != (int)sizeof(*p))
                return fail(ld, v->path, prop, "%d bytes; expected one cell (4 bytes)", len);
        *present = true;
        *out = fdt32_ld(p);
        return 0;
}

static int get_access(struct loader *ld, struct vdev *v)
{
        bool present;
        int rc;
        v->access.mode = MODE_DEFAULT;
        if ((rc = get_principal(ld, v, "pvd,owner", v->access.owner)) < 0 ||
            (rc = get_principal(ld, v, "pvd,group", v->access.group)) < 0 ||
            (rc = get_cell(ld, v, "pvd,mode", &present, &v->access.mode)) < 0)
                return rc;
        if (present && v->access.mode > 0777)
                return fail(ld, v->path, "pvd,mode", "0%o is not a permission mode (at most 0777)",
                            v->access.mode);
        return 0;
}

/* ---- VMs and vdev nodes --------------------------------------------------- */

static int add_vdev(struct loader *ld, unsigned vm, int off)
{
        if (ld->nvdevs == ld->cap) {
                unsigned cap = ld->cap ? ld->cap * 2 : 16;
                struct vdev *nv = realloc(ld->vdevs, cap * sizeof(*nv));
                if (!nv)
                        return -ENOMEM;
                ld->vdevs = nv;
                ld->cap = cap;
        }
        struct vdev *v = &ld->vdevs[ld->nvdevs++];
        memset(v, 0, sizeof(*v));
        v->off = off;
        v->vm = vm;
        v->server = v->first_client = -1;
        int rc = fdt_get_path(ld->fdt, off, v->path, sizeof(v->path));
        if (rc < 0) {
                const char *name = fdt_get_name(ld->fdt, off, NULL);
                char q[96];
                snprintf(v->path, sizeof(v->path), "/vms/%s/vdevs/%s", ld->plat->vms[vm].name,
                         pv_str_safe(name ? name : "?", 64, q, sizeof(q)));
                return fail(ld, v->path, NULL, "path longer than %d characters", PV_PATH_MAX - 1);
        }

        v->marked_server = fdt_getprop(ld->fdt, off, "server", NULL) != NULL;
        v->marked_client = fdt_getprop(ld->fdt, off, "client", NULL) != NULL;
        if (v->marked_server && v->marked_client)
                return fail(ld, v->path, "server", "node is also marked client; an end is one or the other");
        if ((rc = get_cell(ld, v, "peer-phandle", &v->has_peer, &v->peer)) < 0)
                return rc;
        if (v->marked_server && v->has_peer)
                return fail(ld, v->path, "peer-phandle",
                            "node is marked server but points at a peer (only client ends have peer-phandle)");
        if ((rc = get_compatible(ld, v)) < 0 || (rc = get_info(ld, v)) < 0 ||
            (rc = get_access(ld, v)) < 0)
                return rc;
        return 0;
}

static int load_vms(struct loader *ld)
{
        const void *fdt = ld->fdt;
        struct pv_platform *plat = ld->plat;
        char path[PV_PATH_MAX], q[96];
        int vms = fdt_path_offset(fdt, "/vms");
        if (vms < 0)
                return fail(ld, "/", NULL, "no /vms node (it holds one node per VM)");
        int off, rc;
        fdt_for_each_subnode(off, fdt, vms) {
                int len;
                const char *name = fdt_get_name(fdt, off, &len);
                if (!name)
                        return fail(ld, "/vms", NULL, "unreadable VM node: %s", fdt_strerror(len));
                snprintf(path, sizeof(path), "/vms/%s", pv_str_safe(name, (size_t)len, q, sizeof(q)));
                if (!pv_name_valid(name, (size_t)len))
                        return fail(ld, path, NULL, "VM name is not 1 to %d characters of [A-Za-z0-9_.-]",
                                    PV_NAME_MAX - 1);
                if (pv_config_vm_find(plat, name) >= 0)
                        return fail(ld, path, NULL, "two VMs are called %s", name);
                if (plat->nvms == PV_MAX_VMS)
                        return fail(ld, path, NULL, "more than %d VMs", PV_MAX_VMS);
                unsigned vm = plat->nvms++;
                memcpy(plat->vms[vm].name, name, (size_t)len + 1);

                int vdevs = fdt_subnode_offset(fdt, off, "vdevs");
                if (vdevs == -FDT_ERR_NOTFOUND)
                        continue;
                if (vdevs < 0)
                        return fail(ld, path, NULL, "vdevs: %s", fdt_strerror(vdevs));
                int node;
                fdt_for_each_subnode(node, fdt, vdevs) {
                        if ((rc = add_vdev(ld, vm, node)) < 0)
                                return rc;
                }
                if (node != -FDT_ERR_NOTFOUND)
                        return fail(ld, path, NULL, "vdevs: %s", fdt_strerror(node));
        }
        if (off != -FDT_ERR_NOTFOUND)
                return fail(ld, "/vms", NULL, "%s", fdt_strerror(off));
        return 0;
}

/* ---- vlinks ----------------------------------------------------------------- */

static int find_vdev(const struct loader *ld, int off)
{
        for (unsigned i = 0; i < ld->nvdevs; i++)
                if (ld->vdevs[i].off == off)
                        return (int)i;
        return -1;
}

static bool is_vbpipe(const char *compatible)
{
        return strcmp(compatible, "vbpipe") == 0;
}

/* Pairs each client end with the node its peer-phandle names. */
static int link_clients(struct loader *ld)
{
        char tpath[PV_PATH_MAX];
        for (unsigned i = 0; i < ld->nvdevs; i++) {
                struct vdev *c = &ld->vdevs[i];
                if (!c->has_peer)
                        continue;
                int t = fdt_node_offset_by_phandle(ld->fdt, c->peer);
                if (t < 0)
                        return fail(ld, c->path, "peer-phandle", "no node has phandle 0x%x", c->peer);
                int j = find_vdev(ld, t);
                if (j < 0) {
                        if (fdt_get_path(ld->fdt, t, tpath, sizeof(tpath)) < 0)
                                snprintf(tpath, sizeof(tpath), "(node at offset %d)", t);
                        return fail(ld, c->path, "peer-phandle",
                                    "points at a node that is not a vdev (%s; a vdev is a child of a VM's vdevs)",
                                    tpath);
                }
                struct vdev *s = &ld->vdevs[j];
                if (s->has_peer)
                        return fail(ld, c->path, "peer-phandle",
                                    "points at a client end (it has peer-phandle): %s", s->path);
                if (s->marked_client)
                        return fail(ld, c->path, "peer-phandle",
                                    "points at a client end (it is marked client): %s", s->path);
                if (s->vm == c->vm)
                        return fail(ld, c->path, "peer-phandle", "both ends are in %s (peer %s)",
                                    ld->plat->vms[c->vm].name, s->path);
                if (!s->compatible)
                        return fail(ld, s->path, "compatible", "missing on a server end (%s points at it)",
                                    c->path);
                if (c->compatible && strcmp(c->compatible, s->compatible) != 0)
                        return fail(ld, c->path, "compatible", "\"%s\" differs from the server end's \"%s\" (%s)",
                                    c->compatible, s->compatible, s->path);
                if (is_vbpipe(s->compatible) && s->first_client >= 0)
                        return fail(ld, c->path, "peer-phandle",
                                    "vbpipe %s already has a client end (%s); a pipe joins two ends",
                                    s->path, ld->vdevs[s->first_client].path);
                if (ld->plat->nvlinks == PV_MAX_VLINKS)
                        return fail(ld, c->path, "peer-phandle", "more than %d vlinks", PV_MAX_VLINKS);
                c->server = j;
                if (s->first_client < 0)
                        s->first_client = (int)i;
                unsigned k = ld->plat->nvlinks++;
                ld->srv[k] = (unsigned)j;
                ld->clt[k] = i;
        }
        /* Checked after the pairing, so that a node pointing at such an end
         * is told what it points at. */
        for (unsigned i = 0; i < ld->nvdevs; i++)
                if (ld->vdevs[i].marked_client && !ld->vdevs[i].has_peer)
                        return fail(ld, ld->vdevs[i].path, "client",
                                    "node is marked client but has no peer-phandle");
        return 0;
}

/* Parses the info of every node whose form is known: its own compatible,
 * or for a client end its server's. */
static int parse_infos(struct loader *ld)
{
        char msg[384];
        for (unsigned i = 0; i < ld->nvdevs; i++) {
                struct vdev *v = &ld->vdevs[i];
                const char *compat = v->server >= 0 ? ld->vdevs[v->server].compatible : v->compatible;
                if (!compat)
                        continue;
                int rc = pv_info_parse_given(v->info, v->ninfo, is_vbpipe(compat), &v->pinfo, &v->given,
                                             msg, sizeof(msg));
                if (rc < 0)
                        return fail(ld, v->path, "info", "%s", msg);
        }
        return 0;
}

/* A client end that repeats a server key must give the same value. */
static int agree(struct loader *ld, const struct vdev *c, const struct vdev *s, unsigned bit,
                 const char *key, uint64_t cv, uint64_t sv)
{
        char a[32], b[32];
        if (!(c->given & bit))
                return 0;
        if (!(s->given & bit))
                return fail(ld, c->path, "info", "gives %s %s, but the server end %s gives none", key,
                            pv_size_str(cv, a, sizeof(a)), s->path);
        if (cv != sv)
                return fail(ld, c->path, "info", "%s %s differs from the server end's %s (%s)", key,
                            pv_size_str(cv, a, sizeof(a)), pv_size_str(sv, b, sizeof(b)), s->path);
        return 0;
}

static int fill_vlink(struct loader *ld, unsigned k)
{
        struct pv_vlink_cfg *vl = &ld->plat->vlinks[k];
        const struct vdev *s = &ld->vdevs[ld->srv[k]], *c = &ld->vdevs[ld->clt[k]];
        const struct pv_info *si = &s->pinfo, *ci = &c->pinfo;
        int rc;
        vl->id = k;
        vl->kind = is_vbpipe(s->compatible) ? PV_VLINK_VBPIPE : PV_VLINK_VDEV;
        snprintf(vl->compatible, sizeof(vl->compatible), "%s", s->compatible);
        vl->vm[PV_SERVER] = s->vm;
        vl->vm[PV_CLIENT] = c->vm;
        memcpy(vl->path[PV_SERVER], s->path, sizeof(s->path));
        memcpy(vl->path[PV_CLIENT], c->path, sizeof(c->path));
        vl->info[PV_SERVER] = *si;
        vl->info[PV_CLIENT] = *ci;
        vl->access[PV_SERVER] = s->access;
        vl->access[PV_CLIENT] = c->access;
        if ((rc = agree(ld, c, s, PV_INFO_GAVE_HV_HEAP, "hv-heap", ci->hv_heap, si->hv_heap)) < 0)
                return rc;
        vl->hv_heap = (s->given & PV_INFO_GAVE_HV_HEAP) ? si->hv_heap : PV_IVSHM_HEAP_DEFAULT;
        if (vl->kind == PV_VLINK_VBPIPE) {
                vl->vbpipe_size = si->vbpipe_size;
                return agree(ld, c, s, PV_INFO_GAVE_SIZE, "ring size", ci->vbpipe_size, si->vbpipe_size);
        }
        if (!si->has_vrpq && !si->has_vumem)
                return fail(ld, s->path, "info",
                            "gives no vrpq-reqs/vrpq-pmem nor vumem-pdev; a %s vlink needs VRPQ or VUMEM",
                            vl->compatible);
        if ((rc = agree(ld, c, s, PV_INFO_GAVE_VRPQ_REQS, "vrpq-reqs", ci->vrpq_reqs, si->vrpq_reqs)) < 0 ||
            (rc = agree(ld, c, s, PV_INFO_GAVE_VRPQ_PMEM, "vrpq-pmem", ci->vrpq_pmem, si->vrpq_pmem)) < 0 ||
            (rc = agree(ld, c, s, PV_INFO_GAVE_VUMEM_PDEV, "vumem-pdev", ci->vumem_pdev, si->vumem_pdev)) < 0)
                return rc;
        if (si->has_vrpq) {
                vl->vrpq_reqs = si->vrpq_reqs;
                vl->vrpq_pmem = si->vrpq_pmem;
        }
        if (si->has_vumem) {
                vl->vumem_pdev = si->vumem_pdev;
                if (!(s->given & PV_INFO_GAVE_HV_HEAP))
                        vl->hv_heap = PV_IVSHM_HEAP_VUMEM_DEFAULT;
        }
        return 0;
}

static enum pv_side other_side(enum pv_side side)
{
        return side == PV_SERVER ? PV_CLIENT : PV_SERVER;
}

/* The vdev index of end `side` of vlink k; vdev indices are tree order. */
static unsigned end_node(const struct loader *ld, unsigned k, enum pv_side side)
{
        return side == PV_SERVER ? ld->srv[k] : ld->clt[k];
}

/* Whether end (k2, side2) comes before end (k, side): tree order of the
 * end's node, then of its peer's node (a server end with several clients). */
static bool end_before(const struct loader *ld, unsigned k2, enum pv_side side2, unsigned k,
                       enum pv_side side)
{
        unsigned n2 = end_node(ld, k2, side2), n = end_node(ld, k, side);
        if (n2 != n)
                return n2 < n;
        return end_node(ld, k2, other_side(side2)) < end_node(ld, k, other_side(side));
}

/* index[]: for VDEV the N of "vrpq-srv-vogl<N>", for VBPIPE the end's rank
 * among its VM's vbpipe ends. */
static void number_ends(struct loader *ld)
{
        struct pv_platform *plat = ld->plat;
        for (unsigned k = 0; k < plat->nvlinks; k++) {
                struct pv_vlink_cfg *vl = &plat->vlinks[k];
                for (int side = PV_SERVER; side <= PV_CLIENT; side++) {
                        unsigned n = 0;
                        for (unsigned k2 = 0; k2 < plat->nvlinks; k2++) {
                                const struct pv_vlink_cfg *o = &plat->vlinks[k2];
                                if (o->kind != vl->kind)
                                        continue;
                                if (vl->kind == PV_VLINK_VBPIPE) {
                                        for (int s2 = PV_SERVER; s2 <= PV_CLIENT; s2++)
                                                if (o->vm[s2] == vl->vm[side] &&
                                                    end_before(ld, k2, (enum pv_side)s2, k, (enum pv_side)side))
                                                        n++;
                                } else if (o->vm[side] == vl->vm[side] &&
                                           strcmp(o->compatible, vl->compatible) == 0 &&
                                           end_before(ld, k2, (enum pv_side)side, k, (enum pv_side)side)) {
                                        n++;
                                }
                        }
                        vl->index[side] = n;
                }
        }
}

static int name_vlink(struct loader *ld, unsigned k)
{
        struct pv_vlink_cfg *vl = &ld->plat->vlinks[k];
        const char *sname = ld->plat->vms[vl->vm[PV_SERVER]].name;
        const char *cname = ld->plat->vms[vl->vm[PV_CLIENT]].name;
        char name[sizeof(vl->link_name)]; /* built apart: the VM names live in *plat too */
        int n;
        if (vl->kind == PV_VLINK_VBPIPE) {
                for (int side = PV_SERVER; side <= PV_CLIENT; side++) {
                        const struct pv_info *in = &vl->info[side];
                        char *out = vl->pipe_name[side];
                        if (in->name[0])
                                memcpy(out, in->name, sizeof(in->name));
                        else if (in->vbpipe_minor >= 0)
                                snprintf(out, PV_NAME_MAX, "vbpipe%d", in->vbpipe_minor);
                        else
                                snprintf(out, PV_NAME_MAX, "vbpipe%u", vl->index[side]);
                }
                n = snprintf(name, sizeof(name), "%s-%s-%s", sname, cname, vl->pipe_name[PV_SERVER]);
        } else {
                n = snprintf(name, sizeof(name), "%s-%s-%s%u", sname, cname, vl->compatible,
                             vl->index[PV_SERVER]);
        }
        if (n < 0 || (size_t)n >= sizeof(name))
                return fail(ld, vl->path[PV_SERVER], NULL,
                            "vlink name \"%s...\" longer than %zu characters; shorten VM or device names",
                            name, sizeof(name) - 1);
        memcpy(vl->link_name, name, sizeof(name));
        for (unsigned k2 = 0; k2 < k; k2++)
                if (strcmp(ld->plat->vlinks[k2].link_name, vl->link_name) == 0)
                        return fail(ld, vl->path[PV_SERVER], NULL, "vlink name %s is also the name of %s's vlink",
                                    vl->link_name, ld->plat->vlinks[k2].path[PV_SERVER]);
        return 0;
}

/* The device nodes each VM will serve: unique per VM, none called "control". */
static int check_dev_names(struct loader *ld)
{
        static const char *const drivers[] = { "vrpq", "vumem" };
        const struct pv_platform *plat = ld->plat;
        struct devname *names = calloc((size_t)plat->nvlinks * 4 + 1, sizeof(*names));
        unsigned n = 0;
        int rc = 0;
        if (!names)
                return -ENOMEM;
        for (unsigned k = 0; k < plat->nvlinks && rc == 0; k++) {
                const struct pv_vlink_cfg *vl = &plat->vlinks[k];
                for (int side = PV_SERVER; side <= PV_CLIENT && rc == 0; side++) {
                        unsigned nd = vl->kind == PV_VLINK_VBPIPE ? 1 : 2;
                        for (unsigned d = 0; d < nd && rc == 0; d++) {
                                struct devname *dn = &names[n];
                                dn->vm = vl->vm[side];
                                dn->path = vl->path[side];
                                dn->prop = vl->kind == PV_VLINK_VBPIPE ? "info" : "compatible";
                                int r = pv_config_dev_name(vl, (enum pv_side)side, drivers[d], dn->name,
                                                           sizeof(dn->name));
                                if (r == -ENOENT)
                                        continue;
                                if (r < 0) {
                                        rc = fail(ld, dn->path, dn->prop,
                                                  "device name %s-...-%s longer than %d characters",
                                                  drivers[d], vl->compatible, PV_NAME_MAX - 1);
                                        break;
                                }
                                if (strcmp(dn->name, "control") == 0) {
                                        rc = fail(ld, dn->path, dn->prop,
                                                  "device name \"control\" is reserved for pvd's control socket");
                                        break;
                                }
                                for (unsigned i = 0; i < n; i++) {
                                        if (names[i].vm == dn->vm && strcmp(names[i].name, dn->name) == 0) {
                                                rc = fail(ld, dn->path, dn->prop,
                                                          "device name %s is also used by %s in %s",
                                                          dn->name, names[i].path, plat->vms[dn->vm].name);
                                                break;
                                        }
                                }
                                n++;
                        }
                }
        }
        free(names);
        return rc;
}

static int load(struct loader *ld)
{
        int rc;
        if ((rc = load_vms(ld)) < 0 || (rc = link_clients(ld)) < 0 || (rc = parse_infos(ld)) < 0)
                return rc;
        for (unsigned k = 0; k < ld->plat->nvlinks; k++)
                if ((rc = fill_vlink(ld, k)) < 0)
                        return rc;
        number_ends(ld);
        for (unsigned k = 0; k < ld->plat->nvlinks; k++)
                if ((rc = name_vlink(ld, k)) < 0)
                        return rc;
        return check_dev_names(ld);
}

/* ---- entry points ------------------------------------------------------------- */

int pv_config_load_blob(const void *blob, size_t size, const char *what, struct pv_platform *plat,
                        char *err, size_t errlen)
{
        struct loader ld = { .what = what ? what : "(platform)", .err = err, .errlen = err ? errlen : 0,
                             .plat = plat };
        void *copy = NULL;
        int rc;
        if (ld.errlen > 0)
                err[0] = '\0';
        if (!plat || (!blob && size > 0))
                return -EINVAL;
        memset(plat, 0, sizeof(*plat));
        /* libfdt wants the tree 8-byte aligned. */
        if (((uintptr_t)blob & 7) != 0) {
                copy = malloc(size);
                if (!copy)
                        return -ENOMEM;
                memcpy(copy, blob, size);
                blob = copy;
        }
        ld.fdt = blob;
        rc = check_blob(&ld, blob, size);
        if (rc == 0)
                rc = load(&ld);
        if (rc == -ENOMEM && ld.errlen > 0)
                snprintf(err, errlen, "%s: out of memory", ld.what);
        if (rc < 0)
                memset(plat, 0, sizeof(*plat));
        free(ld.vdevs);
        free(copy);
        return rc;
}

__attribute__((format(printf, 3, 4)))
static void file_error(char *err, size_t errlen, const char *fmt, ...)
{
        if (!err || errlen == 0)
                return;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
}

/* The whole file in one malloc'd buffer, at most CONFIG_FILE_MAX bytes. */
static int read_all(const char *path, void **out, size_t *outlen, char *err, size_t errlen)
{
        struct stat st;
        char *buf = NULL;
        size_t len = 0, cap;
        int rc = 0;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                rc = -errno;
                file_error(err, errlen, "%s: cannot open: %s", path, strerror(-rc));
                return rc;
        }
        if (fstat(fd, &st) < 0) {
                rc = -errno;
                file_error(err, errlen, "%s: %s", path, strerror(-rc));
                goto out;
        }
        if (S_ISREG(st.st_mode) && st.st_size > (off_t)CONFIG_FILE_MAX)
                goto too_big;
        /* One byte more than a regular file's size, so the read loop sees EOF
         * without growing; pipes and the like start small and grow. */
        cap = S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 65536;
        for (;;) {
                if (len == cap) {
                        if (cap > CONFIG_FILE_MAX)
                                goto too_big;
                        cap *= 2;
                }
                char *nb = realloc(buf, cap);
                if (!nb) {
                        rc = -ENOMEM;
                        file_error(err, errlen, "%s: out of memory", path);
                        goto out;
                }
                buf = nb;
                ssize_t r = read(fd, buf + len, cap - len);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0) {
                        rc = -errno;
                        file_error(err, errlen, "%s: read: %s", path, strerror(-rc));
                        goto out;
                }
                if (r == 0)
                        break;
                len += (size_t)r;
                if (len > CONFIG_FILE_MAX)
                        goto too_big;
        }
        *out = buf;
        *outlen = len;
        buf = NULL;
        goto out;
too_big:
        rc = -EFBIG;
        file_error(err, errlen, "%s: larger than %u MiB; is it really a platform device tree?", path,
                   CONFIG_FILE_MAX >> 20);
out:
        free(buf);
        close(fd);
        return rc;
}

int pv_config_load_file(const char *path, struct pv_platform *plat, char *err, size_t errlen)
{
        void *buf = NULL;
        size_t len = 0;
        if (!path || !plat)
                return -EINVAL;
        int rc = read_all(path, &buf, &len, err, errlen);
        if (rc < 0) {
                memset(plat, 0, sizeof(*plat));
                return rc;
        }
        rc = pv_config_load_blob(buf, len, path, plat, err, errlen);
        free(buf);
        return rc;
}

int pv_config_vm_find(const struct pv_platform *plat, const char *name)
{
        if (!plat || !name)
                return -1;
        for (unsigned i = 0; i < plat->nvms; i++)
                if (strcmp(plat->vms[i].name, name) == 0)
                        return (int)i;
        return -1;
}

int pv_config_dev_name(const struct pv_vlink_cfg *vl, enum pv_side side, const char *driver, char *buf,
                       size_t len)
{
        int n;
        if (!vl || !buf || len == 0 || (side != PV_SERVER && side != PV_CLIENT))
                return -EINVAL;
        if (vl->kind == PV_VLINK_VBPIPE) {
                n = snprintf(buf, len, "%s", vl->pipe_name[side]);
        } else {
                if (!driver)
                        return -EINVAL;
                bool has = false;
                if (strcmp(driver, "vrpq") == 0)
                        has = vl->vrpq_reqs > 0;
                else if (strcmp(driver, "vumem") == 0)
                        has = vl->vumem_pdev > 0;
                if (!has)
                        return -ENOENT;
                n = snprintf(buf, len, "%s-%s-%s%u", driver, side == PV_SERVER ? "srv" : "clt",
                             vl->compatible, vl->index[side]);
        }
        if (n < 0 || (size_t)n >= len)
                return -ENAMETOOLONG;
        return 0;
}

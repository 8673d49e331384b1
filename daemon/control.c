/* The control node: what pvctl asks pvd. Answers are msgpack documents
 * (PV_K_DOC) that pvctl prints as a table or as JSON; their keys are the
 * JSON keys, so they are a stable interface (README, "pvctl").
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "hv/hv.h"
#include "pv-config.h"
#include "node.h"
#include "pvd.h"

void pvd_pack_str(msgpack_packer *pk, const char *s)
{
        size_t n = strlen(s);
        msgpack_pack_str(pk, n);
        msgpack_pack_str_body(pk, s, n);
}

void pvd_pack_kv_str(msgpack_packer *pk, const char *k, const char *v)
{
        pvd_pack_str(pk, k);
        pvd_pack_str(pk, v);
}

void pvd_pack_kv_u64(msgpack_packer *pk, const char *k, uint64_t v)
{
        pvd_pack_str(pk, k);
        msgpack_pack_uint64(pk, v);
}

void pvd_pack_kv_i64(msgpack_packer *pk, const char *k, int64_t v)
{
        pvd_pack_str(pk, k);
        msgpack_pack_int64(pk, v);
}

void pvd_pack_kv_bool(msgpack_packer *pk, const char *k, bool v)
{
        pvd_pack_str(pk, k);
        if (v)
                msgpack_pack_true(pk);
        else
                msgpack_pack_false(pk);
}

static unsigned vlink_drivers(const struct pvd_vlink *vl, const struct pvd_driver *out[PV_DRV_COUNT])
{
        unsigned n = 0;
        for (int d = 0; d < PV_DRV_COUNT; d++)
                if (pvd_drivers[d] && vl->drv[d])
                        out[n++] = pvd_drivers[d];
        return n;
}

/* Count the entries of a map before packing it: msgpack maps announce their
 * size. A packer into a null buffer would do; counting by hand is simpler. */
static void pack_vlink_head(msgpack_packer *pk, const struct pvd_vlink *vl)
{
        pvd_pack_kv_str(pk, "name", vl->cfg->link_name);
        pvd_pack_kv_str(pk, "compatible", vl->cfg->compatible);
        pvd_pack_kv_str(pk, "role", vl->side == PV_SERVER ? "server" : "client");
        pvd_pack_kv_str(pk, "peer", vl->peer_vm);
        pvd_pack_kv_str(pk, "state", pv_vlink_state_name(vl->state));
}
#define VLINK_HEAD_ENTRIES 5

static void pack_status(struct pvd *pvd, msgpack_packer *pk)
{
        uint64_t now = uv_now(pvd->loop);
        unsigned nprog = 0;
        for (unsigned i = 0; i < pvd->nnodes; i++)
                nprog += pvd->nodes[i].nconns;

        msgpack_pack_map(pk, 11);
        pvd_pack_kv_str(pk, "vm", pvd->vm_name);
        pvd_pack_kv_u64(pk, "pid", (uint64_t)getpid());
        pvd_pack_kv_str(pk, "version", PV_VERSION);
        pvd_pack_kv_u64(pk, "uptime_ms", now - pvd->start_ms);
        pvd_pack_kv_str(pk, "hv", pvd->hv->name);
        pvd_pack_str(pk, "hv_caps");
        unsigned ncaps = 0;
        for (unsigned b = 1; b & HV_CAP_ALL; b <<= 1)
                ncaps += (pvd_hv_caps(pvd) & b) != 0;
        msgpack_pack_array(pk, ncaps);
        for (unsigned b = 1; b & HV_CAP_ALL; b <<= 1)
                if (pvd_hv_caps(pvd) & b)
                        pvd_pack_str(pk, hv_cap_name(b));
        pvd_pack_str(pk, "hv_info");
        if (pvd->hv->global_status)
                pvd->hv->global_status(pvd, pk);
        else
                msgpack_pack_map(pk, 0);
        pvd_pack_kv_str(pk, "runtime_dir", pvd->runtime_dir);

        pvd_pack_str(pk, "vlinks");
        msgpack_pack_array(pk, pvd->nvlinks);
        for (unsigned i = 0; i < pvd->nvlinks; i++) {
                struct pvd_vlink *vl = &pvd->vlinks[i];
                const struct pvd_driver *drvs[PV_DRV_COUNT];
                unsigned nd = vlink_drivers(vl, drvs);
                size_t sizes[PV_REGION_COUNT], mem = 0;
                pvd_vlink_region_sizes(vl, sizes);
                for (int r = 0; r < PV_REGION_COUNT; r++)
                        mem += sizes[r];
                msgpack_pack_map(pk, VLINK_HEAD_ENTRIES + 7);
                pack_vlink_head(pk, vl);
                pvd_pack_str(pk, "drivers");
                msgpack_pack_array(pk, nd);
                for (unsigned d = 0; d < nd; d++)
                        pvd_pack_str(pk, drvs[d]->name);
                pvd_pack_kv_u64(pk, "memory", mem);
                pvd_pack_kv_u64(pk, "generation", vl->gen);
                pvd_pack_kv_u64(pk, "up_ms", vl->state == PV_VLINK_ON ? now - vl->up_since_ms : 0);
                pvd_pack_kv_u64(pk, "downs", vl->down_count);
                pvd_pack_kv_str(pk, "info", vl->cfg->info[PV_SERVER].raw);
                pvd_pack_str(pk, "hv");
                if (vl->hv && pvd->hv->status) {
                        pvd->hv->status(vl, pk);
                } else {
                        msgpack_pack_map(pk, 0);
                }
        }

        pvd_pack_str(pk, "nodes");
        msgpack_pack_array(pk, pvd->nnodes);
        for (unsigned i = 0; i < pvd->nnodes; i++) {
                struct pvd_node *n = &pvd->nodes[i];
                char mode[8];
                snprintf(mode, sizeof(mode), "%04o", (unsigned)n->mode);
                msgpack_pack_map(pk, 9);
                pvd_pack_kv_str(pk, "name", n->name);
                pvd_pack_kv_str(pk, "driver", n->drv ? n->drv->name : "control");
                pvd_pack_kv_str(pk, "vlink", n->vl ? n->vl->cfg->link_name : "");
                pvd_pack_kv_str(pk, "path", n->path);
                pvd_pack_kv_str(pk, "mode", mode);
                pvd_pack_kv_u64(pk, "owner", n->uid);
                pvd_pack_kv_u64(pk, "group", n->gid);
                pvd_pack_kv_u64(pk, "connections", n->nconns);
                pvd_pack_kv_u64(pk, "refused", n->refused);
        }

        pvd_pack_str(pk, "programs");
        msgpack_pack_array(pk, nprog);
        for (unsigned i = 0; i < pvd->nnodes; i++) {
                for (struct pvd_conn *c = pvd->nodes[i].conns; c; c = c->next) {
                        msgpack_pack_map(pk, 4);
                        pvd_pack_kv_str(pk, "node", pvd->nodes[i].name);
                        pvd_pack_kv_u64(pk, "pid", (uint64_t)c->cred.pid);
                        pvd_pack_kv_u64(pk, "uid", c->cred.uid);
                        pvd_pack_kv_str(pk, "comm", c->comm);
                }
        }
}

static int pack_stat(struct pvd *pvd, const struct pvd_driver *drv, msgpack_packer *pk)
{
        unsigned n = 0;
        for (unsigned i = 0; i < pvd->nvlinks; i++)
                n += pvd->vlinks[i].drv[drv->id] != NULL;
        msgpack_pack_map(pk, 3);
        pvd_pack_kv_str(pk, "vm", pvd->vm_name);
        pvd_pack_kv_str(pk, "driver", drv->name);
        pvd_pack_str(pk, "vlinks");
        msgpack_pack_array(pk, n);
        for (unsigned i = 0; i < pvd->nvlinks; i++) {
                struct pvd_vlink *vl = &pvd->vlinks[i];
                if (!vl->drv[drv->id])
                        continue;
                msgpack_pack_map(pk, VLINK_HEAD_ENTRIES + 1);
                pack_vlink_head(pk, vl);
                pvd_pack_str(pk, "stat");
                if (drv->stat)
                        drv->stat(vl, pk);
                else
                        msgpack_pack_map(pk, 0);
        }
        return 0;
}

int pvd_control_msg(struct pvd_conn *c, struct pv_msg *m)
{
        struct pvd *pvd = c->node->pvd;
        if (m->nfds)
                return -EPROTO;
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);

        switch (pv_msg_op(m)) {
        case PV_OP_STATUS:
                pack_status(pvd, &pk);
                break;
        case PV_OP_STAT: {
                char name[PV_NAME_MAX];
                const struct pvd_driver *drv = NULL;
                if (pv_msg_get_str(m, PV_K_NAME, name, sizeof(name)) < 0) {
                        msgpack_sbuffer_destroy(&sb);
                        return -EPROTO;
                }
                for (int d = 0; d < PV_DRV_COUNT; d++)
                        if (pvd_drivers[d] && strcmp(pvd_drivers[d]->name, name) == 0)
                                drv = pvd_drivers[d];
                if (!drv) {
                        msgpack_sbuffer_destroy(&sb);
                        pvd_conn_reply_err(c, m, -ENOENT, "no driver called %s (vrpq, vumem, vbpipe)", name);
                        return 0;
                }
                pack_stat(pvd, drv, &pk);
                break;
        }
        default:
                msgpack_sbuffer_destroy(&sb);
                return -EPROTO;
        }

        struct pv_msg r;
        pv_msg_init_reply(&r, m, 0);
        if (sb.size > PV_MSG_DOC_MAX - 1024) {
                msgpack_sbuffer_destroy(&sb);
                pvd_conn_reply_err(c, m, -E2BIG, "the answer is larger than %d bytes", PV_MSG_DOC_MAX);
                return 0;
        }
        pv_msg_set_b(&r, PV_K_DOC, sb.data, (uint32_t)sb.size);
        pvd_conn_send(c, &r);
        msgpack_sbuffer_destroy(&sb);
        return 0;
}

/* VRPQ: remote procedure queues (daemon side). The driver's entry points,
 * what both ends share, and `pvctl stat vrpq`. The server end (vrpq-be.c)
 * owns the vlink's VRPQ region: it carves rings and ports for channels and
 * allocates their xIRQs; the client end (vrpq-fe.c) relays its programs'
 * sessions and channels. See vrpq-int.h and proto/vrpq-proto.h.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vrpq-int.h"

static size_t vrpq_region_size(const struct pv_vlink_cfg *cfg)
{
        if (!cfg->vrpq_reqs)
                return 0;
        struct vrpq_layout l;
        vrpq_layout_init(&l, cfg->vrpq_reqs, cfg->vrpq_pmem);
        return l.size;
}

void vrpq_region_hdr_write(void *base, const struct vrpq_layout *lay)
{
        const struct vrpq_layout l = *lay;
        struct vrpq_region_hdr *h = base;
        h->magic = VRPQ_MAGIC;
        h->version = VRPQ_VERSION;
        h->reqs = l.reqs;
        h->desc_size = VRPQ_DESC_SIZE;
        h->chan_max = VRPQ_CHANNELS_MAX;
        h->chan_hdr_size = VRPQ_CHAN_HDR_SIZE;
        h->table_off = l.table_off;
        h->pool_off = l.pool_off;
        h->pmem_off = l.pmem_off;
        h->pmem_size = l.pmem_size;
}

static void vrpq_region_init(struct pvd_vlink *vl)
{
        struct vrpq_layout l;
        vrpq_layout_init(&l, vl->cfg->vrpq_reqs, vl->cfg->vrpq_pmem);
        vrpq_region_hdr_write(vl->region[PV_REGION_VRPQ].base, &l);
}

/* ---- a session's own memory ------------------------------------------------------------ */

int vrpq_sess_mem_make(struct vrpq_vlink *v, struct vrpq_sess *s)
{
        s->mem.fd = -1;
        if (!(pvd_hv_caps(v->vl->pvd) & HV_CAP_SLICE))
                return 0;
        char name[64];
        snprintf(name, sizeof(name), "pvd-vrpq-session-%u", s->sid);
        int rc = pvd_mem_alloc(v->vl, v->lay.size, name, &s->mem);
        if (rc < 0)
                return rc;
        void *p = mmap(NULL, v->lay.size, PROT_READ | PROT_WRITE, MAP_SHARED, s->mem.fd, (off_t)s->mem.offset);
        if (p == MAP_FAILED) {
                rc = -errno;
                pvd_mem_free(v->vl->pvd, v->vl, &s->mem);
                return rc;
        }
        vrpq_region_hdr_write(p, &v->lay);
        rc = pvd_grant(v->vl, &s->mem, 0, s->mem.size, &s->gref);
        if (rc < 0) {
                munmap(p, v->lay.size);
                pvd_mem_free(v->vl->pvd, v->vl, &s->mem);
                return rc;
        }
        s->base = p;
        return 0;
}

int vrpq_sess_mem_take(struct vrpq_vlink *v, struct vrpq_sess *s, uint32_t gref)
{
        s->mem.fd = -1;
        if (!gref)
                return 0;
        struct hv_mem g;
        if (pvd_grant_get(v->vl, gref, &g) < 0 || g.size < v->lay.size)
                return -EPROTO;
        void *p = mmap(NULL, v->lay.size, PROT_READ | PROT_WRITE, MAP_SHARED, g.fd, (off_t)g.offset);
        if (p == MAP_FAILED)
                return -errno;
        s->base = p;
        s->mem = g;
        s->mem.fd = -1; /* the backend's, until the grant goes: not ours to close */
        s->mem.size = v->lay.size;
        return 0;
}

void vrpq_sess_mem_drop(struct vrpq_vlink *v, struct vrpq_sess *s)
{
        if (!s->base)
                return;
        munmap(s->base, v->lay.size);
        s->base = NULL;
        if (s->gref)
                pvd_grant_revoke(v->vl, s->gref);
        s->gref = 0;
        pvd_mem_free(v->vl->pvd, v->vl, &s->mem);
}

static int vrpq_attach(struct pvd_vlink *vl)
{
        struct vrpq_vlink *v = calloc(1, sizeof(*v));
        if (!v)
                return -ENOMEM;
        v->vl = vl;
        vrpq_layout_init(&v->lay, vl->cfg->vrpq_reqs, vl->cfg->vrpq_pmem);
        if (vl->side == PV_SERVER &&
            (vrpq_buddy_init(&v->slots, v->lay.reqs / VRPQ_RING_MIN) < 0 ||
             vrpq_buddy_init(&v->pmem, (uint32_t)(v->lay.pmem_size / VRPQ_PORT_MIN)) < 0)) {
                vrpq_buddy_fini(&v->slots);
                free(v);
                return -ENOMEM;
        }
        vl->drv[PV_DRV_VRPQ] = v;
        return 0;
}

static void vrpq_detach(struct pvd_vlink *vl)
{
        struct vrpq_vlink *v = vrpq_of(vl);
        /* The nodes closed every connection first (pvd_stop), so nothing is
         * left to free but the allocators. */
        vrpq_buddy_fini(&v->slots);
        vrpq_buddy_fini(&v->pmem);
        free(v);
        vl->drv[PV_DRV_VRPQ] = NULL;
}

static void vrpq_up(struct pvd_vlink *vl)
{
        struct vrpq_vlink *v = vrpq_of(vl);
        if (vl->side == PV_SERVER) {
                vrpq_srv_up(v);
                return;
        }
        /* The server end wrote the header; both computed the layout. */
        const struct vrpq_region_hdr *h = vl->region[PV_REGION_VRPQ].base;
        if (shm_read32(&h->magic) != VRPQ_MAGIC || shm_read32(&h->version) != VRPQ_VERSION ||
            shm_read32(&h->reqs) != v->lay.reqs || shm_read64(&h->pmem_size) != v->lay.pmem_size ||
            shm_read64(&h->pmem_off) != v->lay.pmem_off)
                pvd_vlink_fail(vl, "vrpq: the server's VRPQ region has a bad magic, version or layout");
}

static void vrpq_down(struct pvd_vlink *vl)
{
        struct vrpq_vlink *v = vrpq_of(vl);
        if (vl->side == PV_SERVER)
                vrpq_srv_down(v);
        else
                vrpq_clt_down(v);
}

static void vrpq_msg(struct pvd_vlink *vl, uint32_t type, const void *msg, uint32_t len)
{
        struct vrpq_vlink *v = vrpq_of(vl);
        if (vl->side == PV_SERVER)
                vrpq_srv_msg(v, type, msg, len);
        else
                vrpq_clt_msg(v, type, msg, len);
}

static int vrpq_conn_open(struct pvd_conn *c)
{
        struct vrpq_conn *vc = calloc(1, sizeof(*vc));
        if (!vc)
                return -ENOMEM;
        vc->c = c;
        vc->v = vrpq_of(c->node->vl);
        c->priv = vc;
        return 0;
}

static int vrpq_conn_msg(struct pvd_conn *c, struct pv_msg *m)
{
        struct vrpq_conn *vc = c->priv;
        if (m->nfds || vc->kind != VC_IDLE)
                return -EPROTO;
        return vc->v->vl->side == PV_SERVER ? vrpq_srv_conn_msg(vc, m) : vrpq_clt_conn_msg(vc, m);
}

static void vrpq_conn_close(struct pvd_conn *c)
{
        struct vrpq_conn *vc = c->priv;
        if (!vc)
                return;
        if (vc->v->vl->side == PV_SERVER)
                vrpq_srv_conn_close(vc);
        else
                vrpq_clt_conn_close(vc);
        c->priv = NULL;
        free(vc);
}

/* ---- helpers ------------------------------------------------------------------------ */

const char *vrpq_node_name(const struct vrpq_conn *vc)
{
        return vc->c->node->name;
}

struct vrpq_chan_hdr *vrpq_hdr(struct vrpq_vlink *v, const struct vrpq_chan *ch)
{
        void *base = ch->s->base ? ch->s->base : v->vl->region[PV_REGION_VRPQ].base;
        if (!base || !ch->has_geom)
                return NULL;
        return vrpq_chan_hdr_at(base, &v->lay, ch->g.hdr_index);
}

static void kick(int fd)
{
        uint64_t one = 1;
        if (fd >= 0 && write(fd, &one, sizeof(one)) < 0) {
                /* an eventfd takes 2^64 - 2 kicks */
        }
}

void vrpq_chan_mark_closed(struct vrpq_vlink *v, struct vrpq_chan *ch)
{
        struct vrpq_chan_hdr *h = vrpq_hdr(v, ch);
        if (h)
                ring_store_release(&h->state, VRPQ_CHAN_CLOSED);
        kick(ch->fd_req);
        kick(ch->fd_ans);
}

void vrpq_conn_hangup(struct vrpq_conn *vc)
{
        if (vc)
                shutdown(vc->c->fd, SHUT_WR);
}

void vrpq_conn_detach(struct vrpq_conn *vc)
{
        if (!vc)
                return;
        vrpq_conn_hangup(vc);
        vc->kind = VC_DEAD;
        vc->s = NULL;
        vc->ch = NULL;
}

void vrpq_reply_init(struct pv_msg *m, const struct vrpq_conn *vc)
{
        pv_msg_init(m, vc->op);
        pv_msg_set_u(m, PV_K_SEQ, vc->seq);
        pv_msg_set_i(m, PV_K_DIAG, 0);
}

void vrpq_conn_reply_err(struct vrpq_conn *vc, int diag, const char *fmt, ...)
{
        struct pv_msg m;
        char text[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);
        vrpq_reply_init(&m, vc);
        pv_msg_set_i(&m, PV_K_DIAG, diag);
        pv_msg_set_str(&m, PV_K_MSG, text);
        pv_debug("%s: %s[%d]: %s", vrpq_node_name(vc), vc->c->comm, (int)vc->c->cred.pid, text);
        pvd_conn_send(vc->c, &m);
}

void vrpq_reply_region(struct vrpq_vlink *v, const struct vrpq_sess *s, struct pv_msg *m)
{
        pv_msg_set_u(m, VRPQ_K_REQS, v->lay.reqs);
        pv_msg_set_u(m, VRPQ_K_PMEM_SIZE, v->lay.pmem_size);
        pv_msg_set_u(m, VRPQ_K_REGION_SIZE, v->lay.size);
        if (s->base) {
                /* Server end: our object; client end: the grant's fd. */
                struct hv_mem g;
                int fd = s->mem.fd >= 0 ? s->mem.fd : pvd_grant_get(v->vl, s->mem.id, &g) == 0 ? g.fd : -1;
                pv_msg_set_u(m, PV_K_OFFSET, s->mem.offset);
                pv_msg_add_fd(m, fd);
                return;
        }
        pv_msg_set_u(m, PV_K_OFFSET, v->vl->region[PV_REGION_VRPQ].offset);
        pv_msg_add_fd(m, v->vl->region[PV_REGION_VRPQ].fd);
}

int vrpq_send(struct vrpq_vlink *v, uint32_t type, const void *msg, uint32_t len)
{
        return pvd_vlink_send(v->vl, PV_DRV_VRPQ, type, msg, len);
}

void vrpq_send_id(struct vrpq_vlink *v, uint32_t type, uint32_t sid, uint32_t cid)
{
        struct vrpq_m_id m = { .sid = sid, .cid = cid };
        vrpq_send(v, type, &m, sizeof(m));
}

struct vrpq_sess *vrpq_sess_find(struct vrpq_vlink *v, uint32_t sid)
{
        for (struct vrpq_sess *s = v->sessions; s; s = s->next)
                if (s->sid == sid)
                        return s;
        return NULL;
}

struct vrpq_chan *vrpq_chan_find(struct vrpq_vlink *v, uint32_t cid, struct vrpq_sess **sp)
{
        for (struct vrpq_sess *s = v->sessions; s; s = s->next)
                for (struct vrpq_chan *ch = s->chans; ch; ch = ch->next)
                        if (ch->cid == cid) {
                                if (sp)
                                        *sp = s;
                                return ch;
                        }
        return NULL;
}

void vrpq_sess_unlink(struct vrpq_sess *s)
{
        struct vrpq_vlink *v = s->v;
        for (struct vrpq_sess **p = &v->sessions; *p; p = &(*p)->next)
                if (*p == s) {
                        *p = s->next;
                        v->nsess--;
                        return;
                }
}

void vrpq_chan_unlink(struct vrpq_chan *ch)
{
        struct vrpq_sess *s = ch->s;
        for (struct vrpq_chan **p = &s->chans; *p; p = &(*p)->next)
                if (*p == ch) {
                        *p = ch->next;
                        s->v->nchan--;
                        return;
                }
}

int vrpq_get_info(struct vrpq_conn *vc, const struct pv_msg *m, const void **info, uint32_t *len)
{
        *info = NULL;
        *len = 0;
        if (!pv_msg_has(m, PV_K_INFO))
                return 0;
        if (pv_msg_get_b(m, PV_K_INFO, info, len) < 0)
                return -EPROTO;
        if (*len > VRPQ_INFO_MAX) {
                vrpq_conn_reply_err(vc, -E2BIG, "%s: info of %u bytes is longer than VRPQ_INFO_MAX (%u)",
                                    vrpq_node_name(vc), *len, VRPQ_INFO_MAX);
                return -E2BIG;
        }
        return 0;
}

/* ---- pvctl stat vrpq ---------------------------------------------------------------- */

struct chan_stat {
        uint32_t ring, stacked, stacked_peak, port, pmem, pmem_peak;
        uint32_t cb_ring, cb_stacked, cb_port, cb_pmem;
        uint64_t posted, received, completed, xirq_sent, xirq_suppressed;
        uint64_t cb_posted, cb_completed;
};

static uint32_t clamp32(uint32_t v, uint32_t max)
{
        return v > max ? max : v;
}

/* Read the counters the programs keep in the channel's header, once each,
 * and clamp them: programs and the peer VM can write anything there. */
static void chan_stat_read(struct vrpq_vlink *v, struct vrpq_chan *ch, struct chan_stat *st)
{
        memset(st, 0, sizeof(*st));
        struct vrpq_chan_hdr *h = vrpq_hdr(v, ch);
        if (!h)
                return;
        const struct vrpq_chan_geom *g = &ch->g;
        st->ring = g->req_cap;
        st->port = g->port_size;
        st->cb_ring = g->cb_cap;
        st->cb_port = g->cbport_size;
        st->stacked = clamp32(shm_read32(&h->req_p.prod) - shm_read32(&h->req_c.cons), g->req_cap);
        st->stacked_peak = clamp32(shm_read32(&h->req_c.peak_stacked), g->req_cap);
        st->pmem = clamp32(shm_read32(&h->req_p.port_prod) - shm_read32(&h->req_c.port_cons), g->port_size);
        st->pmem_peak = clamp32(shm_read32(&h->req_c.peak_port), g->port_size);
        if (st->stacked_peak < st->stacked)
                st->stacked_peak = st->stacked;
        if (st->pmem_peak < st->pmem)
                st->pmem_peak = st->pmem;
        st->cb_stacked = clamp32(shm_read32(&h->cb_p.prod) - shm_read32(&h->cb_c.cons), g->cb_cap);
        st->cb_pmem = clamp32(shm_read32(&h->cb_p.port_prod) - shm_read32(&h->cb_c.port_cons), g->cbport_size);
        st->posted = shm_read64(&h->req_p.posted);
        st->received = shm_read64(&h->req_c.received);
        st->completed = shm_read64(&h->req_c.completed);
        st->xirq_sent = shm_read64(&h->req_p.xirq_sent) + shm_read64(&h->req_c.xirq_sent);
        st->xirq_suppressed = shm_read64(&h->req_p.xirq_suppressed) + shm_read64(&h->req_c.xirq_suppressed);
        st->cb_posted = shm_read64(&h->cb_p.posted);
        st->cb_completed = shm_read64(&h->cb_c.completed);
        st->xirq_sent += shm_read64(&h->cb_p.xirq_sent) + shm_read64(&h->cb_c.xirq_sent);
        st->xirq_suppressed += shm_read64(&h->cb_p.xirq_suppressed) + shm_read64(&h->cb_c.xirq_suppressed);
}

static const char *chan_state(const struct vrpq_vlink *v, const struct vrpq_chan *ch)
{
        if (ch->local_dead || ch->peer_dead)
                return "closed";
        if (ch->waiting)
                return "opening";
        if (v->vl->side == PV_SERVER && !ch->accepted)
                return "queued";
        return "open";
}

static const char *sess_state(const struct vrpq_vlink *v, const struct vrpq_sess *s)
{
        if (s->local_dead || s->peer_dead)
                return "closed";
        if (s->waiting)
                return "opening";
        if (v->vl->side == PV_SERVER && !s->accepted)
                return "queued";
        return "open";
}

/* At most this many sessions and channels are listed per vlink (the
 * answer has a size limit); the totals count them all. */
#define STAT_SESSIONS_MAX 64
#define STAT_CHANNELS_MAX 64

static void pack_chan(struct vrpq_vlink *v, struct vrpq_chan *ch, const struct chan_stat *st, msgpack_packer *pk)
{
        msgpack_pack_map(pk, 20);
        pvd_pack_kv_u64(pk, "id", ch->cid);
        pvd_pack_kv_str(pk, "state", chan_state(v, ch));
        pvd_pack_kv_u64(pk, "ring", st->ring);
        pvd_pack_kv_u64(pk, "stacked", st->stacked);
        pvd_pack_kv_u64(pk, "stacked_peak", st->stacked_peak);
        pvd_pack_kv_u64(pk, "port", st->port);
        pvd_pack_kv_u64(pk, "pmem_used", st->pmem);
        pvd_pack_kv_u64(pk, "pmem_peak", st->pmem_peak);
        pvd_pack_kv_u64(pk, "pmem_pct", st->port ? (uint64_t)st->pmem * 100 / st->port : 0);
        pvd_pack_kv_u64(pk, "posted", st->posted);
        pvd_pack_kv_u64(pk, "received", st->received);
        pvd_pack_kv_u64(pk, "completed", st->completed);
        pvd_pack_kv_u64(pk, "xirqs_sent", st->xirq_sent);
        pvd_pack_kv_u64(pk, "xirqs_suppressed", st->xirq_suppressed);
        pvd_pack_kv_u64(pk, "cb_ring", st->cb_ring);
        pvd_pack_kv_u64(pk, "cb_stacked", st->cb_stacked);
        pvd_pack_kv_u64(pk, "cb_port", st->cb_port);
        pvd_pack_kv_u64(pk, "cb_pmem_used", st->cb_pmem);
        pvd_pack_kv_u64(pk, "cb_posted", st->cb_posted);
        pvd_pack_kv_u64(pk, "cb_completed", st->cb_completed);
}

static void vrpq_stat(struct pvd_vlink *vl, msgpack_packer *pk)
{
        struct vrpq_vlink *v = vrpq_of(vl);
        bool mapped = vl->state == PV_VLINK_ON && vl->region[PV_REGION_VRPQ].base;
        uint64_t slots = 0, rings = 0, pmem = 0, stacked = 0, stacked_peak = 0, used = 0, used_peak = 0;
        /* Each channel's header is read once: the totals and the listing
         * agree. */
        struct chan_stat *sts = calloc(v->nchan ? v->nchan : 1, sizeof(*sts));
        unsigned i = 0;
        for (struct vrpq_sess *s = v->sessions; s; s = s->next)
                for (struct vrpq_chan *ch = s->chans; ch && i < v->nchan; ch = ch->next, i++) {
                        struct chan_stat st = { 0 };
                        if (mapped)
                                chan_stat_read(v, ch, &st);
                        if (sts)
                                sts[i] = st;
                        slots += st.ring + st.cb_ring;
                        rings += st.ring;
                        pmem += (uint64_t)st.port + st.cb_port;
                        stacked += st.stacked;
                        stacked_peak += st.stacked_peak;
                        used += st.pmem;
                        used_peak += st.pmem_peak;
                }

        unsigned nsess = v->nsess < STAT_SESSIONS_MAX ? v->nsess : STAT_SESSIONS_MAX;
        unsigned nchan_listed = 0, k = 0;
        for (struct vrpq_sess *s = v->sessions; s && k < nsess; s = s->next, k++)
                for (struct vrpq_chan *ch = s->chans; ch; ch = ch->next)
                        nchan_listed += nchan_listed < STAT_CHANNELS_MAX;

        msgpack_pack_map(pk, 16);
        pvd_pack_kv_u64(pk, "reqs", v->lay.reqs);
        pvd_pack_kv_u64(pk, "pmem", v->lay.pmem_size);
        pvd_pack_kv_u64(pk, "sessions_max", VRPQ_SESSIONS_MAX);
        pvd_pack_kv_u64(pk, "channels_max", VRPQ_CHANNELS_MAX);
        pvd_pack_kv_u64(pk, "slots_allocated", slots);
        pvd_pack_kv_u64(pk, "ring_total", rings);
        pvd_pack_kv_u64(pk, "pmem_allocated", pmem);
        pvd_pack_kv_u64(pk, "stacked", stacked);
        pvd_pack_kv_u64(pk, "stacked_peak", stacked_peak);
        pvd_pack_kv_u64(pk, "pmem_used", used);
        pvd_pack_kv_u64(pk, "pmem_used_peak", used_peak);
        pvd_pack_kv_u64(pk, "pmem_used_pct", v->lay.pmem_size ? used * 100 / v->lay.pmem_size : 0);
        pvd_pack_kv_u64(pk, "channels", v->nchan);
        pvd_pack_kv_u64(pk, "sessions_not_listed", v->nsess - nsess);
        pvd_pack_kv_u64(pk, "channels_not_listed", v->nchan - nchan_listed);
        pvd_pack_str(pk, "sessions");
        msgpack_pack_array(pk, nsess);
        unsigned listed = 0;
        i = k = 0;
        for (struct vrpq_sess *s = v->sessions; s && k < nsess; s = s->next, k++) {
                char local[64], peer[64];
                unsigned n = 0;
                for (struct vrpq_chan *ch = s->chans; ch; ch = ch->next)
                        n += listed + n < STAT_CHANNELS_MAX;
                snprintf(local, sizeof(local), "%s[%u]", s->local_comm, s->local_pid);
                snprintf(peer, sizeof(peer), "%s[%u]", s->peer_comm, s->peer_pid);
                msgpack_pack_map(pk, 6);
                pvd_pack_kv_u64(pk, "id", s->sid);
                pvd_pack_kv_str(pk, "state", sess_state(v, s));
                pvd_pack_kv_str(pk, "program", s->local_pid ? local : "");
                pvd_pack_kv_str(pk, "peer_program", s->peer_pid ? peer : "");
                pvd_pack_kv_u64(pk, "info_bytes", s->info_len);
                pvd_pack_str(pk, "channels");
                msgpack_pack_array(pk, n);
                unsigned j = 0;
                for (struct vrpq_chan *ch = s->chans; ch; ch = ch->next, i++, j++) {
                        if (j >= n)
                                continue;
                        struct chan_stat st = { 0 };
                        if (sts && i < v->nchan)
                                st = sts[i];
                        pack_chan(v, ch, &st, pk);
                }
                listed += n;
        }
        free(sts);
}

const struct pvd_driver pvd_drv_vrpq = {
        .name = "vrpq",
        .id = PV_DRV_VRPQ,
        .region = PV_REGION_VRPQ,
        .region_size = vrpq_region_size,
        .region_init = vrpq_region_init,
        .attach = vrpq_attach,
        .detach = vrpq_detach,
        .up = vrpq_up,
        .down = vrpq_down,
        .msg = vrpq_msg,
        .conn_open = vrpq_conn_open,
        .conn_msg = vrpq_conn_msg,
        .conn_close = vrpq_conn_close,
        .stat = vrpq_stat,
};

/* VBPIPE daemon side: pvctl stat vbpipe. */
#include <stdio.h>

#include "vbpipe-int.h"

static const char *peer_state_name(const struct vbp_pipe *p)
{
        if (!p->on)
                return "unknown";
        switch (p->peer) {
        case PEER_WAITING:
                return "waiting";
        case PEER_OPEN:
                return "open";
        case PEER_CLOSING:
                return "closing";
        case PEER_CLOSED:
                break;
        }
        return "closed";
}

/* Bytes in a ring now, from both indices as they are in memory: a look,
 * not a use (the program may be moving one of them, the peer the other),
 * so an odd value is shown as 0 and nothing is judged. */
static int64_t ring_fill(const struct pv_ring *r)
{
        uint32_t used = ring_load_acquire(&r->hdr->prod) - ring_load_acquire(&r->hdr->cons);
        return used <= r->size ? used : 0;
}

static void pack_flow(msgpack_packer *pk, const char *key, const struct vbp_flow *f, int64_t fill)
{
        pvd_pack_str(pk, key);
        msgpack_pack_map(pk, 4);
        pvd_pack_kv_u64(pk, "bytes", f->bytes);
        pvd_pack_kv_u64(pk, "writes", f->xfers);
        pvd_pack_kv_u64(pk, "fill", fill > 0 ? (uint64_t)fill : 0);
        pvd_pack_kv_u64(pk, "peak", f->peak);
}

void vbpipe_stat(struct pvd_vlink *vl, msgpack_packer *pk)
{
        struct vbp_pipe *p = pipe_of(vl);
        struct vbp_end *e = p->cur;
        uint64_t now = uv_now(vl->pvd->loop);
        if (e)
                vbp_dir_fold(e);
        int64_t tx_fill = p->on ? ring_fill(&p->tx) : 0;
        int64_t rx_fill = p->on ? ring_fill(&p->rx) : 0;
        uint64_t sent = p->xirq_sent + p->tx.stats.xirq_sent + p->rx.stats.xirq_sent;
        uint64_t saved = p->xirq_suppressed + p->tx.stats.xirq_suppressed + p->rx.stats.xirq_suppressed;
        char reason[192] = "";
        if (p->wakeup_ms && p->wake_fd < 0)
                snprintf(reason, sizeof(reason), "%s is not writable here: wakeup= is accepted and ignored",
                         p->wake_path);

        msgpack_pack_map(pk, 21);
        pvd_pack_kv_str(pk, "pipe", p->name);
        pvd_pack_kv_str(pk, "flags", p->any ? "a" : "");
        pvd_pack_kv_u64(pk, "ring_size", p->size);
        pvd_pack_str(pk, "local");
        msgpack_pack_map(pk, 6);
        pvd_pack_kv_str(pk, "state", vbp_end_state_name(e));
        pvd_pack_kv_u64(pk, "end", e ? e->gen : 0);
        bool see = e && pvd_viewer_sees(vl->pvd, e->uid);
        pvd_pack_kv_u64(pk, "pid", see ? (uint64_t)e->pid : 0);
        pvd_pack_kv_str(pk, "program", see ? e->comm : "");
        pvd_pack_kv_u64(pk, "since_ms", e ? now - e->since_ms : 0);
        pvd_pack_kv_bool(pk, "queued_open", p->next != NULL);
        pvd_pack_str(pk, "peer");
        msgpack_pack_map(pk, 1);
        pvd_pack_kv_str(pk, "state", peer_state_name(p));
        pvd_pack_kv_u64(pk, "conversations", p->conversations);
        pvd_pack_kv_u64(pk, "refused_busy", p->refused_busy);
        pvd_pack_kv_u64(pk, "abandoned_opens", p->cancelled);
        pvd_pack_kv_u64(pk, "pairings_refused", p->pair_refused);
        pack_flow(pk, "to_peer", &p->out, tx_fill);
        pack_flow(pk, "from_peer", &p->in, rx_fill);
        pvd_pack_kv_u64(pk, "xirq_sent", sent);
        pvd_pack_kv_u64(pk, "xirq_suppressed", saved);
        /* Direct readers that read in a loop: spells in which their bytes
         * stayed in the ring for them, and spells that ended because the
         * reader stopped (its bytes then went to the socket). */
        pvd_pack_kv_u64(pk, "reader_lookouts", p->look_spells);
        pvd_pack_kv_u64(pk, "reader_stops", p->look_stops);
        pvd_pack_kv_u64(pk, "wakeup_ms", p->wakeup_ms);
        pvd_pack_kv_bool(pk, "wake_lock", p->wake_fd >= 0);
        pvd_pack_kv_str(pk, "wake_lock_path", p->wake_path);
        pvd_pack_kv_u64(pk, "wake_locks_taken", p->wake_count);
        /* What is left of the last hold (kept by the kernel, or only
         * counted here when there is no wake lock file). */
        pvd_pack_kv_u64(pk, "wake_lock_left_ms", p->wake_until_ms > now ? p->wake_until_ms - now : 0);
        pvd_pack_kv_str(pk, "wake_lock_note", reason);
}

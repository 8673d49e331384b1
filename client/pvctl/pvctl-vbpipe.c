/* pvctl stat vbpipe: per vbpipe of this VM, the state of both ends (closed,
 * waiting for the other, open, closing), the program holding this end,
 * bytes and writes each way, the fill of each ring now and at its peak,
 * xIRQs sent and suppressed, and wakeup= with its wake locks. */
#include <inttypes.h>
#include <string.h>

#include "pvctl.h"

static void print_flow(FILE *f, const char *dir, const char *peer, const msgpack_object *fl, uint64_t ring)
{
        char bytes[32], fill[32], peak[32], size[32];
        fprintf(f, "  %s %-6s %10s in %" PRIu64 " writes; ring %s / %s, peak %s\n", dir, peer,
                human_bytes(doc_u64(fl, "bytes"), bytes, sizeof(bytes)), doc_u64(fl, "writes"),
                human_bytes(doc_u64(fl, "fill"), fill, sizeof(fill)), human_bytes(ring, size, sizeof(size)),
                human_bytes(doc_u64(fl, "peak"), peak, sizeof(peak)));
}

int pvctl_stat_vbpipe(const msgpack_object *doc, const struct pvctl_opts *o, FILE *f)
{
        char vm[64];
        uint32_t n;
        const msgpack_object *vls = doc_array(doc, "vlinks", &n);
        fprintf(f, "vbpipe statistics of %s\n", doc_str(doc, "vm", vm, sizeof(vm)));
        if (!n) {
                fprintf(f, "  (no vlink of this VM carries vbpipe)\n");
                return 0;
        }
        fprintf(f, "%-12s %-6s %-6s %-36s %-10s %6s %5s\n", "PIPE", "PEER", "LINK", "THIS END", "PEER'S END", "CONVS",
                "BUSY");
        for (uint32_t i = 0; i < n; i++) {
                const msgpack_object *st = doc_get(&vls[i], "stat");
                const msgpack_object *loc = doc_get(st, "local"), *pe = doc_get(st, "peer");
                char pipe[64], peer[64], link[16], lstate[16], pstate[16], comm[32], end[96], flags[8];
                doc_str(loc, "state", lstate, sizeof(lstate));
                if (strcmp(lstate, "closed") == 0)
                        snprintf(end, sizeof(end), "closed");
                else
                        snprintf(end, sizeof(end), "%s: %s[%" PRIu64 "] %" PRIu64 ".%01" PRIu64 " s%s", lstate,
                                 doc_str(loc, "program", comm, sizeof(comm)), doc_u64(loc, "pid"),
                                 doc_u64(loc, "since_ms") / 1000, doc_u64(loc, "since_ms") % 1000 / 100,
                                 doc_u64(loc, "queued_open") ? " (+1 open)" : "");
                doc_str(&vls[i], "peer", peer, sizeof(peer));
                fprintf(f, "%-12s %-6s %-6s %-36s %-10s %6" PRIu64 " %5" PRIu64 "\n",
                        doc_str(st, "pipe", pipe, sizeof(pipe)), peer, doc_str(&vls[i], "state", link, sizeof(link)),
                        end, doc_str(pe, "state", pstate, sizeof(pstate)), doc_u64(st, "conversations"),
                        doc_u64(st, "refused_busy"));
                uint64_t ring = doc_u64(st, "ring_size");
                print_flow(f, "to  ", peer, doc_get(st, "to_peer"), ring);
                print_flow(f, "from", peer, doc_get(st, "from_peer"), ring);
                fprintf(f, "  xIRQs: %" PRIu64 " sent, %" PRIu64 " suppressed; flags: %s\n", doc_u64(st, "xirq_sent"),
                        doc_u64(st, "xirq_suppressed"), *doc_str(st, "flags", flags, sizeof(flags)) ? flags : "-");
                uint64_t wake = doc_u64(st, "wakeup_ms");
                if (!wake)
                        continue;
                char path[160], note[256];
                const msgpack_object *wl = doc_get(st, "wake_lock");
                if (wl && wl->type == MSGPACK_OBJECT_BOOLEAN && wl->via.boolean)
                        fprintf(f, "  wakeup=%" PRIu64 " ms: wake locks in %s, %" PRIu64 " taken, %" PRIu64
                                " ms left\n", wake, doc_str(st, "wake_lock_path", path, sizeof(path)),
                                doc_u64(st, "wake_locks_taken"), doc_u64(st, "wake_lock_left_ms"));
                else
                        fprintf(f, "  wakeup=%" PRIu64 " ms: %s\n", wake,
                                doc_str(st, "wake_lock_note", note, sizeof(note)));
        }
        (void)o;
        return 0;
}

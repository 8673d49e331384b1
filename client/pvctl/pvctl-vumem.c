/* pvctl stat vumem: per VUMEM node of this VM, its server program (server
 * VMs), sessions (master or standard), live buffers and bytes, the pdev in
 * use against vumem-pdev, and the requests served and failed. */
#include <inttypes.h>
#include <string.h>

#include "pvctl.h"

int pvctl_stat_vumem(const msgpack_object *doc, const struct pvctl_opts *o, FILE *f)
{
        char vm[64];
        uint32_t n;
        const msgpack_object *vls = doc_array(doc, "vlinks", &n);
        fprintf(f, "vumem statistics of %s\n", doc_str(doc, "vm", vm, sizeof(vm)));
        if (!n) {
                fprintf(f, "  (no vlink of this VM carries vumem)\n");
                return 0;
        }
        fprintf(f, "%-18s %-6s %-6s %-24s %-14s %7s %10s %23s %8s %6s\n", "NODE", "PEER", "STATE", "SERVER PROGRAM",
                "SESSIONS", "BUFFERS", "BYTES", "PDEV USED / vumem-pdev", "SERVED", "FAILED");
        for (uint32_t i = 0; i < n; i++) {
                const msgpack_object *st = doc_get(&vls[i], "stat");
                char node[64], peer[64], state[16], side[16], server[64], comm[32], sess[32], bytes[32], used[32],
                        size[32], pdev[64];
                uint32_t ns;
                const msgpack_object *ss = doc_array(st, "sessions", &ns);
                unsigned masters = 0;
                for (uint32_t k = 0; k < ns; k++) {
                        char kind[16];
                        masters += strcmp(doc_str(&ss[k], "kind", kind, sizeof(kind)), "master") == 0;
                }
                snprintf(sess, sizeof(sess), "%u (%u master)", ns, masters);
                doc_str(st, "side", side, sizeof(side));
                if (strcmp(side, "server") != 0) {
                        snprintf(server, sizeof(server), "- (client end)");
                } else {
                        const msgpack_object *sv = doc_get(st, "server");
                        const msgpack_object *run = doc_get(sv, "running");
                        if (run && run->type == MSGPACK_OBJECT_BOOLEAN && run->via.boolean)
                                snprintf(server, sizeof(server), "%s[%" PRIu64 "]",
                                         doc_str(sv, "comm", comm, sizeof(comm)), doc_u64(sv, "pid"));
                        else
                                snprintf(server, sizeof(server), "none");
                }
                snprintf(pdev, sizeof(pdev), "%s / %s", human_bytes(doc_u64(st, "pdev_used"), used, sizeof(used)),
                         human_bytes(doc_u64(st, "pdev_size"), size, sizeof(size)));
                fprintf(f, "%-18s %-6s %-6s %-24s %-14s %7" PRIu64 " %10s %23s %8" PRIu64 " %6" PRIu64 "\n",
                        doc_str(st, "node", node, sizeof(node)), doc_str(&vls[i], "peer", peer, sizeof(peer)),
                        doc_str(&vls[i], "state", state, sizeof(state)), server, sess, doc_u64(st, "buffers"),
                        human_bytes(doc_u64(st, "bytes"), bytes, sizeof(bytes)), pdev, doc_u64(st, "requests_served"),
                        doc_u64(st, "requests_failed"));
                for (uint32_t k = 0; k < ns; k++) {
                        char kind[16], svm[64], scomm[32], sbytes[32];
                        fprintf(f, "  session %-6" PRIu64 " %-8s %s[%" PRIu64 "] in %s: %" PRIu64 " buffers, %s\n",
                                doc_u64(&ss[k], "id"), doc_str(&ss[k], "kind", kind, sizeof(kind)),
                                doc_str(&ss[k], "comm", scomm, sizeof(scomm)), doc_u64(&ss[k], "pid"),
                                doc_str(&ss[k], "vm", svm, sizeof(svm)), doc_u64(&ss[k], "buffers"),
                                human_bytes(doc_u64(&ss[k], "bytes"), sbytes, sizeof(sbytes)));
                }
        }
        return 0;
}

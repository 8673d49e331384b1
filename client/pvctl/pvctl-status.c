/* pvctl status: the VM, its vlinks, device nodes and connected programs. */
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>

#include "pvctl.h"

/* pvctl runs in the VM whose pvd it asks, so the ids are this system's. */
const char *user_name(uint64_t uid, char *buf, size_t len)
{
        struct passwd *pw = uid <= UINT32_MAX ? getpwuid((uid_t)uid) : NULL;
        if (pw)
                snprintf(buf, len, "%s", pw->pw_name);
        else
                snprintf(buf, len, "%" PRIu64, uid);
        return buf;
}

const char *group_name(uint64_t gid, char *buf, size_t len)
{
        struct group *gr = gid <= UINT32_MAX ? getgrgid((gid_t)gid) : NULL;
        if (gr)
                snprintf(buf, len, "%s", gr->gr_name);
        else
                snprintf(buf, len, "%" PRIu64, gid);
        return buf;
}

static void join_strings(const msgpack_object *arr, char *buf, size_t len)
{
        buf[0] = 0;
        if (!arr || arr->type != MSGPACK_OBJECT_ARRAY)
                return;
        size_t used = 0;
        for (uint32_t i = 0; i < arr->via.array.size; i++) {
                const msgpack_object *s = &arr->via.array.ptr[i];
                if (s->type != MSGPACK_OBJECT_STR)
                        continue;
                int n = snprintf(buf + used, len - used, "%s%.*s", used ? "," : "", (int)s->via.str.size, s->via.str.ptr);
                if (n < 0 || (size_t)n >= len - used)
                        break;
                used += (size_t)n;
        }
}

int pvctl_status_print(const msgpack_object *doc, const struct pvctl_opts *o, FILE *f)
{
        char vm[64], ver[32], hv[16], dir[128];
        uint64_t up = doc_u64(doc, "uptime_ms");
        fprintf(f, "VM %s: pvd %s, pid %" PRIu64 ", up %" PRIu64 ".%01" PRIu64 " s, hypervisor %s, nodes in %s\n",
                doc_str(doc, "vm", vm, sizeof(vm)), doc_str(doc, "version", ver, sizeof(ver)), doc_u64(doc, "pid"),
                up / 1000, (up % 1000) / 100, doc_str(doc, "hv", hv, sizeof(hv)),
                doc_str(doc, "runtime_dir", dir, sizeof(dir)));
        /* The backend: its capabilities and its own facts (key=value). */
        char caps[128], facts[256] = "";
        join_strings(doc_get(doc, "hv_caps"), caps, sizeof(caps));
        const msgpack_object *hvi = doc_get(doc, "hv_info");
        for (uint32_t i = 0; hvi && hvi->type == MSGPACK_OBJECT_MAP && i < hvi->via.map.size; i++) {
                const msgpack_object_kv *kv = &hvi->via.map.ptr[i];
                size_t used = strlen(facts);
                if (kv->key.type != MSGPACK_OBJECT_STR)
                        continue;
                if (kv->val.type == MSGPACK_OBJECT_STR)
                        snprintf(facts + used, sizeof(facts) - used, "%s%.*s=%.*s", used ? ", " : "",
                                 (int)kv->key.via.str.size, kv->key.via.str.ptr, (int)kv->val.via.str.size,
                                 kv->val.via.str.ptr);
                else if (kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                        snprintf(facts + used, sizeof(facts) - used, "%s%.*s=%" PRIu64, used ? ", " : "",
                                 (int)kv->key.via.str.size, kv->key.via.str.ptr, kv->val.via.u64);
        }
        fprintf(f, "hypervisor %s: capabilities %s%s%s\n", hv, caps[0] ? caps : "none", facts[0] ? "; " : "", facts);
        if (!strstr(caps, "slice"))
                fprintf(f, "  (no per-program memory: a program of this VM can reach all of a vlink's memory its "
                           "device node gives)\n");

        uint32_t n;
        const msgpack_object *vls = doc_array(doc, "vlinks", &n);
        fprintf(f, "\n%-24s %-12s %-7s %-6s %-6s %10s  %s\n", "VLINK", "DRIVERS", "ROLE", "PEER", "STATE", "MEMORY",
                "INFO");
        if (!n)
                fprintf(f, "(none: this VM has no vlink in the platform)\n");
        for (uint32_t i = 0; i < n; i++) {
                char name[128], drivers[64], role[16], peer[64], state[16], mem[32], info[256];
                join_strings(doc_get(&vls[i], "drivers"), drivers, sizeof(drivers));
                fprintf(f, "%-24s %-12s %-7s %-6s %-6s %10s  %s\n", doc_str(&vls[i], "name", name, sizeof(name)),
                        drivers, doc_str(&vls[i], "role", role, sizeof(role)),
                        doc_str(&vls[i], "peer", peer, sizeof(peer)), doc_str(&vls[i], "state", state, sizeof(state)),
                        human_bytes(doc_u64(&vls[i], "memory"), mem, sizeof(mem)),
                        doc_str(&vls[i], "info", info, sizeof(info)));
        }

        const msgpack_object *nodes = doc_array(doc, "nodes", &n);
        fprintf(f, "\n%-24s %-8s %-24s %-5s %-10s %-10s %s\n", "DEVICE NODE", "DRIVER", "VLINK", "MODE", "OWNER",
                "GROUP", "PROGRAMS");
        for (uint32_t i = 0; i < n; i++) {
                char name[64], drv[16], vl[128], mode[8], owner[64], group[64];
                fprintf(f, "%-24s %-8s %-24s %-5s %-10s %-10s %" PRIu64 "\n",
                        doc_str(&nodes[i], "name", name, sizeof(name)), doc_str(&nodes[i], "driver", drv, sizeof(drv)),
                        doc_str(&nodes[i], "vlink", vl, sizeof(vl))[0] ? vl : "-",
                        doc_str(&nodes[i], "mode", mode, sizeof(mode)),
                        user_name(doc_u64(&nodes[i], "owner"), owner, sizeof(owner)),
                        group_name(doc_u64(&nodes[i], "group"), group, sizeof(group)),
                        doc_u64(&nodes[i], "connections"));
        }

        const msgpack_object *progs = doc_array(doc, "programs", &n);
        fprintf(f, "\n%-8s %-10s %-16s %s\n", "PID", "USER", "PROGRAM", "DEVICE NODE");
        if (!n)
                fprintf(f, "(no program connected)\n");
        for (uint32_t i = 0; i < n; i++) {
                char comm[64], node[64], user[64];
                fprintf(f, "%-8" PRIu64 " %-10s %-16s %s\n", doc_u64(&progs[i], "pid"),
                        user_name(doc_u64(&progs[i], "uid"), user, sizeof(user)),
                        doc_str(&progs[i], "comm", comm, sizeof(comm)), doc_str(&progs[i], "node", node, sizeof(node)));
        }
        return 0;
}

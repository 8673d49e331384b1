/* pvd's policy for one VM, from the properties of its node in /vms (the
 * loader in config.c calls this for each VM):
 *   pvd,control-group = "adm";      root and this group see every program
 *                                   in pvctl status and stat
 *   pvd,status = "public";          who may read status: "public" (anyone,
 *                                   other users' programs hidden) or
 *                                   "group" (root and pvd,control-group)
 *   pvd,limits = "connections=1024", "node-connections=512";
 *                                   what one user (uid) may hold in pvd
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libfdt.h>

#include "info.h"
#include "policy.h"

#define LIMIT_MAX 1000000u

static int string_prop(const void *fdt, int off, const char *prop, const char **out, char *err, size_t errlen)
{
        int len;
        const char *s = fdt_getprop(fdt, off, prop, &len);
        *out = NULL;
        if (!s) {
                if (len == -FDT_ERR_NOTFOUND)
                        return 0;
                snprintf(err, errlen, "%s", fdt_strerror(len));
                return -EINVAL;
        }
        if (len == 0 || s[len - 1] != '\0') {
                snprintf(err, errlen, "expected a NUL-terminated string");
                return -EINVAL;
        }
        *out = s;
        return 0;
}

static int control_group(const void *fdt, int off, struct pv_vm_policy *p, char *err, size_t errlen)
{
        const char *s;
        char q[96];
        int rc = string_prop(fdt, off, "pvd,control-group", &s, err, errlen);
        if (rc < 0 || !s)
                return rc;
        size_t len = strlen(s);
        bool ok = len > 0 && len < PV_NAME_MAX;
        for (size_t i = 0; ok && i < len; i++)
                ok = s[i] > ' ' && s[i] < 0x7f && s[i] != '/' && s[i] != ':';
        if (!ok) {
                snprintf(err, errlen, "\"%s\" is not a group name of 1 to %d characters",
                         pv_str_safe(s, len, q, sizeof(q)), PV_NAME_MAX - 1);
                return -EINVAL;
        }
        memcpy(p->control_group, s, len + 1);
        return 0;
}

static int status(const void *fdt, int off, struct pv_vm_policy *p, char *err, size_t errlen)
{
        const char *s;
        char q[96];
        int rc = string_prop(fdt, off, "pvd,status", &s, err, errlen);
        if (rc < 0 || !s)
                return rc;
        if (!strcmp(s, "public") || !strcmp(s, "group")) {
                p->status_group_only = !strcmp(s, "group");
                return 0;
        }
        snprintf(err, errlen, "\"%s\": expected \"public\" (anyone may read status) or \"group\" (root and "
                 "pvd,control-group only)", pv_str_safe(s, strlen(s), q, sizeof(q)));
        return -EINVAL;
}

static int limit(const char *field, const char *val, uint32_t *out, char *err, size_t errlen)
{
        char *end, q[96];
        errno = 0;
        unsigned long v = strtoul(val, &end, 10);
        if (!*val || *end || errno || v < 1 || v > LIMIT_MAX || val[0] == '-' || val[0] == '+') {
                snprintf(err, errlen, "\"%s\": expected a number from 1 to %u",
                         pv_str_safe(field, strlen(field), q, sizeof(q)), LIMIT_MAX);
                return -EINVAL;
        }
        *out = (uint32_t)v;
        return 0;
}

static int limits(const void *fdt, int off, struct pv_vm_policy *p, char *err, size_t errlen)
{
        int n = fdt_stringlist_count(fdt, off, "pvd,limits");
        if (n == -FDT_ERR_NOTFOUND)
                return 0;
        if (n < 0) {
                snprintf(err, errlen, "not a list of NUL-terminated strings");
                return -EINVAL;
        }
        for (int i = 0; i < n; i++) {
                const char *f = fdt_stringlist_get(fdt, off, "pvd,limits", i, NULL);
                char key[32], q[96];
                const char *eq = f ? strchr(f, '=') : NULL;
                size_t klen = eq ? (size_t)(eq - f) : 0;
                if (!eq || klen >= sizeof(key)) {
                        snprintf(err, errlen, "\"%s\": expected key=value (connections=N, node-connections=N)",
                                 f ? pv_str_safe(f, strlen(f), q, sizeof(q)) : "?");
                        return -EINVAL;
                }
                memcpy(key, f, klen);
                key[klen] = 0;
                uint32_t *dst = NULL;
                if (!strcmp(key, "connections"))
                        dst = &p->conns_per_user;
                else if (!strcmp(key, "node-connections"))
                        dst = &p->node_conns_per_user;
                if (!dst) {
                        snprintf(err, errlen, "unknown key \"%s\" (connections, node-connections)",
                                 pv_str_safe(key, klen, q, sizeof(q)));
                        return -EINVAL;
                }
                if (*dst) {
                        snprintf(err, errlen, "\"%s\" given twice", key);
                        return -EINVAL;
                }
                if (limit(f, eq + 1, dst, err, errlen) < 0)
                        return -EINVAL;
        }
        return 0;
}

int pv_vm_policy_load(const void *fdt, int off, struct pv_vm_policy *p, const char **prop, char *err, size_t errlen)
{
        memset(p, 0, sizeof(*p));
        if (control_group(fdt, off, p, err, errlen) < 0) {
                *prop = "pvd,control-group";
                return -EINVAL;
        }
        if (status(fdt, off, p, err, errlen) < 0) {
                *prop = "pvd,status";
                return -EINVAL;
        }
        if (limits(fdt, off, p, err, errlen) < 0) {
                *prop = "pvd,limits";
                return -EINVAL;
        }
        return 0;
}

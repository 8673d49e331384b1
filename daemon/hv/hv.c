/* The list of hypervisor backends and the capability names shared by pvd's
 * command line, its status and its environment (PVD_HV_CAPS_OFF). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "hv.h"

const struct hv_backend *const hv_backends[] = {
        &hv_emu,
        &hv_ivshmem,
        NULL,
};

const struct hv_backend *hv_backend_find(const char *name)
{
        for (unsigned i = 0; hv_backends[i]; i++)
                if (strcmp(hv_backends[i]->name, name) == 0)
                        return hv_backends[i];
        return NULL;
}

const char *hv_backend_names(char *buf, unsigned len)
{
        unsigned n = 0;
        buf[0] = 0;
        for (unsigned i = 0; hv_backends[i] && n < len; i++) {
                int k = snprintf(buf + n, len - n, "%s%s", i ? ", " : "", hv_backends[i]->name);
                if (k < 0)
                        break;
                n += (unsigned)k;
        }
        return buf;
}

static const struct {
        unsigned bit;
        const char *name;
} cap_names[] = {
        { HV_CAP_ONE_KERNEL, "one_kernel" },
        { HV_CAP_FOREIGN_MEM, "foreign_mem" },
        { HV_CAP_SLICE, "slice" },
};

const char *hv_cap_name(unsigned bit)
{
        for (unsigned i = 0; i < sizeof(cap_names) / sizeof(cap_names[0]); i++)
                if (cap_names[i].bit == bit)
                        return cap_names[i].name;
        return "?";
}

int hv_caps_parse(const char *s, unsigned *bits, const char **bad)
{
        static char word[32];
        *bits = 0;
        while (*s) {
                size_t n = strcspn(s, ", ");
                if (n) {
                        snprintf(word, sizeof(word), "%.*s", (int)n, s);
                        unsigned b = 0;
                        if (strcmp(word, "all") == 0)
                                b = HV_CAP_ALL;
                        for (unsigned i = 0; i < sizeof(cap_names) / sizeof(cap_names[0]) && !b; i++)
                                if (strcmp(word, cap_names[i].name) == 0)
                                        b = cap_names[i].bit;
                        if (!b) {
                                if (bad)
                                        *bad = word;
                                return -EINVAL;
                        }
                        *bits |= b;
                }
                s += n;
                s += strspn(s, ", ");
        }
        return 0;
}

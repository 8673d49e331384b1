/* The `info` property of a vdev node, and sizes: "vrpq-pmem=2M",
 * ";;;wakeup=250;name=vbpipe0". See config.h for the grammar. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "config.h"

static int info_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int info_err(char *err, size_t errlen, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
        return -EINVAL;
}

int pv_parse_size(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
        uint64_t v = 0;
        unsigned base = 10;
        const char *p = s;
        if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
                base = 16;
                p += 2;
        }
        const char *digits = p;
        for (;; p++) {
                unsigned d;
                if (*p >= '0' && *p <= '9')
                        d = (unsigned)(*p - '0');
                else if (base == 16 && isxdigit((unsigned char)*p))
                        d = (unsigned)(tolower((unsigned char)*p) - 'a' + 10);
                else
                        break;
                if (v > (UINT64_MAX - d) / base)
                        return -ERANGE;
                v = v * base + d;
        }
        if (p == digits)
                return -EINVAL;
        unsigned shift = 0;
        switch (*p) {
        case 'k':
        case 'K':
                shift = 10;
                p++;
                break;
        case 'm':
        case 'M':
                shift = 20;
                p++;
                break;
        case 'g':
        case 'G':
                shift = 30;
                p++;
                break;
        }
        if (*p)
                return -EINVAL;
        if (shift && v > (UINT64_MAX >> shift))
                return -ERANGE;
        v <<= shift;
        if (v < min || v > max)
                return -ERANGE;
        *out = v;
        return 0;
}

static uint64_t round_pow2(uint64_t v)
{
        uint64_t p = 1;
        while (p < v)
                p <<= 1;
        return p;
}

static uint64_t round_page(uint64_t v)
{
        return (v + 4095) & ~(uint64_t)4095;
}

static const char *human(uint64_t v, char *buf, size_t len)
{
        if (v >= (1ull << 30) && !(v & ((1ull << 30) - 1)))
                snprintf(buf, len, "%lluG", (unsigned long long)(v >> 30));
        else if (v >= (1ull << 20) && !(v & ((1ull << 20) - 1)))
                snprintf(buf, len, "%lluM", (unsigned long long)(v >> 20));
        else if (v >= 1024 && !(v & 1023))
                snprintf(buf, len, "%lluK", (unsigned long long)(v >> 10));
        else
                snprintf(buf, len, "%llu", (unsigned long long)v);
        return buf;
}

static int size_field(const char *key, const char *val, uint64_t min, uint64_t max, uint64_t *out, char *err,
                      size_t errlen)
{
        char a[32], b[32];
        int rc = pv_parse_size(val, min, max, out);
        if (rc == -EINVAL)
                return info_err(err, errlen, "%s=%s: not a size (a number with an optional K, M or G suffix)", key,
                                val);
        if (rc == -ERANGE)
                return info_err(err, errlen, "%s=%s: out of range (%s to %s)", key, val, human(min, a, sizeof(a)),
                                human(max, b, sizeof(b)));
        return 0;
}

static bool valid_name(const char *s)
{
        if (!*s || strlen(s) >= PV_NAME_MAX)
                return false;
        for (; *s; s++)
                if (!isalnum((unsigned char)*s) && *s != '_' && *s != '.' && *s != '-')
                        return false;
        return true;
}

static char *trim(char *s)
{
        while (*s == ' ' || *s == '\t' || *s == '\n')
                s++;
        size_t n = strlen(s);
        while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n'))
                s[--n] = 0;
        return s;
}

static int vbpipe_positional(struct pv_info *info, unsigned pos, const char *f, char *err, size_t errlen)
{
        if (!*f)
                return 0; /* empty: keep the default */
        switch (pos) {
        case 0:
                for (const char *c = f; *c; c++) {
                        if (*c == 'a')
                                info->vbpipe_any = true;
                        else
                                return info_err(err, errlen, "unknown vbpipe flag '%c' in \"%s\" (known: a)", *c, f);
                }
                return 0;
        case 1: {
                uint64_t v;
                int rc = size_field("size", f, PV_VBPIPE_SIZE_MIN, PV_VBPIPE_SIZE_MAX, &v, err, errlen);
                if (rc < 0)
                        return rc;
                info->vbpipe_size = round_pow2(v);
                return 0;
        }
        case 2: {
                uint64_t v;
                if (pv_parse_size(f, 0, 255, &v) < 0 || !isdigit((unsigned char)f[strlen(f) - 1]))
                        return info_err(err, errlen, "minor \"%s\": not a number from 0 to 255", f);
                info->vbpipe_minor = (int)v;
                return 0;
        }
        }
        return info_err(err, errlen, "unexpected field \"%s\" (a vbpipe info has at most 3 positional fields: "
                        "flags;size;minor, then key=value fields)", f);
}

static int key_value(struct pv_info *info, bool vbpipe, char *f, unsigned *seen, char *err, size_t errlen)
{
        char *eq = strchr(f, '=');
        *eq = 0;
        char *key = trim(f), *val = trim(eq + 1);
        static const char *const keys[] = { "vrpq-reqs", "vrpq-pmem", "vumem-pdev", "wakeup", "name" };
        unsigned k;
        for (k = 0; k < 5; k++)
                if (strcmp(key, keys[k]) == 0)
                        break;
        if (k == 5 || (vbpipe && k < 3) || (!vbpipe && k >= 3))
                return info_err(err, errlen, "unknown key \"%s\" (%s)", key,
                                vbpipe ? "a vbpipe knows wakeup= and name=" : "known: vrpq-reqs, vrpq-pmem, vumem-pdev");
        if (*seen & (1u << k))
                return info_err(err, errlen, "%s given twice", key);
        *seen |= 1u << k;
        uint64_t v;
        int rc;
        switch (k) {
        case 0:
                rc = size_field(key, val, PV_VRPQ_REQS_MIN, PV_VRPQ_REQS_MAX, &v, err, errlen);
                info->vrpq_reqs = (uint32_t)round_pow2(v);
                return rc;
        case 1:
                rc = size_field(key, val, PV_VRPQ_PMEM_MIN, PV_VRPQ_PMEM_MAX, &v, err, errlen);
                info->vrpq_pmem = round_page(v);
                return rc;
        case 2:
                rc = size_field(key, val, PV_VUMEM_PDEV_MIN, PV_VUMEM_PDEV_MAX, &v, err, errlen);
                info->vumem_pdev = round_page(v);
                info->has_vumem = rc == 0;
                return rc;
        case 3:
                if (pv_parse_size(val, 0, PV_WAKEUP_MS_MAX, &v) < 0 || !isdigit((unsigned char)val[strlen(val) - 1]))
                        return info_err(err, errlen, "wakeup=%s: not a number of milliseconds from 0 to %u", val,
                                        PV_WAKEUP_MS_MAX);
                info->wakeup_ms = (uint32_t)v;
                return 0;
        default:
                if (!valid_name(val))
                        return info_err(err, errlen, "name=%s: not a device name (letters, digits, '_', '.', '-'; "
                                        "at most %d)", val, PV_NAME_MAX - 1);
                snprintf(info->name, sizeof(info->name), "%s", val);
                return 0;
        }
}

int pv_info_parse(const char *const *strs, unsigned n, bool vbpipe, struct pv_info *out, char *err, size_t errlen)
{
        memset(out, 0, sizeof(*out));
        out->vbpipe_minor = -1;
        out->vbpipe_size = PV_VBPIPE_SIZE_DEF;
        size_t used = 0;
        for (unsigned i = 0; i < n; i++) {
                int w = snprintf(out->raw + used, sizeof(out->raw) - used, "%s%s", i ? "; " : "", strs[i]);
                if (w < 0 || (size_t)w >= sizeof(out->raw) - used)
                        break;
                used += (size_t)w;
        }

        unsigned pos = 0, seen = 0;
        bool keyed = false;
        for (unsigned i = 0; i < n; i++) {
                char buf[1024];
                if (strlen(strs[i]) >= sizeof(buf))
                        return info_err(err, errlen, "info string longer than %zu bytes", sizeof(buf) - 1);
                snprintf(buf, sizeof(buf), "%s", strs[i]);
                char *p = buf;
                /* strsep keeps empty fields: they count as positions. */
                for (char *f; (f = strsep(&p, ";,")) != NULL;) {
                        f = trim(f);
                        if (strchr(f, '=')) {
                                keyed = true;
                                int rc = key_value(out, vbpipe, f, &seen, err, errlen);
                                if (rc < 0)
                                        return rc;
                        } else if (vbpipe && !keyed) {
                                int rc = vbpipe_positional(out, pos++, f, err, errlen);
                                if (rc < 0)
                                        return rc;
                        } else if (*f) {
                                return info_err(err, errlen, "field \"%s\" is not key=value", f);
                        }
                }
        }
        if (!vbpipe) {
                bool reqs = seen & 1u, pmem = seen & 2u;
                if (reqs != pmem)
                        return info_err(err, errlen, "%s given without %s (VRPQ needs both)",
                                        reqs ? "vrpq-reqs" : "vrpq-pmem", reqs ? "vrpq-pmem" : "vrpq-reqs");
                out->has_vrpq = reqs && pmem;
        }
        return 0;
}

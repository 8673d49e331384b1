/* The values of vdev `info` properties: sizes ("128K", "0x1000") and the
 * field lists of VRPQ/VUMEM ends ("vrpq-reqs=128K, vrpq-pmem=2M") and of
 * vbpipe ends (";;;wakeup=250;name=vbpipe0"). See config.h. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "info.h"

#define VBPIPE_POSITIONAL_MAX 3 /* flags;size;minor */
#define VBPIPE_MINOR_MAX      255u
#define PAGE_SIZE_CFG         4096u

static int digit_value(char c, unsigned base)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (base == 16 && c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (base == 16 && c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

int pv_parse_size(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
        if (!s || !out)
                return -EINVAL;
        unsigned base = 10;
        const char *p = s;
        if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
                base = 16;
                p += 2;
        }
        const char *digits = p;
        uint64_t v = 0;
        bool overflow = false;
        int d;
        /* Scan to the end even after an overflow, so that garbage after a
         * long number is still reported as garbage. */
        for (; (d = digit_value(*p, base)) >= 0; p++) {
                if (v > (UINT64_MAX - (unsigned)d) / base)
                        overflow = true;
                else
                        v = v * base + (unsigned)d;
        }
        if (p == digits)
                return -EINVAL;
        unsigned shift = 0;
        switch (*p) {
        case 'k': case 'K': shift = 10; p++; break;
        case 'm': case 'M': shift = 20; p++; break;
        case 'g': case 'G': shift = 30; p++; break;
        default: break;
        }
        if (*p != '\0')
                return -EINVAL;
        if (overflow || v > (UINT64_MAX >> shift))
                return -ERANGE;
        v <<= shift;
        if (v < min || v > max)
                return -ERANGE;
        *out = v;
        return 0;
}

/* Decimal only: minors and milliseconds are not sizes. */
static int parse_dec(const char *s, uint64_t max, uint64_t *out)
{
        uint64_t v = 0;
        const char *p = s;
        for (; *p >= '0' && *p <= '9'; p++) {
                v = v * 10 + (uint64_t)(*p - '0');
                if (v > max)
                        return -ERANGE;
        }
        if (p == s || *p != '\0')
                return -EINVAL;
        *out = v;
        return 0;
}

const char *pv_size_str(uint64_t v, char *buf, size_t len)
{
        static const char units[] = "GMK";
        for (unsigned i = 0; i < 3; i++) {
                unsigned shift = 30 - 10 * i;
                if (v != 0 && (v & ((1ull << shift) - 1)) == 0) {
                        snprintf(buf, len, "%llu%c", (unsigned long long)(v >> shift), units[i]);
                        return buf;
                }
        }
        snprintf(buf, len, "%llu", (unsigned long long)v);
        return buf;
}

const char *pv_str_safe(const char *s, size_t slen, char *buf, size_t len)
{
        static const char hex[] = "0123456789abcdef";
        size_t o = 0;
        if (len == 0)
                return "";
        for (size_t i = 0; i < slen && s[i] != '\0'; i++) {
                unsigned char c = (unsigned char)s[i];
                size_t need = (c >= 0x20 && c < 0x7f) ? 1 : 4;
                if (o + need + 4 > len) { /* room for "..." and the NUL */
                        memcpy(buf + o, "...", 3);
                        o += 3;
                        break;
                }
                if (need == 1) {
                        buf[o++] = (char)c;
                } else {
                        buf[o++] = '\\';
                        buf[o++] = 'x';
                        buf[o++] = hex[c >> 4];
                        buf[o++] = hex[c & 15];
                }
        }
        buf[o] = '\0';
        return buf;
}

bool pv_name_valid(const char *s, size_t len)
{
        if (len == 0 || len >= PV_NAME_MAX)
                return false;
        for (size_t i = 0; i < len; i++) {
                char c = s[i];
                bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                          (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
                if (!ok)
                        return false;
        }
        return true;
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
        return (v + PAGE_SIZE_CFG - 1) & ~(uint64_t)(PAGE_SIZE_CFG - 1);
}

struct parse {
        bool vbpipe;
        bool keyed;         /* a key=value field was seen */
        unsigned npos;      /* positional fields seen */
        unsigned given;     /* PV_INFO_GAVE_* */
        struct pv_info info;
        char *err;
        size_t errlen;
};

__attribute__((format(printf, 2, 3)))
static int fail(struct parse *ps, const char *fmt, ...)
{
        if (ps->errlen > 0) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(ps->err, ps->errlen, fmt, ap);
                va_end(ap);
        }
        return -EINVAL;
}

/* A size field checked against [min, max], with a message that says which
 * of "garbage", "too large" and "too small" it is. */
static int size_field(struct parse *ps, const char *field, const char *val, uint64_t min,
                      uint64_t max, uint64_t *out)
{
        char q[96], lim[32];
        uint64_t v;
        int rc = pv_parse_size(val, 0, UINT64_MAX, &v);
        pv_str_safe(field, strlen(field), q, sizeof(q));
        if (rc == -EINVAL)
                return fail(ps, "\"%s\": not a size (digits or 0x hex, optional K, M or G suffix)", q);
        if (rc < 0 || v > max)
                return fail(ps, "\"%s\": too large (max %s)", q, pv_size_str(max, lim, sizeof(lim)));
        if (v < min)
                return fail(ps, "\"%s\": too small (min %s)", q, pv_size_str(min, lim, sizeof(lim)));
        *out = v;
        return 0;
}

static int once(struct parse *ps, const char *field, unsigned bit)
{
        char q[96];
        if (ps->given & bit)
                return fail(ps, "\"%s\": given twice", pv_str_safe(field, strlen(field), q, sizeof(q)));
        ps->given |= bit;
        return 0;
}

/* flags;size;minor of the vbpipe form. */
static int vbpipe_positional(struct parse *ps, const char *f)
{
        char q[96], flag[8];
        uint64_t v;
        int rc;
        if (ps->npos >= VBPIPE_POSITIONAL_MAX)
                return fail(ps, "more than %d positional fields (flags;size;minor) before key=value",
                            VBPIPE_POSITIONAL_MAX);
        unsigned pos = ps->npos++;
        if (f[0] == '\0')
                return 0;
        pv_str_safe(f, strlen(f), q, sizeof(q));
        switch (pos) {
        case 0:
                ps->given |= PV_INFO_GAVE_FLAGS;
                for (const char *p = f; *p; p++) {
                        if (*p == 'a')
                                ps->info.vbpipe_any = true;
                        else
                                return fail(ps, "\"%s\": unknown vbpipe flag '%s' (known: a)", q,
                                            pv_str_safe(p, 1, flag, sizeof(flag)));
                }
                return 0;
        case 1:
                rc = size_field(ps, f, f, PV_VBPIPE_SIZE_MIN, PV_VBPIPE_SIZE_MAX, &v);
                if (rc < 0)
                        return rc;
                ps->given |= PV_INFO_GAVE_SIZE;
                ps->info.vbpipe_size = round_pow2(v);
                return 0;
        default:
                if (parse_dec(f, VBPIPE_MINOR_MAX, &v) < 0)
                        return fail(ps, "\"%s\": not a vbpipe minor (0 to %u)", q, VBPIPE_MINOR_MAX);
                ps->given |= PV_INFO_GAVE_MINOR;
                ps->info.vbpipe_minor = (int)v;
                return 0;
        }
}

/* hv-heap=SIZE, a key of every vlink: each side's grantable memory on
 * backends that carve grants from the vlink's memory. */
static int hv_heap_key(struct parse *ps, const char *field, const char *val)
{
        uint64_t v;
        int rc;
        if ((rc = once(ps, field, PV_INFO_GAVE_HV_HEAP)) < 0 ||
            (rc = size_field(ps, field, val, 0, PV_HV_HEAP_MAX, &v)) < 0)
                return rc;
        ps->info.hv_heap = round_page(v);
        return 0;
}

static int vbpipe_key(struct parse *ps, const char *field, const char *key, const char *val)
{
        char q[96], k[72];
        uint64_t v;
        int rc;
        pv_str_safe(field, strlen(field), q, sizeof(q));
        if (strcmp(key, "wakeup") == 0) {
                if ((rc = once(ps, field, PV_INFO_GAVE_WAKEUP)) < 0)
                        return rc;
                rc = parse_dec(val, PV_WAKEUP_MS_MAX, &v);
                if (rc == -ERANGE)
                        return fail(ps, "\"%s\": too large (max %u ms)", q, PV_WAKEUP_MS_MAX);
                if (rc < 0)
                        return fail(ps, "\"%s\": not a number of milliseconds", q);
                ps->info.wakeup_ms = (uint32_t)v;
                return 0;
        }
        if (strcmp(key, "name") == 0) {
                if ((rc = once(ps, field, PV_INFO_GAVE_NAME)) < 0)
                        return rc;
                if (!pv_name_valid(val, strlen(val)))
                        return fail(ps, "\"%s\": a name is 1 to %d characters of [A-Za-z0-9_.-]", q,
                                    PV_NAME_MAX - 1);
                snprintf(ps->info.name, sizeof(ps->info.name), "%s", val);
                return 0;
        }
        if (strcmp(key, "hv-heap") == 0)
                return hv_heap_key(ps, field, val);
        return fail(ps, "unknown key \"%s\" (known for vbpipe: wakeup, name, hv-heap)",
                    pv_str_safe(key, strlen(key), k, sizeof(k)));
}

static int vdev_key(struct parse *ps, const char *field, const char *key, const char *val)
{
        char k[72];
        uint64_t v;
        int rc;
        if (strcmp(key, "vrpq-reqs") == 0) {
                if ((rc = once(ps, field, PV_INFO_GAVE_VRPQ_REQS)) < 0 ||
                    (rc = size_field(ps, field, val, PV_VRPQ_REQS_MIN, PV_VRPQ_REQS_MAX, &v)) < 0)
                        return rc;
                ps->info.vrpq_reqs = (uint32_t)round_pow2(v);
                return 0;
        }
        if (strcmp(key, "vrpq-pmem") == 0) {
                if ((rc = once(ps, field, PV_INFO_GAVE_VRPQ_PMEM)) < 0 ||
                    (rc = size_field(ps, field, val, PV_VRPQ_PMEM_MIN, PV_VRPQ_PMEM_MAX, &v)) < 0)
                        return rc;
                ps->info.vrpq_pmem = round_page(v);
                return 0;
        }
        if (strcmp(key, "vumem-pdev") == 0) {
                if ((rc = once(ps, field, PV_INFO_GAVE_VUMEM_PDEV)) < 0 ||
                    (rc = size_field(ps, field, val, PV_VUMEM_PDEV_MIN, PV_VUMEM_PDEV_MAX, &v)) < 0)
                        return rc;
                ps->info.vumem_pdev = round_page(v);
                return 0;
        }
        if (strcmp(key, "hv-heap") == 0)
                return hv_heap_key(ps, field, val);
        return fail(ps, "unknown key \"%s\" (known: vrpq-reqs, vrpq-pmem, vumem-pdev, hv-heap)",
                    pv_str_safe(key, strlen(key), k, sizeof(k)));
}

static bool is_blank(char c)
{
        return c == ' ' || c == '\t';
}

/* Trims [*s, *s + *len) of spaces and tabs. */
static void trim(const char **s, size_t *len)
{
        while (*len > 0 && is_blank(**s)) {
                (*s)++;
                (*len)--;
        }
        while (*len > 0 && is_blank((*s)[*len - 1]))
                (*len)--;
}

static int parse_field(struct parse *ps, const char *s, size_t len)
{
        char f[PV_INFO_RAW_MAX], q[96];
        if (len >= sizeof(f))
                return fail(ps, "\"%s\": field longer than %zu characters",
                            pv_str_safe(s, len, q, sizeof(q)), sizeof(f) - 1);
        memcpy(f, s, len);
        f[len] = '\0';
        char *eq = strchr(f, '=');
        if (!eq) {
                /* Empty fields only matter as positions of the vbpipe form. */
                if (ps->vbpipe && !ps->keyed)
                        return vbpipe_positional(ps, f);
                if (len == 0)
                        return 0;
                pv_str_safe(f, len, q, sizeof(q));
                if (ps->vbpipe)
                        return fail(ps, "\"%s\": positional field after key=value fields", q);
                return fail(ps, "\"%s\": not key=value", q);
        }
        ps->keyed = true;
        *eq = '\0';
        const char *key = f, *val = eq + 1;
        size_t klen = strlen(key), vlen = strlen(val);
        trim(&key, &klen);
        trim(&val, &vlen);
        f[key - f + (ptrdiff_t)klen] = '\0';
        f[val - f + (ptrdiff_t)vlen] = '\0';
        if (klen == 0)
                return fail(ps, "\"=%s\": key missing before '='", pv_str_safe(val, vlen, q, sizeof(q)));
        char field[PV_INFO_RAW_MAX + 1];
        snprintf(field, sizeof(field), "%s=%s", key, val);
        return ps->vbpipe ? vbpipe_key(ps, field, key, val) : vdev_key(ps, field, key, val);
}

/* One string of the list: fields separated by ';' or ','. A trailing
 * separator ends the last field rather than opening an empty one, so that
 * ";;;" is the three empty positional fields of the seed's vbpipe form and
 * "vrpq-reqs=128K, " followed by another string is not an extra field. */
static int parse_string(struct parse *ps, const char *s)
{
        const char *p = s;
        for (;;) {
                size_t len = strcspn(p, ";,");
                const char *f = p;
                bool last = p[len] == '\0';
                trim(&f, &len);
                if (last && len == 0)
                        return 0;
                int rc = parse_field(ps, f, len);
                if (rc < 0 || last)
                        return rc;
                p += strcspn(p, ";,") + 1;
        }
}

static void join_raw(char *raw, size_t size, const char *const *strs, unsigned n)
{
        size_t o = 0;
        raw[0] = '\0';
        for (unsigned i = 0; i < n && o + 1 < size; i++) {
                int w = snprintf(raw + o, size - o, "%s%s", i ? "; " : "", strs[i]);
                if (w < 0)
                        break;
                o += (size_t)w;
        }
        if (o >= size && size > 4)
                memcpy(raw + size - 4, "...", 4);
}

int pv_info_parse_given(const char *const *strs, unsigned n, bool vbpipe, struct pv_info *out,
                        unsigned *given, char *err, size_t errlen)
{
        struct parse ps = { .vbpipe = vbpipe, .err = err, .errlen = errlen };
        if (errlen > 0)
                err[0] = '\0';
        ps.info.vbpipe_minor = -1;
        if (vbpipe)
                ps.info.vbpipe_size = PV_VBPIPE_SIZE_DEF;
        for (unsigned i = 0; i < n; i++) {
                if (!strs[i])
                        return fail(&ps, "string %u of the list is missing", i);
                int rc = parse_string(&ps, strs[i]);
                if (rc < 0)
                        return rc;
        }
        bool reqs = ps.given & PV_INFO_GAVE_VRPQ_REQS, pmem = ps.given & PV_INFO_GAVE_VRPQ_PMEM;
        if (reqs != pmem)
                return fail(&ps, "%s given without %s (VRPQ needs both)",
                            reqs ? "vrpq-reqs" : "vrpq-pmem", reqs ? "vrpq-pmem" : "vrpq-reqs");
        ps.info.has_vrpq = reqs && pmem;
        ps.info.has_vumem = ps.given & PV_INFO_GAVE_VUMEM_PDEV;
        join_raw(ps.info.raw, sizeof(ps.info.raw), strs, n);
        *out = ps.info;
        if (given)
                *given = ps.given;
        return 0;
}

int pv_info_parse(const char *const *strs, unsigned n, bool vbpipe, struct pv_info *out,
                  char *err, size_t errlen)
{
        return pv_info_parse_given(strs, n, vbpipe, out, NULL, err, errlen);
}

/* Reading and printing the msgpack documents pvd sends to pvctl. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "pvctl.h"

static bool key_is(const msgpack_object *k, const char *key)
{
        size_t n = strlen(key);
        return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n && memcmp(k->via.str.ptr, key, n) == 0;
}

const msgpack_object *doc_get(const msgpack_object *map, const char *key)
{
        if (!map || map->type != MSGPACK_OBJECT_MAP)
                return NULL;
        for (uint32_t i = 0; i < map->via.map.size; i++)
                if (key_is(&map->via.map.ptr[i].key, key))
                        return &map->via.map.ptr[i].val;
        return NULL;
}

/* The length of the UTF-8 sequence at p (at most n bytes), or 0 when it is
 * not one: overlong forms, surrogates and code points above U+10FFFF are
 * not (RFC 3629). */
static size_t utf8_len(const unsigned char *p, size_t n)
{
        unsigned char c = p[0];
        size_t len;
        uint32_t cp;
        if (c < 0x80)
                return 1;
        if (c >= 0xc2 && c <= 0xdf) {
                len = 2;
                cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
                len = 3;
                cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
                len = 4;
                cp = c & 0x07;
        } else {
                return 0;
        }
        if (len > n)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((p[i] & 0xc0) != 0x80)
                        return 0;
                cp = cp << 6 | (p[i] & 0x3f);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
                return 0;
        return len;
}

/* Strings come from programs (a comm is whatever bytes a program named
 * itself): for a terminal, control characters and bytes that are not UTF-8
 * become '?', so that a name cannot move the cursor or garble the table. */
const char *doc_str(const msgpack_object *map, const char *key, char *buf, size_t len)
{
        const msgpack_object *v = doc_get(map, key);
        size_t o = 0;
        if (v && v->type == MSGPACK_OBJECT_STR) {
                const unsigned char *p = (const unsigned char *)v->via.str.ptr;
                size_t n = v->via.str.size;
                for (size_t i = 0; i < n && o + 1 < len;) {
                        size_t l = utf8_len(p + i, n - i);
                        if (l == 0 || (l == 1 && (p[i] < 0x20 || p[i] == 0x7f))) {
                                buf[o++] = '?';
                                i++;
                        } else if (o + l < len) {
                                memcpy(buf + o, p + i, l);
                                o += l;
                                i += l;
                        } else {
                                break;
                        }
                }
        }
        buf[o] = 0;
        return buf;
}

uint64_t doc_u64(const msgpack_object *map, const char *key)
{
        const msgpack_object *v = doc_get(map, key);
        if (v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                return v->via.u64;
        return 0;
}

int64_t doc_i64(const msgpack_object *map, const char *key)
{
        const msgpack_object *v = doc_get(map, key);
        if (v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                return (int64_t)v->via.u64;
        if (v && v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
                return v->via.i64;
        return 0;
}

const msgpack_object *doc_array(const msgpack_object *map, const char *key, uint32_t *n)
{
        const msgpack_object *v = doc_get(map, key);
        if (!v || v->type != MSGPACK_OBJECT_ARRAY) {
                *n = 0;
                return NULL;
        }
        *n = v->via.array.size;
        return v->via.array.ptr;
}

const char *human_bytes(uint64_t n, char *buf, size_t len)
{
        static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
        double v = (double)n;
        unsigned u = 0;
        while (v >= 1024 && u < 4) {
                v /= 1024;
                u++;
        }
        if (u == 0)
                snprintf(buf, len, "%" PRIu64 " B", n);
        else
                snprintf(buf, len, "%.1f %s", v, units[u]);
        return buf;
}

/* A JSON string from any bytes: UTF-8 passes, control characters are
 * escaped, and each byte that is not part of valid UTF-8 becomes U+FFFD, so
 * that every JSON parser accepts the document whatever a program's name. */
static void json_string(FILE *f, const char *s, size_t n)
{
        const unsigned char *p = (const unsigned char *)s;
        fputc('"', f);
        for (size_t i = 0; i < n;) {
                unsigned char c = p[i];
                size_t l = utf8_len(p + i, n - i);
                if (l == 0) {
                        fputs("\\ufffd", f);
                        i++;
                        continue;
                }
                if (l > 1) {
                        fwrite(p + i, 1, l, f);
                        i += l;
                        continue;
                }
                i++;
                switch (c) {
                case '"':
                        fputs("\\\"", f);
                        break;
                case '\\':
                        fputs("\\\\", f);
                        break;
                case '\n':
                        fputs("\\n", f);
                        break;
                case '\t':
                        fputs("\\t", f);
                        break;
                default:
                        if (c < 0x20 || c == 0x7f)
                                fprintf(f, "\\u%04x", c);
                        else
                                fputc(c, f);
                }
        }
        fputc('"', f);
}

/* Pretty JSON indents by depth; depth < 0 is compact (one line). */
static void json_indent(FILE *f, int n)
{
        if (n < 0)
                return;
        fputc('\n', f);
        for (int i = 0; i < n; i++)
                fputs("  ", f);
}

static void json_value(FILE *f, const msgpack_object *o, int depth)
{
        switch (o->type) {
        case MSGPACK_OBJECT_NIL:
                fputs("null", f);
                break;
        case MSGPACK_OBJECT_BOOLEAN:
                fputs(o->via.boolean ? "true" : "false", f);
                break;
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
                fprintf(f, "%" PRIu64, o->via.u64);
                break;
        case MSGPACK_OBJECT_NEGATIVE_INTEGER:
                fprintf(f, "%" PRId64, o->via.i64);
                break;
        case MSGPACK_OBJECT_FLOAT32:
        case MSGPACK_OBJECT_FLOAT64:
                fprintf(f, "%.6g", o->via.f64);
                break;
        case MSGPACK_OBJECT_STR:
                json_string(f, o->via.str.ptr, o->via.str.size);
                break;
        case MSGPACK_OBJECT_BIN:
                json_string(f, o->via.bin.ptr, o->via.bin.size);
                break;
        case MSGPACK_OBJECT_ARRAY:
                if (!o->via.array.size) {
                        fputs("[]", f);
                        break;
                }
                fputc('[', f);
                for (uint32_t i = 0; i < o->via.array.size; i++) {
                        json_indent(f, depth < 0 ? depth : depth + 1);
                        json_value(f, &o->via.array.ptr[i], depth < 0 ? depth : depth + 1);
                        if (i + 1 < o->via.array.size)
                                fputc(',', f);
                }
                json_indent(f, depth);
                fputc(']', f);
                break;
        case MSGPACK_OBJECT_MAP:
                if (!o->via.map.size) {
                        fputs("{}", f);
                        break;
                }
                fputc('{', f);
                for (uint32_t i = 0; i < o->via.map.size; i++) {
                        const msgpack_object *k = &o->via.map.ptr[i].key;
                        json_indent(f, depth < 0 ? depth : depth + 1);
                        if (k->type == MSGPACK_OBJECT_STR)
                                json_string(f, k->via.str.ptr, k->via.str.size);
                        else
                                fputs("\"?\"", f);
                        fputs(depth < 0 ? ":" : ": ", f);
                        json_value(f, &o->via.map.ptr[i].val, depth < 0 ? depth : depth + 1);
                        if (i + 1 < o->via.map.size)
                                fputc(',', f);
                }
                json_indent(f, depth);
                fputc('}', f);
                break;
        default:
                fputs("null", f);
        }
}

void doc_print_json(FILE *f, const msgpack_object *o, bool compact)
{
        json_value(f, o, compact ? -1 : 0);
        fputc('\n', f);
}

static bool is_scalar(const msgpack_object *o)
{
        return o->type != MSGPACK_OBJECT_ARRAY && o->type != MSGPACK_OBJECT_MAP;
}

void doc_print_tree(FILE *f, const msgpack_object *o, int indent)
{
        if (o->type == MSGPACK_OBJECT_MAP) {
                for (uint32_t i = 0; i < o->via.map.size; i++) {
                        const msgpack_object *k = &o->via.map.ptr[i].key;
                        const msgpack_object *v = &o->via.map.ptr[i].val;
                        fprintf(f, "%*s%.*s:", indent * 2, "", k->type == MSGPACK_OBJECT_STR ? (int)k->via.str.size : 1,
                                k->type == MSGPACK_OBJECT_STR ? k->via.str.ptr : "?");
                        if (is_scalar(v)) {
                                fputc(' ', f);
                                json_value(f, v, 0);
                                fputc('\n', f);
                        } else {
                                fputc('\n', f);
                                doc_print_tree(f, v, indent + 1);
                        }
                }
        } else if (o->type == MSGPACK_OBJECT_ARRAY) {
                for (uint32_t i = 0; i < o->via.array.size; i++) {
                        fprintf(f, "%*s- [%u]\n", indent * 2, "", i);
                        doc_print_tree(f, &o->via.array.ptr[i], indent + 1);
                }
        } else {
                fprintf(f, "%*s", indent * 2, "");
                json_value(f, o, 0);
                fputc('\n', f);
        }
}

int pvctl_stat_generic(const msgpack_object *doc, const struct pvctl_opts *o, FILE *f)
{
        char vm[64], drv[32];
        uint32_t n;
        const msgpack_object *vls = doc_array(doc, "vlinks", &n);
        fprintf(f, "%s statistics of %s\n", doc_str(doc, "driver", drv, sizeof(drv)), doc_str(doc, "vm", vm, sizeof(vm)));
        if (!n)
                fprintf(f, "  (no vlink of this VM carries %s)\n", drv);
        for (uint32_t i = 0; i < n; i++) {
                char name[128], peer[64], role[16], state[16];
                fprintf(f, "vlink %s (%s of %s, %s)\n", doc_str(&vls[i], "name", name, sizeof(name)),
                        doc_str(&vls[i], "role", role, sizeof(role)), doc_str(&vls[i], "peer", peer, sizeof(peer)),
                        doc_str(&vls[i], "state", state, sizeof(state)));
                const msgpack_object *st = doc_get(&vls[i], "stat");
                if (st)
                        doc_print_tree(f, st, 1);
        }
        return 0;
}

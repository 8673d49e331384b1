/* Unit tests of the control-message codec (proto/pv-msg.c): wire format,
 * round trips at the boundaries, setters and getters, and one handcrafted
 * input per error class of the hostile decoder. main() also runs the fuzz
 * loop (test-msg-fuzz.c) and the transport tests (test-msg-net.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>
#include <msgpack.h>

#include "test-msg.h"

bool key_known(unsigned k)
{
        return k < PV_K_UINT_END || (k >= PV_K_BIN_FIRST && k < PV_K_COUNT_ALL);
}

bool bins_in_buf(const struct pv_msg *m, const void *buf, size_t len)
{
        const uint8_t *lo = buf, *hi = lo + len;

        for (unsigned k = PV_K_BIN_FIRST; k < PV_K_COUNT_ALL; k++) {
                const uint8_t *p = m->b[k - PV_K_BIN_FIRST];
                uint32_t n = m->blen[k - PV_K_BIN_FIRST];

                if (!pv_msg_has(m, k))
                        continue;
                if (p < lo || p > hi || n > (size_t)(hi - p))
                        return false;
        }
        return true;
}

bool same_values(const struct pv_msg *a, const struct pv_msg *b)
{
        if (a->has != b->has)
                return false;
        for (unsigned k = 0; k < PV_K_UINT_END; k++)
                if (pv_msg_has(a, k) && a->u[k] != b->u[k])
                        return false;
        for (unsigned k = PV_K_BIN_FIRST; k < PV_K_COUNT_ALL; k++) {
                unsigned i = k - PV_K_BIN_FIRST;

                if (!pv_msg_has(a, k))
                        continue;
                if (a->blen[i] != b->blen[i] ||
                    (a->blen[i] > 0 && memcmp(a->b[i], b->b[i], a->blen[i]) != 0))
                        return false;
        }
        return true;
}

/* Encode m, decode it back into out: 0 or the first error. */
static int round_trip(const struct pv_msg *m, void *buf, size_t cap, struct pv_msg *out)
{
        size_t len;
        int r = pv_msg_encode(m, buf, cap, &len);

        if (r < 0)
                return r;
        r = pv_msg_decode(buf, len, out);
        if (r == 0 && !bins_in_buf(out, buf, len))
                return -EFAULT;
        return r;
}

/* Decode a copy of p in a heap block of exactly len bytes, so that ASan
 * reports any read past the end. */
static int decode_exact(const void *p, size_t len, struct pv_msg *m)
{
        uint8_t *copy = malloc(len ? len : 1);
        int r;

        CU_ASSERT_PTR_NOT_NULL_FATAL(copy);
        if (len > 0)
                memcpy(copy, p, len);
        r = pv_msg_decode(copy, len, m);
        if (r == 0)
                CU_ASSERT(bins_in_buf(m, copy, len));
        free(copy);
        return r;
}

/* ---- codec ---- */

static void test_wire_format(void)
{
        static const uint8_t want[] = {
                0x85,                           /* map of 5, keys ascending */
                0x00, 0xcd, 0x01, 0x00,         /* OP = 0x100 */
                0x01, 0x07,                     /* SEQ = 7 */
                0x02, 0xfe,                     /* DIAG = -2 */
                0x04, 0xcc, 0xc8,               /* ID = 200 */
                0x30, 0xc4, 0x02, 'h', 'i',     /* MSG = "hi" */
        };
        uint8_t buf[64];
        msgpack_unpacked u;
        struct pv_msg m;
        size_t len = 0, off = 0;

        /* set out of order: the encoder sorts */
        pv_msg_init(&m, 0x100);
        pv_msg_set_str(&m, PV_K_MSG, "hi");
        pv_msg_set_u(&m, PV_K_ID, 200);
        pv_msg_set_i(&m, PV_K_DIAG, -2);
        pv_msg_set_u(&m, PV_K_SEQ, 7);
        CU_ASSERT_EQUAL_FATAL(pv_msg_encode(&m, buf, sizeof(buf), &len), 0);
        CU_ASSERT_EQUAL(len, sizeof(want));
        CU_ASSERT(memcmp(buf, want, sizeof(want)) == 0);

        /* plain msgpack to any other reader */
        msgpack_unpacked_init(&u);
        CU_ASSERT_EQUAL(msgpack_unpack_next(&u, (const char *)buf, len, &off),
                        MSGPACK_UNPACK_SUCCESS);
        CU_ASSERT_EQUAL(off, len);
        CU_ASSERT_EQUAL(u.data.type, MSGPACK_OBJECT_MAP);
        CU_ASSERT_EQUAL(u.data.via.map.size, 5);
        msgpack_unpacked_destroy(&u);
}

static void test_round_trip_every_key(void)
{
        static uint8_t bytes[PV_K_BIN_COUNT][8];
        uint8_t buf[2048];
        struct pv_msg m, d;

        pv_msg_init(&m, PV_OP_TEST_FIRST);
        for (unsigned k = 0; k < PV_K_UINT_END; k++) {
                if (k == PV_K_DIAG)
                        pv_msg_set_i(&m, k, -4095);
                else if (k == PV_K_NFDS)
                        pv_msg_set_u(&m, k, PV_MSG_MAX_FDS);
                else if (k != PV_K_OP)
                        pv_msg_set_u(&m, k, (UINT64_C(1) << (k + 20)) + k);
        }
        for (unsigned k = PV_K_BIN_FIRST; k < PV_K_COUNT_ALL; k++) {
                unsigned i = k - PV_K_BIN_FIRST;

                memset(bytes[i], (int)k, sizeof(bytes[i]));
                pv_msg_set_b(&m, k, bytes[i], i % sizeof(bytes[i]));
        }
        CU_ASSERT_EQUAL_FATAL(round_trip(&m, buf, sizeof(buf), &d), 0);
        CU_ASSERT(same_values(&m, &d));
        CU_ASSERT_EQUAL(pv_msg_op(&d), PV_OP_TEST_FIRST);
        CU_ASSERT_EQUAL(pv_msg_diag(&d), -4095);
        for (unsigned k = 0; k < 64; k++)
                CU_ASSERT_EQUAL(pv_msg_has(&d, k), key_known(k));
}

static void test_integer_boundaries(void)
{
        static const uint64_t uvals[] = {
                0, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, UINT32_MAX,
                (uint64_t)UINT32_MAX + 1, INT64_MAX, (uint64_t)INT64_MAX + 1, UINT64_MAX,
        };
        static const int64_t ivals[] = {
                0, -1, -32, -33, -128, -129, -32768, -32769, INT32_MIN,
                (int64_t)INT32_MIN - 1, INT64_MIN, 1, 0x7f, 0x80, INT64_MAX,
        };
        uint8_t buf[64];
        struct pv_msg m, d;
        uint64_t u;
        int64_t i;

        for (size_t n = 0; n < sizeof(uvals) / sizeof(uvals[0]); n++) {
                pv_msg_init(&m, 1);
                pv_msg_set_u(&m, PV_K_SEQ, uvals[n]);
                pv_msg_set_u(&m, PV_K_VALUE, uvals[n]);
                CU_ASSERT_EQUAL_FATAL(round_trip(&m, buf, sizeof(buf), &d), 0);
                CU_ASSERT(same_values(&m, &d));
                CU_ASSERT(pv_msg_get_u(&d, PV_K_VALUE, &u) == 0 && u == uvals[n]);
        }
        for (size_t n = 0; n < sizeof(ivals) / sizeof(ivals[0]); n++) {
                pv_msg_init(&m, 1);
                pv_msg_set_i(&m, PV_K_DIAG, ivals[n]);
                CU_ASSERT_EQUAL_FATAL(round_trip(&m, buf, sizeof(buf), &d), 0);
                CU_ASSERT(pv_msg_get_i(&d, PV_K_DIAG, &i) == 0 && i == ivals[n]);
        }
        /* the op is 32 bits wide on the wire too */
        pv_msg_init(&m, UINT32_MAX);
        CU_ASSERT_EQUAL_FATAL(round_trip(&m, buf, sizeof(buf), &d), 0);
        CU_ASSERT_EQUAL(pv_msg_op(&d), UINT32_MAX);
        pv_msg_set_u(&m, PV_K_OP, (uint64_t)UINT32_MAX + 1);
        CU_ASSERT_EQUAL(round_trip(&m, buf, sizeof(buf), &d), -EINVAL);
}

static void test_bin_sizes(void)
{
        static const uint32_t lens[] = {
                0, 1, 31, 32, 255, 256, PV_MSG_BIN_MAX - 1, PV_MSG_BIN_MAX,
        };
        size_t cap = PV_MSG_DOC_MAX + 64, len;
        uint8_t *src = malloc(cap), *buf = malloc(cap);
        struct pv_msg m, d;
        const void *p;
        uint32_t n;

        CU_ASSERT_FATAL(src != NULL && buf != NULL);
        for (size_t i = 0; i < cap; i++)
                src[i] = (uint8_t)(i * 7 + 3);

        /* an empty value is present, with or without a pointer */
        pv_msg_init(&m, 1);
        pv_msg_set_b(&m, PV_K_INFO, NULL, 0);
        pv_msg_set_b(&m, PV_K_DATA, "", 0);
        CU_ASSERT_EQUAL(round_trip(&m, buf, cap, &d), 0);
        CU_ASSERT(pv_msg_get_b(&d, PV_K_INFO, &p, &n) == 0 && n == 0);
        CU_ASSERT(pv_msg_get_b(&d, PV_K_DATA, &p, &n) == 0 && n == 0);

        for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
                pv_msg_init(&m, 1);
                pv_msg_set_b(&m, PV_K_DATA, src, lens[i]);
                CU_ASSERT_EQUAL(round_trip(&m, buf, cap, &d), 0);
                CU_ASSERT(same_values(&m, &d));
        }
        pv_msg_set_b(&m, PV_K_DATA, src, PV_MSG_BIN_MAX + 1);
        CU_ASSERT_EQUAL(pv_msg_encode(&m, buf, cap, &len), -EMSGSIZE);

        /* a document may be larger, up to its own datagram size */
        pv_msg_init(&m, PV_OP_STATUS);
        pv_msg_set_b(&m, PV_K_DOC, src, 0xffff);         /* the last bin16 */
        CU_ASSERT_EQUAL(round_trip(&m, buf, cap, &d), 0);
        pv_msg_set_b(&m, PV_K_DOC, src, 0x10000);
        CU_ASSERT_EQUAL(round_trip(&m, buf, cap, &d), 0);
        CU_ASSERT(same_values(&m, &d));
        pv_msg_set_b(&m, PV_K_DOC, src, PV_MSG_DOC_MAX - 16);
        CU_ASSERT_EQUAL(pv_msg_encode(&m, buf, PV_MSG_DOC_MAX, &len), 0);
        CU_ASSERT(len <= PV_MSG_DOC_MAX);
        CU_ASSERT_EQUAL(pv_msg_decode(buf, len, &d), 0);
        CU_ASSERT(same_values(&m, &d));
        pv_msg_set_b(&m, PV_K_DOC, src, PV_MSG_DOC_MAX);
        CU_ASSERT_EQUAL(round_trip(&m, buf, cap, &d), 0);
        pv_msg_set_b(&m, PV_K_DOC, src, PV_MSG_DOC_MAX + 1);
        CU_ASSERT_EQUAL(pv_msg_encode(&m, buf, cap, &len), -EMSGSIZE);
        free(src);
        free(buf);
}

static void test_encode_small_buffer(void)
{
        uint8_t buf[128], canary[128];
        struct pv_msg m;
        size_t len, full;

        pv_msg_init(&m, 2);
        pv_msg_set_u(&m, PV_K_SEQ, 1000);
        pv_msg_set_str(&m, PV_K_NAME, "vrpq-clt-vogl0");
        pv_msg_set_b(&m, PV_K_DATA, "\x01\x02\x03", 3);
        CU_ASSERT_EQUAL_FATAL(pv_msg_encode(&m, buf, sizeof(buf), &full), 0);
        memset(canary, 0xa5, sizeof(canary));
        for (size_t cap = 0; cap < full; cap++) {
                memset(buf, 0xa5, sizeof(buf));
                CU_ASSERT_EQUAL(pv_msg_encode(&m, buf, cap, &len), -EMSGSIZE);
                /* nothing written on failure, least of all past cap */
                CU_ASSERT(memcmp(buf, canary, sizeof(buf)) == 0);
        }
        CU_ASSERT_EQUAL(pv_msg_encode(&m, buf, full, &len), 0);
        CU_ASSERT_EQUAL(len, full);
}

static void test_setter_misuse(void)
{
        uint8_t buf[256];
        struct pv_msg m;
        size_t len;

        pv_msg_init(&m, 1);
        CU_ASSERT_EQUAL(pv_msg_encode(&m, buf, sizeof(buf), &len), 0);

#define MISUSE(stmt)                                                            \
        do {                                                                    \
                pv_msg_init(&m, 1);                                             \
                stmt;                                                           \
                CU_ASSERT_EQUAL(pv_msg_encode(&m, buf, sizeof(buf), &len), -EINVAL); \
        } while (0)
        MISUSE(pv_msg_set_u(&m, PV_K_MSG, 1));
        MISUSE(pv_msg_set_u(&m, PV_K_UINT_END, 1));
        MISUSE(pv_msg_set_u(&m, PV_K_COUNT_ALL, 1));
        MISUSE(pv_msg_set_u(&m, PV_K_DIAG, (uint64_t)INT64_MAX + 1));
        MISUSE(pv_msg_set_i(&m, PV_K_ID, -1));
        MISUSE(pv_msg_set_i(&m, PV_K_DATA, 1));
        MISUSE(pv_msg_set_b(&m, PV_K_ID, "x", 1));
        MISUSE(pv_msg_set_b(&m, PV_K_BIN_FIRST - 1, "x", 1));
        MISUSE(pv_msg_set_b(&m, PV_K_DATA, NULL, 5));
        MISUSE(pv_msg_set_str(&m, PV_K_NAME, NULL));
        MISUSE(pv_msg_set_u(&m, PV_K_NFDS, PV_MSG_MAX_FDS + 1));
        MISUSE(m.has |= UINT64_C(1) << PV_K_UINT_END);
        MISUSE(m.has |= UINT64_C(1) << PV_K_COUNT_ALL);
        MISUSE(m.has &= ~(UINT64_C(1) << PV_K_SEQ));
#undef MISUSE

        pv_msg_init(&m, 1);
        for (int i = 0; i < PV_MSG_MAX_FDS; i++)
                CU_ASSERT_EQUAL(pv_msg_add_fd(&m, i), 0);
        CU_ASSERT_EQUAL(pv_msg_add_fd(&m, 0), -E2BIG);
        CU_ASSERT_EQUAL(pv_msg_add_fd(&m, -1), -EBADF);
        CU_ASSERT_EQUAL(m.nfds, PV_MSG_MAX_FDS);
}

static void test_getters(void)
{
        struct pv_msg m, r;
        const void *p;
        uint64_t u;
        uint32_t u32;
        int64_t i;
        uint32_t n;
        char s[6];

        memset(&m, 0xff, sizeof(m));
        pv_msg_init(&m, 0x205);
        CU_ASSERT(pv_msg_get_u(&m, PV_K_SEQ, &u) == 0 && u == 0);
        CU_ASSERT_EQUAL(m.nfds, 0);
        CU_ASSERT_EQUAL(pv_msg_op(&m), 0x205);
        CU_ASSERT_EQUAL(pv_msg_get_u(&m, PV_K_ID, &u), -EPROTO);
        CU_ASSERT_EQUAL(pv_msg_get_b(&m, PV_K_DATA, &p, &n), -EPROTO);
        CU_ASSERT_EQUAL(pv_msg_get_str(&m, PV_K_NAME, s, sizeof(s)), -EPROTO);
        CU_ASSERT_EQUAL(pv_msg_diag(&m), -EPROTO);

        pv_msg_set_u(&m, PV_K_SEQ, 99);
        pv_msg_set_u(&m, PV_K_SIZE, UINT32_MAX);
        pv_msg_set_u(&m, PV_K_SIZE2, (uint64_t)UINT32_MAX + 1);
        pv_msg_set_u(&m, PV_K_VALUE, UINT64_MAX);
        pv_msg_set_u(&m, PV_K_VALUE2, 5);
        CU_ASSERT(pv_msg_get_u32(&m, PV_K_SIZE, &u32) == 0 && u32 == UINT32_MAX);
        CU_ASSERT_EQUAL(pv_msg_get_u32(&m, PV_K_SIZE2, &u32), -EPROTO);
        CU_ASSERT_EQUAL(pv_msg_get_i(&m, PV_K_VALUE, &i), -EPROTO);
        CU_ASSERT(pv_msg_get_i(&m, PV_K_VALUE2, &i) == 0 && i == 5);
        CU_ASSERT_EQUAL(pv_msg_get_u(&m, PV_K_NAME, &u), -EPROTO);
        CU_ASSERT_EQUAL(pv_msg_get_i(&m, PV_K_COUNT_ALL, &i), -EPROTO);

        pv_msg_set_str(&m, PV_K_NAME, "vogl0");
        CU_ASSERT(pv_msg_get_str(&m, PV_K_NAME, s, sizeof(s)) == 0 && strcmp(s, "vogl0") == 0);
        CU_ASSERT_EQUAL(pv_msg_get_str(&m, PV_K_NAME, s, sizeof(s) - 1), -EPROTO);
        CU_ASSERT_EQUAL(pv_msg_get_str(&m, PV_K_NAME, s, 0), -EINVAL);
        CU_ASSERT_EQUAL(pv_msg_get_str(&m, PV_K_ID, s, sizeof(s)), -EPROTO);
        pv_msg_set_b(&m, PV_K_NAME, "vo\0l0", 5);
        CU_ASSERT_EQUAL(pv_msg_get_str(&m, PV_K_NAME, s, sizeof(s)), -EPROTO);
        pv_msg_set_b(&m, PV_K_NAME, NULL, 0);
        CU_ASSERT(pv_msg_get_str(&m, PV_K_NAME, s, sizeof(s)) == 0 && s[0] == '\0');

        pv_msg_init_reply(&r, &m, -EAGAIN);
        CU_ASSERT_EQUAL(pv_msg_op(&r), 0x205);
        CU_ASSERT(pv_msg_get_u(&r, PV_K_SEQ, &u) == 0 && u == 99);
        CU_ASSERT_EQUAL(pv_msg_diag(&r), -EAGAIN);
        CU_ASSERT_FALSE(pv_msg_has(&r, PV_K_NAME));

        /* a diag is 0 or an errno the kernel could return */
        static const struct { int64_t d; int want; } diags[] = {
                { 0, 0 }, { -ENOENT, -ENOENT }, { -4095, -4095 }, { -4096, -EPROTO },
                { 1, -EPROTO }, { INT64_MIN, -EPROTO }, { INT64_MAX, -EPROTO },
                { (int64_t)INT32_MIN - 2, -EPROTO },
        };
        for (size_t k = 0; k < sizeof(diags) / sizeof(diags[0]); k++) {
                pv_msg_set_i(&r, PV_K_DIAG, diags[k].d);
                CU_ASSERT_EQUAL(pv_msg_diag(&r), diags[k].want);
        }
        pv_msg_set_i(&r, PV_K_DIAG, -1);
        CU_ASSERT_EQUAL(pv_msg_get_u(&r, PV_K_DIAG, &u), -EPROTO);
        pv_msg_set_i(&r, PV_K_DIAG, 3);
        CU_ASSERT(pv_msg_get_u(&r, PV_K_DIAG, &u) == 0 && u == 3);
}

/* ---- hostile decoder ---- */

#define B(...) (const uint8_t[]){ __VA_ARGS__ }, sizeof((const uint8_t[]){ __VA_ARGS__ })
/* OP = 1, SEQ = 2: what every message needs */
#define OPSEQ 0x00, 0x01, 0x01, 0x02

static void test_decode_hostile(void)
{
        const struct {
                const char *what;
                const uint8_t *p;
                size_t len;
        } bad[] = {
                { "empty input", (const uint8_t *)"", 0 },
                { "array, not a map", B(0x92, 0x00, 0x01) },
                { "integer, not a map", B(0x01) },
                { "map without OP and SEQ", B(0x80) },
                { "missing OP", B(0x81, 0x01, 0x02) },
                { "missing SEQ", B(0x81, 0x00, 0x01) },
                { "unknown key after the integers", B(0x83, OPSEQ, PV_K_UINT_END, 0x00) },
                { "unknown key before the bytes", B(0x83, OPSEQ, PV_K_BIN_FIRST - 1, 0x00) },
                { "unknown key after the bytes", B(0x83, OPSEQ, PV_K_COUNT_ALL, 0xc4, 0x00) },
                { "unknown key as uint8", B(0x83, OPSEQ, 0xcc, 0xc8, 0x00) },
                { "key 2^32 + 4, ID if cut to 32 bits",
                  B(0x83, OPSEQ, 0xcf, 0, 0, 0, 1, 0, 0, 0, 4, 0x00) },
                { "negative key", B(0x83, OPSEQ, 0xff, 0x00) },
                { "bytes key", B(0x83, OPSEQ, 0xa1, 'a', 0x00) },
                { "repeated key", B(0x83, OPSEQ, 0x01, 0x03) },
                { "repeated key, longer encoding", B(0x83, OPSEQ, 0xcd, 0x00, 0x01, 0x03) },
                { "bin on an integer key", B(0x83, OPSEQ, PV_K_ID, 0xc4, 0x01, 'x') },
                { "str on an integer key", B(0x83, OPSEQ, PV_K_ID, 0xa1, 'x') },
                { "integer on a bytes key", B(0x83, OPSEQ, PV_K_DATA, 0x05) },
                { "nested array", B(0x83, OPSEQ, PV_K_ID, 0x91, 0x00) },
                { "nested map", B(0x83, OPSEQ, PV_K_DATA, 0x81, 0x00, 0x00) },
                { "array32 value", B(0x83, OPSEQ, PV_K_ID, 0xdd, 0xff, 0xff, 0xff, 0xff) },
                { "float32", B(0x83, OPSEQ, PV_K_ID, 0xca, 0, 0, 0, 0) },
                { "float64", B(0x83, OPSEQ, PV_K_ID, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0) },
                { "nil", B(0x83, OPSEQ, PV_K_ID, 0xc0) },
                { "bool", B(0x83, OPSEQ, PV_K_ID, 0xc3) },
                { "fixext", B(0x83, OPSEQ, PV_K_DATA, 0xd4, 0x01, 0x00) },
                { "ext8", B(0x83, OPSEQ, PV_K_DATA, 0xc7, 0x01, 0x01, 0x00) },
                { "never-used 0xc1", B(0x83, OPSEQ, PV_K_ID, 0xc1) },
                { "map32 declaring 2^32 - 1 entries", B(0xdf, 0xff, 0xff, 0xff, 0xff, OPSEQ) },
                { "more entries than keys", B(0xde, 0x00, PV_K_UINT_END + PV_K_BIN_COUNT + 1, OPSEQ) },
                { "fewer entries than present", B(0x81, OPSEQ) },
                { "trailing byte", B(0x82, OPSEQ, 0x00) },
                { "second map after the first", B(0x82, OPSEQ, 0x82, OPSEQ) },
                { "bin32 longer than the input", B(0x83, OPSEQ, PV_K_DATA, 0xc6, 0x7f, 0xff, 0xff, 0xff, 'x') },
                { "bin8 longer than the input", B(0x83, OPSEQ, PV_K_DATA, 0xc4, 0x02, 'x') },
                { "fixstr longer than the input", B(0x83, OPSEQ, PV_K_NAME, 0xbf, 'x', 'y') },
                { "uint64 cut short", B(0x83, OPSEQ, PV_K_ID, 0xcf, 0x00, 0x00) },
                { "map16 header cut short", B(0xde, 0x00) },
                { "key without a value", B(0x83, OPSEQ, PV_K_ID) },
                { "NFDS above PV_MSG_MAX_FDS", B(0x83, OPSEQ, PV_K_NFDS, PV_MSG_MAX_FDS + 1) },
                { "NFDS of 2^64 - 1", B(0x83, OPSEQ, PV_K_NFDS, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff) },
                { "negative fixint on an unsigned key", B(0x83, OPSEQ, PV_K_ID, 0xff) },
                { "negative int8 on an unsigned key", B(0x83, OPSEQ, PV_K_SIZE, 0xd0, 0x80) },
                { "negative int64 SEQ", B(0x82, 0x00, 0x01, 0x01, 0xd3, 0xff, 0, 0, 0, 0, 0, 0, 0) },
                { "DIAG above INT64_MAX", B(0x83, OPSEQ, PV_K_DIAG, 0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0) },
                { "OP above UINT32_MAX", B(0x82, 0x00, 0xcf, 0, 0, 0, 1, 0, 0, 0, 1, 0x01, 0x02) },
        };
        struct pv_msg m;

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                int r = decode_exact(bad[i].p, bad[i].len, &m);

                if (r != -EPROTO || m.has != 0) {
                        fprintf(stderr, "decoding \"%s\": %d\n", bad[i].what, r);
                        CU_FAIL("hostile input not refused");
                }
        }
}

static void test_decode_lenient(void)
{
        /* what another msgpack writer may produce is still ours */
        const struct {
                const char *what;
                const uint8_t *p;
                size_t len;
        } good[] = {
                { "keys out of order", B(0x82, 0x01, 0x02, 0x00, 0x01) },
                { "longer integer encodings",
                  B(0x83, 0xcc, 0x00, 0xcf, 0, 0, 0, 0, 0, 0, 0, 1, 0xcd, 0x00, 0x01, 0xd0, 0x05,
                    PV_K_ID, 0xd3, 0, 0, 0, 0, 0, 0, 0, 9) },
                { "map16 and map32 headers", B(0xdf, 0, 0, 0, 2, OPSEQ) },
                { "fixstr and str8 values",
                  B(0x84, OPSEQ, PV_K_MSG, 0xa2, 'h', 'i', PV_K_NAME, 0xd9, 0x01, 'n') },
                { "str16 and bin16 values",
                  B(0x84, OPSEQ, PV_K_MSG, 0xda, 0, 1, 'h', PV_K_DATA, 0xc5, 0, 0) },
                { "DIAG INT64_MIN", B(0x83, OPSEQ, PV_K_DIAG, 0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0) },
                { "NFDS of 0", B(0x83, OPSEQ, PV_K_NFDS, 0x00) },
        };
        struct pv_msg m;

        for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
                int r = decode_exact(good[i].p, good[i].len, &m);

                if (r != 0) {
                        fprintf(stderr, "decoding \"%s\": %d\n", good[i].what, r);
                        CU_FAIL("well-formed input refused");
                }
        }
}

/* A message of OP, SEQ and a len-byte value under key k, with a 32-bit
 * length after marker (bin32 or str32). */
static int decode_sized(uint8_t *buf, enum pv_key k, uint8_t marker, uint32_t len)
{
        const uint8_t head[] = {
                0x83, OPSEQ, (uint8_t)k, marker,
                (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len,
        };
        struct pv_msg m;
        int r;

        memcpy(buf, head, sizeof(head));
        memset(buf + sizeof(head), 'z', len);
        r = pv_msg_decode(buf, sizeof(head) + len, &m);
        if (r == 0)
                CU_ASSERT(bins_in_buf(&m, buf, sizeof(head) + len));
        return r;
}

static void test_decode_sizes(void)
{
        uint8_t *buf = malloc(PV_MSG_DOC_MAX + 64);

        CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
        CU_ASSERT_EQUAL(decode_sized(buf, PV_K_DATA, 0xc6, PV_MSG_BIN_MAX), 0);
        CU_ASSERT_EQUAL(decode_sized(buf, PV_K_DATA, 0xc6, PV_MSG_BIN_MAX + 1), -EPROTO);
        CU_ASSERT_EQUAL(decode_sized(buf, PV_K_NAME, 0xdb, PV_MSG_BIN_MAX + 1), -EPROTO);
        CU_ASSERT_EQUAL(decode_sized(buf, PV_K_BIN_DRV0 + 3, 0xc6, PV_MSG_BIN_MAX + 1), -EPROTO);
        CU_ASSERT_EQUAL(decode_sized(buf, PV_K_DOC, 0xc6, PV_MSG_BIN_MAX + 1), 0);
        CU_ASSERT_EQUAL(decode_sized(buf, PV_K_DOC, 0xc6, PV_MSG_DOC_MAX), 0);
        CU_ASSERT_EQUAL(decode_sized(buf, PV_K_DOC, 0xc6, PV_MSG_DOC_MAX + 1), -EPROTO);
        free(buf);
}

static void test_decode_truncated(void)
{
        static const uint8_t data[40] = { 1, 2, 3 };
        uint8_t buf[512];
        struct pv_msg m, d;
        size_t len;

        pv_msg_init(&m, 0x1234);
        pv_msg_set_u(&m, PV_K_SEQ, UINT64_MAX);
        pv_msg_set_i(&m, PV_K_DIAG, INT64_MIN);
        pv_msg_set_u(&m, PV_K_NFDS, 3);
        pv_msg_set_u(&m, PV_K_SIZE, 70000);
        pv_msg_set_str(&m, PV_K_MSG, "no such device node");
        pv_msg_set_b(&m, PV_K_DATA, data, sizeof(data));
        pv_msg_set_b(&m, PV_K_DOC, data, 0);
        CU_ASSERT_EQUAL_FATAL(pv_msg_encode(&m, buf, sizeof(buf) - 1, &len), 0);
        CU_ASSERT_EQUAL(decode_exact(buf, len, &d), 0);
        for (size_t n = 0; n < len; n++)
                CU_ASSERT_EQUAL(decode_exact(buf, n, &d), -EPROTO);
        for (unsigned c = 0; c < 256; c++) {
                buf[len] = (uint8_t)c;
                CU_ASSERT_EQUAL(decode_exact(buf, len + 1, &d), -EPROTO);
        }
}

static const struct pvt_test codec_tests[] = {
        { "wire format", test_wire_format },
        { "round trip of every key", test_round_trip_every_key },
        { "integer boundaries", test_integer_boundaries },
        { "bytes sizes", test_bin_sizes },
        { "encode into a small buffer", test_encode_small_buffer },
        { "setter misuse", test_setter_misuse },
        { "getters", test_getters },
        { "decode hostile input", test_decode_hostile },
        { "decode other writers' msgpack", test_decode_lenient },
        { "decode size limits", test_decode_sizes },
        { "decode truncated and extended", test_decode_truncated },
        { NULL, NULL },
};

static const struct pvt_suite suites[] = {
        { "msg codec", NULL, NULL, codec_tests, 0 },
        { "msg fuzz", NULL, NULL, fuzz_tests, 0 },
        { "msg transport", NULL, NULL, net_tests, 0 },
        { NULL, NULL, NULL, NULL, 0 },
};

int main(int argc, char **argv)
{
        return pvt_main(argc, argv, suites);
}

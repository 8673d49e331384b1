/* Fuzz loop for the control-message decoder: random byte strings, then
 * mutations of valid messages. Every decode must return 0 or -EPROTO; an
 * accepted message must point only into its input and re-encode to the same
 * values. Inputs sit flush against the end of a heap block so that ASan
 * catches a read past them.
 *
 * PV_FUZZ_SEED (strtoull syntax) picks another sequence; PV_FUZZ_ITERS sets
 * the iterations of each kind (default 200000). A failure prints the seed,
 * the iteration and the input.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test-msg.h"

#define FUZZ_SEED_DEFAULT  UINT64_C(0x70766d7367)
#define FUZZ_ITERS_DEFAULT 200000
#define ARENA              4096         /* largest fuzz input */
#define RANDOM_MAX_LEN     512

static uint64_t rng_state;

/* splitmix64: tiny, and the same sequence on every libc */
static uint64_t rng(void)
{
        uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));

        z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
        return z ^ (z >> 31);
}

static size_t rng_below(size_t n)
{
        return n ? (size_t)(rng() % n) : 0;
}

/* Integers of every width, not just 64-bit ones. */
static uint64_t rng_int(void)
{
        unsigned shift = (unsigned)rng_below(64);

        return rng() >> shift;
}

static uint64_t env_u64(const char *name, uint64_t dflt)
{
        const char *s = getenv(name);
        char *end;
        unsigned long long v;

        if (s == NULL || *s == '\0')
                return dflt;
        errno = 0;
        v = strtoull(s, &end, 0);
        if (errno != 0 || *end != '\0') {
                fprintf(stderr, "test-msg: ignoring %s=%s\n", name, s);
                return dflt;
        }
        return v;
}

/* Bytes that mean something to a msgpack reader: markers of every kind and
 * the ends of the fix ranges. */
static const uint8_t interesting[] = {
        0x00, 0x01, 0x03, 0x08, 0x09, 0x20, 0x21, 0x2f, 0x30, 0x34, 0x38, 0x39, 0x7f,
        0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xc4, 0xc5, 0xc6, 0xc7,
        0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf, 0xd0, 0xd3, 0xd4, 0xd9, 0xda, 0xdb, 0xdc,
        0xdd, 0xde, 0xdf, 0xe0, 0xff,
};

static uint8_t rng_byte(void)
{
        if (rng_below(4) == 0)
                return interesting[rng_below(sizeof(interesting))];
        return (uint8_t)rng();
}

struct fuzz {
        uint64_t seed;
        const char *kind;
        size_t iter;
        uint8_t *arena;                 /* ARENA bytes on the heap */
        size_t accepted;
        bool failed;
};

static void fuzz_fail(struct fuzz *f, const char *why, const uint8_t *in, size_t len)
{
        fprintf(stderr, "\nfuzz %s: %s (PV_FUZZ_SEED=0x%llx, iteration %zu), input of %zu bytes:",
                f->kind, why, (unsigned long long)f->seed, f->iter, len);
        for (size_t i = 0; i < len; i++)
                fprintf(stderr, "%s%02x", i % 32 ? " " : "\n  ", in[i]);
        fprintf(stderr, "\n");
        f->failed = true;
        CU_FAIL("decoder broke its contract (see stderr)");
}

static void fuzz_one(struct fuzz *f, const uint8_t *in, size_t len)
{
        uint8_t *p = f->arena + ARENA - len;
        uint8_t re[ARENA + 64];
        struct pv_msg m, again;
        size_t rlen;
        int r;

        memmove(p, in, len);
        r = pv_msg_decode(p, len, &m);
        if (r == -EPROTO) {
                if (m.has != 0)
                        fuzz_fail(f, "refused, yet keys left set", p, len);
                return;
        }
        if (r != 0) {
                fuzz_fail(f, "neither 0 nor -EPROTO", p, len);
                return;
        }
        f->accepted++;
        if (!bins_in_buf(&m, p, len)) {
                fuzz_fail(f, "a bytes value points outside the input", p, len);
                return;
        }
        if (!pv_msg_has(&m, PV_K_OP) || !pv_msg_has(&m, PV_K_SEQ)) {
                fuzz_fail(f, "accepted without OP or SEQ", p, len);
                return;
        }
        /* what the decoder accepts, the encoder reproduces */
        if (pv_msg_encode(&m, re, sizeof(re), &rlen) != 0 ||
            pv_msg_decode(re, rlen, &again) != 0 || !same_values(&m, &again))
                fuzz_fail(f, "accepted message does not survive a re-encode", p, len);
}

/* Append one random msgpack scalar or container header, its length fields
 * random too; returns the new length. */
static size_t random_token(uint8_t *in, size_t i, size_t cap)
{
        static const uint8_t sized[] = { 0xc4, 0xc5, 0xc6, 0xd9, 0xda, 0xdb, 0xcc, 0xcd,
                                         0xce, 0xcf, 0xd0, 0xd1, 0xd2, 0xd3, 0xde, 0xdf };
        size_t n;

        if (i >= cap)
                return i;
        if (rng_below(2)) {                             /* a key or small integer */
                in[i++] = (uint8_t)rng_below(PV_K_COUNT_ALL + 2);
                return i;
        }
        if (rng_below(3) == 0) {                        /* fixstr and its bytes */
                n = rng_below(8);
                in[i++] = (uint8_t)(0xa0 | n);
                for (; n > 0 && i < cap; n--)
                        in[i++] = (uint8_t)rng();
                return i;
        }
        in[i++] = sized[rng_below(sizeof(sized))];
        switch (in[i - 1]) {
        case 0xc4: case 0xd9: case 0xcc: case 0xd0: n = 1; break;
        case 0xc5: case 0xda: case 0xcd: case 0xd1: case 0xde: n = 2; break;
        case 0xcf: case 0xd3: n = 8; break;
        default: n = 4; break;
        }
        /* mostly small lengths, so that what they announce is often there */
        for (size_t j = 0; j < n && i < cap; j++)
                in[i++] = j + 1 == n ? (uint8_t)rng_below(rng_below(2) ? 8 : 256)
                                     : (uint8_t)(rng_below(4) ? 0 : rng());
        return i;
}

static void fuzz_random(struct fuzz *f, size_t iters)
{
        uint8_t in[RANDOM_MAX_LEN];

        for (f->iter = 0; f->iter < iters && !f->failed; f->iter++) {
                size_t len = rng_below(RANDOM_MAX_LEN + 1), i = 0;

                /* half start like a map, or almost nothing gets past byte 0 */
                if (len > 0 && rng_below(2)) {
                        in[i++] = (uint8_t)(0x80 | rng_below(16));
                        if (rng_below(4) == 0)
                                in[0] = rng_below(2) ? 0xde : 0xdf;
                }
                if (rng_below(2)) {
                        for (; i < len; i++)
                                in[i] = rng_byte();
                        fuzz_one(f, in, len);
                        continue;
                }
                /* a map of random key and value tokens reaches deeper */
                size_t pairs = rng_below(12);

                i = 0;
                in[i++] = (uint8_t)(0x80 | (pairs + (rng_below(8) ? 0 : 1)));
                for (size_t j = 0; j < pairs; j++) {
                        if (j < 2 && rng_below(4))
                                in[i++] = (uint8_t)j;   /* OP, SEQ */
                        else
                                i = random_token(in, i, sizeof(in));
                        i = random_token(in, i, sizeof(in));
                }
                fuzz_one(f, in, i);
        }
}

/* A valid message with random keys and values, encoded into out (at most
 * 3 + 33 * 10 + 9 * (6 + 199) bytes). */
static size_t make_valid(uint8_t *out, size_t cap)
{
        static uint8_t pool[1024];
        struct pv_msg m;
        size_t len = 0, nkeys;

        if (pool[0] == 0)
                for (size_t i = 0; i < sizeof(pool); i++)
                        pool[i] = (uint8_t)(rng() | 1);
        pv_msg_init(&m, (uint32_t)rng_int());
        pv_msg_set_u(&m, PV_K_SEQ, rng_int());
        nkeys = rng_below(10);
        for (size_t j = 0; j < nkeys; j++) {
                /* one rng() call per statement: argument order is unspecified,
                 * and a seed must replay the same in every build */
                unsigned k = (unsigned)rng_below(PV_K_COUNT_ALL);
                uint64_t v = rng_int();
                size_t at = rng_below(256);
                size_t max = rng_below(8) ? 24 : 200;
                uint32_t len32 = (uint32_t)rng_below(max);

                if (k == PV_K_DIAG)
                        pv_msg_set_i(&m, k, (int64_t)v * (at & 1 ? -1 : 1));
                else if (k == PV_K_NFDS)
                        pv_msg_set_u(&m, k, v % (PV_MSG_MAX_FDS + 1));
                else if (k < PV_K_UINT_END && k != PV_K_OP)
                        pv_msg_set_u(&m, k, v);
                else if (k >= PV_K_BIN_FIRST)
                        pv_msg_set_b(&m, k, pool + at, len32);
        }
        CU_ASSERT_EQUAL(pv_msg_encode(&m, out, cap, &len), 0);
        return len;
}

/* Rewrite the length or count after a length-prefixed marker. */
static void tamper_length(uint8_t *w, size_t n)
{
        static const uint32_t vals[] = {
                0, 1, 2, 0x1f, 0x20, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000,
                PV_MSG_BIN_MAX, PV_MSG_BIN_MAX + 1, PV_MSG_DOC_MAX, PV_MSG_DOC_MAX + 1,
                0x7fffffff, 0x80000000, 0xffffffff,
        };
        size_t start = rng_below(n);

        for (size_t i = 0; i < n; i++) {
                size_t at = (start + i) % n;
                uint32_t v = rng_below(2) ? vals[rng_below(sizeof(vals) / sizeof(vals[0]))]
                                          : (uint32_t)rng_int();
                unsigned width;

                if ((w[at] & 0xf0) == 0x80) {           /* fixmap count */
                        w[at] = (uint8_t)(0x80 | (v & 0x0f));
                        return;
                }
                if ((w[at] & 0xe0) == 0xa0) {           /* fixstr length */
                        w[at] = (uint8_t)(0xa0 | (v & 0x1f));
                        return;
                }
                switch (w[at]) {
                case 0xc4: case 0xd9: width = 1; break;
                case 0xc5: case 0xda: case 0xde: width = 2; break;
                case 0xc6: case 0xdb: case 0xdf: width = 4; break;
                default: continue;
                }
                for (unsigned j = 0; j < width && at + 1 + j < n; j++)
                        w[at + 1 + j] = (uint8_t)(v >> (8 * (width - 1 - j)));
                return;
        }
}

static size_t mutate(uint8_t *w, size_t n, size_t cap)
{
        for (size_t rounds = 1 + rng_below(4); rounds > 0; rounds--) {
                size_t at = rng_below(n), k;

                switch (rng_below(8)) {
                case 0:
                        if (n > 0)
                                w[at] ^= (uint8_t)(1u << rng_below(8));
                        break;
                case 1:
                        if (n > 0)
                                w[at] = rng_byte();
                        break;
                case 2:
                        n = rng_below(n + 1);
                        break;
                case 3:                                 /* insert */
                        k = 1 + rng_below(8);
                        if (n + k > cap)
                                break;
                        memmove(w + at + k, w + at, n - at);
                        for (size_t i = 0; i < k; i++)
                                w[at + i] = rng_byte();
                        n += k;
                        break;
                case 4:                                 /* delete */
                        k = rng_below(n - at + 1);
                        memmove(w + at, w + at + k, n - at - k);
                        n -= k;
                        break;
                case 5:                                 /* repeat a slice at the end */
                        k = rng_below(n - at + 1);
                        if (n + k > cap)
                                break;
                        memmove(w + n, w + at, k);
                        n += k;
                        break;
                default:
                        if (n > 0)
                                tamper_length(w, n);
                        break;
                }
        }
        return n;
}

static void fuzz_mutations(struct fuzz *f, size_t iters)
{
        static uint8_t w[ARENA];

        for (f->iter = 0; f->iter < iters && !f->failed; f->iter++) {
                size_t n = make_valid(w, ARENA / 2 + 512);

                fuzz_one(f, w, mutate(w, n, ARENA));
        }
}

static void run(const char *kind, void (*loop)(struct fuzz *, size_t))
{
        struct fuzz f = {
                .seed = env_u64("PV_FUZZ_SEED", FUZZ_SEED_DEFAULT),
                .kind = kind,
                .arena = malloc(ARENA),
        };
        size_t iters = env_u64("PV_FUZZ_ITERS", FUZZ_ITERS_DEFAULT);

        CU_ASSERT_PTR_NOT_NULL_FATAL(f.arena);
        rng_state = f.seed;
        loop(&f, iters);
        fprintf(stderr, " [%zu of %zu accepted] ", f.accepted, iters);
        free(f.arena);
}

static void test_fuzz_random(void)
{
        run("random", fuzz_random);
}

static void test_fuzz_mutations(void)
{
        run("mutations", fuzz_mutations);
}

const struct pvt_test fuzz_tests[] = {
        { "random byte strings", test_fuzz_random },
        { "mutated messages", test_fuzz_mutations },
        { NULL, NULL },
};

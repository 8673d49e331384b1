/* Unit tests of pv-ring.h against a hostile peer: every index and record
 * header the peer writes is corrupted in turn through a third mapping; each
 * must give -EPROTO, stay broken, and touch nothing outside the data area,
 * which lies between guard pages. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pv-ring.h"
#include "ring-fixture.h"

/* The consumer of g must now fail, stay failed after the peer puts things
 * back, and must not have written into buf. */
static void expect_cons_broken(struct gring *g)
{
        uint8_t buf[64 + 8];
        uint32_t tag = 0xdead, len = 0xdead;

        memset(buf, 0xa5, sizeof(buf));
        CU_ASSERT_EQUAL(pv_ring_recv(&g->cons, &tag, buf, 64, &len), -EPROTO);
        CU_ASSERT_EQUAL(tag, 0xdead);
        CU_ASSERT_EQUAL(len, 0xdead);
        ring_store_release(&g->peer_hdr->prod, g->cons.cons);
        CU_ASSERT_EQUAL(pv_ring_recv(&g->cons, &tag, buf, 64, &len), -EPROTO);
        CU_ASSERT_TRUE(pv_ring_cons_pending(&g->cons));
        CU_ASSERT_FALSE(pv_ring_cons_prepare_sleep(&g->cons));
        for (size_t i = 0; i < sizeof(buf); i++)
                CU_ASSERT_EQUAL_FATAL(buf[i], 0xa5);
}

/* A consumer at free-running index `at`, with one honest record of 16 bytes
 * waiting before the peer starts lying. */
static void cons_at(struct gring *g, uint32_t at)
{
        uint8_t m[16] = { 0 };
        uint32_t tag, len;

        gring_place(g, at);
        CU_ASSERT_EQUAL(pv_ring_send(&g->prod, 0, m, 16), 0);
        CU_ASSERT_EQUAL(pv_ring_recv(&g->cons, &tag, m, 16, &len), 0);
}

static void test_hostile_prod_index(void)
{
        struct gring g;
        CU_ASSERT_FATAL(gring_open(&g, 4096) == 0);
        const uint32_t bad[] = {
                4096 + 8,               /* further ahead than the ring holds */
                8u << 20,
                0x80000000u,
                4,                      /* not a multiple of 8 */
                12,
                4095,
                (uint32_t)-8,           /* behind the consumer */
                (uint32_t)-4096,
        };

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                for (uint32_t at = 0; at < 8192; at += 4096 - 1024) {
                        cons_at(&g, at);
                        uint32_t c = g.cons.cons;
                        /* a plausible record at the consumer's position, so
                         * that only the index is wrong */
                        peer_put32(&g, c & g.cons.mask, 8);
                        ring_store_release(&g.peer_hdr->prod, c + bad[i]);
                        expect_cons_broken(&g);
                        CU_ASSERT_EQUAL(g.cons.cons, c);        /* nothing consumed */
                        CU_ASSERT_EQUAL(g.hdr->cons, c);
                }
        }
        /* The furthest good index, for contrast: a whole ring of data. */
        gring_place(&g, 4096);
        peer_put32(&g, 0, 4096 - 8);
        ring_store_release(&g.peer_hdr->prod, 2 * 4096);
        {
                uint8_t *big = malloc(4096);
                uint32_t tag, len;
                CU_ASSERT_FATAL(big != NULL);
                CU_ASSERT_EQUAL(pv_ring_recv(&g.cons, &tag, big, 4096, &len), 0);
                CU_ASSERT_EQUAL(len, 4096 - 8);
                free(big);
        }
        gring_close(&g);
}

static void test_hostile_record(void)
{
        struct gring g;
        CU_ASSERT_FATAL(gring_open(&g, 4096) == 0);
        const uint32_t size = 4096;

        /* Length beyond any record: huge, and one more than the maximum. */
        const uint32_t huge[] = { 0x7fffffffu, 0xfffffff0u, 0xfffffffeu, 4089, 4096, 65536 };
        for (size_t i = 0; i < sizeof(huge) / sizeof(huge[0]); i++) {
                cons_at(&g, 1024);
                uint32_t c = g.cons.cons, pos = c & g.cons.mask;
                peer_put32(&g, pos, huge[i]);
                ring_store_release(&g.peer_hdr->prod, c + 64);
                expect_cons_broken(&g);
        }

        /* Length beyond the published bytes. */
        cons_at(&g, 1024);
        peer_put32(&g, g.cons.cons & g.cons.mask, 100);
        ring_store_release(&g.peer_hdr->prod, g.cons.cons + 16);
        expect_cons_broken(&g);

        /* A record that would run past the end of the data area, though the
         * index says that many bytes are there: the data area ends at a
         * guard page, so reading it would fault. */
        for (uint32_t room = 8; room <= 64; room += 8) {
                gring_place(&g, 3 * size - room);
                uint32_t c = g.cons.cons, pos = c & g.cons.mask;
                CU_ASSERT_EQUAL(pos, size - room);
                peer_put32(&g, pos, room);      /* needs room + 8 */
                ring_store_release(&g.peer_hdr->prod, c + 256);
                expect_cons_broken(&g);
        }

        /* A pad in the middle of the data, skipping more than was published. */
        for (uint32_t at = 8; at < size; at += 504) {
                cons_at(&g, size + at);
                uint32_t c = g.cons.cons, pos = c & g.cons.mask;
                peer_put32(&g, pos, PV_RING_PAD);
                ring_store_release(&g.peer_hdr->prod, c + (size - pos) - 8);
                expect_cons_broken(&g);
        }

        /* A pad at position 0, where none belongs: with the index a whole
         * ring ahead, skipping it would be in bounds, but a peer could keep
         * the consumer skipping for ever. */
        gring_place(&g, 2 * size);
        peer_put32(&g, 0, PV_RING_PAD);
        ring_store_release(&g.peer_hdr->prod, 3 * size);
        expect_cons_broken(&g);

        /* A pad followed, at 0, by another pad. */
        cons_at(&g, 2 * size + 4000);
        peer_put32(&g, g.cons.cons & g.cons.mask, PV_RING_PAD);
        peer_put32(&g, 0, PV_RING_PAD);
        ring_store_release(&g.peer_hdr->prod, g.cons.cons + 4096);
        expect_cons_broken(&g);
        gring_close(&g);
}

/* The producer must now fail at its next read of the consumer's index
 * (pv_ring_prod_free() reads it; a send reads it when the room it saw last
 * runs out, see "lies between reads" below), stay failed after the peer
 * puts things back, and must not have moved its index. */
static void expect_prod_broken(struct gring *g)
{
        uint8_t m[16] = { 0 };
        void *p = NULL;
        uint32_t prod = g->prod.prod;

        CU_ASSERT_EQUAL(pv_ring_prod_free(&g->prod), -EPROTO);
        CU_ASSERT_EQUAL(pv_ring_send(&g->prod, 0, m, 16), -EPROTO);
        CU_ASSERT_EQUAL(pv_ring_reserve(&g->prod, 0, &p), -EPROTO);
        CU_ASSERT_PTR_NULL(p);
        /* Not a reason to sleep: the caller must see the error. */
        CU_ASSERT_FALSE(pv_ring_prod_prepare_sleep(&g->prod, 16));
        ring_store_release(&g->peer_hdr->cons, g->prod.prod);
        CU_ASSERT_EQUAL(pv_ring_send(&g->prod, 0, m, 16), -EPROTO);
        CU_ASSERT_EQUAL(g->prod.prod, prod);
        CU_ASSERT_EQUAL(g->hdr->prod, prod);
}

static void test_hostile_cons_index(void)
{
        struct gring g;
        CU_ASSERT_FATAL(gring_open(&g, 4096) == 0);
        const int32_t bad[] = {
                8,                      /* ahead of what we produced */
                4096,
                0x40000000,
                -4096 - 8,              /* behind: more outstanding than fits */
                -0x40000000,
                -4,                     /* not a multiple of 8 */
                -100,
                -4095,
        };

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                for (uint32_t at = 0; at < 3 * 4096; at += 4096 + 1000) {
                        cons_at(&g, at);
                        ring_store_release(&g.peer_hdr->cons, g.prod.prod + (uint32_t)bad[i]);
                        expect_prod_broken(&g);
                }
        }
        gring_close(&g);
}

/* Random garbage from both peers: every result is 0, -EAGAIN or -EPROTO,
 * every message fits the caller's buffer, every reservation the data area.
 * A stray access would hit a guard page. */
static void test_hostile_fuzz(void)
{
        struct gring g;
        CU_ASSERT_FATAL(gring_open(&g, 4096) == 0);
        uint8_t buf[4096 + 64];
        uint32_t tag, len;
        unsigned broken = 0, ok = 0;

        for (int iter = 0; iter < 20000; iter++) {
                gring_place(&g, (uint32_t)rnd() & ~7u);
                /* Honest traffic first, then lies about it. */
                for (uint32_t n = rnd_below(4); n; n--)
                        pv_ring_send(&g.prod, 0, buf, rnd_below(2000));
                for (uint32_t n = rnd_below(3); n; n--)
                        pv_ring_recv(&g.cons, &tag, buf, 4096, &len);
                for (uint32_t n = rnd_below(6); n; n--) {
                        uint32_t pos = rnd_below(4096 / 4) * 4;
                        uint32_t v;
                        switch (rnd_below(4)) {
                        case 0: v = PV_RING_PAD; break;
                        case 1: v = rnd_below(4200); break;
                        case 2: v = rnd_below(64); break;
                        default: v = (uint32_t)rnd(); break;
                        }
                        peer_put32(&g, pos, v);
                }
                int64_t delta = (int64_t)rnd_below(4096 + 64) - 32;
                if (rnd_below(3) == 0)
                        delta &= ~7;
                if (rnd_below(2))
                        ring_store_release(&g.peer_hdr->prod, g.cons.cons + (uint32_t)delta);
                else
                        ring_store_release(&g.peer_hdr->cons, g.prod.prod - (uint32_t)delta);

                uint32_t cap = rnd_below(4096 + 1);
                memset(buf + cap, 0xa5, 64);
                for (int k = 0; k < 4; k++) {
                        int rc = pv_ring_recv(&g.cons, &tag, buf, cap, &len);
                        CU_ASSERT_FATAL(rc == 0 || rc == -EAGAIN || rc == -EPROTO);
                        if (rc == 0)
                                CU_ASSERT_FATAL(len <= cap);
                        broken += rc == -EPROTO;
                        ok += rc == 0;
                }
                for (int k = 0; k < 32; k++)
                        CU_ASSERT_EQUAL_FATAL(buf[cap + k], 0xa5);
                for (int k = 0; k < 4; k++) {
                        void *p = NULL;
                        uint32_t l = rnd_below(4096);
                        int rc = pv_ring_reserve(&g.prod, l, &p);
                        CU_ASSERT_FATAL(rc == 0 || rc == -EAGAIN || rc == -EPROTO || rc == -EMSGSIZE);
                        if (rc == 0) {
                                CU_ASSERT_FATAL(in_data(&g, p, l));
                                memset(p, 0x5a, l);
                                pv_ring_commit(&g.prod, 0);
                        }
                }
        }
        /* Both outcomes occur, or the fuzzing is too tame to mean much. */
        CU_ASSERT(broken > 1000);
        CU_ASSERT(ok > 1000);
        gring_close(&g);
}

/* Each side reads the other's index only when its checked copy runs out
 * (full or empty). A peer that changes its index or its records between
 * those reads gains nothing: the records seen are read once and checked
 * against the copy, and the lie is found at the next read. */
static void test_hostile_between_reads_cons(void)
{
        struct gring g;
        CU_ASSERT_FATAL(gring_open(&g, 4096) == 0);
        uint8_t m[16], buf[64 + 8];
        uint32_t tag, len;

        /* The producer takes back what it published: the records seen are
         * delivered, then the index behind ours breaks the ring. Then the
         * same with an index more than a ring ahead, and one off a record
         * boundary. */
        const uint32_t lies[] = { 24, 4 * 24 + 4096 + 8, 4 * 24 + 4 };
        for (size_t i = 0; i < sizeof(lies) / sizeof(lies[0]); i++) {
                gring_place(&g, 4096 * (uint32_t)i + 1000);
                uint32_t start = g.cons.cons;
                for (uint32_t k = 0; k < 4; k++) {
                        fill(m, 16, k);
                        CU_ASSERT_EQUAL(pv_ring_send(&g.prod, k, m, 16), 0);
                }
                CU_ASSERT_EQUAL(pv_ring_recv(&g.cons, &tag, buf, 64, &len), 0);
                ring_store_release(&g.peer_hdr->prod, start + lies[i]);
                for (uint32_t k = 1; k < 4; k++) {
                        CU_ASSERT_EQUAL(pv_ring_recv(&g.cons, &tag, buf, 64, &len), 0);
                        CU_ASSERT_EQUAL(tag, k);
                        CU_ASSERT(len == 16 && check(buf, 16, k));
                }
                expect_cons_broken(&g);
                CU_ASSERT_EQUAL(g.cons.cons, start + 4 * 24);
        }

        /* A record rewritten after its index was read: its header is read
         * when its turn comes, and checked against what was published. */
        const uint32_t bad_len[] = { 4000, 64, 41, PV_RING_PAD };
        for (size_t i = 0; i < sizeof(bad_len) / sizeof(bad_len[0]); i++) {
                gring_place(&g, 512);
                for (uint32_t k = 0; k < 3; k++)
                        CU_ASSERT_EQUAL(pv_ring_send(&g.prod, k, m, 16), 0);
                CU_ASSERT_EQUAL(pv_ring_recv(&g.cons, &tag, buf, 64, &len), 0);
                peer_put32(&g, (g.cons.cons + 24) & g.cons.mask, bad_len[i]);
                CU_ASSERT_EQUAL(pv_ring_recv(&g.cons, &tag, buf, 64, &len), 0);
                expect_cons_broken(&g);
        }
        gring_close(&g);
}

static void test_hostile_between_reads_prod(void)
{
        struct gring g;
        CU_ASSERT_FATAL(gring_open(&g, 4096) == 0);
        uint8_t m[16], buf[64];
        uint32_t tag, len, sent = 0, got = 0;

        /* Fill the ring, let the consumer take 10 records, and let the
         * producer see that (its copy: 240 bytes of room). */
        gring_place(&g, 0);
        for (;;) {
                fill(m, 16, sent);
                if (pv_ring_send(&g.prod, sent, m, 16) != 0)
                        break;
                sent++;
        }
        for (; got < 10; got++)
                CU_ASSERT_EQUAL(pv_ring_recv(&g.cons, &tag, buf, 64, &len), 0);
        CU_ASSERT_EQUAL(pv_ring_prod_free(&g.prod), 240);

        /* The consumer's index moves back by one record: still within a
         * ring of ours, which a check of the bounds alone would take. The
         * producer uses the room it saw, then finds the lie. */
        ring_store_release(&g.peer_hdr->cons, g.cons.cons - 8);
        uint32_t more = 0;
        int rc;
        for (;;) {
                fill(m, 16, sent + more);
                if ((rc = pv_ring_send(&g.prod, sent + more, m, 16)) != 0)
                        break;
                more++;
        }
        CU_ASSERT_EQUAL(rc, -EPROTO);
        CU_ASSERT_EQUAL(more, 10);
        /* No record the consumer had not taken was overwritten. */
        for (uint32_t k = got; k < sent; k++) {
                CU_ASSERT_EQUAL_FATAL(pv_ring_recv(&g.cons, &tag, buf, 64, &len), 0);
                CU_ASSERT_EQUAL(tag, k);
                CU_ASSERT(len == 16 && check(buf, 16, k));
        }

        /* Ahead of what we produced, between two reads: so far ahead that
         * the sends before the next read cannot make it true. */
        gring_place(&g, 8192);
        for (uint32_t k = 0; k < 3; k++)
                CU_ASSERT_EQUAL(pv_ring_send(&g.prod, k, m, 16), 0);
        ring_store_release(&g.peer_hdr->cons, g.prod.prod + 4096 + 8);
        for (more = 0; (rc = pv_ring_send(&g.prod, 0, m, 16)) == 0; more++)
                CU_ASSERT_FATAL(more < 4096 / 24);
        CU_ASSERT_EQUAL(rc, -EPROTO);
        expect_prod_broken(&g);
        gring_close(&g);
}

const struct pvt_test ring_hostile_tests[] = {
        { "corrupt prod", test_hostile_prod_index },
        { "corrupt record", test_hostile_record },
        { "corrupt cons", test_hostile_cons_index },
        { "random corruption", test_hostile_fuzz },
        { "lies between reads: producer's", test_hostile_between_reads_cons },
        { "lies between reads: consumer's", test_hostile_between_reads_prod },
        { NULL, NULL },
};

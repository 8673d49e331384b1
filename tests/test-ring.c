/* Unit tests of the vlink rings (proto/pv-ring.h, proto/pv-bytering.h): the
 * message ring's protocol here; hostile peers in test-ring-hostile.c, the
 * byte ring in test-bytering.c; all in one program, suite "unit". */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>

#include <CUnit/CUnit.h>

#include "pv-ring.h"
#include "ring-fixture.h"

static void test_init_sizes(void)
{
        struct pv_ring_hdr hdr;
        uint8_t data[64];
        struct pv_ring r;

        CU_ASSERT_EQUAL(pv_ring_init(&r, &hdr, data, 0, true), -EINVAL);
        CU_ASSERT_EQUAL(pv_ring_init(&r, &hdr, data, 32, true), -EINVAL);
        CU_ASSERT_EQUAL(pv_ring_init(&r, &hdr, data, 96, true), -EINVAL);
        CU_ASSERT_EQUAL(pv_ring_init(&r, &hdr, data, 1u << 31, true), -EINVAL);
        CU_ASSERT_EQUAL(pv_ring_init(&r, &hdr, data, 64, true), 0);
        CU_ASSERT_EQUAL(pv_ring_max_msg(&r), 56u);
        CU_ASSERT_EQUAL(pv_ring_init(&r, &hdr, data, 1u << 30, false), 0);
}

static void test_roundtrip(void)
{
        struct gring g;
        CU_ASSERT_FATAL(gring_open(&g, 4096) == 0);
        uint8_t in[1024], out[1024 + 16];
        uint32_t tag, len, n = 0;

        for (uint32_t l = 0; l <= 1024; l += (l < 32 ? 1 : 37)) {
                fill(in, l, l);
                CU_ASSERT_EQUAL(pv_ring_send(&g.prod, 0x10000u + l, in, l), 0);
                memset(out, 0xa5, sizeof(out));
                CU_ASSERT_EQUAL(pv_ring_recv(&g.cons, &tag, out, 1024, &len), 0);
                CU_ASSERT_EQUAL(tag, 0x10000u + l);
                CU_ASSERT_EQUAL(len, l);
                CU_ASSERT(check(out, l, l));
                CU_ASSERT_EQUAL(out[l], 0xa5);  /* nothing past the payload */
                n++;
        }
        CU_ASSERT_EQUAL(pv_ring_recv(&g.cons, &tag, out, 1024, &len), -EAGAIN);

        /* Several queued, then drained in order; reserve/commit as well. */
        for (uint32_t i = 0; i < 20; i++) {
                void *p = NULL;
                CU_ASSERT_EQUAL_FATAL(pv_ring_reserve(&g.prod, i * 9, &p), 0);
                CU_ASSERT(in_data(&g, p, i * 9));
                fill(p, i * 9, i);
                pv_ring_commit(&g.prod, i);
        }
        for (uint32_t i = 0; i < 20; i++) {
                CU_ASSERT_EQUAL(pv_ring_recv(&g.cons, &tag, out, sizeof(out), &len), 0);
                CU_ASSERT_EQUAL(tag, i);
                CU_ASSERT_EQUAL(len, i * 9);
                CU_ASSERT(check(out, len, i));
        }
        n += 20;
        CU_ASSERT_EQUAL(g.prod.stats.msgs, n);
        CU_ASSERT_EQUAL(g.cons.stats.msgs, n);

        /* An empty message needs no buffer on either side. */
        CU_ASSERT_EQUAL(pv_ring_send(&g.prod, 7, NULL, 0), 0);
        CU_ASSERT_EQUAL(pv_ring_recv(&g.cons, &tag, NULL, 0, &len), 0);
        CU_ASSERT_EQUAL(tag, 7);
        CU_ASSERT_EQUAL(len, 0);
        gring_close(&g);
}

/* Every start position, and every payload length around the tail, so that
 * each alignment of the record meets the end of the data area: the record
 * either fits exactly or leaves a pad record behind it. */
static void wrap_at_every_position(uint32_t size)
{
        struct gring g;
        CU_ASSERT_FATAL(gring_open(&g, size) == 0);
        uint8_t *in = malloc(size), *out = malloc(size);
        CU_ASSERT_FATAL(in && out);
        uint32_t tag, len;

        for (uint32_t at = 8; at < size; at += 8) {
                uint32_t tail = size - at;
                for (uint32_t k = 0; k < 16; k++) {
                        uint32_t l = tail - 8 + k;      /* fits while align8(l) <= tail - 8 */
                        if (l > pv_ring_max_msg(&g.prod))
                                break;
                        bool pads = PV_RING_REC_HDR + pv_ring_align8(l) > tail;
                        /* Start at a position behind 2^32 as well, so that
                         * the free-running indices wrap in the same pass. */
                        uint32_t base = (k & 1) ? 0u : 0u - 2 * size;
                        gring_place(&g, base + at);
                        fill(in, l, at + k);

                        uint32_t need = PV_RING_REC_HDR + pv_ring_align8(l);
                        int rc = pv_ring_send(&g.prod, at, in, l);
                        if (pads) {
                                CU_ASSERT_EQUAL(shm_read32(g.data + at), PV_RING_PAD);
                                /* After the pad, only the `at` bytes before
                                 * the consumer's position are free. */
                                CU_ASSERT_EQUAL(rc, need > at ? -EAGAIN : 0);
                                if (rc == -EAGAIN) {
                                        /* pad published, record waits for it */
                                        CU_ASSERT_EQUAL(g.hdr->prod, base + size);
                                        CU_ASSERT_EQUAL(pv_ring_room_for(&g.prod, l), need);
                                        CU_ASSERT_EQUAL(pv_ring_recv(&g.cons, &tag, out, size, &len), -EAGAIN);
                                        rc = pv_ring_send(&g.prod, at, in, l);
                                }
                        }
                        CU_ASSERT_EQUAL(rc, 0);
                        memset(out, 0, size);
                        CU_ASSERT_EQUAL(pv_ring_recv(&g.cons, &tag, out, size, &len), 0);
                        CU_ASSERT_EQUAL(tag, at);
                        CU_ASSERT_EQUAL(len, l);
                        CU_ASSERT(check(out, l, at + k));
                        uint32_t end = pads ? base + size + need : base + at + need;
                        CU_ASSERT_EQUAL(g.cons.cons, end);
                        CU_ASSERT_EQUAL(g.hdr->cons, end);
                        CU_ASSERT_EQUAL(pv_ring_recv(&g.cons, &tag, out, size, &len), -EAGAIN);
                        CU_ASSERT_FALSE(g.prod.broken || g.cons.broken);
                }
        }
        free(in);
        free(out);
        gring_close(&g);
}

static void test_wrap_pads(void)
{
        wrap_at_every_position(64);
        wrap_at_every_position(512);
        wrap_at_every_position(4096);
}

static void test_full_and_recovery(void)
{
        struct gring g;
        CU_ASSERT_FATAL(gring_open(&g, 4096) == 0);
        uint8_t in[100], out[100];
        uint32_t tag, len, sent = 0, got = 0;

        /* 36 records of 112 bytes, then 64 bytes of tail: a 40-byte
         * message still fits there, a 100-byte one pads the tail and finds
         * the ring full. */
        while (fill(in, 100, sent), pv_ring_send(&g.prod, sent, in, 100) == 0) {
                sent++;
                if (sent == 4096 / 112) {
                        CU_ASSERT_EQUAL(pv_ring_prod_free(&g.prod), 64);
                        fill(in, 40, sent);
                        CU_ASSERT_EQUAL(pv_ring_send(&g.prod, sent, in, 40), 0);
                        sent++;
                }
        }
        CU_ASSERT_EQUAL(sent, 4096 / 112 + 1);
        CU_ASSERT_EQUAL(shm_read32(g.data + 36 * 112 + 48), PV_RING_PAD);
        CU_ASSERT_EQUAL(pv_ring_prod_free(&g.prod), 0);
        CU_ASSERT_EQUAL(pv_ring_send(&g.prod, sent, in, 0), -EAGAIN);

        /* One out, one in, several times round: order and content hold. */
        for (int turn = 0; turn < 200; turn++) {
                CU_ASSERT_EQUAL_FATAL(pv_ring_recv(&g.cons, &tag, out, sizeof(out), &len), 0);
                CU_ASSERT_EQUAL(tag, got);
                CU_ASSERT(check(out, len, got));
                got++;
                fill(in, 100, sent);
                int rc = pv_ring_send(&g.prod, sent, in, 100);
                if (rc == 0)
                        sent++;
                else
                        CU_ASSERT_EQUAL(rc, -EAGAIN);
        }
        while (pv_ring_recv(&g.cons, &tag, out, sizeof(out), &len) == 0) {
                CU_ASSERT_EQUAL(tag, got);
                CU_ASSERT(check(out, len, got));
                got++;
        }
        CU_ASSERT_EQUAL(got, sent);
        CU_ASSERT_EQUAL(pv_ring_prod_free(&g.prod), 4096);
        CU_ASSERT_FALSE(g.prod.broken || g.cons.broken);
        gring_close(&g);
}

/* The largest message needs the whole, empty ring at position 0. From any
 * other position the producer pads, waits for the consumer to skip the pad,
 * then fits. */
static void test_max_msg(void)
{
        struct gring g;
        CU_ASSERT_FATAL(gring_open(&g, 4096) == 0);
        uint32_t max = pv_ring_max_msg(&g.prod), tag, len;
        uint8_t *in = malloc(max), *out = malloc(max);
        CU_ASSERT_FATAL(in && out);
        fill(in, max, 1);

        CU_ASSERT_EQUAL(max, 4096 - PV_RING_REC_HDR);
        CU_ASSERT_EQUAL(pv_ring_send(&g.prod, 1, in, max), 0);
        CU_ASSERT_EQUAL(pv_ring_send(&g.prod, 2, NULL, 0), -EAGAIN);
        CU_ASSERT_EQUAL(pv_ring_recv(&g.cons, &tag, out, max, &len), 0);
        CU_ASSERT_EQUAL(len, max);
        CU_ASSERT(check(out, max, 1));

        for (uint32_t at = 8; at < 4096; at += 200) {
                at &= ~7u;
                gring_place(&g, 4096 * 3 + at);
                /* Consumer awake: the pad is published, nothing to wake. */
                CU_ASSERT_EQUAL(pv_ring_send(&g.prod, 3, in, max), -EAGAIN);
                CU_ASSERT_EQUAL(shm_read32(g.data + at), PV_RING_PAD);
                CU_ASSERT_EQUAL(pv_ring_room_for(&g.prod, max), 4096);
                CU_ASSERT_TRUE(pv_ring_prod_prepare_sleep(&g.prod, pv_ring_room_for(&g.prod, max)));
                CU_ASSERT_TRUE(pv_ring_cons_pending(&g.cons));
                CU_ASSERT_EQUAL(pv_ring_recv(&g.cons, &tag, out, max, &len), -EAGAIN);
                /* Skipping the pad freed room the producer sleeps for, though
                 * no message moved: the consumer must still notify. */
                CU_ASSERT_TRUE(pv_ring_cons_notify(&g.cons));
                CU_ASSERT_EQUAL(pv_ring_send(&g.prod, 3, in, max), 0);
                CU_ASSERT_EQUAL(pv_ring_recv(&g.cons, &tag, out, max, &len), 0);
                CU_ASSERT_EQUAL(tag, 3);
                CU_ASSERT_EQUAL(len, max);
                CU_ASSERT(check(out, max, 1));
        }

        /* Consumer asleep: the pad alone must wake it, or both sides sleep
         * for ever (the producer for room, the consumer for data). */
        gring_place(&g, 40);
        CU_ASSERT_TRUE(pv_ring_cons_prepare_sleep(&g.cons));
        CU_ASSERT_EQUAL(pv_ring_send(&g.prod, 4, in, max), -EAGAIN);
        CU_ASSERT_TRUE(pv_ring_prod_notify(&g.prod));
        CU_ASSERT_TRUE(pv_ring_prod_prepare_sleep(&g.prod, pv_ring_room_for(&g.prod, max)));
        CU_ASSERT_EQUAL(pv_ring_recv(&g.cons, &tag, out, max, &len), -EAGAIN);
        CU_ASSERT_TRUE(pv_ring_cons_notify(&g.cons));
        CU_ASSERT_FALSE(pv_ring_prod_prepare_sleep(&g.prod, pv_ring_room_for(&g.prod, max)));
        CU_ASSERT_EQUAL(pv_ring_send(&g.prod, 4, in, max), 0);
        CU_ASSERT_EQUAL(pv_ring_recv(&g.cons, &tag, out, max, &len), 0);
        CU_ASSERT_EQUAL(len, max);
        free(in);
        free(out);
        gring_close(&g);
}

static void test_emsgsize(void)
{
        struct gring g;
        CU_ASSERT_FATAL(gring_open(&g, 4096) == 0);
        uint8_t buf[16] = { 0 };
        void *p;
        uint32_t tag, len;

        CU_ASSERT_EQUAL(pv_ring_send(&g.prod, 0, buf, pv_ring_max_msg(&g.prod) + 1), -EMSGSIZE);
        CU_ASSERT_EQUAL(pv_ring_reserve(&g.prod, 4096, &p), -EMSGSIZE);
        CU_ASSERT_EQUAL(pv_ring_reserve(&g.prod, UINT32_MAX, &p), -EMSGSIZE);
        CU_ASSERT_EQUAL(pv_ring_reserve(&g.prod, UINT32_MAX - 6, &p), -EMSGSIZE);
        /* Not corruption: the ring keeps working. */
        CU_ASSERT_EQUAL(pv_ring_send(&g.prod, 5, buf, 16), 0);
        CU_ASSERT_EQUAL(pv_ring_recv(&g.cons, &tag, buf, 16, &len), 0);
        CU_ASSERT_EQUAL(tag, 5);
        CU_ASSERT_FALSE(g.prod.broken);
        gring_close(&g);
}

static void test_recv_cap(void)
{
        struct gring g;
        CU_ASSERT_FATAL(gring_open(&g, 4096) == 0);
        uint8_t in[100], out[128];
        uint32_t tag = 0, len = 0;

        fill(in, 100, 9);
        CU_ASSERT_EQUAL(pv_ring_send(&g.prod, 1, in, 100), 0);
        memset(out, 0xa5, sizeof(out));
        CU_ASSERT_EQUAL(pv_ring_recv(&g.cons, &tag, out, 99, &len), -EPROTO);
        for (size_t i = 0; i < sizeof(out); i++)
                CU_ASSERT_EQUAL_FATAL(out[i], 0xa5);
        /* Sticky, even with room enough now. */
        CU_ASSERT_EQUAL(pv_ring_recv(&g.cons, &tag, out, sizeof(out), &len), -EPROTO);
        CU_ASSERT_TRUE(pv_ring_cons_pending(&g.cons));
        CU_ASSERT_FALSE(pv_ring_cons_prepare_sleep(&g.cons));
        gring_close(&g);
}

static void test_notify_consumer(void)
{
        struct gring g;
        CU_ASSERT_FATAL(gring_open(&g, 4096) == 0);
        uint8_t buf[32] = { 0 };
        uint32_t tag, len;

        /* Awake consumer: no xIRQ, however many sends. */
        for (int i = 0; i < 5; i++) {
                CU_ASSERT_EQUAL(pv_ring_send(&g.prod, 0, buf, 8), 0);
                CU_ASSERT_FALSE(pv_ring_prod_notify(&g.prod));
        }
        /* Data pending: the consumer may not sleep, and does not stay
         * announced as sleeping. */
        CU_ASSERT_FALSE(pv_ring_cons_prepare_sleep(&g.cons));
        CU_ASSERT_EQUAL(g.hdr->cons_wait, 0);
        while (pv_ring_recv(&g.cons, &tag, buf, sizeof(buf), &len) == 0)
                ;

        for (int nap = 0; nap < 3; nap++) {
                CU_ASSERT_FALSE(pv_ring_cons_notify(&g.cons));
                CU_ASSERT_TRUE(pv_ring_cons_prepare_sleep(&g.cons));
                /* Exactly one xIRQ per sleep, however many sends follow. */
                int sent = 0;
                for (int i = 0; i < 4; i++) {
                        CU_ASSERT_EQUAL(pv_ring_send(&g.prod, 0, buf, 8), 0);
                        sent += pv_ring_prod_notify(&g.prod);
                }
                CU_ASSERT_EQUAL(sent, 1);
                /* Even a notify with nothing new stays quiet. */
                CU_ASSERT_FALSE(pv_ring_prod_notify(&g.prod));
                while (pv_ring_recv(&g.cons, &tag, buf, sizeof(buf), &len) == 0)
                        ;
        }
        gring_close(&g);
}

/* One kernel: a consumer that sleeps rarely (PV_FENCE_LIGHT_AT messages
 * or more since its last sleep) publishes that its sleeps call
 * membarrier(2), one that sleeps often (under PV_FENCE_HEAVY_BELOW) that
 * they fence; in between it keeps its mode. A side that never sleeps
 * publishes it once it moved PV_FENCE_LIGHT_AT. The protocol is unchanged in
 * each: one xIRQ per sleep, none while awake. Between kernels the word
 * stays 0. */
static void consume_all(struct gring *g)
{
        uint8_t buf[32];
        uint32_t tag, len;
        while (pv_ring_recv(&g->cons, &tag, buf, sizeof(buf), &len) == 0)
                ;
}

static void sleep_after(struct gring *g, unsigned msgs)
{
        uint8_t buf[8] = { 0 };
        for (unsigned i = 0; i < msgs; i++) {
                CU_ASSERT_EQUAL_FATAL(pv_ring_send(&g->prod, 0, buf, 8), 0);
                CU_ASSERT_FALSE(pv_ring_prod_notify(&g->prod));
                if (i % 64 == 63)
                        consume_all(g);
        }
        consume_all(g);
        CU_ASSERT_FALSE(pv_ring_cons_notify(&g->cons));
        CU_ASSERT_TRUE(pv_ring_cons_prepare_sleep(&g->cons));
        int sent = 0;
        for (int i = 0; i < 4; i++) {
                CU_ASSERT_EQUAL(pv_ring_send(&g->prod, 0, buf, 8), 0);
                sent += pv_ring_prod_notify(&g->prod);
        }
        CU_ASSERT_EQUAL(sent, 1);
        consume_all(g);
}

static void test_notify_one_kernel(void)
{
        long q = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
        bool can = q > 0 && (q & MEMBARRIER_CMD_GLOBAL_EXPEDITED) && (q & MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED);
        struct gring g;
        CU_ASSERT_FATAL(gring_open(&g, 4096) == 0);

        pv_ring_set_one_kernel(&g.prod, false);
        pv_ring_set_one_kernel(&g.cons, false);
        CU_ASSERT_FALSE(g.prod.one_kernel || g.cons.one_kernel);
        sleep_after(&g, 2 * PV_FENCE_LIGHT_AT);
        CU_ASSERT_EQUAL(g.hdr->cons_barrier, 0);

        pv_ring_set_one_kernel(&g.prod, true);
        pv_ring_set_one_kernel(&g.cons, true);
        CU_ASSERT_EQUAL(g.prod.one_kernel, can);
        CU_ASSERT_EQUAL(g.cons.one_kernel, can);
        if (!can) {
                printf("  (membarrier(2) refused here: only the fenced mode was checked)\n");
                gring_close(&g);
                return;
        }
        /* A stale word from an earlier user is never trusted: the first
         * sleep publishes. */
        g.hdr->cons_barrier = 1;
        sleep_after(&g, 3);
        CU_ASSERT_EQUAL(g.hdr->cons_barrier, 0);
        sleep_after(&g, PV_FENCE_LIGHT_AT);
        CU_ASSERT_EQUAL(g.hdr->cons_barrier, 1);
        /* (each sleep_after moves 4 messages after its sleep too) */
        sleep_after(&g, PV_FENCE_HEAVY_BELOW + 1);  /* in between: kept */
        CU_ASSERT_EQUAL(g.hdr->cons_barrier, 1);
        sleep_after(&g, PV_FENCE_HEAVY_BELOW - 10);
        CU_ASSERT_EQUAL(g.hdr->cons_barrier, 0);
        sleep_after(&g, PV_FENCE_HEAVY_BELOW + 1);
        CU_ASSERT_EQUAL(g.hdr->cons_barrier, 0);
        /* The producer never slept, and sent over PV_FENCE_LIGHT_AT
         * messages: it published at once that its sleeps would call
         * membarrier(2), so the consumer's notify checks skip their fence. */
        CU_ASSERT_EQUAL(g.hdr->prod_barrier, 1);
        CU_ASSERT_EQUAL(g.prod.sleeps.state, PV_FENCE_WORD_BARRIER);
        gring_close(&g);
}

/* A notify with nothing new since the last one skips its fence: it must
 * neither spend the sleeper's xIRQ nor lose it. The consumer sleeps; a
 * notify with no send stays quiet and leaves the flag set; the next send's
 * notify wakes it. The same for a producer waiting for room. */
static void test_notify_no_progress(void)
{
        struct gring g;
        CU_ASSERT_FATAL(gring_open(&g, 4096) == 0);
        uint8_t buf[64] = { 0 };
        uint32_t tag, len;

        CU_ASSERT_EQUAL(pv_ring_send(&g.prod, 0, buf, 8), 0);
        CU_ASSERT_FALSE(pv_ring_prod_notify(&g.prod));
        CU_ASSERT_EQUAL(pv_ring_recv(&g.cons, &tag, buf, sizeof(buf), &len), 0);
        CU_ASSERT_FALSE(pv_ring_cons_notify(&g.cons));
        CU_ASSERT_TRUE(pv_ring_cons_prepare_sleep(&g.cons));
        CU_ASSERT_FALSE(pv_ring_prod_notify(&g.prod));
        CU_ASSERT_EQUAL(g.hdr->cons_wait, 1);
        CU_ASSERT_EQUAL(pv_ring_send(&g.prod, 0, buf, 8), 0);
        CU_ASSERT_TRUE(pv_ring_prod_notify(&g.prod));
        CU_ASSERT_EQUAL(g.hdr->cons_wait, 0);

        /* The producer fills the ring and sleeps for room. */
        while (pv_ring_send(&g.prod, 0, buf, 56) == 0)
                ;
        CU_ASSERT_FALSE(pv_ring_prod_notify(&g.prod));
        CU_ASSERT_TRUE(pv_ring_prod_prepare_sleep(&g.prod, 64));
        CU_ASSERT_FALSE(pv_ring_cons_notify(&g.cons));   /* nothing consumed since its last look */
        CU_ASSERT_EQUAL(g.hdr->prod_wait, 1);
        CU_ASSERT_EQUAL(pv_ring_recv(&g.cons, &tag, buf, sizeof(buf), &len), 0);
        CU_ASSERT_TRUE(pv_ring_cons_notify(&g.cons));
        CU_ASSERT_EQUAL(g.hdr->prod_wait, 0);
        gring_close(&g);
}

static void test_notify_producer(void)
{
        struct gring g;
        CU_ASSERT_FATAL(gring_open(&g, 4096) == 0);
        uint8_t buf[120] = { 0 };
        uint32_t tag, len;

        while (pv_ring_send(&g.prod, 0, buf, 120) == 0)
                ;
        /* Awake producer: consuming needs no xIRQ. */
        CU_ASSERT_EQUAL(pv_ring_recv(&g.cons, &tag, buf, sizeof(buf), &len), 0);
        CU_ASSERT_FALSE(pv_ring_cons_notify(&g.cons));
        /* Room appeared: the producer does not sleep, nor stays announced. */
        CU_ASSERT_FALSE(pv_ring_prod_prepare_sleep(&g.prod, pv_ring_room_for(&g.prod, 120)));
        CU_ASSERT_EQUAL(g.hdr->prod_wait, 0);
        CU_ASSERT_EQUAL(pv_ring_send(&g.prod, 0, buf, 120), 0);

        for (int nap = 0; nap < 3; nap++) {
                CU_ASSERT_EQUAL(pv_ring_send(&g.prod, 0, buf, 120), -EAGAIN);
                CU_ASSERT_FALSE(pv_ring_prod_notify(&g.prod));
                CU_ASSERT_TRUE(pv_ring_prod_prepare_sleep(&g.prod, pv_ring_room_for(&g.prod, 120)));
                int sent = 0;
                for (int i = 0; i < 3; i++) {
                        CU_ASSERT_EQUAL(pv_ring_recv(&g.cons, &tag, buf, sizeof(buf), &len), 0);
                        sent += pv_ring_cons_notify(&g.cons);
                }
                CU_ASSERT_EQUAL(sent, 1);
                for (int i = 0; i < 3; i++)
                        CU_ASSERT_EQUAL(pv_ring_send(&g.prod, 0, buf, 120), 0);
        }
        gring_close(&g);
}

static void test_stats(void)
{
        struct gring g;
        CU_ASSERT_FATAL(gring_open(&g, 4096) == 0);
        uint8_t buf[64] = { 0 };
        uint32_t tag, len;

        for (int i = 0; i < 10; i++) {
                CU_ASSERT_EQUAL(pv_ring_send(&g.prod, 0, buf, 64), 0);
                pv_ring_prod_notify(&g.prod);                   /* 10 suppressed */
        }
        CU_ASSERT_EQUAL(pv_ring_recv(&g.cons, &tag, buf, 64, &len), 0);
        pv_ring_cons_notify(&g.cons);                           /* 1 suppressed */
        while (pv_ring_recv(&g.cons, &tag, buf, 64, &len) == 0)
                ;
        CU_ASSERT_TRUE(pv_ring_cons_prepare_sleep(&g.cons));
        CU_ASSERT_EQUAL(pv_ring_send(&g.prod, 0, buf, 64), 0);
        CU_ASSERT_TRUE(pv_ring_prod_notify(&g.prod));           /* 1 sent */

        CU_ASSERT_EQUAL(g.prod.stats.msgs, 11);
        CU_ASSERT_EQUAL(g.prod.stats.xirq_sent, 1);
        CU_ASSERT_EQUAL(g.prod.stats.xirq_suppressed, 10);
        CU_ASSERT_EQUAL(g.cons.stats.msgs, 10);
        CU_ASSERT_EQUAL(g.cons.stats.xirq_sent, 0);
        CU_ASSERT_EQUAL(g.cons.stats.xirq_suppressed, 1);

        /* Failed sends and receives count nothing. */
        static uint8_t big[4096];
        CU_ASSERT_EQUAL(pv_ring_send(&g.prod, 0, big, sizeof(big)), -EMSGSIZE);
        CU_ASSERT_EQUAL(pv_ring_recv(&g.cons, &tag, buf, 64, &len), 0);
        CU_ASSERT_EQUAL(pv_ring_recv(&g.cons, &tag, buf, 64, &len), -EAGAIN);
        CU_ASSERT_EQUAL(g.prod.stats.msgs, 11);
        CU_ASSERT_EQUAL(g.cons.stats.msgs, 11);
        gring_close(&g);
}

const struct pvt_test ring_tests[] = {
                { "init rejects bad sizes", test_init_sizes },
                { "send/recv round trips", test_roundtrip },
                { "wrap with pads at every alignment", test_wrap_pads },
                { "full ring, -EAGAIN, recovery", test_full_and_recovery },
                { "largest message, pad then wait", test_max_msg },
                { "-EMSGSIZE", test_emsgsize },
                { "recv cap below record: -EPROTO", test_recv_cap },
                { "notify: consumer sleep", test_notify_consumer },
                { "notify: producer sleep", test_notify_producer },
                { "notify: nothing new, no xIRQ spent or lost", test_notify_no_progress },
                { "notify: one kernel, a rare sleeper calls membarrier", test_notify_one_kernel },
                { "stats", test_stats },
        { NULL, NULL },
};

static const struct pvt_suite suites[] = {
        { "pv_ring", NULL, NULL, ring_tests, 0 },
        { "pv_ring hostile peer", NULL, NULL, ring_hostile_tests, 0 },
        { "pv_bytering", NULL, NULL, bytering_tests, 0 },
        { NULL, NULL, NULL, NULL, 0 },
};

int main(int argc, char **argv)
{
        return pvt_main(argc, argv, suites);
}

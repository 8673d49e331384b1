/* Unit tests of pv-bytering.h: spans at wrap, a stream in random pieces,
 * notification, and a hostile peer's indices. */
#include <errno.h>
#include <string.h>
#include <sys/uio.h>

#include "pv-bytering.h"
#include "ring-fixture.h"

static bool spans_ok(const struct gring *g, const struct iovec *iov, int n, int64_t total)
{
        size_t sum = 0;
        for (int i = 0; i < n; i++) {
                if (iov[i].iov_len == 0 || !in_data(g, iov[i].iov_base, iov[i].iov_len))
                        return false;
                sum += iov[i].iov_len;
        }
        return n >= 0 && n <= 2 && (int64_t)sum == total;
}

static void test_bytering_spans(void)
{
        struct gring g;
        CU_ASSERT_FATAL(gring_open(&g, 4096) == 0);
        struct iovec iov[2];
        int n;
        const uint32_t starts[] = { 0, 1, 7, 8, 100, 2048, 4000, 4095, 4096, (uint32_t)-1, (uint32_t)-5 };

        for (size_t i = 0; i < sizeof(starts) / sizeof(starts[0]); i++) {
                uint32_t at = starts[i], pos = at & 4095;
                gring_place(&g, at);
                CU_ASSERT_EQUAL(pv_bytering_wspan(&g.prod, iov, &n), 4096);
                CU_ASSERT(spans_ok(&g, iov, n, 4096));
                CU_ASSERT_EQUAL(iov[0].iov_base, g.data + pos);
                CU_ASSERT_EQUAL(iov[0].iov_len, 4096 - pos);
                CU_ASSERT_EQUAL(n, pos ? 2 : 1);
                if (pos) {
                        CU_ASSERT_EQUAL(iov[1].iov_base, g.data);
                        CU_ASSERT_EQUAL(iov[1].iov_len, pos);
                }
                CU_ASSERT_EQUAL(pv_bytering_rspan(&g.cons, iov, &n), 0);
                CU_ASSERT_EQUAL(n, 0);

                const uint32_t fills[] = { 1, 4, 13, 40, 121, 364, 1093, 3280, 4095, 4096 };
                for (size_t k = 0; k < sizeof(fills) / sizeof(fills[0]); k++) {
                        uint32_t w = fills[k];
                        gring_place(&g, at);
                        pv_bytering_produce(&g.prod, w);
                        CU_ASSERT_EQUAL(pv_bytering_used(&g.cons), w);
                        CU_ASSERT_EQUAL(pv_bytering_rspan(&g.cons, iov, &n), w);
                        CU_ASSERT(spans_ok(&g, iov, n, w));
                        CU_ASSERT_EQUAL(iov[0].iov_base, g.data + pos);
                        CU_ASSERT_EQUAL(n, pos + w > 4096 ? 2 : 1);
                        CU_ASSERT_EQUAL(pv_bytering_wspan(&g.prod, iov, &n), 4096 - w);
                        CU_ASSERT(spans_ok(&g, iov, n, 4096 - w));
                        if (w == 4096) {
                                CU_ASSERT_EQUAL(n, 0);
                        } else {
                                CU_ASSERT_EQUAL(iov[0].iov_base, g.data + ((pos + w) & 4095));
                        }
                }
        }
        gring_close(&g);
}

/* A stream through a small ring in random pieces, written and read through
 * the spans, arrives whole and in order. */
static void test_bytering_stream(void)
{
        struct gring g;
        CU_ASSERT_FATAL(gring_open(&g, 4096) == 0);
        struct iovec iov[2];
        int n;
        uint64_t wrote = 0, rd = 0;
        const uint64_t total = 4u << 20;

        gring_place(&g, (uint32_t)-10000);      /* cross 2^32 on the way */
        while (rd < total) {
                int64_t room = pv_bytering_wspan(&g.prod, iov, &n);
                CU_ASSERT_FATAL(room >= 0 && spans_ok(&g, iov, n, room));
                uint32_t w = room ? rnd_below((uint32_t)room + 1) : 0;
                if (w > total - wrote)
                        w = (uint32_t)(total - wrote);
                for (uint32_t i = 0, done = 0; done < w; i++) {
                        uint32_t c = (uint32_t)iov[i].iov_len;
                        if (c > w - done)
                                c = w - done;
                        for (uint32_t j = 0; j < c; j++)
                                ((uint8_t *)iov[i].iov_base)[j] = (uint8_t)((wrote + done + j) * 131 >> 3);
                        done += c;
                }
                wrote += w;
                pv_bytering_produce(&g.prod, w);

                int64_t have = pv_bytering_rspan(&g.cons, iov, &n);
                CU_ASSERT_FATAL(have >= 0 && spans_ok(&g, iov, n, have));
                CU_ASSERT_FATAL((uint64_t)have == wrote - rd);
                uint32_t r = have ? rnd_below((uint32_t)have + 1) : 0;
                bool same = true;
                for (uint32_t i = 0, done = 0; done < r; i++) {
                        uint32_t c = (uint32_t)iov[i].iov_len;
                        if (c > r - done)
                                c = r - done;
                        for (uint32_t j = 0; j < c; j++)
                                same &= ((uint8_t *)iov[i].iov_base)[j] == (uint8_t)((rd + done + j) * 131 >> 3);
                        done += c;
                }
                CU_ASSERT_FATAL(same);
                rd += r;
                pv_bytering_consume(&g.cons, r);
        }
        CU_ASSERT_EQUAL(g.prod.stats.msgs, total);
        CU_ASSERT_EQUAL(g.cons.stats.msgs, total);
        gring_close(&g);
}

static void test_bytering_notify(void)
{
        struct gring g;
        CU_ASSERT_FATAL(gring_open(&g, 4096) == 0);
        struct iovec iov[2];
        int n;

        CU_ASSERT_TRUE(pv_ring_cons_prepare_sleep(&g.cons));
        pv_bytering_produce(&g.prod, 10);
        CU_ASSERT_TRUE(pv_ring_prod_notify(&g.prod));
        pv_bytering_produce(&g.prod, 4086);
        CU_ASSERT_FALSE(pv_ring_prod_notify(&g.prod));
        CU_ASSERT_EQUAL(pv_bytering_wspan(&g.prod, iov, &n), 0);
        CU_ASSERT_TRUE(pv_ring_prod_prepare_sleep(&g.prod, 1));
        CU_ASSERT_EQUAL(pv_bytering_rspan(&g.cons, iov, &n), 4096);
        pv_bytering_consume(&g.cons, 1);
        CU_ASSERT_TRUE(pv_ring_cons_notify(&g.cons));
        pv_bytering_consume(&g.cons, 1);
        CU_ASSERT_FALSE(pv_ring_cons_notify(&g.cons));
        gring_close(&g);
}

static void test_bytering_hostile(void)
{
        struct gring g;
        CU_ASSERT_FATAL(gring_open(&g, 4096) == 0);
        struct iovec iov[2];
        int n;
        const int32_t bad[] = { 4097, 8192, 0x7fffffff, -1, -4096 };

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                gring_place(&g, 1000);
                pv_bytering_produce(&g.prod, 100);
                ring_store_release(&g.peer_hdr->prod, g.cons.cons + (uint32_t)bad[i]);
                /* Negative, not a byte count: the caller must see the error. */
                CU_ASSERT_EQUAL(pv_bytering_used(&g.cons), -EPROTO);
                CU_ASSERT_EQUAL(pv_bytering_rspan(&g.cons, iov, &n), -EPROTO);
                CU_ASSERT_EQUAL(n, 0);
                ring_store_release(&g.peer_hdr->prod, g.cons.cons + 10);
                CU_ASSERT_EQUAL(pv_bytering_rspan(&g.cons, iov, &n), -EPROTO);
                CU_ASSERT_EQUAL(n, 0);

                /* The same through the first call the consumer makes. */
                gring_place(&g, 1000);
                ring_store_release(&g.peer_hdr->prod, g.cons.cons + (uint32_t)bad[i]);
                CU_ASSERT_EQUAL(pv_bytering_rspan(&g.cons, iov, &n), -EPROTO);
                CU_ASSERT_EQUAL(pv_bytering_used(&g.cons), -EPROTO);

                gring_place(&g, 1000);
                pv_bytering_produce(&g.prod, 100);
                ring_store_release(&g.peer_hdr->cons, g.prod.prod - (uint32_t)bad[i]);
                CU_ASSERT_EQUAL(pv_bytering_wspan(&g.prod, iov, &n), -EPROTO);
                CU_ASSERT_EQUAL(n, 0);
                ring_store_release(&g.peer_hdr->cons, g.prod.prod);
                CU_ASSERT_EQUAL(pv_bytering_wspan(&g.prod, iov, &n), -EPROTO);
                CU_ASSERT_FALSE(pv_ring_prod_prepare_sleep(&g.prod, 1));
        }

        /* Any index at all: spans stay inside the data area. */
        for (int iter = 0; iter < 100000; iter++) {
                gring_place(&g, (uint32_t)rnd());
                uint32_t d = rnd_below(2) ? (uint32_t)rnd() : rnd_below(4096 + 16) - 8;
                int64_t got;
                if (rnd_below(2)) {
                        ring_store_release(&g.peer_hdr->prod, g.cons.cons + d);
                        got = pv_bytering_rspan(&g.cons, iov, &n);
                        CU_ASSERT_FATAL(got == -EPROTO ? d > 4096 : (uint64_t)got == d);
                } else {
                        ring_store_release(&g.peer_hdr->cons, g.prod.prod - d);
                        got = pv_bytering_wspan(&g.prod, iov, &n);
                        CU_ASSERT_FATAL(got == -EPROTO ? d > 4096 : (uint64_t)got == 4096 - d);
                }
                CU_ASSERT_FATAL(got < 0 ? n == 0 : spans_ok(&g, iov, n, got));
                for (int i = 0; i < n; i++)
                        memset(iov[i].iov_base, 0x5a, iov[i].iov_len);
        }
        gring_close(&g);
}

const struct pvt_test bytering_tests[] = {
                { "spans at wrap", test_bytering_spans },
                { "stream in random pieces", test_bytering_stream },
                { "notify", test_bytering_notify },
                { "corrupt indices", test_bytering_hostile },
        { NULL, NULL },
};

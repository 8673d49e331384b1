/* Unit tests of VRPQ's queues (client/vrpq/vrpq-queue.h) in one process: ring
 * order and wrap, the port's FIFO allocation (wrap, reuse from 0, full,
 * too big), completion, hostile indices and descriptors, and two threads
 * pushing a million requests through a small port. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>

#include "pvt-run.h"

#include "vrpq/vrpq-queue.h"

#define CAP       16u
#define PORT      4096u

struct fixture {
        struct vrpq_chan_hdr hdr;
        struct vrpq_desc ring[CAP];
        _Alignas(64) uint8_t port[PORT];
        struct vrpq_txq tx;
        struct vrpq_rxq rx;
};

static struct fixture *fx_new(uint32_t cap, uint32_t port)
{
        struct fixture *f = aligned_alloc(64, sizeof(*f));
        memset(f, 0, sizeof(*f));
        vrpq_txq_init(&f->tx, &f->hdr.req_p, &f->hdr.req_c, f->ring, cap, f->port, port);
        vrpq_rxq_init(&f->rx, &f->hdr.req_p, &f->hdr.req_c, f->ring, cap, f->port, port);
        return f;
}

/* Allocate, fill with v, post. */
static int post_val(struct fixture *f, uint32_t v, uint32_t in, uint32_t out, uint32_t flags, uint32_t *seq)
{
        void *p;
        int rc = vrpq_txq_alloc(&f->tx, in, out, &p);
        if (rc < 0)
                return rc;
        if (in >= 4)
                memcpy(p, &v, 4);
        if (vrpq_txq_ring_room(&f->tx) != 1)
                return -EAGAIN;
        return vrpq_txq_post(&f->tx, (1u << 16) | (v & 0xffff), flags, p, seq);
}

static void test_order_and_wrap(void)
{
        struct fixture *f = fx_new(CAP, PORT);
        struct vrpq_item it[CAP];
        uint32_t next = 0, n, seq;
        for (int round = 0; round < 10; round++) {
                for (uint32_t i = 0; i < 11; i++)
                        CU_ASSERT_EQUAL_FATAL(post_val(f, next + i, 4, 0, 0, &seq), 0);
                CU_ASSERT_EQUAL(vrpq_rxq_pending(&f->rx), 11);
                CU_ASSERT_EQUAL(vrpq_rxq_fetch(&f->rx, it, CAP, &n), 0);
                CU_ASSERT_EQUAL_FATAL(n, 11);
                for (uint32_t i = 0; i < n; i++) {
                        uint32_t v;
                        memcpy(&v, it[i].in, 4);
                        CU_ASSERT_EQUAL(v, next);
                        CU_ASSERT_EQUAL(it[i].seq, next);
                        CU_ASSERT_EQUAL(it[i].in_size, 4);
                        CU_ASSERT_PTR_NULL(it[i].out);
                        CU_ASSERT(it[i].in >= f->port && it[i].in + 4 <= f->port + PORT);
                        next++;
                }
                vrpq_rxq_complete(&f->rx, it[n - 1].seq + 1);
                vrpq_rxq_release(&f->rx, it[n - 1].pend);
        }
        /* Ring full: 16 posted, the 17th waits. */
        for (uint32_t i = 0; i < CAP; i++)
                CU_ASSERT_EQUAL(post_val(f, i, 8, 0, 0, &seq), 0);
        CU_ASSERT_EQUAL(vrpq_txq_ring_room(&f->tx), 0);
        CU_ASSERT_EQUAL(vrpq_rxq_fetch(&f->rx, it, 3, &n), 0);
        CU_ASSERT_EQUAL(n, 3);
        CU_ASSERT_EQUAL(vrpq_txq_ring_room(&f->tx), 1);
        CU_ASSERT_EQUAL(f->hdr.req_c.peak_stacked, CAP);
        free(f);
}

static void test_port_fifo(void)
{
        struct fixture *f = fx_new(CAP, PORT);
        struct vrpq_item it[CAP];
        uint32_t n, seq;
        void *p;
        /* Too big for the port ever: -E2BIG; the whole port fits. */
        CU_ASSERT_EQUAL(vrpq_txq_alloc(&f->tx, PORT, 1, &p), -E2BIG);
        CU_ASSERT_EQUAL(vrpq_txq_alloc(&f->tx, (uint64_t)1 << 40, 0, &p), -E2BIG);
        CU_ASSERT_EQUAL(vrpq_txq_alloc(&f->tx, PORT - 64, 64, &p), 0);
        CU_ASSERT_PTR_EQUAL(p, f->port);
        CU_ASSERT_EQUAL(vrpq_txq_post(&f->tx, 1u << 16, 0, p, &seq), 0);
        /* Full until released. */
        CU_ASSERT_EQUAL(vrpq_txq_alloc(&f->tx, 8, 0, &p), -EAGAIN);
        CU_ASSERT_EQUAL(vrpq_rxq_fetch(&f->rx, it, CAP, &n), 0);
        CU_ASSERT_EQUAL(n, 1);
        CU_ASSERT_PTR_EQUAL(it[0].out, f->port + PORT - 64);
        CU_ASSERT_EQUAL(it[0].out_size, 64);
        CU_ASSERT_EQUAL(vrpq_txq_alloc(&f->tx, 8, 0, &p), -EAGAIN);
        vrpq_rxq_release(&f->rx, it[0].pend);
        /* Empty: the next block starts at 0 again. */
        CU_ASSERT_EQUAL(vrpq_txq_alloc(&f->tx, 3000, 0, &p), 0);
        CU_ASSERT_PTR_EQUAL(p, f->port);
        CU_ASSERT_EQUAL(vrpq_txq_post(&f->tx, 1u << 16, 0, p, &seq), 0);
        /* 3000 used, 1096 free at the end: 1000 fits there. */
        CU_ASSERT_EQUAL(vrpq_txq_alloc(&f->tx, 1000, 0, &p), 0);
        CU_ASSERT_PTR_EQUAL(p, f->port + 3000);
        CU_ASSERT_EQUAL(vrpq_txq_post(&f->tx, 1u << 16, 0, p, &seq), 0);
        /* 96 left at the end, nothing at the start: 200 waits. */
        CU_ASSERT_EQUAL(vrpq_txq_alloc(&f->tx, 200, 0, &p), -EAGAIN);
        CU_ASSERT_EQUAL(vrpq_rxq_fetch(&f->rx, it, 1, &n), 0);
        vrpq_rxq_release(&f->rx, it[0].pend);
        /* The first block released: 200 wraps to 0, the tail counts as used. */
        CU_ASSERT_EQUAL(vrpq_txq_alloc(&f->tx, 200, 0, &p), 0);
        CU_ASSERT_PTR_EQUAL(p, f->port);
        CU_ASSERT_EQUAL(vrpq_txq_post(&f->tx, 1u << 16, 0, p, &seq), 0);
        CU_ASSERT_EQUAL(f->tx.port_prod - f->tx.port_cons, 1000 + 96 + 200);
        /* Blocks never overlap what is live: 200..2999 is free, exactly. */
        CU_ASSERT_EQUAL(vrpq_txq_alloc(&f->tx, 2801, 0, &p), -EAGAIN);
        CU_ASSERT_EQUAL(vrpq_txq_alloc(&f->tx, 2800, 0, &p), 0);
        CU_ASSERT_PTR_EQUAL(p, f->port + 200);
        /* A second allocation gives the first back: the same room again. */
        CU_ASSERT_EQUAL(vrpq_txq_alloc(&f->tx, 2800, 0, &p), 0);
        CU_ASSERT_PTR_EQUAL(p, f->port + 200);
        CU_ASSERT_EQUAL(vrpq_txq_alloc(&f->tx, 100, 0, &p), 0);
        CU_ASSERT_PTR_EQUAL(p, f->port + 200);
        CU_ASSERT_EQUAL(f->tx.port_prod - f->tx.port_cons, 1000 + 96 + 200 + 104);
        CU_ASSERT_EQUAL(vrpq_txq_post(&f->tx, 1u << 16, 0, f->port, &seq), -EINVAL);
        /* Posted without it: the block is released with that request, and
         * no longer given back by the next allocation. */
        CU_ASSERT_EQUAL(vrpq_txq_post(&f->tx, 1u << 16, 0, NULL, &seq), 0);
        uint32_t prod = f->tx.port_prod;
        CU_ASSERT_EQUAL(vrpq_txq_alloc(&f->tx, 8, 0, &p), 0);
        CU_ASSERT(f->tx.port_prod - prod == 8);
        CU_ASSERT_EQUAL(vrpq_txq_post(&f->tx, 1u << 16, 0, p, &seq), 0);
        CU_ASSERT_EQUAL(vrpq_rxq_fetch(&f->rx, it, CAP, &n), 0);
        CU_ASSERT_EQUAL(n, 4);
        CU_ASSERT_PTR_NULL(it[2].in);
        CU_ASSERT_PTR_NOT_NULL(it[3].in);
        vrpq_rxq_release(&f->rx, it[3].pend);
        CU_ASSERT_EQUAL(vrpq_txq_load_port_cons(&f->tx), 0);
        CU_ASSERT_EQUAL(f->tx.port_prod, f->tx.port_cons);
        free(f);
}

static void test_done(void)
{
        struct fixture *f = fx_new(CAP, PORT);
        struct vrpq_item it[CAP];
        uint32_t n, s1, s2;
        CU_ASSERT_EQUAL(post_val(f, 1, 4, 16, 0, &s1), 0);
        CU_ASSERT_EQUAL(post_val(f, 2, 4, 16, VRPQ_DF_SYNC, &s2), 0);
        CU_ASSERT_EQUAL(vrpq_txq_done(&f->tx, s2), 0);
        CU_ASSERT_EQUAL(vrpq_rxq_fetch(&f->rx, it, CAP, &n), 0);
        CU_ASSERT_EQUAL(n, 2);
        CU_ASSERT_EQUAL(it[1].flags, VRPQ_DF_SYNC);
        CU_ASSERT_EQUAL(vrpq_txq_done(&f->tx, s2), 0);
        uint32_t answer = 42;
        memcpy(it[1].out, &answer, 4);
        vrpq_rxq_complete(&f->rx, it[1].seq + 1);
        CU_ASSERT_EQUAL(vrpq_txq_done(&f->tx, s1), 1);
        CU_ASSERT_EQUAL(vrpq_txq_done(&f->tx, s2), 1);
        CU_ASSERT_EQUAL(f->hdr.req_c.completed, 2);
        /* Completion never goes backwards. */
        vrpq_rxq_complete(&f->rx, it[0].seq + 1);
        CU_ASSERT_EQUAL(f->hdr.req_c.done, 2);
        free(f);
}

/* The consumer's view of a hostile producer. */
static void test_hostile_producer(void)
{
        struct vrpq_item it[CAP];
        uint32_t n, seq;
        for (int kind = 0; kind < 7; kind++) {
                struct fixture *f = fx_new(CAP, PORT);
                CU_ASSERT_EQUAL(post_val(f, 1, 16, 16, 0, &seq), 0);
                struct vrpq_desc *d = &f->ring[0];
                switch (kind) {
                case 0: f->hdr.req_p.prod = CAP + 5; break;         /* past the ring */
                case 1: f->hdr.req_p.prod = 0xffffffffu; break;     /* behind */
                case 2: d->proc_id = 7; break;                      /* group 0 */
                case 3: d->flags = 0x80; break;                     /* unknown flag */
                case 4: d->in_off = PORT - 8; break;                /* past the port */
                case 5: d->out_size = 0xfffffff0u; break;           /* wraps 32 bits */
                case 6: d->pend = 0x80000000u; break;               /* impossible index */
                }
                CU_ASSERT_EQUAL(vrpq_rxq_fetch(&f->rx, it, CAP, &n), -EPROTO);
                CU_ASSERT_EQUAL(n, 0);
                CU_ASSERT(f->rx.broken);
                CU_ASSERT(f->rx.why[0] != 0);
                /* Sticky, and the consumer index did not move. */
                CU_ASSERT_EQUAL(vrpq_rxq_fetch(&f->rx, it, CAP, &n), -EPROTO);
                CU_ASSERT_EQUAL(f->hdr.req_c.cons, 0);
                free(f);
        }
}

/* The producer's view of a hostile consumer. */
static void test_hostile_consumer(void)
{
        struct vrpq_item it[CAP];
        uint32_t n, seq;
        void *p;
        for (int kind = 0; kind < 3; kind++) {
                struct fixture *f = fx_new(CAP, PORT);
                for (uint32_t i = 0; i < CAP; i++)
                        CU_ASSERT_EQUAL(post_val(f, i, 200, 0, 0, &seq), 0);
                CU_ASSERT_EQUAL(vrpq_rxq_fetch(&f->rx, it, 1, &n), 0);
                int rc = 0;
                switch (kind) {
                case 0:
                        f->hdr.req_c.cons = 100;        /* ahead of what was posted */
                        rc = vrpq_txq_ring_room(&f->tx);
                        break;
                case 1:
                        f->hdr.req_c.port_cons = f->tx.port_prod + 8;
                        rc = vrpq_txq_alloc(&f->tx, 1000, 0, &p);
                        break;
                case 2:
                        f->hdr.req_c.done = 1000;
                        rc = vrpq_txq_done(&f->tx, 3);
                        break;
                }
                CU_ASSERT_EQUAL(rc, -EPROTO);
                CU_ASSERT(f->tx.broken);
                CU_ASSERT_EQUAL(vrpq_txq_ring_room(&f->tx), -EPROTO);
                free(f);
        }
}

/* Two threads, polling: a million requests of varied sizes through a
 * 4 KiB port and a 16-slot ring, every value checked, nothing leaked. Each
 * gives its CPU up while it waits for the other, which on a busy machine
 * may be queued behind it. */
static uint32_t mt_count = 1000000;
#define MT_COUNT mt_count

static void *mt_consumer(void *arg)
{
        struct fixture *f = arg;
        struct vrpq_item it[8];
        uint32_t next = 0;
        uintptr_t bad = 0;
        while (next < MT_COUNT) {
                uint32_t n;
                if (vrpq_rxq_fetch(&f->rx, it, 8, &n) < 0)
                        return (void *)1;
                for (uint32_t i = 0; i < n; i++, next++) {
                        uint32_t v;
                        memcpy(&v, it[i].in, 4);
                        bad |= v != next || it[i].in_size != 4 + next % 300;
                        if (it[i].flags & VRPQ_DF_SYNC) {
                                memcpy(it[i].out, &v, 4);
                                vrpq_rxq_complete(&f->rx, it[i].seq + 1);
                        }
                }
                if (n) {
                        vrpq_rxq_complete(&f->rx, it[n - 1].seq + 1);
                        vrpq_rxq_release(&f->rx, it[n - 1].pend);
                } else {
                        sched_yield();
                }
        }
        return (void *)bad;
}

static void test_two_threads(void)
{
        struct fixture *f = fx_new(CAP, PORT);
        pthread_t t;
        CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, mt_consumer, f), 0);
        int bad = 0;
        for (uint32_t i = 0; i < MT_COUNT && !bad; i++) {
                void *p = NULL;
                int rc;
                uint32_t in = 4 + i % 300, out = i % 1000 == 0 ? 8 : 0, seq = 0;
                while ((rc = vrpq_txq_alloc(&f->tx, in, out, &p)) == -EAGAIN)
                        sched_yield();
                if (rc < 0)
                        break;
                memcpy(p, &i, 4);
                while ((rc = vrpq_txq_ring_room(&f->tx)) == 0)
                        sched_yield();
                bad |= rc < 0;
                uint32_t out_off = f->tx.blk_out_off;
                bad |= vrpq_txq_post(&f->tx, 1u << 16, out ? VRPQ_DF_SYNC : 0, p, &seq) < 0;
                if (out) {
                        while ((rc = vrpq_txq_done(&f->tx, seq)) == 0)
                                sched_yield();
                        uint32_t v;
                        memcpy(&v, f->port + out_off, 4);
                        bad |= rc < 0 || v != i;
                }
        }
        void *res;
        pthread_join(t, &res);
        CU_ASSERT_EQUAL(bad, 0);
        CU_ASSERT_PTR_NULL(res);
        CU_ASSERT_EQUAL(f->hdr.req_c.received, MT_COUNT);
        CU_ASSERT_EQUAL(vrpq_txq_load_port_cons(&f->tx), 0);
        CU_ASSERT_EQUAL(f->tx.port_prod, f->tx.port_cons);
        CU_ASSERT(f->hdr.req_c.peak_port <= PORT);
        free(f);
}

static void test_layout(void)
{
        struct vrpq_layout l;
        vrpq_layout_init(&l, 128 * 1024, 2u << 20);
        CU_ASSERT_EQUAL(l.pmem_off % 4096, 0);
        CU_ASSERT(l.pmem_off >= l.pool_off + 128 * 1024 * VRPQ_DESC_SIZE);
        CU_ASSERT_EQUAL(l.size, l.pmem_off + (2u << 20));
        struct vrpq_chan_geom g = { .hdr_index = 3, .req_slot = 0, .req_cap = 16384, .cb_slot = 16384,
                                    .cb_cap = 2048, .port_off = 0, .port_size = 262144,
                                    .cbport_off = 262144, .cbport_size = 32768 };
        CU_ASSERT(vrpq_geom_valid(&l, &g));
        struct vrpq_chan_geom b = g;
        b.hdr_index = VRPQ_CHANNELS_MAX;
        CU_ASSERT(!vrpq_geom_valid(&l, &b));
        b = g;
        b.req_slot = 128 * 1024 - 8;
        CU_ASSERT(!vrpq_geom_valid(&l, &b));
        b = g;
        b.port_size = 3000;
        CU_ASSERT(!vrpq_geom_valid(&l, &b));
        b = g;
        b.cbport_off = 0xfffff000u;
        CU_ASSERT(!vrpq_geom_valid(&l, &b));
}

static const struct pvt_test tests[] = {
        { "layout and geometry bounds", test_layout },
        { "ring order, wrap and full", test_order_and_wrap },
        { "port FIFO allocation", test_port_fifo },
        { "completion", test_done },
        { "hostile producer: -EPROTO", test_hostile_producer },
        { "hostile consumer: -EPROTO", test_hostile_consumer },
        { "two threads, a million requests", test_two_threads },
        { NULL, NULL },
};

static const struct pvt_suite suites[] = {
        { "vrpq-queue", NULL, NULL, tests, 0 },
        { NULL, NULL, NULL, NULL, 0 },
};

int main(int argc, char **argv)
{
        const char *e = getenv("PV_STRESS_MSGS");
        if (e && strtoul(e, NULL, 10) > 0 && strtoul(e, NULL, 10) < mt_count)
                mt_count = (uint32_t)strtoul(e, NULL, 10);
        return pvt_main(argc, argv, suites);
}

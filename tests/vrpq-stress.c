/* VRPQ stress across real pvd processes: millions of requests of varied
 * sizes (4 B to 4 KiB, a synchronous one now and then) through the demo
 * platform's 2 MiB PMEM on two channels at once, every byte checked, the
 * server freeing nothing itself (vrpqReceive releases). At the end the
 * whole port can be allocated again (nothing leaked), the statistics agree,
 * and pvd holds nothing once the programs are gone.
 *
 * PV_STRESS_MSGS sets the requests per channel (default 3000000). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>

#include "vrpq-test.h"
#include "pvt-run.h"

#define CHANNELS 2
#define P_DATA   VRPQ_PROC_ID(7, 1)     /* in: [seq u32][len u32] then bytes (seq + i) & 0xff */
#define P_CHECK  VRPQ_PROC_ID(7, 2)     /* sync: out = requests received so far */
#define P_WHOLE  VRPQ_PROC_ID(7, 3)     /* one block as large as the port */

static struct pvt_platform plat;
static struct vt_shared *sh;
static uint32_t count = 3000000;

static uint32_t size_of(uint32_t seq)
{
        /* Mostly small, sometimes up to 4 KiB, from a cheap hash. */
        uint32_t h = seq * 2654435761u;
        return (h >> 28) == 0 ? 12 + (h & 4095) : 12 + ((h >> 8) & 63);
}

static void *srv_chan(void *p)
{
        VrpqChan *c = p;
        VrpqReq *reqs[8];
        int avail, rc;
        uint32_t seq = 0;
        intptr_t bad = 0;
        while ((rc = vrpqReceive(c, reqs, 8, &avail)) == 0 && !bad) {
                for (int i = 0; i < avail; i++) {
                        VrpqReq *r = reqs[i];
                        const uint8_t *in = vrpqParamInGet(r, NULL);
                        if (r->procId == P_CHECK) {
                                VRPQ_PARAM_WRITE(vrpqParamOutGet(r, NULL), 0, nku32_f, seq);
                                vrpqReply(c, r);
                                continue;
                        }
                        if (r->procId == P_WHOLE) {
                                bad |= vrpqParamInSize(r) < 8 || VRPQ_PARAM_READ(in, 0, nku32_f) != 0xabcdef01u ||
                                       VRPQ_PARAM_READ(in, vrpqParamInSize(r) - 4, nku32_f) != 0x10fedcbau;
                                continue;
                        }
                        uint32_t len = size_of(seq);
                        if (r->procId != P_DATA || vrpqParamInSize(r) != len ||
                            VRPQ_PARAM_READ(in, 0, nku32_f) != seq || VRPQ_PARAM_READ(in, 4, nku32_f) != len) {
                                fprintf(stderr, "request %u: proc %#x, %zu bytes, says %u of %u bytes; "
                                        "expected %u bytes\n", seq, r->procId, vrpqParamInSize(r),
                                        in ? VRPQ_PARAM_READ(in, 0, nku32_f) : 0, in ? VRPQ_PARAM_READ(in, 4, nku32_f) : 0,
                                        len);
                                bad = 1;
                                break;
                        }
                        for (uint32_t k = 8; k < len; k += 61)
                                bad |= in[k] != (uint8_t)(seq + k);
                        bad |= in[len - 1] != (uint8_t)(seq + len - 1);
                        seq++;
                }
        }
        if (rc != -ECONNRESET || seq != count)
                bad |= 2;
        vrpqChanDestroy(c);
        return (void *)bad;
}

static int srv(void *arg)
{
        VrpqSession *s;
        VrpqChan *c[CHANNELS];
        pthread_t t[CHANNELS];
        CHK_OK(vrpqSessionAccept("vrpq-srv-vogl0", NULL, NULL, &s));
        for (int i = 0; i < CHANNELS; i++) {
                CHK_OK(vrpqChanAccept(s, NULL, NULL, &c[i]));
                CHK(pthread_create(&t[i], NULL, srv_chan, c[i]) == 0);
        }
        int bad = 0;
        for (int i = 0; i < CHANNELS; i++) {
                void *r;
                pthread_join(t[i], &r);
                if (r) {
                        fprintf(stderr, "server channel %d: %s\n", i,
                                (intptr_t)r & 2 ? "wrong count or end" : "a request with wrong contents");
                        bad = 1;
                }
        }
        vrpqSessionDestroy(s);
        return bad;
}

struct clt_arg {
        VrpqChan *c;
        int rc;
};

static int clt_run(VrpqChan *c)
{
        void *in, *out;
        uint32_t batch = 0;
        for (uint32_t seq = 0; seq < count; seq++) {
                uint32_t len = size_of(seq);
                CHK_OK(vrpqParamAlloc(c, len, 0, &in));
                uint8_t *b = in;
                VRPQ_PARAM_WRITE(b, 0, nku32_f, seq);
                VRPQ_PARAM_WRITE(b, 4, nku32_f, len);
                for (uint32_t k = 8; k < len; k += 61)
                        b[k] = (uint8_t)(seq + k);
                b[len - 1] = (uint8_t)(seq + len - 1);
                CHK_OK(vrpqPost(c, P_DATA, in));
                if (++batch >= 1 + seq % 37) {
                        CHK_OK(vrpqNotify(c));
                        batch = 0;
                }
                if (seq % 100000 == 99999) {
                        CHK_OK(vrpqParamAlloc(c, 0, 4, &in));
                        CHK_OK(vrpqCall(c, P_CHECK, in, &out));
                        CHK(VRPQ_PARAM_READ(out, 0, nku32_f) == seq + 1);
                }
        }
        CHK_OK(vrpqParamAlloc(c, 0, 4, &in));
        CHK_OK(vrpqCall(c, P_CHECK, in, &out));
        CHK(VRPQ_PARAM_READ(out, 0, nku32_f) == count);
        /* Nothing leaked: a block as large as the whole port fits once the
         * server's next vrpqReceive released the rest. The port is the
         * largest power of two that is not -E2BIG at once (the channels
         * of a vlink get 1/8, 1/16, ... of its PMEM). */
        uint32_t port = 256 * 1024;
        int rc;
        while ((rc = vrpqParamAlloc(c, port, 0, &in)) == -E2BIG && port > 4096)
                port /= 2;
        CHK_OK(rc);
        VRPQ_PARAM_WRITE(in, 0, nku32_f, 0xabcdef01u);
        VRPQ_PARAM_WRITE(in, port - 4, nku32_f, 0x10fedcbau);
        CHK_OK(vrpqPostAndNotify(c, P_WHOLE, in));
        CHK_OK(vrpqParamAlloc(c, 0, 4, &in));
        CHK_OK(vrpqCall(c, P_CHECK, in, &out));
        return 0;
}

static void *clt_chan(void *p)
{
        struct clt_arg *a = p;
        a->rc = clt_run(a->c);
        return NULL;
}

static int clt(void *arg)
{
        VrpqSession *s;
        struct clt_arg a[CHANNELS];
        pthread_t t[CHANNELS];
        CHK_OK(vrpqSessionCreate("vrpq-clt-vogl0", NULL, 0, &s));
        for (int i = 0; i < CHANNELS; i++) {
                CHK_OK(vrpqChanCreate(s, NULL, 0, &a[i].c));
                CHK(pthread_create(&t[i], NULL, clt_chan, &a[i]) == 0);
        }
        for (int i = 0; i < CHANNELS; i++)
                pthread_join(t[i], NULL);
        vt_set_flag(&sh->flag[0], 1);
        CHK(vt_wait_flag(&sh->flag[0], 2, 20000) == 0);
        for (int i = 0; i < CHANNELS; i++) {
                CHK(a[i].rc == 0);
                CHK_OK(vrpqChanDestroy(a[i].c));
        }
        CHK_OK(vrpqSessionDestroy(s));
        return 0;
}

static const msgpack_object *get(const msgpack_object *m, const char *key)
{
        if (!m || m->type != MSGPACK_OBJECT_MAP)
                return NULL;
        for (uint32_t i = 0; i < m->via.map.size; i++) {
                const msgpack_object *k = &m->via.map.ptr[i].key;
                if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
                    !memcmp(k->via.str.ptr, key, k->via.str.size))
                        return &m->via.map.ptr[i].val;
        }
        return NULL;
}

static void test_millions(void)
{
        pid_t sp = pvt_spawn(&plat, "vm2", srv, NULL);
        pid_t cp = pvt_spawn(&plat, "vm3", clt, NULL);
        CU_ASSERT_EQUAL_FATAL(vt_wait_flag(&sh->flag[0], 1, 240000), 0);
        /* The statistics agree with what went through. */
        msgpack_zone z;
        msgpack_object doc;
        msgpack_zone_init(&z, 4096);
        CU_ASSERT_EQUAL(pvt_stat(&plat, "vm2", "vrpq", &z, &doc), 0);
        const msgpack_object *st = get(&get(&doc, "vlinks")->via.array.ptr[0], "stat");
        const msgpack_object *ss = get(st, "sessions");
        CU_ASSERT_EQUAL_FATAL(ss->via.array.size, 1);
        const msgpack_object *cs = get(&ss->via.array.ptr[0], "channels");
        CU_ASSERT_EQUAL(cs->via.array.size, CHANNELS);
        uint64_t calls = count / 100000 + 2;
        for (uint32_t i = 0; i < cs->via.array.size; i++) {
                const msgpack_object *ch = &cs->via.array.ptr[i];
                CU_ASSERT_EQUAL(get(ch, "posted")->via.u64, count + calls + 1);
                CU_ASSERT_EQUAL(get(ch, "received")->via.u64, count + calls + 1);
                CU_ASSERT(get(ch, "pmem_peak")->via.u64 <= get(ch, "port")->via.u64);
                CU_ASSERT(get(ch, "pmem_peak")->via.u64 >= get(ch, "port")->via.u64 * 3 / 4);
                CU_ASSERT(get(ch, "stacked_peak")->via.u64 <= get(ch, "ring")->via.u64);
                /* A notify per batch (1 to 37 requests), an xIRQ only for a
                 * sleeping peer: far fewer xIRQs than requests. */
                CU_ASSERT(get(ch, "xirqs_suppressed")->via.u64 > 0);
                CU_ASSERT(get(ch, "xirqs_sent")->via.u64 < count / 10);
        }
        msgpack_zone_destroy(&z);
        vt_set_flag(&sh->flag[0], 2);
        CU_ASSERT_EQUAL(pvt_wait(cp, 20000), 0);
        CU_ASSERT_EQUAL(pvt_wait(sp, 20000), 0);
}

static int suite_init(void)
{
        const char *e = getenv("PV_STRESS_MSGS");
        if (e && strtoul(e, NULL, 10) > 0)
                count = (uint32_t)strtoul(e, NULL, 10);
        sh = vt_shared_new();
        if (!sh || pvt_platform_init(&plat, "demo") < 0 || pvt_pvd_start(&plat, "vm2", NULL) < 0 ||
            pvt_pvd_start(&plat, "vm3", NULL) < 0 || pvt_wait_vlink(&plat, "vm3", NULL, "ON", 5000) < 0)
                goto fail;
        return 0;
fail:
        /* Nothing left behind, even when the platform cannot start. */
        pvt_platform_fini(&plat);
        return -1;
}

static int suite_fini(void)
{
        int left = pvt_platform_fini(&plat);
        munmap((void *)sh, sizeof(*sh));
        return left ? -1 : 0;
}

static const struct pvt_test tests[] = {
        { "millions of requests through 2 MiB of PMEM", test_millions },
        { NULL, NULL },
};

static const struct pvt_suite suites[] = {
        { "vrpq-stress", suite_init, suite_fini, tests, 0 },
        { NULL, NULL, NULL, NULL, 0 },
};

int main(int argc, char **argv)
{
        return pvt_main(argc, argv, suites);
}

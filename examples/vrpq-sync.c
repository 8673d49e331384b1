/* VRPQ synchronous requests: the client asks the server to add two numbers
 * with vrpqCall and reads the sum from the output parameters; the server
 * writes it with vrpqParamOutGet and completes the request with vrpqReply.
 *
 *   vrpq-sync server [DEVICE]          (default /dev/vrpq-srv-vogl0)
 *   vrpq-sync client [COUNT [DEVICE]]  (default 1000, /dev/vrpq-clt-vogl0)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pv/vrpq.h>

#define PROC_ADD VRPQ_PROC_ID(3, 1)    /* in: two nku32_f; out: their nku64_f sum */

static int fail(const char *who, const char *what, int diag)
{
        fprintf(stderr, "vrpq-sync %s: %s: %s (%s)\n", who, what, pvStrError(diag), pvLastError());
        return 1;
}

static int server(const char *dev)
{
        VrpqSession *session;
        VrpqChan *chan;
        void *shm_base;
        VrpqReq *reqs[16];
        int avail, diag;
        unsigned long calls = 0;

        if ((diag = vrpqSessionAccept(dev, NULL, NULL, &session)))
                return fail("server", "vrpqSessionAccept", diag);
        if ((diag = vrpqChanAccept(session, NULL, NULL, &chan)))
                return fail("server", "vrpqChanAccept", diag);
        if ((diag = vrpqShmMap(session, &shm_base)))
                return fail("server", "vrpqShmMap", diag);
        while ((diag = vrpqReceive(chan, reqs, 16, &avail)) == 0) {
                for (int i = 0; i < avail; i++) {
                        VrpqReq *req = reqs[i];
                        void *in = vrpqParamInGet(req, shm_base);
                        void *out = vrpqParamOutGet(req, shm_base);
                        /* The client can rewrite its parameters: check the
                         * sizes the library checked, read each value once. */
                        if (req->procId != PROC_ADD || vrpqParamInSize(req) < 8 || vrpqParamOutSize(req) < 8)
                                continue;
                        nku32_f a = VRPQ_PARAM_READ(in, 0, nku32_f);
                        nku32_f b = VRPQ_PARAM_READ(in, 4, nku32_f);
                        VRPQ_PARAM_WRITE(out, 0, nku64_f, (nku64_f)a + b);
                        if ((diag = vrpqReply(chan, req)))
                                return fail("server", "vrpqReply", diag);
                        calls++;
                }
        }
        if (diag != -ECONNRESET)
                return fail("server", "vrpqReceive", diag);
        printf("vrpq-sync server: answered %lu calls; the client closed\n", calls);
        vrpqChanDestroy(chan);
        vrpqSessionDestroy(session);
        return 0;
}

static int client(unsigned long count, const char *dev)
{
        VrpqSession *session;
        VrpqChan *chan;
        int diag;

        if ((diag = vrpqSessionCreate(dev, "sync example", 13, &session)))
                return fail("client", "vrpqSessionCreate", diag);
        if ((diag = vrpqChanCreate(session, NULL, 0, &chan)))
                return fail("client", "vrpqChanCreate", diag);
        for (unsigned long i = 0; i < count; i++) {
                void *in, *out;
                nku32_f a = (nku32_f)(i * 7), b = 0xffffffffu - (nku32_f)i;
                if ((diag = vrpqParamAlloc(chan, 8, 8, &in)))
                        return fail("client", "vrpqParamAlloc", diag);
                VRPQ_PARAM_WRITE(in, 0, nku32_f, a);
                VRPQ_PARAM_WRITE(in, 4, nku32_f, b);
                if ((diag = vrpqCall(chan, PROC_ADD, in, &out)))
                        return fail("client", "vrpqCall", diag);
                nku64_f sum = VRPQ_PARAM_READ(out, 0, nku64_f);
                if (sum != (nku64_f)a + b) {
                        fprintf(stderr, "vrpq-sync client: %u + %u gave %llu\n", a, b, (unsigned long long)sum);
                        return 1;
                }
                if (i == 0)
                        printf("vrpq-sync client: %u + %u = %llu (computed in the server VM)\n", a, b,
                               (unsigned long long)sum);
        }
        printf("vrpq-sync client: %lu synchronous calls, every answer right\n", count);
        vrpqChanDestroy(chan);
        vrpqSessionDestroy(session);
        return 0;
}

int main(int argc, char **argv)
{
        if (argc >= 2 && strcmp(argv[1], "server") == 0)
                return server(argc > 2 ? argv[2] : "/dev/vrpq-srv-vogl0");
        if (argc >= 2 && strcmp(argv[1], "client") == 0)
                return client(argc > 2 ? strtoul(argv[2], NULL, 0) : 1000,
                              argc > 3 ? argv[3] : "/dev/vrpq-clt-vogl0");
        fprintf(stderr, "usage: vrpq-sync server [DEVICE] | client [COUNT [DEVICE]]\n");
        return 2;
}

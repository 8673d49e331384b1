/* VRPQ callbacks, from the server to the client. The client subscribes
 * (an asynchronous request); the server answers with COUNT asynchronous
 * "tick" callbacks and one synchronous "question" callback whose answer it
 * waits for; the client handles them with vrpqCallbackHandle.
 *
 *   vrpq-callback server [DEVICE]          (default /dev/vrpq-srv-vogl0)
 *   vrpq-callback client [COUNT [DEVICE]]  (default 5, /dev/vrpq-clt-vogl0)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pv/vrpq.h>

#define PROC_SUBSCRIBE VRPQ_PROC_ID(4, 1)      /* client -> server, in: nku32_f count */
#define CB_TICK        VRPQ_PROC_ID(4, 2)      /* server -> client, in: nku32_f n */
#define CB_QUESTION    VRPQ_PROC_ID(4, 3)      /* server -> client, sync, out: nku32_f ticks seen */

static int fail(const char *who, const char *what, int diag)
{
        fprintf(stderr, "vrpq-callback %s: %s: %s (%s)\n", who, what, pvStrError(diag), pvLastError());
        return 1;
}

static int server(const char *dev)
{
        VrpqSession *session;
        VrpqChan *chan;
        void *shm_base, *in, *out;
        VrpqReq *reqs[4];
        int avail, diag;

        if ((diag = vrpqSessionAccept(dev, NULL, NULL, &session)))
                return fail("server", "vrpqSessionAccept", diag);
        if ((diag = vrpqChanAccept(session, NULL, NULL, &chan)))
                return fail("server", "vrpqChanAccept", diag);
        if ((diag = vrpqShmMap(session, &shm_base)))
                return fail("server", "vrpqShmMap", diag);
        while ((diag = vrpqReceive(chan, reqs, 4, &avail)) == 0) {
                for (int i = 0; i < avail; i++) {
                        void *p = vrpqParamInGet(reqs[i], shm_base);
                        if (reqs[i]->procId != PROC_SUBSCRIBE || vrpqParamInSize(reqs[i]) < 4)
                                continue;
                        nku32_f count = VRPQ_PARAM_READ(p, 0, nku32_f);
                        for (nku32_f n = 1; n <= count; n++) {
                                if ((diag = vrpqParamAlloc(chan, 4, 0, &in)))
                                        return fail("server", "vrpqParamAlloc", diag);
                                VRPQ_PARAM_WRITE(in, 0, nku32_f, n);
                                if ((diag = vrpqCallbackPerform(chan, CB_TICK, in, NULL, 0)))
                                        return fail("server", "vrpqCallbackPerform", diag);
                        }
                        if ((diag = vrpqParamAlloc(chan, 0, 4, &in)))
                                return fail("server", "vrpqParamAlloc", diag);
                        if ((diag = vrpqCallbackPerform(chan, CB_QUESTION, in, &out, 1)))
                                return fail("server", "vrpqCallbackPerform (sync)", diag);
                        printf("vrpq-callback server: sent %u ticks; the client says it saw %u\n", count,
                               VRPQ_PARAM_READ(out, 0, nku32_f));
                }
        }
        if (diag != -ECONNRESET)
                return fail("server", "vrpqReceive", diag);
        vrpqChanDestroy(chan);
        vrpqSessionDestroy(session);
        return 0;
}

struct client_state {
        nku32_f ticks;
        int answered;
};

static int on_callback(void *ctx, nku32_f procId, void *in, void *out)
{
        struct client_state *st = ctx;
        if (procId == CB_TICK) {
                st->ticks++;
                printf("vrpq-callback client: tick %u\n", VRPQ_PARAM_READ(in, 0, nku32_f));
        } else if (procId == CB_QUESTION && out) {
                VRPQ_PARAM_WRITE(out, 0, nku32_f, st->ticks);
                st->answered = 1;
        }
        return 0;
}

static int client(nku32_f count, const char *dev)
{
        VrpqSession *session;
        VrpqChan *chan;
        void *in;
        int diag;
        struct client_state st = { 0 };

        if ((diag = vrpqSessionCreate(dev, NULL, 0, &session)))
                return fail("client", "vrpqSessionCreate", diag);
        if ((diag = vrpqChanCreate(session, NULL, 0, &chan)))
                return fail("client", "vrpqChanCreate", diag);
        if ((diag = vrpqParamAlloc(chan, 4, 0, &in)))
                return fail("client", "vrpqParamAlloc", diag);
        VRPQ_PARAM_WRITE(in, 0, nku32_f, count);
        if ((diag = vrpqPostAndNotify(chan, PROC_SUBSCRIBE, in)))
                return fail("client", "vrpqPostAndNotify", diag);
        while (!st.answered)
                if ((diag = vrpqCallbackHandle(chan, on_callback, &st, 10000)))
                        return fail("client", "vrpqCallbackHandle", diag);
        printf("vrpq-callback client: %u ticks, question answered\n", st.ticks);
        vrpqChanDestroy(chan);
        vrpqSessionDestroy(session);
        return st.ticks == count ? 0 : 1;
}

int main(int argc, char **argv)
{
        if (argc >= 2 && strcmp(argv[1], "server") == 0)
                return server(argc > 2 ? argv[2] : "/dev/vrpq-srv-vogl0");
        if (argc >= 2 && strcmp(argv[1], "client") == 0)
                return client(argc > 2 ? (nku32_f)strtoul(argv[2], NULL, 0) : 5,
                              argc > 3 ? argv[3] : "/dev/vrpq-clt-vogl0");
        fprintf(stderr, "usage: vrpq-callback server [DEVICE] | client [COUNT [DEVICE]]\n");
        return 2;
}

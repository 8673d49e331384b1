/* The user guide's VRPQ walkthrough, server side (section 3.1.2.2): accept
 * a session and a channel on /dev/vrpq-srv-vogl0, map PMEM, and receive
 * requests in batches of up to 8 until the client goes away, printing the
 * int of each VRPQ_PROC_ID(2,2) request.
 *
 *   vrpq-server [DEVICE]        (default /dev/vrpq-srv-vogl0)
 *
 * Every status is checked: a disconnection shows as -ECONNRESET. */
#include <errno.h>
#include <stdio.h>

#include <pv/vrpq.h>

static int fail(const char *what, int diag)
{
        fprintf(stderr, "vrpq-server: %s: %s (%s)\n", what, pvStrError(diag), pvLastError());
        return 1;
}

int main(int argc, char **argv)
{
        const char *dev = argc > 1 ? argv[1] : "/dev/vrpq-srv-vogl0";
        VrpqSession *session;
        VrpqChan *chan;
        void *shm_base;
        VrpqReq *reqs[8];
        int avail, diag;
        unsigned count = 0;

        /* Init of communication: symmetric to the client's. */
        diag = vrpqSessionAccept(dev, NULL, NULL, &session);
        if (diag)
                return fail("vrpqSessionAccept", diag);
        diag = vrpqChanAccept(session, NULL, NULL, &chan);
        if (diag)
                return fail("vrpqChanAccept", diag);
        diag = vrpqShmMap(session, &shm_base);
        if (diag)
                return fail("vrpqShmMap", diag);
        printf("vrpq-server: session and channel accepted, waiting for requests\n");
        fflush(stdout);

        /* The server waits for data, a batch of at most 8 at a time. */
        for (;;) {
                diag = vrpqReceive(chan, reqs, 8, &avail);
                if (diag == -ECONNRESET)
                        break;  /* the client closed: every request it sent was received */
                if (diag)
                        return fail("vrpqReceive", diag);
                for (unsigned i = 0; i < (unsigned)avail; i++, count++) {
                        VrpqReq *req = reqs[i];
                        void *in = vrpqParamInGet(req, shm_base);
                        nku32_f proc_id = req->procId;
                        nku32_f func_id = VRPQ_PROC_ID_FUNC_GET(proc_id);
                        nku32_f grp_id = VRPQ_PROC_ID_GRP_GET(proc_id);
                        if (grp_id == 2 && func_id == 2 && in && vrpqParamInSize(req) >= sizeof(nku32_f)) {
                                nku32_f data = VRPQ_PARAM_READ(in, 0, nku32_f);
                                printf("vrpq-server: request (%u,%u): received %u\n", grp_id, func_id, data);
                        } else {
                                printf("vrpq-server: request (%u,%u) with %zu input bytes\n", grp_id, func_id,
                                       vrpqParamInSize(req));
                        }
                }
                fflush(stdout);
        }
        printf("vrpq-server: the client closed the channel after %u requests\n", count);

        /* Closing: channel first, then session. */
        diag = vrpqChanDestroy(chan);
        if (diag)
                return fail("vrpqChanDestroy", diag);
        diag = vrpqSessionDestroy(session);
        if (diag)
                return fail("vrpqSessionDestroy", diag);
        return 0;
}

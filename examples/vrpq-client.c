/* The user guide's VRPQ walkthrough, client side (section 3.1.2.2): create
 * a session and a channel on /dev/vrpq-clt-vogl0, send an int
 * asynchronously with VRPQ_PROC_ID(2,2), and close.
 *
 *   vrpq-client [VALUE [COUNT [DEVICE]]]   (default 42, 1, /dev/vrpq-clt-vogl0)
 *
 * Every status is checked: a disconnection shows as -ECONNRESET. */
#include <stdio.h>
#include <stdlib.h>

#include <pv/vrpq.h>

static int fail(const char *what, int diag)
{
        fprintf(stderr, "vrpq-client: %s: %s (%s)\n", what, pvStrError(diag), pvLastError());
        return 1;
}

int main(int argc, char **argv)
{
        nku32_f sent_value = argc > 1 ? (nku32_f)strtoul(argv[1], NULL, 0) : 42;
        unsigned count = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 0) : 1;
        const char *dev = argc > 3 ? argv[3] : "/dev/vrpq-clt-vogl0";
        VrpqSession *session;
        VrpqChan *chan;
        void *in;
        int diag;

        /* Init of communication: a session, then a channel. */
        diag = vrpqSessionCreate(dev, NULL, 0, &session);
        if (diag)
                return fail("vrpqSessionCreate", diag);
        diag = vrpqChanCreate(session, NULL, 0, &chan);
        if (diag)
                return fail("vrpqChanCreate", diag);

        for (unsigned i = 0; i < count; i++) {
                /* Memory allocation of the parameters. */
                diag = vrpqParamAlloc(chan, sizeof(nku32_f), 0, &in);
                if (diag)
                        return fail("vrpqParamAlloc", diag);
                /* Serialization of the parameters. */
                VRPQ_PARAM_WRITE(in, 0, nku32_f, sent_value + i);
                /* Sending of the request: post and notify at once. */
                diag = vrpqPostAndNotify(chan, VRPQ_PROC_ID(2, 2), in);
                if (diag)
                        return fail("vrpqPostAndNotify", diag);
        }
        printf("vrpq-client: sent %u request%s (2,2) from %u\n", count, count == 1 ? "" : "s", sent_value);

        /* Closing: channel first, then session. */
        diag = vrpqChanDestroy(chan);
        if (diag)
                return fail("vrpqChanDestroy", diag);
        diag = vrpqSessionDestroy(session);
        if (diag)
                return fail("vrpqSessionDestroy", diag);
        return 0;
}

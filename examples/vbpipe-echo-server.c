/* The seed's VBPIPE walkthrough (3.3.2.3), server side, as a complete
 * program: it reads messages (a length byte, then that many bytes) and
 * writes each back, until the client closes. The code of Listings 1, 2 and
 * 5 is as the user guide writes it; what surrounds it is marked.
 *
 *   PVD_RUNTIME_DIR=/tmp/plat/vm2 pvrun vbpipe-echo-server      # open(2), under pvrun(1)
 *   PVD_RUNTIME_DIR=/tmp/plat/vm2 vbpipe-echo-server-vbpipeopen # the same with vbpipeOpen
 *
 * Built twice: with USE_VBPIPE_OPEN, Listing 1's open(2) is vbpipeOpen.
 * It says on stdout what it echoed.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#ifdef USE_VBPIPE_OPEN
#include <pv/vbpipe.h>
#endif

static void error(const char *msg)
{
        fprintf(stderr, "vbpipe-echo-server: %s", msg);
}

static int open_vbpipe(int *fd)
{
#ifdef USE_VBPIPE_OPEN
        *fd = vbpipeOpen("/dev/vbpipe0", O_RDWR);
#else
        /* Listing 1 */
        *fd = open("/dev/vbpipe0", O_RDWR, 0);
#endif
        return *fd;
}

int main(void)
{
        /* Unsigned: the length byte goes up to 255, and a message fits. */
        unsigned char vbuf[256];
        int fd, res, n = 0;

        setvbuf(stdout, NULL, _IOLBF, 0);
        /* A client gone before its answer is write's EPIPE (Listing 5). */
        signal(SIGPIPE, SIG_IGN);
        if (open_vbpipe(&fd) < 0) {
                perror("vbpipe-echo-server: /dev/vbpipe0");
                return 1;
        }
        for (;;) {
                /* Listing 2 */
                res = read(fd, vbuf, 1);
                if (res == 1) {
                  res = vbuf[0];
                  res = read(fd, vbuf + 1, res);
                }

                /* The client closed: end of the conversation. */
                if (res == 0)
                        break;
                if (res > 0)
                        printf("vbpipe-echo-server: echo %d bytes: %.*s\n", res, res, (const char *)vbuf + 1);

                /* Listing 5 */
                if (res < 0) {
                  error("unexpected read error\n");
                  return -1;
                } else if (res > 0) {
                  res = write(fd, vbuf, res + 1);
                  if (res < 0 && errno != EPIPE) {
                    error("unexpected write error\n");
                    return -1;
                  }
                }
                n++;
        }
        printf("vbpipe-echo-server: the client closed after %d messages\n", n);
        /* Closing of communications */
        close(fd);
        return 0;
}

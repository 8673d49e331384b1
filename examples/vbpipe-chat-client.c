/* The seed's VBPIPE walkthrough (3.3.2.3), client side, as a complete
 * program: it reads lines from the console, sends each with its length in
 * the first byte, and prints what the echo server sends back. The code of
 * Listings 1, 3, 4 and 6 is as the user guide writes it; what surrounds it
 * is marked.
 *
 *   PVD_RUNTIME_DIR=/tmp/plat/vm4 pvrun vbpipe-chat-client      # open(2), under pvrun(1)
 *   PVD_RUNTIME_DIR=/tmp/plat/vm4 vbpipe-chat-client-vbpipeopen # the same with vbpipeOpen
 *
 * Built twice: with USE_VBPIPE_OPEN, Listing 1's open(2) is vbpipeOpen.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#ifdef USE_VBPIPE_OPEN
#include <pv/vbpipe.h>
#endif

/* One length byte, then at most 255 bytes of a line. */
#define CBUF_SIZE 256

static void error(const char *msg)
{
        fprintf(stderr, "vbpipe-chat-client: %s", msg);
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
        /* Unsigned: the length byte goes up to 255. vbuf has one byte more
         * than a message: Listing 6 prints sz bytes from vbuf + 1. */
        unsigned char cbuf[CBUF_SIZE], vbuf[CBUF_SIZE + 1];
        int fd, ch, sz, res;

        /* A closed server is write's EPIPE (Listing 4), not death by SIGPIPE. */
        signal(SIGPIPE, SIG_IGN);
        if (open_vbpipe(&fd) < 0) {
                perror("vbpipe-chat-client: /dev/vbpipe0");
                return 1;
        }
        for (;;) {
                /* Listing 3 (the bound on sz keeps a long line in cbuf: the
                 * rest goes as the next message) */
                sz = 1;
                while (sz < CBUF_SIZE && (ch = getchar()) != '\n' && ch != EOF) {
                        cbuf[sz++] = ch;
                }
                cbuf[0] = sz - 1;

                if (sz == 1 && ch == EOF)
                        break;
                /* An empty message would get no answer: Listing 2 reads 0
                 * bytes and Listing 5 writes nothing back. */
                if (sz == 1)
                        continue;
                /* The byte after the echoed message, which Listing 6 prints
                 * too, ends the line. */
                memset(vbuf, '\n', sizeof(vbuf));

                /* Listing 4 */
                res = write(fd, cbuf, sz);
                if (res == -1) {
                        if (errno == EPIPE) {
                                error("server closed connection\n");
                                return -1;
                        } else {
                                error("client error\n");
                                return -1;
                        }
                } else {
                        /* Listing 6 */
                        res = read(fd, vbuf, sz);
                        if (res < 0 || res == 0) {
                                error("server closed connection\n");
                                return -1;
                        } else {
                                (void) write(1, vbuf + 1, sz);
                        }
                }
                if (ch == EOF)
                        break;
        }
        /* Closing of communications */
        close(fd);
        return 0;
}

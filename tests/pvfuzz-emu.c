/* pvfuzz's fuzzing of a vlink's emulated-hypervisor socket: it joins a
 * vlink as the client VM whose pvd is not running (vm5 of test-2clients),
 * the way a pvd joins, then sends mutations of valid link messages with
 * random fds, until the server's pvd drops it; then again.
 *
 * The wire format is daemon/hv/emu-proto.h: the socket carries JOIN, HELLO,
 * READY and the fds of announcements (FD); the announcements themselves go
 * on the control ring, which the hostile-peer tests corrupt. Every message
 * is built by the small helpers below (emu_valid, emu_mutate, emu_send),
 * so that a change of that format changes them only.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "hv/emu-proto.h"
#include "pvfuzz.h"

#define EMU_SERVER "vm2"
#define EMU_CLIENT "vm5"
#define EMU_LINK   "vm2-vm5-vogl1"

/* ---- the helpers that know the wire format ---------------------------------------- */

static void emu_valid(struct pv_emu_msg *m, uint32_t type)
{
        memset(m, 0, sizeof(*m));
        m->magic = PV_EMU_MAGIC;
        m->version = PV_EMU_VERSION;
        m->type = type;
        snprintf(m->server_vm, sizeof(m->server_vm), "%s", EMU_SERVER);
        snprintf(m->client_vm, sizeof(m->client_vm), "%s", EMU_CLIENT);
        snprintf(m->link_name, sizeof(m->link_name), "%s", EMU_LINK);
}

/* The fds a valid message of type carries (the rest get random ones). */
static unsigned emu_fds_of(uint32_t type)
{
        return type == PV_EMU_FD ? 1 : 0;
}

/* A mutation of a valid message: fields set to interesting values, rarely
 * the header itself. Returns the length to send. */
static size_t emu_mutate(struct fz_rng *r, struct pv_emu_msg *m)
{
        unsigned n = 1 + fz_below(r, 3);
        for (unsigned i = 0; i < n; i++) {
                switch (fz_below(r, 12)) {
                case 0:
                        m->id = (uint32_t)fz_interesting(r);
                        break;
                case 1:
                        m->kind = (uint32_t)fz_below(r, 5);
                        break;
                case 2:
                        m->region_offset[fz_below(r, PV_REGION_COUNT)] = fz_interesting(r);
                        break;
                case 3:
                        m->gen = (uint32_t)fz_interesting(r);
                        break;
                case 4:
                        m->region_mask = (uint32_t)fz_next(r);
                        break;
                case 5:
                        m->region_size[fz_below(r, PV_REGION_COUNT)] = fz_interesting(r);
                        break;
                case 6:
                        m->type = (uint32_t)fz_below(r, 8);
                        break;
                case 7:
                        if (fz_below(r, 4) == 0)
                                m->magic ^= 1u << fz_below(r, 32);
                        break;
                case 8:
                        if (fz_below(r, 4) == 0)
                                m->version = (uint32_t)fz_interesting(r);
                        break;
                case 9:
                        fz_bytes(r, m->link_name, fz_below(r, sizeof(m->link_name)));
                        break;
                case 10:
                        fz_bytes(r, m->client_vm, sizeof(m->client_vm)); /* unterminated */
                        break;
                default:
                        m->reserved = (uint32_t)fz_next(r);
                        break;
                }
        }
        switch (fz_below(r, 16)) {
        case 0:
                return fz_below(r, sizeof(*m)); /* truncated */
        case 1:
                return sizeof(*m) + 1 + fz_below(r, 64); /* longer than a message */
        default:
                return sizeof(*m);
        }
}

/* One datagram of len bytes of m (len may exceed sizeof(*m): zeros) and
 * fds. 0 or -errno. */
static int emu_send(int fd, const struct pv_emu_msg *m, size_t len, const int *fds, unsigned nfds)
{
        uint8_t buf[sizeof(*m) + 64];
        memset(buf, 0, sizeof(buf));
        memcpy(buf, m, len < sizeof(*m) ? len : sizeof(*m));
        return fz_sendmsg(fd, buf, len > sizeof(buf) ? sizeof(buf) : len, fds, nfds);
}

/* Read what the server sent (closing any fds): false once it hung up. */
static bool emu_drain(int fd, int timeout_ms)
{
        for (;;) {
                struct pollfd pf = { .fd = fd, .events = POLLIN };
                if (poll(&pf, 1, timeout_ms) != 1)
                        return true;
                uint8_t buf[sizeof(struct pv_emu_msg) + 64];
                ssize_t n = fz_recvmsg(fd, buf, sizeof(buf));
                if (n == 0 || (n < 0 && n != -EAGAIN))
                        return false;
                timeout_ms = 0;
        }
}

static int emu_connect(const char *platform_dir)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s.sock", platform_dir, EMU_LINK);
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                int e = errno;
                close(fd);
                return -e;
        }
        return fd;
}

/* ---- the worker ------------------------------------------------------------------- */

/* One join: a valid JOIN (and, most times, READY after the HELLO), then
 * mutations until the server drops us. Adds the messages sent to *inputs. */
void fz_emu_session(struct fz_worker *w, volatile uint64_t *inputs)
{
        int fd = emu_connect(w->platform_dir);
        if (fd < 0) {
                usleep(20000); /* the server's pvd is not there yet */
                return;
        }
        w->stats->emu_joins++;
        struct pv_emu_msg m;
        emu_valid(&m, PV_EMU_JOIN);
        bool alive = emu_send(fd, &m, sizeof(m), NULL, 0) == 0 && emu_drain(fd, 200);
        if (alive && fz_below(&w->rng, 4)) {
                emu_valid(&m, PV_EMU_READY);
                alive = emu_send(fd, &m, sizeof(m), NULL, 0) == 0;
        }
        for (unsigned i = 0; alive && i < 64; i++) {
                static const uint32_t types[] = { PV_EMU_FD, PV_EMU_FD, PV_EMU_FD, PV_EMU_READY, PV_EMU_JOIN,
                                                  PV_EMU_HELLO };
                emu_valid(&m, types[fz_below(&w->rng, sizeof(types) / sizeof(types[0]))]);
                m.id = 1 + (uint32_t)fz_below(&w->rng, 8);
                m.kind = fz_below(&w->rng, 2) ? PV_EMU_KIND_XIRQ : PV_EMU_KIND_GRANT;
                size_t len = fz_below(&w->rng, 3) ? emu_mutate(&w->rng, &m) : sizeof(m);
                int fds[FZ_FDS_MAX];
                unsigned nfds = fz_below(&w->rng, 3) ? emu_fds_of(m.type) : fz_below(&w->rng, FZ_FDS_MAX + 1);
                fz_pick_fds(w, fds, nfds);
                if (emu_send(fd, &m, len, fds, nfds) < 0)
                        break;
                (*inputs)++;
                alive = emu_drain(fd, 0);
        }
        close(fd);
        if (!alive)
                w->stats->emu_drops++;
}

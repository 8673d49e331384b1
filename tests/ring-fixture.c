/* Shared fixture of the ring unit tests (see ring-fixture.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ring-fixture.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

uint64_t rnd(void)
{
        /* xorshift64*: reproducible runs, no libc state */
        rng_state ^= rng_state >> 12;
        rng_state ^= rng_state << 25;
        rng_state ^= rng_state >> 27;
        return rng_state * 0x2545f4914f6cdd1dull;
}

uint32_t rnd_below(uint32_t n)
{
        return (uint32_t)(rnd() % n);
}

void fill(uint8_t *p, uint32_t len, uint32_t seed)
{
        for (uint32_t i = 0; i < len; i++)
                p[i] = (uint8_t)(seed * 31u + i * 7u + (i >> 8));
}

bool check(const uint8_t *p, uint32_t len, uint32_t seed)
{
        for (uint32_t i = 0; i < len; i++)
                if (p[i] != (uint8_t)(seed * 31u + i * 7u + (i >> 8)))
                        return false;
        return true;
}

void gring_close(struct gring *g)
{
        if (g->peer && g->peer != MAP_FAILED)
                munmap(g->peer, g->peer_len);
        if (g->area && g->area != MAP_FAILED)
                munmap(g->area, g->area_len);
        if (g->fd >= 0)
                close(g->fd);
        memset(g, 0, sizeof(*g));
        g->fd = -1;
}

int gring_open(struct gring *g, uint32_t size)
{
        size_t pg = (size_t)sysconf(_SC_PAGESIZE);
        size_t dlen = (size + pg - 1) / pg * pg;
        size_t data_off = pg + (dlen - size);   /* in the memfd */
        int rc;

        memset(g, 0, sizeof(*g));
        g->size = size;
        g->fd = memfd_create("test-ring", MFD_CLOEXEC);
        if (g->fd < 0)
                return -errno;
        if (ftruncate(g->fd, (off_t)(pg + dlen)) < 0)
                goto fail_errno;

        /* Reserve the whole view inaccessible, then map the two live parts
         * over it: what stays PROT_NONE are the guard pages. */
        g->area_len = 3 * pg + dlen + pg;
        g->area = mmap(NULL, g->area_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (g->area == MAP_FAILED)
                goto fail_errno;
        if (mmap(g->area + pg, pg, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, g->fd, 0) == MAP_FAILED)
                goto fail_errno;
        if (mmap(g->area + 3 * pg, dlen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, g->fd,
                 (off_t)pg) == MAP_FAILED)
                goto fail_errno;
        g->hdr = (struct pv_ring_hdr *)(g->area + pg);
        g->data = g->area + 3 * pg + (dlen - size);

        g->peer_len = pg + dlen;
        g->peer = mmap(NULL, g->peer_len, PROT_READ | PROT_WRITE, MAP_SHARED, g->fd, 0);
        if (g->peer == MAP_FAILED)
                goto fail_errno;
        g->peer_hdr = (struct pv_ring_hdr *)g->peer;
        g->peer_data = g->peer + data_off;

        if ((rc = pv_ring_init(&g->prod, g->hdr, g->data, size, true)) < 0 ||
            (rc = pv_ring_init(&g->cons, g->hdr, g->data, size, false)) < 0)
                goto fail;
        return 0;
fail_errno:
        rc = -errno;
fail:
        gring_close(g);
        return rc;
}

void gring_reset(struct gring *g)
{
        pv_ring_init(&g->prod, g->hdr, g->data, g->size, true);
        pv_ring_init(&g->cons, g->hdr, g->data, g->size, false);
}

void gring_place(struct gring *g, uint32_t at)
{
        gring_reset(g);
        g->prod.prod = at;
        g->prod.seen = at;
        g->cons.cons = at;
        g->cons.seen = at;
        g->hdr->prod = at;
        g->hdr->cons = at;
}

void peer_put32(struct gring *g, uint32_t pos, uint32_t v)
{
        ring_store_relaxed((uint32_t *)(g->peer_data + pos), v);
}

bool in_data(const struct gring *g, const void *p, size_t len)
{
        const uint8_t *b = p;
        return b >= g->data && len <= g->size && b + len <= g->data + g->size;
}

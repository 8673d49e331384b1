/* A verifiable byte stream for the vbpipe tests: the bytes of a seeded
 * PRNG (splitmix64, each word little-endian), so that a receiver that
 * knows the seed regenerates the stream and checks every byte's value and
 * place: a byte lost, doubled, reordered or from the other direction shows
 * as a mismatch at its offset. */
#ifndef VBPIPE_STREAM_H
#define VBPIPE_STREAM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct vbs_stream {
        uint64_t state;
        uint64_t word;     /* the current word's remaining bytes, low first */
        unsigned left;
        uint64_t pos;      /* bytes produced so far */
};

static inline uint64_t vbs_rand(uint64_t *x)
{
        uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
}

static inline void vbs_init(struct vbs_stream *s, uint64_t seed)
{
        memset(s, 0, sizeof(*s));
        s->state = seed;
}

/* The stream's next n bytes into buf. */
static inline void vbs_fill(struct vbs_stream *s, uint8_t *buf, size_t n)
{
        s->pos += n;
        while (n && s->left) {
                *buf++ = (uint8_t)s->word;
                s->word >>= 8;
                s->left--;
                n--;
        }
        while (n >= 8) {
                uint64_t w = vbs_rand(&s->state);
                for (int i = 0; i < 8; i++)
                        buf[i] = (uint8_t)(w >> (8 * i));
                buf += 8;
                n -= 8;
        }
        if (n) {
                s->word = vbs_rand(&s->state);
                s->left = 8;
                while (n--) {
                        *buf++ = (uint8_t)s->word;
                        s->word >>= 8;
                        s->left--;
                }
        }
}

/* Check that buf holds the stream's next n bytes (scratch: n bytes of
 * room). Returns n when all match, else the offset of the first wrong
 * byte. */
static inline size_t vbs_check(struct vbs_stream *s, const uint8_t *buf, size_t n, uint8_t *scratch)
{
        vbs_fill(s, scratch, n);
        if (!memcmp(buf, scratch, n))
                return n;
        size_t i = 0;
        while (buf[i] == scratch[i])
                i++;
        return i;
}

/* A size from 1 to max, spread evenly over the powers of two (as many
 * 1..16-byte sizes as 128..256 KiB ones): small and large calls alike. */
static inline size_t vbs_size(uint64_t *rng, size_t max)
{
        uint64_t r = vbs_rand(rng);
        unsigned bits = 0;
        while (((size_t)1 << (bits + 1)) <= max)
                bits++;
        size_t span = (size_t)1 << (r % (bits + 1));
        size_t n = 1 + (size_t)((r >> 8) % span);
        return n < max ? n : max;
}

#endif

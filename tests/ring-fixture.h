/* Shared fixture of the ring unit tests: a ring in a memfd between guard
 * pages, a hostile peer's view of it, and a reproducible PRNG. (The runner,
 * pvt-run.h, checks after each test that it closed and unmapped them.) */
#ifndef RING_FIXTURE_H
#define RING_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <CUnit/CUnit.h>

#include "pv-ring.h"
#include "pvt-run.h"

uint64_t rnd(void);
uint32_t rnd_below(uint32_t n);

/* A payload that check() recognises, and nothing else does. */
void fill(uint8_t *p, uint32_t len, uint32_t seed);
bool check(const uint8_t *p, uint32_t len, uint32_t seed);

/* A ring in a memfd, seen three ways: producer and consumer share a guarded
 * view, [guard][header page][guard][data area][guard], whose data area ends
 * exactly at a guard page (and starts at one when the ring is at least a
 * page); the hostile peer has its own plain mapping of the same memfd, the
 * "third mapping", through which the tests corrupt what the peer may write. */
struct gring {
        int fd;
        uint8_t *area;
        size_t area_len;
        uint8_t *peer;
        size_t peer_len;
        struct pv_ring_hdr *hdr;
        uint8_t *data;
        struct pv_ring_hdr *peer_hdr;
        uint8_t *peer_data;
        uint32_t size;
        struct pv_ring prod;
        struct pv_ring cons;
};

int gring_open(struct gring *g, uint32_t size);
void gring_close(struct gring *g);
/* Both sides start over on fresh indices, as after a vlink reset. */
void gring_reset(struct gring *g);
/* Both sides start over at free-running index `at`, ring empty. */
void gring_place(struct gring *g, uint32_t at);
/* The peer writes a word of the data area. */
void peer_put32(struct gring *g, uint32_t pos, uint32_t v);
/* True if [p, p + len) lies in the data area. */
bool in_data(const struct gring *g, const void *p, size_t len);

/* The suites' tests, one list per file. */
extern const struct pvt_test ring_tests[];
extern const struct pvt_test ring_hostile_tests[];
extern const struct pvt_test bytering_tests[];

#endif

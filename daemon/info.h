/* Helpers shared by the platform loader (config.c) and the info parser
 * (info.c) that are not part of the config.h contract. */
#ifndef PVD_INFO_H
#define PVD_INFO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Which fields an info property wrote. struct pv_info fills defaults in,
 * so the loader needs this to tell a client end that repeats a value (and
 * must agree with its server) from one that left it out. */
enum {
        PV_INFO_GAVE_VRPQ_REQS = 1u << 0,
        PV_INFO_GAVE_VRPQ_PMEM = 1u << 1,
        PV_INFO_GAVE_VUMEM_PDEV = 1u << 2,
        PV_INFO_GAVE_FLAGS = 1u << 3,
        PV_INFO_GAVE_SIZE = 1u << 4,
        PV_INFO_GAVE_MINOR = 1u << 5,
        PV_INFO_GAVE_WAKEUP = 1u << 6,
        PV_INFO_GAVE_NAME = 1u << 7,
        PV_INFO_GAVE_HV_HEAP = 1u << 8,
};

/* pv_info_parse() that also reports the PV_INFO_GAVE_* bits in *given. */
int pv_info_parse_given(const char *const *strs, unsigned n, bool vbpipe, struct pv_info *out,
                        unsigned *given, char *err, size_t errlen);

/* A VM or device name: 1 to PV_NAME_MAX-1 characters of [A-Za-z0-9_.-]. */
bool pv_name_valid(const char *s, size_t len);

/* "256M", "4K", "1000": a size as an operator would write it. */
const char *pv_size_str(uint64_t v, char *buf, size_t len);

/* s made fit for a one-line message: non-printable bytes as \xNN,
 * shortened with "..." when it does not fit. */
const char *pv_str_safe(const char *s, size_t slen, char *buf, size_t len);

#endif

/* What the VUMEM example client and server agree on: the opaque alloc
 * bytes (seed 3.2.3.2: "this type has to be known by both"). */
#ifndef VUMEM_EXAMPLE_H
#define VUMEM_EXAMPLE_H

#include <errno.h>
#include <stdint.h>

struct ExampleAlloc {
        uint32_t width, height;  /* asked by the client */
        uint32_t stride;         /* answered by the server */
        uint32_t format;
};

#endif

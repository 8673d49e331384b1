/* The seed's fixed-size types (nku32_f and friends), for code written to the
 * original user guide. */
#ifndef PV_NKTYPES_H
#define PV_NKTYPES_H

#include <stdint.h>

typedef uint8_t nku8_f;
typedef uint16_t nku16_f;
typedef uint32_t nku32_f;
typedef uint64_t nku64_f;
typedef int8_t nks8_f;
typedef int16_t nks16_f;
typedef int32_t nks32_f;
typedef int64_t nks64_f;

#endif

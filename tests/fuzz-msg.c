/* libFuzzer target for the control-message decoder (pv_msg_decode): every
 * input is refused with -EPROTO or accepted with its bytes values inside the
 * input, and an accepted message re-encodes to the same values. Not run by
 * meson test; see tests/meson.build. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pv-msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok)
{
        if (!ok)
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static uint8_t re[PV_MSG_DOC_MAX + 64];
        struct pv_msg m, again;
        size_t len;
        int r;

        r = pv_msg_decode(data, size, &m);
        check(r == 0 || r == -EPROTO);
        if (r < 0) {
                check(m.has == 0);
                return 0;
        }
        check(pv_msg_has(&m, PV_K_OP) && pv_msg_has(&m, PV_K_SEQ));
        for (unsigned k = PV_K_BIN_FIRST; k < PV_K_COUNT_ALL; k++) {
                const uint8_t *p = m.b[k - PV_K_BIN_FIRST];
                uint32_t n = m.blen[k - PV_K_BIN_FIRST];

                if (pv_msg_has(&m, k))
                        check(p >= data && p <= data + size && n <= (size_t)(data + size - p));
        }
        check(pv_msg_encode(&m, re, sizeof(re), &len) == 0);
        check(pv_msg_decode(re, len, &again) == 0 && again.has == m.has);
        for (unsigned k = 0; k < PV_K_UINT_END; k++)
                if (pv_msg_has(&m, k))
                        check(again.u[k] == m.u[k]);
        for (unsigned k = 0; k < PV_K_BIN_COUNT; k++)
                if (pv_msg_has(&m, k + PV_K_BIN_FIRST))
                        check(again.blen[k] == m.blen[k] &&
                              (m.blen[k] == 0 || memcmp(again.b[k], m.b[k], m.blen[k]) == 0));
        return 0;
}

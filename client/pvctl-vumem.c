/* pvctl stat vumem: the vumem driver's statistics. */
#include "pvctl.h"

int pvctl_stat_vumem(const msgpack_object *doc, const struct pvctl_opts *o, FILE *f)
{
        return pvctl_stat_generic(doc, o, f);
}

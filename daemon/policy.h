/* pvd's policy for a VM: properties of its node in /vms (policy.c). */
#ifndef PVD_POLICY_H
#define PVD_POLICY_H

#include "config.h"

/* Fill p from the VM node at off (absent properties: zero, the defaults).
 * 0, or -EINVAL with the property in *prop and the problem in err. */
int pv_vm_policy_load(const void *fdt, int off, struct pv_vm_policy *p, const char **prop, char *err,
                      size_t errlen);

#endif

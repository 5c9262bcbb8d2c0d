/* SPDX-License-Identifier: Apache-2.0 */
/* Frontend lookup and backend choice, shared by the socket hooks, tc and XDP. */
#ifndef SLUICE_LB_H
#define SLUICE_LB_H

#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "maps.h"

enum lb_result {
	LB_NOT_A_FRONTEND,
	LB_PICKED,
	LB_NO_BACKEND,     /* the frontend exists but has no usable backend */
	LB_MISSING_ENTRY,  /* a slot or backend the header promised is absent */
};

static __always_inline void addr_set_v4mapped(struct sluice_addr *a, __u32 ip4_be)
{
	a->words[0] = 0;
	a->words[1] = 0;
	a->words[2] = bpf_htonl(0x0000ffff);
	a->words[3] = ip4_be;
}

static __always_inline int addr_is_v4mapped(const struct sluice_addr *a)
{
	return a->words[0] == 0 && a->words[1] == 0 && a->words[2] == bpf_htonl(0x0000ffff);
}

static __always_inline int addr_eq(const struct sluice_addr *a, const struct sluice_addr *b)
{
	return a->words[0] == b->words[0] && a->words[1] == b->words[1] &&
	       a->words[2] == b->words[2] && a->words[3] == b->words[3];
}

/* The service header for key (addr, port, proto set), in the scope this traffic uses:
 * internal traffic (sockets in the cluster) takes scope INT when the service has two. */
static __always_inline struct sluice_svc_value *lb_header(struct sluice_svc_key *key, int internal)
{
	struct sluice_svc_value *svc;

	key->scope = SLUICE_SCOPE_EXT;
	key->slot = 0;
	svc = bpf_map_lookup_elem(&SLUICE_MAP_SERVICES, key);
	if (svc && internal && (svc->flags & SLUICE_SVC_F_TWO_SCOPES)) {
		key->scope = SLUICE_SCOPE_INT;
		svc = bpf_map_lookup_elem(&SLUICE_MAP_SERVICES, key);
	}
	return svc;
}

/* Picks a random backend of the header's scope (key still holds that scope). */
static __always_inline enum lb_result lb_pick(struct sluice_svc_key *key, const struct sluice_svc_value *svc,
					      struct sluice_backend *backend)
{
	struct sluice_svc_value *slot;
	struct sluice_backend *be;
	__u32 backend_id;

	if (svc->count == 0)
		return LB_NO_BACKEND;
	key->slot = (bpf_get_prandom_u32() % svc->count) + 1;
	slot = bpf_map_lookup_elem(&SLUICE_MAP_SERVICES, key);
	if (!slot)
		return LB_MISSING_ENTRY;
	backend_id = slot->backend_id;
	be = bpf_map_lookup_elem(&SLUICE_MAP_BACKENDS, &backend_id);
	if (!be)
		return LB_MISSING_ENTRY;
	*backend = *be;
	return LB_PICKED;
}

#endif

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

/* The frontend's id, from both of its fields (see SLUICE_REV_NAT_ID_MAX). */
static __always_inline __u32 svc_rev_nat_id(const struct sluice_svc_value *svc)
{
	return svc->rev_nat_id | (__u32)svc->rev_nat_id_hi << 16;
}

/* An id as connection state keeps it: itself when narrow, else 0 (see SLUICE_REV_NAT_ID_NARROW_MAX). */
static __always_inline __u16 narrow_rev_nat_id(__u32 id)
{
	return id <= SLUICE_REV_NAT_ID_NARROW_MAX ? (__u16)id : 0;
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

/* The backend in `slot` of the header's scope (key holds the scope). */
static __always_inline enum lb_result lb_slot(struct sluice_svc_key *key, __u16 slot, struct sluice_backend *backend, __u32 *backend_id)
{
	struct sluice_svc_value *entry;
	struct sluice_backend *be;

	key->slot = slot;
	entry = bpf_map_lookup_elem(&SLUICE_MAP_SERVICES, key);
	if (!entry)
		return LB_MISSING_ENTRY;
	*backend_id = entry->backend_id;
	be = bpf_map_lookup_elem(&SLUICE_MAP_BACKENDS, backend_id);
	if (!be)
		return LB_MISSING_ENTRY;
	*backend = *be;
	return LB_PICKED;
}

/*
 * Picks a backend of the header's scope (key still holds that scope): at random, or, with
 * sessionAffinity ClientIP and a client given (its address, or for sockets its network
 * namespace cookie with by_cookie set), the one this client last got from the frontend's
 * affinity group (its Service port, see sluice_affinity_key) if that was within the timeout and
 * the backend is still there. The agent removes affinity entries of backends that
 * leave a frontend, so "still there" is a lookup, not a scan of the slots. A frontend with
 * Maglev and a flow hash (tc, XDP) takes the backend the Maglev table names for the flow.
 *
 * `own` is scratch space on the caller's stack, or 0 for the per-CPU scratch map. Packet
 * programs (tc, XDP) run with bottom halves off, so nothing else uses the map on that CPU
 * meanwhile; socket programs run in process context, where a preemptible kernel may switch to
 * another task running the same program between the key's write and its lookup, so they pass
 * their own (their stack has room; XDP's has not).
 */
static __always_inline enum lb_result lb_pick(struct sluice_svc_key *key, const struct sluice_svc_value *svc,
					      struct sluice_backend *backend, const struct sluice_addr *client, __u8 by_cookie,
					      __u32 flow_hash, struct sluice_lb_scratch *own)
{
	struct sluice_lb_scratch *aff = 0, *sc = 0;
	int maglev = flow_hash && svc->lb_alg == SLUICE_LB_ALG_MAGLEV;
	struct sluice_affinity_value *last;
	struct sluice_backend *be;
	enum lb_result r;
	__u32 backend_id;
	__u32 zero = 0;
	__u64 now = 0;

	if (svc->count == 0)
		return LB_NO_BACKEND;
	if ((client && (svc->flags & SLUICE_SVC_F_AFFINITY)) || maglev)
		sc = own ? own : bpf_map_lookup_elem(&sluice_lb_scratch, &zero);
	if (client && (svc->flags & SLUICE_SVC_F_AFFINITY))
		aff = sc;
	if (aff) {
		aff->key.client = *client;
		if (svc->backend_id) {
			aff->key.group = (__u16)svc->backend_id;
			aff->key.set = (__u8)(svc->backend_id >> SLUICE_AFFINITY_SET_SHIFT);
		} else {
			aff->key.group = narrow_rev_nat_id(svc_rev_nat_id(svc));
			aff->key.set = key->scope;
		}
		aff->key.by_cookie = by_cookie;
		now = bpf_ktime_get_ns();
		last = bpf_map_lookup_elem(&SLUICE_MAP_AFFINITY, &aff->key);
		if (last && now - last->last_used_ns <= (__u64)svc->affinity_timeout * 1000000000ULL) {
			backend_id = last->backend_id;
			be = bpf_map_lookup_elem(&SLUICE_MAP_BACKENDS, &backend_id);
			if (be) {
				last->last_used_ns = now;
				*backend = *be;
				return LB_PICKED;
			}
		}
	}
	r = LB_MISSING_ENTRY;
	if (maglev && sc) {
		struct sluice_maglev_table *table;
		__u32 idx = flow_hash % SLUICE_MAGLEV_M;

		/* The verifier does not bound a remainder: hide it from the compiler, which would
		 * otherwise drop the check below as always true. */
		asm volatile("" : "+r"(idx));

		sc->maglev.rev_nat_id = narrow_rev_nat_id(svc_rev_nat_id(svc));
		sc->maglev.scope = key->scope;
		sc->maglev.proto = key->proto;
		table = bpf_map_lookup_elem(&SLUICE_MAP_MAGLEV, &sc->maglev);

		if (table && idx < SLUICE_MAGLEV_M) {
			backend_id = table->backend_ids[idx];
			be = bpf_map_lookup_elem(&SLUICE_MAP_BACKENDS, &backend_id);
			if (be) {
				*backend = *be;
				r = LB_PICKED;
			}
		}
	}
	/* No table (yet), or it names a backend being removed: a random slot still serves. */
	if (r != LB_PICKED)
		r = lb_slot(key, (bpf_get_prandom_u32() % svc->count) + 1, backend, &backend_id);
	if (r == LB_PICKED && aff) {
		aff->value.last_used_ns = now;
		aff->value.backend_id = backend_id;
		aff->value.pad = 0;
		bpf_map_update_elem(&SLUICE_MAP_AFFINITY, &aff->key, &aff->value, BPF_ANY);
	}
	return r;
}

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Socket-level load balancing: the translation happens once, when a socket connects (or an
 * unconnected UDP socket sends), so no packet of the flow is ever rewritten afterwards.
 */
#ifndef SLUICE_SOCK_LB_H
#define SLUICE_SOCK_LB_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lb.h"

#ifndef ECONNREFUSED
#define ECONNREFUSED 111
#endif

enum sock_xlate_result {
	SOCK_XLATE_PASS,   /* not a frontend: leave the socket alone */
	SOCK_XLATE_DONE,   /* rewritten to a backend */
	SOCK_XLATE_REJECT, /* a frontend without usable backend: kube-proxy rejects */
};

/*
 * loadBalancerSourceRanges bind pods and node processes too (kube-proxy checks every packet's
 * source). A connecting socket usually has no source yet: it gets the one the agent recorded for
 * its network namespace (the pod's address, the node's for the node's namespace); a socket bound
 * to an address is judged by that. An unknown source is outside every range.
 */
static __always_inline int sock_source_allowed(struct bpf_sock_addr *ctx, const int v6, const struct sluice_svc_key *key,
					       __u32 rev_nat_id)
{
	struct sluice_src_range_key rk = {};
	struct bpf_sock *sk = ctx->sk;
	struct sluice_netns_addrs *own;
	__u64 netns;

	if (v6) {
		rk.addr.words[0] = sk->src_ip6[0];
		rk.addr.words[1] = sk->src_ip6[1];
		rk.addr.words[2] = sk->src_ip6[2];
		rk.addr.words[3] = sk->src_ip6[3];
	} else if (sk->src_ip4) {
		addr_set_v4mapped(&rk.addr, sk->src_ip4);
	}
	if (!(rk.addr.words[0] | rk.addr.words[1] | rk.addr.words[2] | rk.addr.words[3])) {
		netns = bpf_get_netns_cookie(ctx);
		own = bpf_map_lookup_elem(&SLUICE_MAP_NETNS_ADDRS, &netns);
		if (!own)
			return 0;
		rk.addr = addr_is_v4mapped(&key->addr) ? own->v4 : own->v6;
	}
	rk.prefixlen = 32 + 128;
	rk.rev_nat_id = rev_nat_id;
	return bpf_map_lookup_elem(&SLUICE_MAP_SRC_RANGES, &rk) != 0;
}

/* Picks a backend for the frontend in key (addr, port, proto set; scope and slot are ours).
 * On reject, *reason says why (a counter index). */
static __always_inline enum sock_xlate_result
sock_select_backend(struct bpf_sock_addr *ctx, const int v6, struct sluice_svc_key *key, struct sluice_backend *backend,
		    __u32 *rev_nat_id, __u32 *reason)
{
	struct sluice_svc_value *svc = lb_header(key, 1);
	struct sluice_addr client = {};

	if (!svc) {
		if (key->scope == SLUICE_SCOPE_INT) {
			/* two scopes announced, internal one absent: a half-written service */
			*reason = SLUICE_CNT_SOCK_MISSING_SLOT;
			sluice_count(*reason);
			return SOCK_XLATE_REJECT;
		}
		return SOCK_XLATE_PASS;
	}
	*rev_nat_id = svc_rev_nat_id(svc);
	if ((svc->flags & SLUICE_SVC_F_SOURCE_RANGES) && !sock_source_allowed(ctx, v6, key, *rev_nat_id)) {
		*reason = SLUICE_CNT_SOCK_SOURCE_RANGE;
		sluice_count(*reason);
		return SOCK_XLATE_REJECT;
	}
	if (svc->flags & SLUICE_SVC_F_AFFINITY) {
		/* A pod is its network namespace: affinity follows it whatever address it uses. */
		__u64 netns = bpf_get_netns_cookie(ctx);

		__builtin_memcpy(client.bytes, &netns, sizeof(netns));
	}
	struct sluice_lb_scratch own = {};

	switch (lb_pick(key, svc, backend, &client, 1, 0, &own)) {
	case LB_PICKED:
		return SOCK_XLATE_DONE;
	case LB_NO_BACKEND:
		*reason = SLUICE_CNT_SOCK_NO_BACKEND;
		break;
	default:
		*reason = SLUICE_CNT_SOCK_MISSING_SLOT;
		break;
	}
	sluice_count(*reason);
	return SOCK_XLATE_REJECT;
}

static __always_inline void sock_remember(struct bpf_sock_addr *ctx, const struct sluice_backend *be,
					  const struct sluice_svc_key *frontend, __u32 rev_nat_id)
{
	struct sluice_sock_revnat_key rkey = {};
	struct sluice_sock_revnat_value rval = {};

	rkey.cookie = bpf_get_socket_cookie(ctx);
	rkey.addr = be->addr;
	rkey.port = be->port;
	rval.addr = frontend->addr;
	rval.port = frontend->port;
	rval.rev_nat_id = narrow_rev_nat_id(rev_nat_id);
	bpf_map_update_elem(&SLUICE_MAP_SOCK_REVNAT, &rkey, &rval, BPF_ANY);
}

/* Shows the frontend instead of the backend in addr/port; returns 1 when it did. */
static __always_inline int sock_reverse(struct bpf_sock_addr *ctx, struct sluice_addr *addr, __be16 *port)
{
	struct sluice_sock_revnat_key rkey = {};
	struct sluice_sock_revnat_value *rval;
	struct sluice_svc_key frontend = {};

	rkey.cookie = bpf_get_socket_cookie(ctx);
	rkey.addr = *addr;
	rkey.port = *port;
	rval = bpf_map_lookup_elem(&SLUICE_MAP_SOCK_REVNAT, &rkey);
	if (!rval)
		return 0;
	/* The frontend may have gone since the socket connected: its address is then shown no more. */
	frontend.addr = rval->addr;
	frontend.port = rval->port;
	frontend.proto = (__u8)ctx->protocol;
	if (!lb_header(&frontend, 0)) {
		sluice_count(SLUICE_CNT_SOCK_REVNAT_STALE);
		bpf_map_delete_elem(&SLUICE_MAP_SOCK_REVNAT, &rkey);
		return 0;
	}
	*addr = rval->addr;
	*port = rval->port;
	sluice_count(SLUICE_CNT_SOCK_REVNAT);
	return 1;
}

/* With hostNamespaceOnly, sockets of other network namespaces (pods) are not translated. */
static __always_inline int sock_skipped(struct bpf_sock_addr *ctx)
{
	__u32 zero = 0;
	struct sluice_config *cfg = bpf_map_lookup_elem(&SLUICE_MAP_CONFIG, &zero);
	__u64 *host;

	if (!cfg || !(cfg->flags & SLUICE_CFG_F_HOST_NS_ONLY))
		return 0;
	host = bpf_map_lookup_elem(&SLUICE_MAP_HOST_NETNS, &zero);
	return host && *host && bpf_get_netns_cookie(ctx) != *host;
}

/* Tells a listening `sluice monitor` what a connect or sendmsg was turned into. */
static __always_inline void sock_event(__u32 reason, __u8 hook, const struct sluice_svc_key *frontend,
				       __u32 rev_nat_id, const struct sluice_backend *be)
{
	struct sluice_event *ev;

	if (!sluice_monitored() || !(ev = sluice_event_start(reason, hook)))
		return;
	ev->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	ev->proto = frontend->proto;
	ev->rev_nat_id = rev_nat_id;
	ev->daddr = frontend->addr;
	ev->dport = frontend->port;
	if (be) {
		ev->to_addr = be->addr;
		ev->to_port = be->port;
	}
	sluice_event_submit(ev);
}

/*
 * connect and sendmsg, both families: v6 is a constant at every call site, so each program keeps
 * only the context fields its attach type may touch.
 */
static __always_inline int sock_forward(struct bpf_sock_addr *ctx, const int v6, const __u8 hook)
{
	struct sluice_svc_key key = {};
	struct sluice_backend be;
	__u32 rev_nat_id = 0;
	__u32 reason = 0;

	if (sock_skipped(ctx))
		return 1;

	if (v6) {
		key.addr.words[0] = ctx->user_ip6[0];
		key.addr.words[1] = ctx->user_ip6[1];
		key.addr.words[2] = ctx->user_ip6[2];
		key.addr.words[3] = ctx->user_ip6[3];
	} else {
		addr_set_v4mapped(&key.addr, ctx->user_ip4);
	}
	key.port = (__be16)ctx->user_port;
	key.proto = (__u8)ctx->protocol;
	switch (sock_select_backend(ctx, v6, &key, &be, &rev_nat_id, &reason)) {
	case SOCK_XLATE_PASS:
		return 1;
	case SOCK_XLATE_REJECT:
		sock_event(reason, hook, &key, rev_nat_id, 0);
		bpf_set_retval(-ECONNREFUSED);
		return 0;
	case SOCK_XLATE_DONE:
		break;
	}
	if (v6) {
		/* A v4-mapped frontend has v4-mapped backends, which a dual-stack socket reaches as is. */
		ctx->user_ip6[0] = be.addr.words[0];
		ctx->user_ip6[1] = be.addr.words[1];
		ctx->user_ip6[2] = be.addr.words[2];
		ctx->user_ip6[3] = be.addr.words[3];
	} else {
		if (!addr_is_v4mapped(&be.addr)) {
			/* The planner never pairs families; an IPv6 backend here means a corrupt map. */
			sluice_count(SLUICE_CNT_SOCK_MISSING_SLOT);
			sock_event(SLUICE_CNT_SOCK_MISSING_SLOT, hook, &key, rev_nat_id, 0);
			bpf_set_retval(-ECONNREFUSED);
			return 0;
		}
		ctx->user_ip4 = be.addr.words[3];
	}
	ctx->user_port = be.port;
	sock_remember(ctx, &be, &key, rev_nat_id);
	sluice_count(SLUICE_CNT_SOCK_XLATE);
	sock_event(SLUICE_CNT_SOCK_XLATE, hook, &key, rev_nat_id, &be);
	return 1;
}

static __always_inline int sock4_reverse(struct bpf_sock_addr *ctx)
{
	struct sluice_addr addr;
	__be16 port = (__be16)ctx->user_port;

	addr_set_v4mapped(&addr, ctx->user_ip4);
	if (sock_reverse(ctx, &addr, &port)) {
		ctx->user_ip4 = addr.words[3];
		ctx->user_port = port;
	}
	return 1;
}

static __always_inline int sock6_reverse(struct bpf_sock_addr *ctx)
{
	struct sluice_addr addr;
	__be16 port = (__be16)ctx->user_port;

	addr.words[0] = ctx->user_ip6[0];
	addr.words[1] = ctx->user_ip6[1];
	addr.words[2] = ctx->user_ip6[2];
	addr.words[3] = ctx->user_ip6[3];
	if (sock_reverse(ctx, &addr, &port)) {
		ctx->user_ip6[0] = addr.words[0];
		ctx->user_ip6[1] = addr.words[1];
		ctx->user_ip6[2] = addr.words[2];
		ctx->user_ip6[3] = addr.words[3];
		ctx->user_port = port;
	}
	return 1;
}

/* Bind protection: a host process must not take a port a NodePort owns, or the NodePort would
 * be shadowed for traffic the socket layer sees first. */
static __always_inline int sock_post_bind(struct bpf_sock *ctx)
{
	struct sluice_nodeport_key key = {};
	__u32 zero = 0;
	__u64 *host = bpf_map_lookup_elem(&SLUICE_MAP_HOST_NETNS, &zero);

	/* Pods have their own network namespaces and may use any port there; only the node's
	 * namespace shares its ports with NodePorts. */
	if (host && *host && bpf_get_netns_cookie(ctx) != *host)
		return 1;
	key.port = (__u16)ctx->src_port;
	key.proto = (__u8)ctx->protocol;
	if (bpf_map_lookup_elem(&SLUICE_MAP_NODEPORTS, &key)) {
		sluice_count(SLUICE_CNT_BIND_DENIED);
		if (sluice_monitored()) {
			struct sluice_event *ev = sluice_event_start(SLUICE_CNT_BIND_DENIED, SLUICE_HOOK_POST_BIND);

			if (ev) {
				ev->pid = bpf_get_current_pid_tgid() >> 32;
				bpf_get_current_comm(ev->comm, sizeof(ev->comm));
				ev->proto = key.proto;
				ev->sport = bpf_htons(key.port);
				sluice_event_submit(ev);
			}
		}
		return 0;
	}
	return 1;
}

#endif

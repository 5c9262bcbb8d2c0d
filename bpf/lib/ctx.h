/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The hook a program object is built for, fixed at compile time: the object defines
 * SLUICE_CTX_TC or SLUICE_CTX_XDP before it includes a packet header. Shared helpers take a
 * `ctx_t *` and test CTX_XDP, a constant, rather than a flag passed down every call: each
 * object keeps only its own flavour, and a helper that exists for one hook only (nat.h,
 * fib.h) is not even declared in the other, so the compiler catches a wrong call.
 */
#ifndef SLUICE_CTX_H
#define SLUICE_CTX_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#if defined(SLUICE_CTX_XDP) && !defined(SLUICE_CTX_TC)
typedef struct xdp_md ctx_t;
#define CTX_XDP 1
#define CTX_HOOK SLUICE_HOOK_XDP
#elif defined(SLUICE_CTX_TC) && !defined(SLUICE_CTX_XDP)
typedef struct __sk_buff ctx_t;
#define CTX_XDP 0
#define CTX_HOOK SLUICE_HOOK_TC
#else
#error "define exactly one of SLUICE_CTX_TC and SLUICE_CTX_XDP before including a packet header"
#endif

static __always_inline void *ctx_data(const ctx_t *ctx)
{
	return (void *)(long)ctx->data;
}

static __always_inline void *ctx_data_end(const ctx_t *ctx)
{
	return (void *)(long)ctx->data_end;
}

/* Bytes of the packet, wherever they are (bounds checked by the helper). */
static __always_inline long ctx_load_bytes(ctx_t *ctx, __u32 off, void *to, __u32 len)
{
#if CTX_XDP
	return bpf_xdp_load_bytes(ctx, off, to, len);
#else
	return bpf_skb_load_bytes(ctx, off, to, len);
#endif
}

#endif

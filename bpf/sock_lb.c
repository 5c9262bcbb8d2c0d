/* SPDX-License-Identifier: Apache-2.0 */
/* cgroup socket hooks: east-west service translation for IPv4 and IPv6 sockets. */
#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "lib/sock_lb.h"

SEC("cgroup/connect4")
int sluice_connect4(struct bpf_sock_addr *ctx) { return sock_forward(ctx, 0, SLUICE_HOOK_CONNECT4); }

SEC("cgroup/sendmsg4")
int sluice_sendmsg4(struct bpf_sock_addr *ctx) { return sock_forward(ctx, 0, SLUICE_HOOK_SENDMSG4); }

SEC("cgroup/recvmsg4")
int sluice_recvmsg4(struct bpf_sock_addr *ctx) { return sock4_reverse(ctx); }

SEC("cgroup/getpeername4")
int sluice_getpeername4(struct bpf_sock_addr *ctx) { return sock4_reverse(ctx); }

SEC("cgroup/connect6")
int sluice_connect6(struct bpf_sock_addr *ctx) { return sock_forward(ctx, 1, SLUICE_HOOK_CONNECT6); }

SEC("cgroup/sendmsg6")
int sluice_sendmsg6(struct bpf_sock_addr *ctx) { return sock_forward(ctx, 1, SLUICE_HOOK_SENDMSG6); }

SEC("cgroup/recvmsg6")
int sluice_recvmsg6(struct bpf_sock_addr *ctx) { return sock6_reverse(ctx); }

SEC("cgroup/getpeername6")
int sluice_getpeername6(struct bpf_sock_addr *ctx) { return sock6_reverse(ctx); }

SEC("cgroup/post_bind4")
int sluice_post_bind4(struct bpf_sock *ctx) { return sock_post_bind(ctx); }

SEC("cgroup/post_bind6")
int sluice_post_bind6(struct bpf_sock *ctx) { return sock_post_bind(ctx); }

char LICENSE[] SEC("license") = "Dual BSD/GPL";

// SPDX-License-Identifier: Apache-2.0
// A bounded flood of spoofed IPv4 packets for e2e tests: TCP SYNs, TCP ACKs or UDP datagrams to
// DST:PORT, each from a random source address of SRC_BASE + [0, SRC_COUNT) and a random source
// port, with correct checksums, through a raw socket (IP_HDRINCL), as fast as THREADS threads
// can send them (sendmmsg in batches). Stops after COUNT packets or SECONDS, whichever first.
// Run it only inside a network namespace of the test's own, towards its own addresses.
//
//   spoof_flood syn|ack|udp DST PORT SRC_BASE SRC_COUNT COUNT SECONDS [THREADS]
//
// Prints {"kind", "sent", "seconds", "pps"}. Built with gcc by the script that runs it.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum kind { SYN, ACK, UDP };
#define BATCH 64
#define TCP_LEN 20
#define UDP_LEN 8
#define PKT_MAX (20 + TCP_LEN + 16)

static enum kind g_kind;
static uint32_t g_dst, g_src_base, g_src_count;
static uint16_t g_port;
static long g_count;
static double g_deadline;
static atomic_long g_sent;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint32_t sum16(const void *data, size_t len, uint32_t sum)
{
	const uint8_t *p = data;
	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)p[i] << 8 | p[i + 1];
	if (len & 1)
		sum += (uint32_t)p[len - 1] << 8;
	return sum;
}

static uint16_t fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return htons((uint16_t)~sum);
}

static uint32_t xorshift(uint32_t *s)
{
	uint32_t x = *s;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return *s = x;
}

// One packet into buf; returns its length.
static size_t build(uint8_t *buf, uint32_t *rng)
{
	struct iphdr *ip = (struct iphdr *)buf;
	uint8_t *l4 = buf + sizeof(*ip);
	uint32_t src = htonl(g_src_base + xorshift(rng) % g_src_count);
	uint16_t sport = htons(1024 + xorshift(rng) % 64000);
	size_t l4_len = g_kind == UDP ? UDP_LEN + 16 : TCP_LEN;
	uint32_t pseudo[3] = {src, g_dst, htonl((uint32_t)(g_kind == UDP ? IPPROTO_UDP : IPPROTO_TCP) << 16 | l4_len)};

	memset(buf, 0, PKT_MAX);
	ip->version = 4;
	ip->ihl = 5;
	ip->ttl = 64;
	ip->protocol = g_kind == UDP ? IPPROTO_UDP : IPPROTO_TCP;
	ip->saddr = src;
	ip->daddr = g_dst;
	ip->tot_len = htons(sizeof(*ip) + l4_len); // the kernel fills id and the header checksum
	memcpy(l4, &sport, 2);
	memcpy(l4 + 2, &g_port, 2);
	if (g_kind == UDP) {
		uint16_t len = htons(l4_len);
		memcpy(l4 + 4, &len, 2);
	} else {
		uint32_t seq = xorshift(rng), ack = g_kind == ACK ? xorshift(rng) : 0;
		uint16_t win = htons(64240);
		memcpy(l4 + 4, &seq, 4);
		memcpy(l4 + 8, &ack, 4);
		l4[12] = 5 << 4;
		l4[13] = g_kind == SYN ? 0x02 : 0x10;
		memcpy(l4 + 14, &win, 2);
	}
	uint16_t csum = fold(sum16(l4, l4_len, sum16(pseudo, sizeof(pseudo), 0)));
	memcpy(l4 + (g_kind == UDP ? 6 : 16), &csum, 2);
	return sizeof(*ip) + l4_len;
}

static void *sender(void *arg)
{
	uint32_t rng = (uint32_t)(uintptr_t)arg * 2654435761u ^ (uint32_t)time(NULL);
	int fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
	uint8_t(*mine)[PKT_MAX] = malloc(BATCH * sizeof(*mine));
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr.s_addr = g_dst};

	if (fd < 0 || !mine) {
		perror("raw socket");
		exit(1);
	}
	if (!rng)
		rng = 1;
	memset(msgs, 0, sizeof(msgs));
	while (atomic_load(&g_sent) < g_count && now_s() < g_deadline) {
		for (int i = 0; i < BATCH; i++) {
			iov[i].iov_base = mine[i];
			iov[i].iov_len = build(mine[i], &rng);
			msgs[i].msg_hdr.msg_iov = &iov[i];
			msgs[i].msg_hdr.msg_iovlen = 1;
			msgs[i].msg_hdr.msg_name = &to;
			msgs[i].msg_hdr.msg_namelen = sizeof(to);
		}
		int n = sendmmsg(fd, msgs, BATCH, 0);
		if (n > 0)
			atomic_fetch_add(&g_sent, n);
		else if (errno != ENOBUFS && errno != EAGAIN && errno != EPERM)
			break;
	}
	close(fd);
	free(mine);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 8) {
		fprintf(stderr, "usage: %s syn|ack|udp DST PORT SRC_BASE SRC_COUNT COUNT SECONDS [THREADS]\n", argv[0]);
		return 2;
	}
	g_kind = !strcmp(argv[1], "syn") ? SYN : !strcmp(argv[1], "ack") ? ACK : !strcmp(argv[1], "udp") ? UDP : -1;
	struct in_addr dst, base;
	if ((int)g_kind < 0 || !inet_aton(argv[2], &dst) || !inet_aton(argv[4], &base)) {
		fprintf(stderr, "bad kind or address\n");
		return 2;
	}
	g_dst = dst.s_addr;
	g_port = htons((uint16_t)atoi(argv[3]));
	g_src_base = ntohl(base.s_addr);
	g_src_count = (uint32_t)atol(argv[5]);
	g_count = atol(argv[6]);
	double seconds = atof(argv[7]);
	int threads = argc > 8 ? atoi(argv[8]) : 2;
	if (!g_src_count || g_count <= 0 || seconds <= 0 || seconds > 120 || threads < 1 || threads > 16) {
		fprintf(stderr, "bounds: SRC_COUNT > 0, COUNT > 0, 0 < SECONDS <= 120, 1 <= THREADS <= 16\n");
		return 2;
	}
	double start = now_s();
	g_deadline = start + seconds;
	pthread_t t[16];
	for (int i = 0; i < threads; i++)
		pthread_create(&t[i], NULL, sender, (void *)(uintptr_t)(i + 1));
	for (int i = 0; i < threads; i++)
		pthread_join(t[i], NULL);
	double took = now_s() - start;
	long sent = atomic_load(&g_sent);
	printf("{\"kind\": \"%s\", \"sent\": %ld, \"seconds\": %.3f, \"pps\": %.0f}\n", argv[1], sent, took, sent / took);
	return 0;
}

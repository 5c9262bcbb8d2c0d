// SPDX-License-Identifier: Apache-2.0
// The compiled half of e2e/bench/run: a server, a latency client, a programming probe and a
// bounded UDP flood. Built by `run` with gcc; no dependencies beyond libc and pthreads.
//
//   benchtool serve PORT NAME              HTTP/1.1 keep-alive server, body = NAME, thread per conn
//   benchtool ew COUNT SECONDS FILE        COUNT connects (bounded by SECONDS) to a random
//                                          ADDR:PORT line of FILE per connection: connect, one
//                                          GET, read the reply, SO_LINGER 0 close. Prints
//                                          "ok N err N p50_us X p99_us Y mean_us Z" (also
//                                          when stopped early by SIGTERM)
//   benchtool probe ADDR PORT EXPECT SECONDS
//                                          connect+GET every 1 ms until the body contains EXPECT;
//                                          prints the CLOCK_REALTIME of that reply in ns (exit 1
//                                          on timeout)
//   benchtool flood ADDR PORT COUNT SECONDS
//                                          COUNT 64-byte UDP datagrams (bounded by SECONDS);
//                                          prints "sent N secs S"
//   benchtool loop FILE INTERVAL_MS SECONDS
//                                          the soak's client (e2e/bench/soak): one connection
//                                          every INTERVAL_MS to a random ADDR:PORT line of FILE
//                                          (connect, GET, full reply, 1 s timeout per step,
//                                          SO_LINGER 0 close) until SECONDS or SIGTERM. Prints
//                                          "fail EPOCH_S ADDR:PORT STEP" for each failed one,
//                                          "tick EPOCH_S ok N err N" every 10 s and
//                                          "total ok N err N secs S" at the end
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *g_name;
static const char *g_why; // the step the last failed one_request() stopped at
static volatile sig_atomic_t g_stop;
static void on_term(int sig) { (void)sig; g_stop = 1; }

static double now_s(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *conn_thread(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[4096], resp[512];
	int blen = strlen(g_name);
	int rlen = snprintf(resp, sizeof resp,
			    "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n%s",
			    blen, g_name);
	size_t have = 0;
	for (;;) {
		ssize_t n = read(fd, buf + have, sizeof buf - 1 - have);
		if (n <= 0)
			break;
		have += n;
		buf[have] = 0;
		// Answer every complete request in the buffer (wrk pipelines nothing, but be safe).
		char *p = buf, *e;
		while ((e = strstr(p, "\r\n\r\n"))) {
			if (write(fd, resp, rlen) != rlen)
				goto out;
			p = e + 4;
		}
		have = buf + have - p;
		memmove(buf, p, have);
		if (have > sizeof buf - 2)
			have = 0;
	}
out:
	close(fd);
	return NULL;
}

static int serve(int port, const char *name)
{
	g_name = name;
	signal(SIGPIPE, SIG_IGN);
	int s = socket(AF_INET6, SOCK_STREAM, 0), one = 1, zero = 0;
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
	struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
	if (bind(s, (void *)&a, sizeof a) || listen(s, 4096)) {
		perror("bind/listen");
		return 1;
	}
	pthread_attr_t at;
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&at, 64 * 1024);
	for (;;) {
		int c = accept(s, NULL, NULL);
		if (c < 0)
			continue;
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		pthread_t t;
		if (pthread_create(&t, &at, conn_thread, (void *)(intptr_t)c))
			close(c);
	}
}

struct target {
	struct sockaddr_in a;
};

static int parse_target(const char *s, struct sockaddr_in *a)
{
	char ip[64];
	int port;
	if (sscanf(s, "%63[^:]:%d", ip, &port) != 2)
		return -1;
	memset(a, 0, sizeof *a);
	a->sin_family = AF_INET;
	a->sin_port = htons(port);
	return inet_pton(AF_INET, ip, &a->sin_addr) == 1 ? 0 : -1;
}

// One connection: connect (timeout ms), GET, read the full reply into body. Returns 0 on success.
static int one_request(const struct sockaddr_in *a, int timeout_ms, char *body, size_t bodylen)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1, rc = -1;
	g_why = "socket";
	if (fd < 0)
		return -1;
	struct linger lg = {1, 0};
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	g_why = "connect";
	if (connect(fd, (const void *)a, sizeof *a) && errno != EINPROGRESS) {
		g_why = errno == ECONNREFUSED ? "connect-refused" : errno == EPERM ? "connect-eperm" : "connect-error";
		goto out;
	}
	struct pollfd p = {fd, POLLOUT, 0};
	g_why = "connect-timeout";
	if (poll(&p, 1, timeout_ms) != 1)
		goto out;
	int err = 0;
	socklen_t el = sizeof err;
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
	g_why = err == ECONNREFUSED ? "connect-refused" : err == EHOSTUNREACH ? "connect-unreachable" : "connect-error";
	if (err)
		goto out;
	static const char req[] = "GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
	g_why = "write";
	if (write(fd, req, sizeof req - 1) != sizeof req - 1)
		goto out;
	char buf[1024];
	size_t have = 0;
	for (;;) {
		p.events = POLLIN;
		g_why = "reply-timeout";
		if (poll(&p, 1, timeout_ms) != 1)
			goto out;
		ssize_t n = read(fd, buf + have, sizeof buf - 1 - have);
		g_why = n == 0 ? "reply-eof" : "reply-error";
		if (n <= 0)
			goto out;
		have += n;
		buf[have] = 0;
		char *e = strstr(buf, "\r\n\r\n"), *cl = strstr(buf, "Content-Length: ");
		if (e && cl && (size_t)(buf + have - (e + 4)) >= (size_t)atoi(cl + 16)) {
			if (body)
				snprintf(body, bodylen, "%s", e + 4);
			rc = 0;
			break;
		}
		g_why = "reply-too-long";
		if (have >= sizeof buf - 1)
			goto out;
	}
	g_why = NULL;
out:
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
	close(fd);
	return rc;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static int ew(long count, double secs, const char *file)
{
	FILE *f = fopen(file, "r");
	if (!f) {
		perror(file);
		return 1;
	}
	struct sockaddr_in *t = NULL;
	size_t nt = 0, cap = 0;
	char line[128];
	while (fgets(line, sizeof line, f)) {
		if (nt == cap)
			t = realloc(t, (cap = cap ? cap * 2 : 1024) * sizeof *t);
		if (parse_target(line, &t[nt]) == 0)
			nt++;
	}
	fclose(f);
	if (!nt) {
		fprintf(stderr, "no targets in %s\n", file);
		return 1;
	}
	double *lat = malloc(count * sizeof *lat), start = now_s(CLOCK_MONOTONIC), sum = 0;
	long ok = 0, errs = 0;
	srand(getpid() ^ (unsigned)time(NULL));
	signal(SIGTERM, on_term); // stop early, still print what was measured
	for (long i = 0; i < count && !g_stop && now_s(CLOCK_MONOTONIC) - start < secs; i++) {
		const struct sockaddr_in *a = &t[(size_t)rand() % nt];
		double t0 = now_s(CLOCK_MONOTONIC);
		if (one_request(a, 1000, NULL, 0) == 0) {
			lat[ok] = (now_s(CLOCK_MONOTONIC) - t0) * 1e6;
			sum += lat[ok++];
		} else
			errs++;
	}
	qsort(lat, ok, sizeof *lat, cmp_d);
	printf("ok %ld err %ld p50_us %.1f p99_us %.1f mean_us %.1f secs %.2f\n", ok, errs,
	       ok ? lat[ok / 2] : 0, ok ? lat[(long)(ok * 0.99)] : 0, ok ? sum / ok : 0,
	       now_s(CLOCK_MONOTONIC) - start);
	return 0;
}

// The soak's client: paced, endless within SECONDS, every failure reported with its time.
static int loop(const char *file, double interval_ms, double secs)
{
	FILE *f = fopen(file, "r");
	if (!f) {
		perror(file);
		return 1;
	}
	struct sockaddr_in t[256];
	char names[256][128], line[128];
	size_t nt = 0;
	while (nt < 256 && fgets(line, sizeof line, f)) {
		line[strcspn(line, "\r\n")] = 0;
		if (parse_target(line, &t[nt]) == 0)
			snprintf(names[nt++], sizeof names[0], "%s", line);
	}
	fclose(f);
	if (!nt) {
		fprintf(stderr, "no targets in %s\n", file);
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGTERM, on_term);
	signal(SIGINT, on_term);
	srand(getpid() ^ (unsigned)time(NULL));
	long ok = 0, errs = 0;
	double start = now_s(CLOCK_MONOTONIC), next = start, tick = start + 10;
	while (!g_stop && now_s(CLOCK_MONOTONIC) - start < secs) {
		size_t i = (size_t)rand() % nt;
		if (one_request(&t[i], 1000, NULL, 0) == 0)
			ok++;
		else {
			errs++;
			printf("fail %.3f %s %s\n", now_s(CLOCK_REALTIME), names[i], g_why ? g_why : "?");
		}
		double now = now_s(CLOCK_MONOTONIC);
		if (now >= tick) {
			printf("tick %.3f ok %ld err %ld\n", now_s(CLOCK_REALTIME), ok, errs);
			tick += 10;
		}
		next += interval_ms / 1000;
		if (next > now)
			usleep((useconds_t)((next - now) * 1e6));
		else
			next = now; // late (a slow connect): no burst to catch up
	}
	printf("total ok %ld err %ld secs %.1f\n", ok, errs, now_s(CLOCK_MONOTONIC) - start);
	return 0;
}

static int probe(const char *addr, int port, const char *expect, double secs)
{
	char tgt[96], body[256];
	struct sockaddr_in a;
	snprintf(tgt, sizeof tgt, "%s:%d", addr, port);
	if (parse_target(tgt, &a))
		return 2;
	double start = now_s(CLOCK_MONOTONIC);
	while (now_s(CLOCK_MONOTONIC) - start < secs) {
		if (one_request(&a, 200, body, sizeof body) == 0 && strstr(body, expect)) {
			printf("%.0f\n", now_s(CLOCK_REALTIME) * 1e9);
			return 0;
		}
		usleep(1000);
	}
	return 1;
}

static int flood(const char *addr, int port, long count, double secs)
{
	char tgt[96], payload[64] = {0};
	struct sockaddr_in a;
	snprintf(tgt, sizeof tgt, "%s:%d", addr, port);
	if (parse_target(tgt, &a))
		return 2;
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (connect(fd, (void *)&a, sizeof a)) {
		perror("connect");
		return 1;
	}
	enum { B = 64 };
	struct mmsghdr m[B];
	struct iovec iov = {payload, sizeof payload};
	memset(m, 0, sizeof m);
	for (int i = 0; i < B; i++) {
		m[i].msg_hdr.msg_iov = &iov;
		m[i].msg_hdr.msg_iovlen = 1;
	}
	long sent = 0;
	double start = now_s(CLOCK_MONOTONIC), el = 0;
	while (sent < count && (el = now_s(CLOCK_MONOTONIC) - start) < secs) {
		int want = count - sent < B ? count - sent : B;
		int n = sendmmsg(fd, m, want, 0);
		if (n > 0)
			sent += n;
	}
	el = now_s(CLOCK_MONOTONIC) - start;
	printf("sent %ld secs %.3f\n", sent, el);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 4 && !strcmp(argv[1], "serve"))
		return serve(atoi(argv[2]), argv[3]);
	if (argc >= 5 && !strcmp(argv[1], "ew"))
		return ew(atol(argv[2]), atof(argv[3]), argv[4]);
	if (argc >= 6 && !strcmp(argv[1], "probe"))
		return probe(argv[2], atoi(argv[3]), argv[4], atof(argv[5]));
	if (argc >= 5 && !strcmp(argv[1], "loop"))
		return loop(argv[2], atof(argv[3]), atof(argv[4]));
	if (argc >= 6 && !strcmp(argv[1], "flood"))
		return flood(argv[2], atoi(argv[3]), atol(argv[4]), atof(argv[5]));
	fprintf(stderr, "usage: see the head of benchtool.c\n");
	return 2;
}

// SPDX-License-Identifier: BSD-2-Clause
// echo_check: the network check's traffic generator, every byte of every echo verified.
//
//   echo_check icmp HOST MIN_BYTES MAX_BYTES
//       ICMP echo requests (RFC 792) with payloads of every size from MIN_BYTES to MAX_BYTES
//       (MAX_BYTES = MTU - 28 fills the MTU), each reply's identifier, sequence number and
//       payload compared with the request.
//   echo_check udp HOST PORT TOTAL_BYTES [DATAGRAM_BYTES]
//       a bulk transfer through a UDP echo server (RFC 862): TOTAL_BYTES in datagrams of
//       DATAGRAM_BYTES (default 1024, at most 1472: nothing is fragmented on a 1500-byte MTU),
//       each carrying its sequence number and a pattern derived from it.
//
// One request is outstanding at a time; a lost one is sent again after 2 s, up to 5 times.
// Exit status: 0 all echoes intact, 1 a corrupted echo, 2 no echo, 3 bad arguments.
// Built static by the co-simulation's initramfs builder: busybox has no UDP client, and its
// ping does not compare what comes back.

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PAYLOAD 1472

static void fill(unsigned char *buf, size_t n, uint32_t seq)
{
    uint32_t x = seq * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        buf[i] = (unsigned char)x;
    }
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint16_t checksum(const void *data, size_t n)
{
    const unsigned char *p = data;
    uint32_t sum = 0;
    for (size_t i = 0; i + 1 < n; i += 2)
        sum += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (n & 1)
        sum += (uint32_t)(p[n - 1] << 8);
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return htons((uint16_t)~sum);
}

/* Wait up to 2 s for a datagram that match() accepts; 1 matched, 0 timed out, -1 corrupted. */
typedef int (*matcher)(const unsigned char *buf, ssize_t n, void *ctx);

static int await_echo(int fd, matcher match, void *ctx)
{
    unsigned char in[4096];
    double deadline = now() + 2.0;
    for (;;) {
        int left = (int)((deadline - now()) * 1000);
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (left <= 0 || poll(&p, 1, left) <= 0)
            return 0;
        ssize_t got = recv(fd, in, sizeof in, 0);
        if (got < 0) {
            if (errno == ECONNREFUSED) {
                fprintf(stderr, "echo_check: the peer refused (ICMP port unreachable)\n");
                return -2;
            }
            continue;
        }
        int r = match(in, got, ctx);
        if (r)
            return r;
    }
}

struct icmp_ctx { uint16_t id, seq; const unsigned char *payload; size_t n; };

static int icmp_match(const unsigned char *buf, ssize_t got, void *arg)
{
    struct icmp_ctx *c = arg;
    if (got < 20)
        return 0;
    size_t ihl = (size_t)(buf[0] & 0xf) * 4;
    if ((size_t)got < ihl + 8)
        return 0;
    const struct icmphdr *h = (const void *)(buf + ihl);
    if (h->type != ICMP_ECHOREPLY || ntohs(h->un.echo.id) != c->id ||
        ntohs(h->un.echo.sequence) != c->seq)
        return 0;
    size_t n = (size_t)got - ihl - 8;
    if (n != c->n || memcmp(buf + ihl + 8, c->payload, n) || checksum(buf + ihl, (size_t)got - ihl)) {
        fprintf(stderr, "echo_check: echo reply %u came back corrupted (%zu of %zu bytes)\n",
                c->seq, n, c->n);
        return -1;
    }
    return 1;
}

static int icmp(const char *host, long min, long max)
{
    struct sockaddr_in peer = { .sin_family = AF_INET };
    if (inet_pton(AF_INET, host, &peer.sin_addr) != 1 || min < 0 || max < min ||
        max > MAX_PAYLOAD) {
        fprintf(stderr, "echo_check icmp: bad address or sizes (0 <= MIN <= MAX <= %d)\n",
                MAX_PAYLOAD);
        return 3;
    }
    int fd = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    if (fd < 0 || connect(fd, (struct sockaddr *)&peer, sizeof peer) < 0) {
        perror("echo_check: raw socket");
        return 2;
    }
    unsigned char out[8 + MAX_PAYLOAD];
    uint16_t id = (uint16_t)getpid();
    long retries = 0;
    double t0 = now();
    for (long size = min; size <= max; size++) {
        struct icmphdr *h = (void *)out;
        memset(h, 0, sizeof *h);
        h->type = ICMP_ECHO;
        h->un.echo.id = htons(id);
        h->un.echo.sequence = htons((uint16_t)size);
        fill(out + 8, (size_t)size, (uint32_t)size);
        h->checksum = checksum(out, 8 + (size_t)size);
        struct icmp_ctx c = { id, (uint16_t)size, out + 8, (size_t)size };
        int r = 0;
        for (int tries = 0; r == 0 && tries < 6; tries++) {
            if (tries)
                retries++;
            if (send(fd, out, 8 + (size_t)size, 0) < 0) {
                perror("echo_check: send");
                return 2;
            }
            r = await_echo(fd, icmp_match, &c);
        }
        if (r == 0) {
            fprintf(stderr, "echo_check: no echo reply for %ld bytes after 6 tries\n", size);
            return 2;
        }
        if (r < 0)
            return r == -1 ? 1 : 2;
    }
    printf("echo_check: ICMP echo of every size from %ld to %ld bytes verified in %.2f s "
           "(%ld retries)\n", min, max, now() - t0, retries);
    return 0;
}

struct udp_ctx { uint32_t seq; const unsigned char *data; size_t n; };

static int udp_match(const unsigned char *buf, ssize_t got, void *arg)
{
    struct udp_ctx *c = arg;
    uint32_t seq;
    if (got < 4)
        return 0;
    memcpy(&seq, buf, 4);
    if (seq != c->seq)
        return 0;                   /* a late echo of an earlier retry */
    if ((size_t)got != c->n || memcmp(buf, c->data, c->n)) {
        fprintf(stderr, "echo_check: datagram %u came back corrupted (%zd of %zu bytes)\n",
                c->seq, got, c->n);
        return -1;
    }
    return 1;
}

static int udp(const char *host, const char *port, long total, long size)
{
    struct sockaddr_in peer = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port)) };
    if (inet_pton(AF_INET, host, &peer.sin_addr) != 1 || total <= 0 || size < 4 ||
        size > MAX_PAYLOAD) {
        fprintf(stderr, "echo_check udp: bad address or sizes (TOTAL > 0, 4 <= SIZE <= %d)\n",
                MAX_PAYLOAD);
        return 3;
    }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&peer, sizeof peer) < 0) {
        perror("echo_check: socket");
        return 2;
    }
    unsigned char out[MAX_PAYLOAD];
    long sent = 0, retries = 0;
    uint32_t seq = 0;
    double t0 = now();
    while (sent < total) {
        size_t n = (size_t)(total - sent < size ? total - sent : size);
        if (n < 4)
            n = 4;
        fill(out, n, seq);
        memcpy(out, &seq, 4);
        struct udp_ctx c = { seq, out, n };
        int r = 0;
        for (int tries = 0; r == 0 && tries < 6; tries++) {
            if (tries)
                retries++;
            if (send(fd, out, n, 0) != (ssize_t)n) {
                perror("echo_check: send");
                return 2;
            }
            r = await_echo(fd, udp_match, &c);
        }
        if (r == 0) {
            fprintf(stderr, "echo_check: no echo of datagram %u after 6 tries\n", seq);
            return 2;
        }
        if (r < 0)
            return r == -1 ? 1 : 2;
        sent += (long)n;
        seq++;
    }
    double dt = now() - t0;
    printf("echo_check: UDP echo of %ld bytes in %u datagrams verified in %.2f s "
           "(%.1f KiB/s, %ld retries)\n", sent, seq, dt, sent / 1024.0 / dt, retries);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 5 && !strcmp(argv[1], "icmp"))
        return icmp(argv[2], atol(argv[3]), atol(argv[4]));
    if (argc >= 5 && !strcmp(argv[1], "udp"))
        return udp(argv[2], argv[3], atol(argv[4]), argc > 5 ? atol(argv[5]) : 1024);
    fprintf(stderr, "usage: %s icmp HOST MIN_BYTES MAX_BYTES\n"
                    "       %s udp HOST PORT TOTAL_BYTES [DATAGRAM_BYTES]\n", argv[0], argv[0]);
    return 3;
}

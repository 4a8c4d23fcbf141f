// SPDX-License-Identifier: BSD-2-Clause
// udp_echo: bulk transfer through a UDP echo server (RFC 862), every byte checked.
//
//   udp_echo HOST PORT TOTAL_BYTES [DATAGRAM_BYTES]
//
// Sends TOTAL_BYTES in datagrams of DATAGRAM_BYTES (default 1024, at most 1472 so that nothing
// is fragmented on a 1500-byte MTU), one at a time: each carries its sequence number and a
// pattern derived from it, and must come back unchanged before the next goes out. A lost
// datagram is sent again after 2 s, up to 5 times. Exit status 0 when everything came back
// intact, 1 on a corrupted echo, 2 when the peer stopped answering, 3 on bad arguments.
// Built static by the co-simulation's initramfs builder (busybox has no UDP client).

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void fill(unsigned char *buf, size_t n, uint32_t seq)
{
    uint32_t x = seq * 2654435761u + 1;
    memcpy(buf, &seq, 4);
    for (size_t i = 4; i < n; i++) {
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

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s HOST PORT TOTAL_BYTES [DATAGRAM_BYTES]\n", argv[0]);
        return 3;
    }
    long total = atol(argv[3]);
    long size = argc > 4 ? atol(argv[4]) : 1024;
    if (total <= 0 || size < 4 || size > 1472) {
        fprintf(stderr, "udp_echo: need TOTAL_BYTES > 0 and 4 <= DATAGRAM_BYTES <= 1472\n");
        return 3;
    }
    struct sockaddr_in peer = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])) };
    if (inet_pton(AF_INET, argv[1], &peer.sin_addr) != 1) {
        fprintf(stderr, "udp_echo: bad address %s\n", argv[1]);
        return 3;
    }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&peer, sizeof peer) < 0) {
        perror("udp_echo: socket");
        return 2;
    }
    unsigned char out[1472], in[2048];
    long sent_bytes = 0, retries = 0;
    uint32_t seq = 0;
    double t0 = now();
    while (sent_bytes < total) {
        size_t n = (size_t)(total - sent_bytes < size ? total - sent_bytes : size);
        if (n < 4)
            n = 4;
        fill(out, n, seq);
        int tries = 0, done = 0;
        while (!done) {
            if (send(fd, out, n, 0) != (ssize_t)n) {
                perror("udp_echo: send");
                return 2;
            }
            double deadline = now() + 2.0;
            while (!done) {
                int left = (int)((deadline - now()) * 1000);
                struct pollfd p = { .fd = fd, .events = POLLIN };
                if (left <= 0 || poll(&p, 1, left) <= 0)
                    break;
                ssize_t got = recv(fd, in, sizeof in, 0);
                if (got < 0) {
                    if (errno == ECONNREFUSED) {
                        fprintf(stderr, "udp_echo: the peer refused (ICMP port unreachable)\n");
                        return 2;
                    }
                    continue;
                }
                uint32_t rseq;
                if (got < 4)
                    continue;
                memcpy(&rseq, in, 4);
                if (rseq != seq)
                    continue;       /* a late echo of an earlier retry */
                if ((size_t)got != n || memcmp(in, out, n)) {
                    fprintf(stderr, "udp_echo: datagram %u came back corrupted (%zd of %zu bytes)\n",
                            seq, got, n);
                    return 1;
                }
                done = 1;
            }
            if (!done && ++tries > 5) {
                fprintf(stderr, "udp_echo: no echo of datagram %u after 6 tries\n", seq);
                return 2;
            }
            if (!done)
                retries++;
        }
        sent_bytes += (long)n;
        seq++;
    }
    double dt = now() - t0;
    printf("udp_echo: %ld bytes in %u datagrams echoed and verified in %.2f s "
           "(%.1f KiB/s, %ld retries)\n", sent_bytes, seq, dt, sent_bytes / 1024.0 / dt, retries);
    return 0;
}

/* gsoblast: one-way UDP sender with UDP GSO (UDP_SEGMENT, udp(7), Linux >= 4.18).
 * Each send hands the kernel one buffer of G equal datagrams of SIZE bytes, which the
 * stack splits into G packets (in software when the device does not segment); M such
 * buffers go per sendmmsg(2) call. Bounded: stops after -t seconds (and after -n
 * datagrams when given). Prints one key=value line: sent_packets (datagrams), sends
 * (GSO buffers accepted), elapsed_s, sent_pps, segments, eagain, enobufs.
 * Usage: gsoblast -d ADDR -p PORT [-s SIZE] [-g SEGMENTS] [-m BUFFERS] [-t SECONDS] [-n MAX] */
#include "common.h"
#include <netinet/udp.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

int main(int argc, char **argv)
{
    const char *dst = "127.0.0.1";
    int port = 9100, size = 64, segs = 64, bufs_per_call = 1, opt;
    double dur_s = 5.0;
    uint64_t max_packets = UINT64_MAX;
    while ((opt = getopt(argc, argv, "d:p:s:g:m:t:n:")) != -1) {
        switch (opt) {
        case 'd': dst = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 's': size = atoi(optarg); break;
        case 'g': segs = atoi(optarg); break;
        case 'm': bufs_per_call = atoi(optarg); break;
        case 't': dur_s = atof(optarg); break;
        case 'n': max_packets = strtoull(optarg, NULL, 10); break;
        default:
            fprintf(stderr, "usage: gsoblast -d ADDR -p PORT [-s SIZE] [-g SEGMENTS] [-m BUFFERS] [-t S] [-n MAX]\n");
            return 2;
        }
    }
    /* 128 is the kernel's UDP_MAX_SEGMENTS since 6.x (64 before); one buffer must also fit
     * one IPv4 datagram's length field. */
    if (size < 8 || size > 1472 || segs < 1 || segs > 128 || (long)segs * size > 65507 ||
        bufs_per_call < 1 || bufs_per_call > 64 || dur_s <= 0 || dur_s > 600) {
        fprintf(stderr, "gsoblast: size 8..1472, segments 1..128 (size x segments <= 65507), "
                        "buffers 1..64, duration 0..600 s\n");
        return 2;
    }
    struct sockaddr_in sa;
    parse_addr(&sa, dst, port);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) die("socket");
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) die("connect");
    /* Set once on the socket rather than as a cmsg per send: every buffer has the same
     * segment size, and the send path then carries no control data at all. */
    int gso = size;
    if (setsockopt(fd, SOL_UDP, UDP_SEGMENT, &gso, sizeof(gso)) < 0) die("setsockopt UDP_SEGMENT");

    size_t buf_len = (size_t)segs * (size_t)size;
    char *mem = calloc((size_t)bufs_per_call, buf_len);
    struct mmsghdr *msgs = calloc((size_t)bufs_per_call, sizeof(*msgs));
    struct iovec *iov = calloc((size_t)bufs_per_call, sizeof(*iov));
    if (!mem || !msgs || !iov) die("calloc");
    for (int i = 0; i < bufs_per_call; i++) {
        iov[i].iov_base = mem + (size_t)i * buf_len;
        iov[i].iov_len = buf_len;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    uint64_t seq = 0, sends = 0, eagain = 0, enobufs = 0;
    uint64_t t0 = now_ns(), deadline = t0 + (uint64_t)(dur_s * 1e9), t = t0;
    while (seq < max_packets) {
        /* With a count bound the last call may carry fewer buffers, and its last buffer
         * fewer segments (a short final segment is allowed, but it stays whole here). */
        uint64_t left = max_packets - seq;
        unsigned nbuf = 0;
        uint64_t s = seq;
        for (int i = 0; i < bufs_per_call && left; i++) {
            unsigned n = left < (uint64_t)segs ? (unsigned)left : (unsigned)segs;
            char *b = mem + (size_t)i * buf_len;
            /* A sequence number in each datagram keeps the payload honest, as in blast. */
            for (unsigned k = 0; k < n; k++, s++)
                memcpy(b + (size_t)k * (size_t)size, &s, sizeof(s));
            iov[i].iov_len = (size_t)n * (size_t)size;
            left -= n;
            nbuf++;
        }
        int r = sendmmsg(fd, msgs, nbuf, 0);
        if (r > 0) {
            for (int i = 0; i < r; i++)
                seq += iov[i].iov_len / (size_t)size;
            sends += (uint64_t)r;
        } else if (r < 0) {
            if (errno == EAGAIN) eagain++;
            else if (errno == ENOBUFS) enobufs++;
            else if (errno == EIO) {
                /* What a device without checksum offload gives for a GSO send. */
                fprintf(stderr, "sendmmsg: EIO: this path cannot take UDP GSO buffers\n");
                return 3;
            } else if (errno != EINTR && errno != ECONNREFUSED) die("sendmmsg");
        }
        t = now_ns();
        if (t >= deadline) break;
    }
    double el = (double)(t - t0) / 1e9;
    printf("sent_packets=%llu sends=%llu elapsed_s=%.6f sent_pps=%.1f segments=%d eagain=%llu enobufs=%llu\n",
           (unsigned long long)seq, (unsigned long long)sends, el, (double)seq / el, segs,
           (unsigned long long)eagain, (unsigned long long)enobufs);
    return 0;
}

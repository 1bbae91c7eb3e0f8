/* blast: one-way 64-byte UDP sender over sendmmsg(2), batch of B datagrams per call.
 * Bounded: stops after -t seconds (and after -n packets when given). Prints one
 * key=value line: sent_packets, elapsed_s, sent_pps, eagain, enobufs.
 * Usage: blast -d ADDR -p PORT [-s SIZE] [-t SECONDS] [-b BATCH] [-n MAXPACKETS] */
#include "common.h"
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    const char *dst = "127.0.0.1";
    int port = 9100, size = 64, batch = 64, opt;
    double dur_s = 5.0;
    uint64_t max_packets = UINT64_MAX;
    while ((opt = getopt(argc, argv, "d:p:s:t:b:n:")) != -1) {
        switch (opt) {
        case 'd': dst = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 's': size = atoi(optarg); break;
        case 't': dur_s = atof(optarg); break;
        case 'b': batch = atoi(optarg); break;
        case 'n': max_packets = strtoull(optarg, NULL, 10); break;
        default: fprintf(stderr, "usage: blast -d ADDR -p PORT [-s SIZE] [-t S] [-b BATCH] [-n MAX]\n"); return 2;
        }
    }
    if (size < 8 || size > 65507 || batch < 1 || batch > 1024 || dur_s <= 0 || dur_s > 600) {
        fprintf(stderr, "blast: size 8..65507, batch 1..1024, duration 0..600 s\n");
        return 2;
    }
    struct sockaddr_in sa;
    parse_addr(&sa, dst, port);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) die("socket");
    /* connect() lets sendmmsg skip the per-datagram route lookup, like iperf3 does. */
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) die("connect");

    char *bufs = calloc((size_t)batch, (size_t)size);
    struct mmsghdr *msgs = calloc((size_t)batch, sizeof(*msgs));
    struct iovec *iov = calloc((size_t)batch, sizeof(*iov));
    if (!bufs || !msgs || !iov) die("calloc");
    for (int i = 0; i < batch; i++) {
        iov[i].iov_base = bufs + (size_t)i * size;
        iov[i].iov_len = (size_t)size;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    uint64_t seq = 0, eagain = 0, enobufs = 0;
    uint64_t t0 = now_ns(), deadline = t0 + (uint64_t)(dur_s * 1e9), t = t0;
    while (seq < max_packets) {
        /* A sequence number in each datagram keeps the payload honest (not all-zero pages). */
        for (int i = 0; i < batch; i++) {
            uint64_t s = seq + (uint64_t)i;
            memcpy(bufs + (size_t)i * size, &s, sizeof(s));
        }
        unsigned n = (unsigned)batch;
        if (max_packets - seq < n) n = (unsigned)(max_packets - seq);
        int r = sendmmsg(fd, msgs, n, 0);
        if (r > 0) {
            seq += (uint64_t)r;
        } else if (r < 0) {
            if (errno == EAGAIN) eagain++;
            else if (errno == ENOBUFS) enobufs++;
            else if (errno != EINTR && errno != ECONNREFUSED) die("sendmmsg");
        }
        t = now_ns();
        if (t >= deadline) break;
    }
    double el = (double)(t - t0) / 1e9;
    printf("sent_packets=%llu elapsed_s=%.6f sent_pps=%.1f eagain=%llu enobufs=%llu\n",
           (unsigned long long)seq, el, (double)seq / el,
           (unsigned long long)eagain, (unsigned long long)enobufs);
    return 0;
}

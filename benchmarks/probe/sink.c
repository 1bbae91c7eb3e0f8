/* sink: UDP receiver that counts datagrams with recvmmsg(2), batch 64.
 * Asks for a large receive buffer (SO_RCVBUFFORCE, else SO_RCVBUF) so that the
 * count measures the path, not the default ~256-datagram buffer. Bounded: exits
 * -t seconds after start, or -i seconds after the last datagram once traffic began.
 * Prints one key=value line: received_packets, active_s (first to last datagram),
 * received_pps, rcvbuf_bytes (effective), rxq_ovfl (kernel drops on this socket).
 * With -G it asks for UDP_GRO (udp(7)): the kernel may then hand over several datagrams
 * of one flow as one buffer, and each buffer counts as length / segment size datagrams.
 * Usage: sink -b ADDR -p PORT [-t MAXSECONDS] [-i IDLESECONDS] [-R RCVBUF_BYTES] [-G] */
#include "common.h"
#include <netinet/udp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef UDP_GRO
#define UDP_GRO 104
#endif

#define BATCH 64
#define SLOT 2048
#define GRO_SLOT 65536 /* a coalesced buffer is at most one IP datagram */

int main(int argc, char **argv)
{
    const char *bind_addr = "127.0.0.1";
    int port = 9100, opt, rcvbuf = 4 << 20, gro = 0;
    double max_s = 30.0, idle_s = 1.0;
    while ((opt = getopt(argc, argv, "b:p:t:i:R:G")) != -1) {
        switch (opt) {
        case 'b': bind_addr = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 't': max_s = atof(optarg); break;
        case 'i': idle_s = atof(optarg); break;
        case 'R': rcvbuf = atoi(optarg); break;
        case 'G': gro = 1; break;
        default: fprintf(stderr, "usage: sink -b ADDR -p PORT [-t S] [-i S] [-R BYTES] [-G]\n"); return 2;
        }
    }
    if (max_s <= 0 || max_s > 900 || idle_s <= 0) {
        fprintf(stderr, "sink: -t must be in (0, 900], -i > 0\n");
        return 2;
    }
    struct sockaddr_in sa;
    parse_addr(&sa, bind_addr, port);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) die("socket");
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof(one));
    if (gro && setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof(one)) < 0) die("setsockopt UDP_GRO");
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) die("bind");
    int eff = 0;
    socklen_t el = sizeof(eff);
    getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &eff, &el);
    printf("ready port=%d\n", port);
    fflush(stdout);

    size_t slot = gro ? GRO_SLOT : SLOT;
    char *bufs = malloc((size_t)BATCH * slot);
    if (!bufs) die("malloc");
    /* Room for both SO_RXQ_OVFL and UDP_GRO's segment size. */
    static char ctrl[BATCH][CMSG_SPACE(sizeof(uint32_t)) + CMSG_SPACE(sizeof(int))];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    uint64_t count = 0, first = 0, last = 0;
    uint32_t ovfl = 0;
    uint64_t start = now_ns(), stop = start + (uint64_t)(max_s * 1e9);
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    for (;;) {
        uint64_t t = now_ns();
        if (t >= stop) break;
        if (count && t - last >= (uint64_t)(idle_s * 1e9)) break;
        if (poll(&pfd, 1, 100) <= 0) continue;
        for (int i = 0; i < BATCH; i++) {
            iov[i].iov_base = bufs + (size_t)i * slot;
            iov[i].iov_len = slot;
            memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_control = ctrl[i];
            msgs[i].msg_hdr.msg_controllen = sizeof(ctrl[i]);
        }
        int r = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
        if (r <= 0) continue;
        uint64_t now = now_ns();
        if (!count) first = now;
        last = now;
        for (int i = 0; i < r; i++) {
            uint64_t n = 1;
            struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[i].msg_hdr);
            for (; c; c = CMSG_NXTHDR(&msgs[i].msg_hdr, c)) {
                /* SO_RXQ_OVFL carries the socket's cumulative drop counter on each datagram. */
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL)
                    memcpy(&ovfl, CMSG_DATA(c), sizeof(ovfl));
                if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
                    int seg = 0;
                    memcpy(&seg, CMSG_DATA(c), sizeof(seg));
                    if (seg > 0) n = (msgs[i].msg_len + (unsigned)seg - 1) / (unsigned)seg;
                }
            }
            count += n;
        }
    }
    double active = count > 1 ? (double)(last - first) / 1e9 : 0.0;
    printf("received_packets=%llu active_s=%.6f received_pps=%.1f rcvbuf_bytes=%d rxq_ovfl=%u\n",
           (unsigned long long)count, active, active > 0 ? (double)count / active : 0.0, eff, ovfl);
    return 0;
}

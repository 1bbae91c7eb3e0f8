/* pingpong: UDP request/response with one request outstanding.
 * Server (-S) echoes each datagram; client (-c ADDR) sends SIZE bytes carrying a
 * sequence number, waits for the matching echo, and records each round trip.
 * -y busy-polls: recv with MSG_DONTWAIT in a spin loop instead of blocking, which
 * on this VM avoids the ~70 us wake-up of a halted vCPU (the floor of the path).
 * Bounded: the client stops after -t seconds; the server exits -t seconds after
 * start or -i seconds after its last datagram. A request unanswered for 1 s counts
 * as lost and the next one is sent. The client prints one key=value line:
 * transactions, lost, elapsed_s, trans_per_s, rtt_min_us, rtt_p50_us, rtt_p99_us,
 * rtt_mean_us, mode.
 * -r RATE paces the client instead (open loop, the shape of a steady probe):
 * request i is due at start + i/RATE; the client sleeps to each due time
 * (clock_nanosleep, absolute), reads whatever echoes arrived meanwhile without
 * blocking, then sends. One wake-up per request: the floor of what an open-loop
 * probe costs, with no timing work. It prints sent, answered, elapsed_s, mode.
 * Usage: pingpong -S -b ADDR -p PORT [-y] [-t S] [-i S]
 *        pingpong -c ADDR -p PORT [-y] [-s SIZE] [-t S]
 *        pingpong -c ADDR -p PORT -r RATE [-s SIZE] [-t S] */
#include "common.h"
#include <sys/socket.h>
#include <unistd.h>

#define MAX_SAMPLES (32u << 20)
#define LOSS_TIMEOUT_NS 1000000000ull

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static ssize_t recv_wait(int fd, char *buf, size_t len, int busy, uint64_t give_up_ns)
{
    for (;;) {
        ssize_t r = recv(fd, buf, len, busy ? MSG_DONTWAIT : 0);
        if (r >= 0) return r;
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNREFUSED)
            die("recv");
        if (now_ns() >= give_up_ns) return -1;
    }
}

static int serve(const char *addr, int port, int busy, double max_s, double idle_s)
{
    struct sockaddr_in sa, peer;
    parse_addr(&sa, addr, port);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) die("socket");
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) die("bind");
    /* Blocking mode wakes every 100 ms to check the deadline. */
    struct timeval tv = {.tv_sec = 0, .tv_usec = 100000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    printf("ready port=%d\n", port);
    fflush(stdout);
    char buf[65536];
    uint64_t start = now_ns(), stop = start + (uint64_t)(max_s * 1e9), last = 0, served = 0;
    for (;;) {
        socklen_t pl = sizeof(peer);
        ssize_t r = recvfrom(fd, buf, sizeof(buf), busy ? MSG_DONTWAIT : 0, (struct sockaddr *)&peer, &pl);
        uint64_t t = now_ns();
        if (r >= 0) {
            sendto(fd, buf, (size_t)r, 0, (struct sockaddr *)&peer, pl);
            served++;
            last = t;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            die("recvfrom");
        }
        /* Checking the clock on every spin costs ~20 ns via the vDSO: cheap next to a syscall. */
        if (t >= stop || (served && t - last >= (uint64_t)(idle_s * 1e9))) break;
    }
    printf("served=%llu\n", (unsigned long long)served);
    return 0;
}

static int connected_socket(const char *addr, int port)
{
    struct sockaddr_in sa;
    parse_addr(&sa, addr, port);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) die("socket");
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) die("connect");
    return fd;
}

static int client(const char *addr, int port, int busy, int size, double dur_s)
{
    int fd = connected_socket(addr, port);
    if (!busy) {
        struct timeval tv = {.tv_sec = 0, .tv_usec = 100000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    }
    size_t cap = MAX_SAMPLES;
    uint32_t *rtt_ns = malloc(cap * sizeof(*rtt_ns));
    if (!rtt_ns) die("malloc");
    char out[65536], in[65536];
    memset(out, 0, sizeof(out));
    uint64_t n = 0, lost = 0, seq = 0, sum_ns = 0;
    uint64_t t0 = now_ns(), deadline = t0 + (uint64_t)(dur_s * 1e9), t = t0;
    while (t < deadline && n < cap) {
        seq++;
        memcpy(out, &seq, sizeof(seq));
        uint64_t ts = now_ns();
        if (send(fd, out, (size_t)size, 0) < 0 && errno != ECONNREFUSED) die("send");
        uint64_t give_up = ts + LOSS_TIMEOUT_NS;
        for (;;) {
            ssize_t r = recv_wait(fd, in, sizeof(in), busy, give_up);
            if (r < 0) { lost++; break; }
            uint64_t got;
            if ((size_t)r < sizeof(got)) continue;
            memcpy(&got, in, sizeof(got));
            if (got != seq) continue; /* a late echo of a request already counted lost */
            uint64_t d = now_ns() - ts;
            rtt_ns[n++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
            sum_ns += d;
            break;
        }
        t = now_ns();
    }
    double el = (double)(t - t0) / 1e9;
    if (n == 0) {
        printf("transactions=0 lost=%llu elapsed_s=%.6f trans_per_s=0\n", (unsigned long long)lost, el);
        return 1;
    }
    qsort(rtt_ns, n, sizeof(*rtt_ns), cmp_u32);
    /* Nearest-rank percentiles over every sample: exact, no histogram buckets. */
    uint64_t i50 = (n * 50 + 99) / 100, i99 = (n * 99 + 99) / 100;
    printf("transactions=%llu lost=%llu elapsed_s=%.6f trans_per_s=%.1f rtt_min_us=%.3f "
           "rtt_p50_us=%.3f rtt_p99_us=%.3f rtt_mean_us=%.3f mode=%s\n",
           (unsigned long long)n, (unsigned long long)lost, el, (double)n / el,
           rtt_ns[0] / 1e3, rtt_ns[i50 ? i50 - 1 : 0] / 1e3, rtt_ns[i99 ? i99 - 1 : 0] / 1e3,
           (double)sum_ns / (double)n / 1e3, busy ? "busy-poll" : "blocking");
    free(rtt_ns);
    return 0;
}

static int paced_client(const char *addr, int port, int size, double dur_s, double rate)
{
    int fd = connected_socket(addr, port);
    char out[65536], in[65536];
    memset(out, 0, sizeof(out));
    uint64_t period = (uint64_t)(1e9 / rate), sent = 0, answered = 0;
    uint64_t t0 = now_ns() + 1000000, limit = (uint64_t)(dur_s * rate);
    while (sent < limit) {
        uint64_t due = t0 + sent * period;
        struct timespec ts = {.tv_sec = (time_t)(due / 1000000000ull),
                              .tv_nsec = (long)(due % 1000000000ull)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
        while (recv(fd, in, sizeof(in), MSG_DONTWAIT) >= 0) answered++;
        memcpy(out, &sent, sizeof(sent));
        if (send(fd, out, (size_t)size, 0) < 0 && errno != ECONNREFUSED) die("send");
        sent++;
    }
    usleep(100000);
    while (recv(fd, in, sizeof(in), MSG_DONTWAIT) >= 0) answered++;
    printf("sent=%llu answered=%llu elapsed_s=%.6f mode=paced\n", (unsigned long long)sent,
           (unsigned long long)answered, (double)(now_ns() - t0) / 1e9);
    return 0;
}

int main(int argc, char **argv)
{
    const char *addr = NULL, *bind_addr = "127.0.0.1";
    int port = 9101, size = 64, busy = 0, server = 0, opt;
    double dur_s = 5.0, idle_s = 2.0, rate = 0;
    while ((opt = getopt(argc, argv, "Sc:b:p:s:t:i:yr:")) != -1) {
        switch (opt) {
        case 'S': server = 1; break;
        case 'c': addr = optarg; break;
        case 'b': bind_addr = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 's': size = atoi(optarg); break;
        case 't': dur_s = atof(optarg); break;
        case 'i': idle_s = atof(optarg); break;
        case 'y': busy = 1; break;
        case 'r': rate = atof(optarg); break;
        default: fprintf(stderr, "usage: pingpong -S -b ADDR -p PORT [-y] [-t S] | -c ADDR -p PORT [-y] [-s SIZE] [-t S]\n"); return 2;
        }
    }
    if (dur_s <= 0 || dur_s > 900 || size < 8 || size > 65507 || rate < 0 || rate > 1e6) {
        fprintf(stderr, "pingpong: -t in (0, 900], -s in 8..65507, -r in 0..1000000\n");
        return 2;
    }
    if (server) return serve(bind_addr, port, busy, dur_s, idle_s);
    if (!addr) { fprintf(stderr, "pingpong: give -S or -c ADDR\n"); return 2; }
    if (rate > 0) return paced_client(addr, port, size, dur_s, rate);
    return client(addr, port, busy, size, dur_s);
}

/* loadgen: a closed-loop echo load generator for bench/run.py.
 *
 *   loadgen HOST PORT CONNS SIZE INFLIGHT SECONDS WARMUP IDLE SERVER_PID[,PID...]
 *
 * Opens IDLE connections that never send, then CONNS active ones.  Each
 * active connection keeps INFLIGHT messages of SIZE bytes outstanding: when
 * a message's worth of bytes has come back, its round trip is recorded and
 * a new message is sent.  After WARMUP seconds it measures for SECONDS and
 * prints one JSON object: messages/s, MB/s, p50/p99 round trip (us), errors,
 * and the server's CPU time (utime, stime from /proc/PID/stat) over exactly
 * the measured interval, plus the server's RSS before and after the idle
 * connections were opened.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int fd;
    uint64_t pending;      /* bytes queued but not yet written */
    uint64_t sent_off;     /* position in the send buffer */
    uint64_t got;          /* bytes received toward the current message */
    double *stamps;        /* send times of messages in flight (ring) */
    int head, count;
    int want_out;
} conn_t;

static size_t SIZE;
static int INFLIGHT;
static char *sbuf;
static size_t SBUF;
static double *lat;
static size_t nlat, caplat;
static int measuring;
static uint64_t msgs, bytes_in, errors;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cpu_ticks_one(int pid, long *ut, long *st) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    /* fields after ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
    int field = 2;
    for (p++; *p && field < 14; p++)
        if (*p == ' ') field++;
    return sscanf(p, "%ld %ld", ut, st) == 2 ? 0 : -1;
}

/* SERVER_PID may be a comma-separated list (a pre-forked server): sum them */
static int cpu_ticks(const char *pids, long *ut, long *st) {
    *ut = *st = 0;
    const char *p = pids;
    while (*p) {
        long u = 0, s = 0;
        if (cpu_ticks_one(atoi(p), &u, &s) == 0) { *ut += u; *st += s; }
        while (*p && *p != ',') p++;
        if (*p == ',') p++;
    }
    return 0;
}

static long rss_kib(int pid) {
    char path[64], line[256];
    long v = -1;
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &v) == 1) break;
    fclose(f);
    return v;
}

static int dial(const char *host, int port, int nonblock) {
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    inet_pton(AF_INET, host, &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (int tries = 0; connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0; tries++) {
        if (tries > 50) { close(fd); return -1; }
        usleep(20000);
        close(fd);
        fd = socket(AF_INET, SOCK_STREAM, 0);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (nonblock) fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

static void flush(int ep, conn_t *c) {
    while (c->pending) {
        size_t off = c->sent_off % SBUF;
        size_t n = SBUF - off;
        if (n > c->pending) n = c->pending;
        ssize_t w = write(c->fd, sbuf + off, n);
        if (w < 0) {
            if (errno == EAGAIN) break;
            errors++;
            c->pending = 0;
            return;
        }
        c->pending -= w;
        c->sent_off += w;
    }
    int want = c->pending > 0;
    if (want != c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = want;
    }
}

static void queue_msg(conn_t *c, double t) {
    c->stamps[(c->head + c->count) % INFLIGHT] = t;
    c->count++;
    c->pending += SIZE;
}

int main(int argc, char **argv) {
    if (argc != 10) {
        fprintf(stderr, "usage: loadgen HOST PORT CONNS SIZE INFLIGHT SECONDS WARMUP IDLE SERVER_PID\n");
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]), nconn = atoi(argv[3]);
    SIZE = strtoul(argv[4], 0, 10);
    INFLIGHT = atoi(argv[5]);
    double seconds = atof(argv[6]), warmup = atof(argv[7]);
    int idle = atoi(argv[8]), spid = atoi(argv[9]);
    const char *spids = argv[9];

    struct rlimit rl = {65536, 65536};
    setrlimit(RLIMIT_NOFILE, &rl);

    SBUF = SIZE * INFLIGHT < 65536 ? 65536 : SIZE * INFLIGHT;
    sbuf = malloc(SBUF);
    for (size_t i = 0; i < SBUF; i++) sbuf[i] = (char)(i * 7);
    static char rbuf[1 << 20];
    caplat = 4000000;
    lat = malloc(caplat * sizeof *lat);

    long rss0 = rss_kib(spid);
    int *idle_fds = calloc(idle ? idle : 1, sizeof(int));
    int idle_ok = 0;
    for (int i = 0; i < idle; i++) {
        idle_fds[i] = dial(host, port, 0);
        if (idle_fds[i] >= 0) idle_ok++;
        else errors++;
        if (i % 256 == 255) usleep(2000);
    }
    if (idle) sleep(1); /* let the server accept them all */
    long rss1 = rss_kib(spid);

    int ep = epoll_create1(0);
    conn_t *cs = calloc(nconn, sizeof *cs);
    double t = now();
    for (int i = 0; i < nconn; i++) {
        conn_t *c = &cs[i];
        c->fd = dial(host, port, 1);
        if (c->fd < 0) { fprintf(stderr, "connect failed\n"); return 1; }
        c->stamps = calloc(INFLIGHT, sizeof(double));
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
        for (int k = 0; k < INFLIGHT; k++) queue_msg(c, t);
        flush(ep, c);
    }

    struct epoll_event evs[1024];
    double start = now(), t_measure = start + warmup, t_end = t_measure + seconds;
    long ut0 = 0, st0 = 0, ut1 = 0, st1 = 0;
    double m0 = 0, m1 = 0;
    for (;;) {
        int n = epoll_wait(ep, evs, 1024, 100);
        double tn = now();
        if (!measuring && tn >= t_measure) {
            measuring = 1;
            cpu_ticks(spids, &ut0, &st0);
            m0 = now();
            msgs = bytes_in = 0;
        }
        if (measuring && tn >= t_end) {
            cpu_ticks(spids, &ut1, &st1);
            m1 = now();
            break;
        }
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (evs[i].events & EPOLLOUT) flush(ep, c);
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                ssize_t r = read(c->fd, rbuf, sizeof rbuf);
                if (r <= 0) {
                    if (r < 0 && errno == EAGAIN) continue;
                    errors++;
                    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, 0);
                    continue;
                }
                bytes_in += r;
                c->got += r;
                while (c->got >= SIZE && c->count) {
                    c->got -= SIZE;
                    double sent = c->stamps[c->head];
                    c->head = (c->head + 1) % INFLIGHT;
                    c->count--;
                    if (measuring) {
                        msgs++;
                        if (nlat < caplat) lat[nlat++] = tn - sent;
                    }
                    queue_msg(c, tn);
                }
                flush(ep, c);
            }
        }
    }
    double el = m1 - m0;
    long hz = sysconf(_SC_CLK_TCK);
    int cmp(const void *a, const void *b) {
        double x = *(const double *)a, y = *(const double *)b;
        return x < y ? -1 : x > y;
    }
    qsort(lat, nlat, sizeof *lat, cmp);
    double p50 = nlat ? lat[nlat / 2] : 0, p99 = nlat ? lat[(size_t)(nlat * 0.99)] : 0;
    printf("{\"seconds\": %.4f, \"msgs\": %llu, \"msgs_per_s\": %.1f, \"mb_per_s\": %.2f, "
           "\"p50_us\": %.1f, \"p99_us\": %.1f, \"errors\": %llu, "
           "\"server_user_s\": %.4f, \"server_sys_s\": %.4f, "
           "\"rss_before_kib\": %ld, \"rss_idle_kib\": %ld, \"idle_connections\": %d}\n",
           el, (unsigned long long)msgs, msgs / el, bytes_in / el / 1e6, p50 * 1e6, p99 * 1e6,
           (unsigned long long)errors, (double)(ut1 - ut0) / hz, (double)(st1 - st0) / hz,
           rss0, rss1, idle_ok);
    return 0;
}

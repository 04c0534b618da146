/* loadgen: a closed-loop echo load generator for bench/run.py.
 *
 *   loadgen HOST PORT CONNS SIZE INFLIGHT SECONDS WARMUP IDLE SERVER_PID[,PID...]
 *   LOADGEN_TLS=1 loadgen ...          (TLS: see below; cc ... -lssl -lcrypto)
 *
 * Opens IDLE connections that never send, then CONNS active ones.  Each
 * active connection keeps INFLIGHT messages of SIZE bytes outstanding: when
 * a message's worth of bytes has come back, its round trip is recorded and
 * a new message is sent.  After WARMUP seconds it measures for SECONDS and
 * prints one JSON object: messages/s, MB/s, p50/p99 round trip (us), errors,
 * and the server's CPU time (utime, stime from /proc/PID/stat) over exactly
 * the measured interval, plus the server's RSS before and after the idle
 * connections were opened.
 *
 * Environment (run.py sets neither, so its calls are unchanged):
 *   LOADGEN_TLS=1         every active connection does a TLS client handshake
 *                         before the messages start, and the messages go
 *                         through SSL_write/SSL_read (idle ones stay plain TCP).
 *   LOADGEN_HANDSHAKES=1  the handshake rate instead of echoes (implies TLS):
 *                         CONNS connections each connect, complete a full
 *                         handshake, echo one byte (so the server has finished
 *                         its side, and the close_notify arrives on its own),
 *                         send close_notify, read until the server closes,
 *                         close, and start again; SIZE and INFLIGHT are
 *                         ignored.  "msgs" (and "handshakes") is the number of
 *                         handshakes completed in the measured interval, and
 *                         p50/p99 is connect-to-echo.
 *   LOADGEN_CHURN=N       each active connection closes after N round trips
 *                         (once nothing is in flight) and a new one is made
 *                         in its place, with one connect attempt: a refused
 *                         connect is counted ("refused"), not retried.  A
 *                         connection that fails is replaced too.
 *   LOADGEN_VERIFY=1      every echoed byte is compared with what was sent
 *                         ("mismatches").
 * Failures are also counted by kind: "resets" (ECONNRESET), "eofs" (the
 * server closed a connection with messages outstanding), "refused"; and
 * "connections" is how many connections were made in all.  (TLS: the client
 * verifies no certificate; it is a benchmark against a throwaway one made for
 * the run, on loopback.)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
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
    SSL *ssl;              /* NULL: plain TCP */
    int read_wants_out;    /* SSL_read asked for writability */
    int state;             /* handshake mode: HS_CONNECT, HS_SHAKE, HS_PING, HS_DRAIN */
    double t0;             /* handshake mode: when the connect began */
    uint64_t recv_off;     /* bytes received on this connection (LOADGEN_VERIFY) */
    uint64_t done;         /* round trips completed on this connection (LOADGEN_CHURN) */
} conn_t;

enum { HS_CONNECT, HS_SHAKE, HS_PING, HS_DRAIN };

static size_t SIZE;
static int INFLIGHT;
static char *sbuf;
static size_t SBUF;
static double *lat;
static size_t nlat, caplat;
static int measuring;
static uint64_t msgs, bytes_in, errors;
static uint64_t resets, eofs, refused, mismatches, connections;
static uint64_t CHURN;
static int VERIFY;
static SSL_CTX *tls_ctx; /* NULL: plain TCP */
static char rbuf[1 << 20];

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

/* One blocking connect attempt: the descriptor (blocking), or -1 if refused or failed. */
static int dial_once(const char *host, int port) {
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    inet_pton(AF_INET, host, &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) { close(fd); return -1; }
    return fd;
}

/* Connect, retrying for about a second while the server starts. */
static int dial(const char *host, int port, int nonblock) {
    int fd;
    for (int tries = 0; (fd = dial_once(host, port)) < 0; tries++) {
        if (tries > 50) return -1;
        usleep(20000);
    }
    if (nonblock) fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

static SSL_CTX *tls_client_ctx(void) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) return NULL;
    /* No verification, on purpose: the server's certificate is a throwaway
     * self-signed one made for this run, and the peer is on loopback. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    /* SSL_write returns after each record it writes, and a retry after
     * WANT_WRITE may come with the buffer at another address. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* every handshake a full one: no session is kept to resume */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    return ctx;
}

/* The client handshake on a non-blocking socket, waiting with poll(): the
 * echo mode does its handshakes before the load starts. */
static int tls_handshake_wait(conn_t *c) {
    c->ssl = SSL_new(tls_ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) return -1;
    for (;;) {
        int r = SSL_connect(c->ssl);
        if (r == 1) return 0;
        struct pollfd p = {.fd = c->fd};
        switch (SSL_get_error(c->ssl, r)) {
        case SSL_ERROR_WANT_READ: p.events = POLLIN; break;
        case SSL_ERROR_WANT_WRITE: p.events = POLLOUT; break;
        default: ERR_print_errors_fp(stderr); return -1;
        }
        if (poll(&p, 1, 10000) <= 0) return -1;
    }
}

static void set_want_out(int ep, conn_t *c, int want) {
    if (want != c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = want;
    }
}

static void flush(int ep, conn_t *c) {
    int want = 0;
    while (c->pending) {
        size_t off = c->sent_off % SBUF;
        size_t n = SBUF - off;
        if (n > c->pending) n = c->pending;
        ssize_t w;
        if (c->ssl) {
            int r = SSL_write(c->ssl, sbuf + off, (int)n);
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_WRITE) { want = 1; break; }
                if (e == SSL_ERROR_WANT_READ) break; /* retried after the next read */
                errors++;
                c->pending = 0;
                return;
            }
            w = r;
        } else {
            w = write(c->fd, sbuf + off, n);
            if (w < 0) {
                if (errno == EAGAIN) { want = 1; break; }
                errors++;
                c->pending = 0;
                return;
            }
        }
        c->pending -= w;
        c->sent_off += w;
    }
    set_want_out(ep, c, want || c->read_wants_out);
}

/* What has arrived: read(2), or for TLS every record SSL_read can decrypt
 * now (records it has buffered would not make the socket readable again).
 * Like read(2): >0 bytes, 0 at EOF, -1 with errno (EAGAIN: nothing yet). */
static ssize_t recv_some(conn_t *c) {
    if (!c->ssl) return read(c->fd, rbuf, sizeof rbuf);
    ssize_t total = 0;
    c->read_wants_out = 0;
    for (;;) {
        int r = SSL_read(c->ssl, rbuf, sizeof rbuf);
        if (r > 0) { total += r; continue; }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ) break;
        if (e == SSL_ERROR_WANT_WRITE) { c->read_wants_out = 1; break; }
        if (total) return total; /* the EOF or error is seen on the next call */
        if (e == SSL_ERROR_ZERO_RETURN) return 0;
        if (e == SSL_ERROR_SYSCALL && errno == 0) return 0; /* EOF without close_notify */
        errno = EIO;
        return -1;
    }
    if (!total) { errno = EAGAIN; return -1; }
    return total;
}

/* -- handshake mode -------------------------------------------------------------- */

static double *hs_lat;
static size_t hs_nlat, hs_caplat;
static uint64_t handshakes;

static void hs_start(int ep, conn_t *c, const struct sockaddr_in *sa) {
    for (;;) {
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->t0 = now();
        if (connect(c->fd, (const struct sockaddr *)sa, sizeof *sa) == 0 || errno == EINPROGRESS) break;
        errors++;
        close(c->fd);
        usleep(1000);
    }
    c->state = HS_CONNECT;
    c->pending = 0;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void hs_end(int ep, conn_t *c, const struct sockaddr_in *sa) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, 0);
    if (c->ssl) SSL_free(c->ssl);
    c->ssl = NULL;
    close(c->fd);
    hs_start(ep, c, sa);
}

static void hs_interest(int ep, conn_t *c, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void hs_event(int ep, conn_t *c, const struct sockaddr_in *sa, double tn) {
    if (c->state == HS_CONNECT) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) { errors++; hs_end(ep, c, sa); return; }
        c->ssl = SSL_new(tls_ctx);
        SSL_set_fd(c->ssl, c->fd);
        c->state = HS_SHAKE;
    }
    if (c->state == HS_SHAKE) {
        int r = SSL_connect(c->ssl);
        if (r != 1) {
            switch (SSL_get_error(c->ssl, r)) {
            case SSL_ERROR_WANT_READ: hs_interest(ep, c, EPOLLIN); return;
            case SSL_ERROR_WANT_WRITE: hs_interest(ep, c, EPOLLOUT); return;
            default: errors++; ERR_clear_error(); hs_end(ep, c, sa); return;
            }
        }
        c->state = HS_PING;
        r = SSL_write(c->ssl, "x", 1);
        if (r != 1 && SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_WRITE) {
            errors++; ERR_clear_error(); hs_end(ep, c, sa); return;
        }
        c->pending = r == 1; /* pending, in this mode: the byte is out, the echo awaited */
        hs_interest(ep, c, r == 1 ? EPOLLIN : EPOLLOUT);
        return;
    }
    if (c->state == HS_PING) {
        int r = c->pending ? SSL_read(c->ssl, rbuf, sizeof rbuf) : SSL_write(c->ssl, "x", 1);
        if (r <= 0) {
            switch (SSL_get_error(c->ssl, r)) {
            case SSL_ERROR_WANT_READ: hs_interest(ep, c, EPOLLIN); return;
            case SSL_ERROR_WANT_WRITE: hs_interest(ep, c, EPOLLOUT); return;
            default: errors++; ERR_clear_error(); c->pending = 0; hs_end(ep, c, sa); return;
            }
        }
        if (!c->pending) { c->pending = 1; hs_interest(ep, c, EPOLLIN); return; } /* the byte is out */
        c->pending = 0;
        if (measuring) {
            handshakes++;
            if (hs_nlat < hs_caplat) hs_lat[hs_nlat++] = tn - c->t0;
        }
        /* close_notify (best effort), then wait for the server to close:
         * its FIN comes first, so this side leaves no TIME_WAIT behind */
        SSL_shutdown(c->ssl);
        ERR_clear_error();
        c->state = HS_DRAIN;
        hs_interest(ep, c, EPOLLIN);
        return;
    }
    /* HS_DRAIN: discard the session tickets and the server's close_notify */
    for (;;) {
        ssize_t r = read(c->fd, rbuf, sizeof rbuf);
        if (r > 0) continue;
        if (r < 0 && errno == EAGAIN) return;
        hs_end(ep, c, sa);
        return;
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int run_handshakes(const char *host, int port, int nconn, double seconds, double warmup,
                          const char *spids) {
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    inet_pton(AF_INET, host, &sa.sin_addr);
    int spid = atoi(spids);
    long rss0 = rss_kib(spid);
    hs_caplat = 4000000;
    hs_lat = malloc(hs_caplat * sizeof *hs_lat);
    int ep = epoll_create1(0);
    conn_t *cs = calloc(nconn, sizeof *cs);
    /* the listener must be up before the rate is measured */
    int probe = dial(host, port, 0);
    if (probe < 0) { fprintf(stderr, "connect failed\n"); return 1; }
    close(probe);
    for (int i = 0; i < nconn; i++) hs_start(ep, &cs[i], &sa);
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
            handshakes = 0;
        }
        if (measuring && tn >= t_end) {
            cpu_ticks(spids, &ut1, &st1);
            m1 = now();
            break;
        }
        for (int i = 0; i < n; i++) hs_event(ep, evs[i].data.ptr, &sa, tn);
    }
    double el = m1 - m0;
    long hz = sysconf(_SC_CLK_TCK);
    qsort(hs_lat, hs_nlat, sizeof *hs_lat, cmp_double);
    double p50 = hs_nlat ? hs_lat[hs_nlat / 2] : 0, p99 = hs_nlat ? hs_lat[(size_t)(hs_nlat * 0.99)] : 0;
    printf("{\"mode\": \"handshakes\", \"seconds\": %.4f, \"msgs\": %llu, \"handshakes\": %llu, "
           "\"msgs_per_s\": %.1f, \"mb_per_s\": 0, \"p50_us\": %.1f, \"p99_us\": %.1f, \"errors\": %llu, "
           "\"server_user_s\": %.4f, \"server_sys_s\": %.4f, "
           "\"rss_before_kib\": %ld, \"rss_idle_kib\": %ld, \"idle_connections\": 0}\n",
           el, (unsigned long long)handshakes, (unsigned long long)handshakes, handshakes / el, p50 * 1e6,
           p99 * 1e6, (unsigned long long)errors, (double)(ut1 - ut0) / hz, (double)(st1 - st0) / hz,
           rss0, rss_kib(spid));
    return 0;
}

static void queue_msg(conn_t *c, double t) {
    c->stamps[(c->head + c->count) % INFLIGHT] = t;
    c->count++;
    c->pending += SIZE;
}

/* Watch c and send its first INFLIGHT messages. */
static void start_messages(int ep, conn_t *c, double t) {
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    for (int k = 0; k < INFLIGHT; k++) queue_msg(c, t);
    flush(ep, c);
}

/* LOADGEN_CHURN: close c and make a new connection in its place (a plain TCP
 * one), with one connect attempt at a time: a refusal is counted, not hidden. */
static void replace(int ep, conn_t *c, const char *host, int port, double t) {
    close(c->fd);
    c->pending = c->sent_off = c->got = c->recv_off = c->done = 0;
    c->head = c->count = 0;
    c->want_out = 0;
    while ((c->fd = dial_once(host, port)) < 0) {
        refused++;
        errors++;
        usleep(1000);
    }
    fcntl(c->fd, F_SETFL, O_NONBLOCK);
    connections++;
    start_messages(ep, c, t);
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

    const char *tls_env = getenv("LOADGEN_TLS"), *hs_env = getenv("LOADGEN_HANDSHAKES");
    int hs_mode = hs_env && *hs_env && strcmp(hs_env, "0") != 0;
    if (hs_mode || (tls_env && *tls_env && strcmp(tls_env, "0") != 0)) {
        signal(SIGPIPE, SIG_IGN); /* a server that closes first must not kill the load generator */
        tls_ctx = tls_client_ctx();
        if (!tls_ctx) { ERR_print_errors_fp(stderr); return 1; }
    }
    if (hs_mode) return run_handshakes(host, port, nconn, seconds, warmup, spids);
    const char *churn_env = getenv("LOADGEN_CHURN"), *verify_env = getenv("LOADGEN_VERIFY");
    CHURN = churn_env ? strtoull(churn_env, 0, 10) : 0;
    VERIFY = verify_env && *verify_env && strcmp(verify_env, "0") != 0;
    if (CHURN && tls_ctx) { fprintf(stderr, "LOADGEN_CHURN is for plain TCP only\n"); return 2; }
    signal(SIGPIPE, SIG_IGN);

    SBUF = SIZE * INFLIGHT < 65536 ? 65536 : SIZE * INFLIGHT;
    sbuf = malloc(SBUF);
    for (size_t i = 0; i < SBUF; i++) sbuf[i] = (char)(i * 7);
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
        connections++;
        if (tls_ctx && tls_handshake_wait(c) < 0) { fprintf(stderr, "TLS handshake failed\n"); return 1; }
        c->stamps = calloc(INFLIGHT, sizeof(double));
        start_messages(ep, c, t);
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
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP) || (c->read_wants_out && evs[i].events & EPOLLOUT)) {
                ssize_t r = recv_some(c);
                if (r <= 0) {
                    if (r < 0 && errno == EAGAIN) continue;
                    errors++;
                    if (r < 0 && errno == ECONNRESET) resets++;
                    else if (r == 0) eofs++;
                    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, 0);
                    if (CHURN) replace(ep, c, host, port, tn);
                    continue;
                }
                if (VERIFY) {
                    for (ssize_t k = 0; k < r; k++)
                        if (rbuf[k] != sbuf[(c->recv_off + k) % SBUF]) { mismatches++; errors++; break; }
                    c->recv_off += r;
                }
                bytes_in += r;
                c->got += r;
                while (c->got >= SIZE && c->count) {
                    c->got -= SIZE;
                    double sent = c->stamps[c->head];
                    c->head = (c->head + 1) % INFLIGHT;
                    c->count--;
                    c->done++;
                    if (measuring) {
                        msgs++;
                        if (nlat < caplat) lat[nlat++] = tn - sent;
                    }
                    if (!CHURN || c->done + c->count < CHURN) queue_msg(c, tn);
                }
                if (CHURN && c->done >= CHURN && !c->count) {
                    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, 0);
                    replace(ep, c, host, port, tn);
                    continue;
                }
                flush(ep, c);
            }
        }
    }
    double el = m1 - m0;
    long hz = sysconf(_SC_CLK_TCK);
    qsort(lat, nlat, sizeof *lat, cmp_double);
    double p50 = nlat ? lat[nlat / 2] : 0, p99 = nlat ? lat[(size_t)(nlat * 0.99)] : 0;
    printf("{\"seconds\": %.4f, \"msgs\": %llu, \"msgs_per_s\": %.1f, \"mb_per_s\": %.2f, "
           "\"p50_us\": %.1f, \"p99_us\": %.1f, \"errors\": %llu, "
           "\"server_user_s\": %.4f, \"server_sys_s\": %.4f, "
           "\"rss_before_kib\": %ld, \"rss_idle_kib\": %ld, \"idle_connections\": %d, "
           "\"resets\": %llu, \"eofs\": %llu, \"refused\": %llu, \"mismatches\": %llu, \"connections\": %llu}\n",
           el, (unsigned long long)msgs, msgs / el, bytes_in / el / 1e6, p50 * 1e6, p99 * 1e6,
           (unsigned long long)errors, (double)(ut1 - ut0) / hz, (double)(st1 - st0) / hz,
           rss0, rss1, idle_ok, (unsigned long long)resets, (unsigned long long)eofs,
           (unsigned long long)refused, (unsigned long long)mismatches, (unsigned long long)connections);
    return 0;
}

/* The floor: a single-threaded, level-triggered epoll echo server in C.
 *   echo_c PORT
 * Reads into one buffer and writes back at once; only what the kernel did
 * not take is kept per connection until the socket is writable. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct { char *buf; size_t len; } pend_t;
static pend_t *pend;

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 7000;
    struct rlimit rl = {65536, 65536};
    setrlimit(RLIMIT_NOFILE, &rl);
    pend = calloc(65536, sizeof *pend);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(0x7f000001)};
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) || listen(ls, 4096)) { perror("listen"); return 1; }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls}, evs[1024];
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    printf("listening on 127.0.0.1:%d\n", port);
    fflush(stdout);
    static char buf[1 << 20];
    for (;;) {
        int n = epoll_wait(ep, evs, 1024, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                int c;
                while ((c = accept4(ls, 0, 0, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event e = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &e);
                }
                continue;
            }
            pend_t *p = &pend[fd];
            if ((evs[i].events & EPOLLOUT) && p->len) {
                ssize_t w = write(fd, p->buf, p->len);
                if (w > 0) { memmove(p->buf, p->buf + w, p->len - w); p->len -= w; }
                if (!p->len) {
                    struct epoll_event e = {.events = EPOLLIN, .data.fd = fd};
                    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &e);
                }
                continue;
            }
            if (p->len) continue; /* backlogged: wait for EPOLLOUT */
            ssize_t r = read(fd, buf, sizeof buf);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                close(fd); free(p->buf); p->buf = 0; p->len = 0;
                continue;
            }
            ssize_t w = write(fd, buf, r);
            if (w < 0) w = 0;
            if (w < r) {
                p->buf = realloc(p->buf, r - w);
                memcpy(p->buf, buf + w, r - w);
                p->len = r - w;
                struct epoll_event e = {.events = EPOLLOUT, .data.fd = fd}; /* stop reading until drained */
                epoll_ctl(ep, EPOLL_CTL_MOD, fd, &e);
            }
        }
    }
}

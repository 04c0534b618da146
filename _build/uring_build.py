"""cffi builder for danga._ffi_uring (out-of-line API mode, over liburing).

Run by setuptools through ``cffi_modules`` in setup.py, or by hand:
``python _build/uring_build.py``.  Not a package; never imported at run time.

Where it builds: on Linux when liburing's headers are found (Debian:
``apt-get install liburing-dev``; elsewhere ``$LIBURING_PREFIX`` names an
install with ``include/liburing.h``).  liburing is linked statically when its
``liburing.a`` is there, so the module needs no liburing at run time; else
dynamically, with the library's directory in the rpath.  ``available()``
says whether this machine qualifies; setup.py asks it before listing the
builder.

The C helper keeps all per-descriptor state (interest, the armed poll and
its generation, the multishot receive and its owner's generation), the
provided-buffer ring, and the list of operations to arm before the next
wait, so that a pass is one call, ``danga_ur_wait``: arm what fired last
pass or changed, give back the buffers Python copied, submit and wait in
one ``io_uring_enter``, and flatten the completions into (fd, danga mask)
int pairs and (fd, buffer offset, length) triples of received bytes.
danga/pollers/io_uring.py explains the design.
"""
import os
import pathlib
import sys

from cffi import FFI

HERE = pathlib.Path(__file__).parent
MASKS = (HERE / "masks.h").read_text()


def _liburing() -> "tuple[list[str], list[str], list[str], list[str]] | None":
    """(include dirs, library dirs, libraries, extra objects) for liburing, or None."""
    if not sys.platform.startswith("linux"):
        return None
    prefix = os.environ.get("LIBURING_PREFIX", "")
    roots = [pathlib.Path(prefix)] if prefix else [pathlib.Path("/usr"), pathlib.Path("/usr/local")]
    for root in roots:
        if not (root / "include" / "liburing.h").exists():
            continue
        libdirs = [d for d in (root / "lib", root / "lib64", *sorted((root / "lib").glob("*-linux-gnu*")))
                   if d.is_dir()]
        static = next((d / "liburing.a" for d in libdirs if (d / "liburing.a").exists()), None)
        if static is not None:
            return [str(root / "include")], [], [], [str(static)]
        shared = next((d for d in libdirs if any(d.glob("liburing.so*"))), None)
        if shared is not None:
            return [str(root / "include")], [str(shared)], ["uring"], []
    if prefix:
        raise SystemExit(f"danga: LIBURING_PREFIX={prefix} has no include/liburing.h with "
                         "lib/liburing.a or lib/liburing.so (install liburing there first)")
    return None


def available() -> bool:
    """Whether the io_uring module can be built here."""
    return _liburing() is not None


ffibuilder = FFI()
ffibuilder.cdef(
    """
    #define DANGA_READ ...
    #define DANGA_WRITE ...
    #define DANGA_ERR ...
    #define DANGA_HUP ...

    struct danga_ur;
    struct danga_ur *danga_ur_new(unsigned entries, int maxevents, int *out, int *rec, int *nrec,
                                  int *err, unsigned *flags);
    int danga_ur_register(struct danga_ur *u, int fd, int mask, int recv);
    int danga_ur_modify(struct danga_ur *u, int fd, int mask);
    int danga_ur_unregister(struct danga_ur *u, int fd);
    int danga_ur_hold(struct danga_ur *u, int fd, int hold);
    int danga_ur_ready(struct danga_ur *u, int fd);
    int danga_ur_quiet(struct danga_ur *u, int fd);
    int danga_ur_wait(struct danga_ur *u, int timeout_ms);
    int danga_ur_fd(struct danga_ur *u);
    char *danga_ur_pool(struct danga_ur *u, int *size);
    void danga_ur_free(struct danga_ur *u);
    """
)

_found = _liburing()
if _found is not None:
    _inc, _libdirs, _libs, _objects = _found
    ffibuilder.set_source(
        "danga._ffi_uring",
        "#include <liburing.h>\n#include <poll.h>\n#include <fcntl.h>\n#include <errno.h>\n"
        "#include <stdlib.h>\n#include <string.h>\n#include <unistd.h>\n#include <sys/mman.h>\n"
        + MASKS
        + r"""
/* The provided buffers: one per completed receive, so a buffer is as
 * large as one read() may return in one piece; only the pages a receive
 * writes are ever touched (64 B messages use one page of each). */
#define DANGA_UR_NBUF 128
#define DANGA_UR_BUFSZ 65536

/* The user data of a removal's own completion: never a descriptor's. */
#define DANGA_UR_NOBODY 0xffffffffffffffffULL
/* User data: fd in bits 0-31, the kind in bit 32 (0: a poll, 1: a receive),
 * a generation above: the poll's own (each arming), or for a receive its
 * owner's (each registration: a receive being cancelled still delivers to
 * the owner that asked for it, never to the next one). */
#define DANGA_UR_RECV (1ULL << 32)
#define DANGA_UR_UD(gen, kind, fd) (((unsigned long long)(gen) << 33) | (kind) | (unsigned)(fd))

/* Receive states. */
enum { R_IDLE, R_ARMED, R_CANCELLING, R_DONE /* EOF or error seen: never re-armed */ };

/* One descriptor: its interest (-1: not registered), the mask of its armed
 * poll (-1: none armed) with that poll's generation, whether it waits on
 * the to-arm list; for a descriptor whose receives complete in the ring:
 * the receive's state, the owner generation, whether Python holds its
 * receives back (its buffer is full); and the pass its event was written in. */
struct danga_fdst {
    int mask, armed, queued;
    unsigned gen, ogen, evpass;
    int evidx;
    unsigned char recv, rstate, hold;
};

struct danga_ur {
    struct io_uring ring;
    struct danga_fdst *st;
    int nst;
    int *todo;          /* descriptors to arm before the next wait */
    int ntodo, captodo;
    int *ready;         /* descriptors Python says still have data: reported first */
    int nready, capready;
    int *out;           /* (fd, mask) pairs for Python */
    int maxevents;
    int *rec;           /* (fd, offset into the pool, length) triples for Python */
    int *nrec;
    unsigned gen, ogen, pass;
    /* the provided-buffer ring (group 0) and its buffers */
    struct io_uring_buf_ring *br;
    char *pool;
    int nbuf, bufsz;
    unsigned short *ret;/* buffers to give back at the next wait (Python copied them) */
    int nret;
};

static unsigned danga_ur_pollmask(int mask)
{
    return ((mask & DANGA_READ) ? POLLIN : 0) | ((mask & DANGA_WRITE) ? POLLOUT : 0);
}

/* Whether fd's receive should be armed. */
static int danga_ur_want_recv(const struct danga_fdst *st)
{
    return st->recv && st->mask >= 0 && (st->mask & DANGA_READ) && !st->hold && st->rstate != R_DONE;
}

/* The poll fd needs (a danga mask), or -1 for none.  A descriptor whose
 * receives complete in the ring polls only for WRITE; while it is reading,
 * its receive reports EOF and errors, and while Python holds its receives
 * back (a full buffer), nothing is reported until it reads again. */
static int danga_ur_want_poll(const struct danga_fdst *st)
{
    if (st->mask < 0) return -1;
    if (!st->recv) return st->mask;
    if (st->mask & DANGA_WRITE) return DANGA_WRITE;
    if ((st->mask & DANGA_READ) && (st->hold || st->rstate != R_DONE)) return -1;
    return 0;  /* ERR and HUP only */
}

static int danga_ur_bufring(struct danga_ur *u)
{
    int nbuf = DANGA_UR_NBUF, bufsz = DANGA_UR_BUFSZ;
    size_t rsz = (size_t)nbuf * sizeof(struct io_uring_buf);
    void *br = mmap(NULL, rsz, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (br == MAP_FAILED) return -ENOMEM;
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof reg);
    reg.ring_addr = (unsigned long)br;
    reg.ring_entries = nbuf;
    reg.bgid = 0;
    int r = io_uring_register_buf_ring(&u->ring, &reg, 0);
    if (r < 0) {
        munmap(br, rsz);
        return r;
    }
    char *pool = mmap(NULL, (size_t)nbuf * bufsz, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    unsigned short *ret = calloc(nbuf, sizeof *ret);
    if (pool == MAP_FAILED || ret == NULL) {
        io_uring_unregister_buf_ring(&u->ring, 0);
        munmap(br, rsz);
        if (pool != MAP_FAILED) munmap(pool, (size_t)nbuf * bufsz);
        free(ret);
        return -ENOMEM;
    }
    u->br = br; u->pool = pool; u->nbuf = nbuf; u->bufsz = bufsz; u->ret = ret;
    io_uring_buf_ring_init(u->br);
    for (int i = 0; i < nbuf; i++)
        io_uring_buf_ring_add(u->br, pool + (size_t)i * bufsz, bufsz, i, nbuf - 1, i);
    io_uring_buf_ring_advance(u->br, nbuf);
    return 0;
}

struct danga_ur *danga_ur_new(unsigned entries, int maxevents, int *out, int *rec, int *nrec,
                              int *err, unsigned *flags)
{
    /* Best first: one issuer, task work run only when we wait (6.1+), a
     * completion queue four times the submission queue; then without the
     * task-work flags (5.5+). */
    static const unsigned tries[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE,
        IORING_SETUP_CQSIZE,
    };
    struct danga_ur *u = calloc(1, sizeof *u);
    if (u == NULL) { *err = ENOMEM; return NULL; }
    int r = -EINVAL;
    for (unsigned i = 0; i < sizeof tries / sizeof tries[0]; i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        p.flags = tries[i];
        p.cq_entries = 4 * entries;
        r = io_uring_queue_init_params(entries, &u->ring, &p);
        if (r == 0) {
            if (!(p.features & IORING_FEAT_NODROP) || !(p.features & IORING_FEAT_EXT_ARG)) {
                io_uring_queue_exit(&u->ring);
                r = -EOPNOTSUPP;  /* a kernel older than 5.11 */
                break;
            }
            *flags = p.flags;
            break;
        }
        if (r != -EINVAL) break;  /* refused (EPERM, ENOSYS, ENOMEM): flags won't help */
    }
    if (r < 0) { free(u); *err = -r; return NULL; }
    /* Without a buffer ring (before 5.19) receives stay readiness-based. */
    if (danga_ur_bufring(u) < 0) u->br = NULL;
    u->out = out;
    u->maxevents = maxevents;
    u->rec = rec;
    u->nrec = nrec;
    return u;
}

int danga_ur_fd(struct danga_ur *u) { return u->ring.ring_fd; }

/* The buffer pool that the offsets of the receive triples point into
 * (NULL when the kernel has no provided-buffer rings: no completion
 * receives then). */
char *danga_ur_pool(struct danga_ur *u, int *size)
{
    *size = u->br ? u->nbuf * u->bufsz : 0;
    return u->br ? u->pool : NULL;
}

void danga_ur_free(struct danga_ur *u)
{
    io_uring_queue_exit(&u->ring);  /* cancels everything in flight first */
    if (u->br) {
        munmap(u->br, (size_t)u->nbuf * sizeof(struct io_uring_buf));
        munmap(u->pool, (size_t)u->nbuf * u->bufsz);
    }
    free(u->ret);
    free(u->st);
    free(u->todo);
    free(u->ready);
    free(u);
}

static int danga_ur_grow(struct danga_ur *u, int fd)
{
    if (fd < u->nst) return 0;
    int n = u->nst ? u->nst : 64;
    while (n <= fd) n *= 2;
    struct danga_fdst *st = realloc(u->st, n * sizeof *st);
    if (st == NULL) { errno = ENOMEM; return -1; }
    memset(st + u->nst, 0, (n - u->nst) * sizeof *st);
    for (int i = u->nst; i < n; i++) { st[i].mask = -1; st[i].armed = -1; }
    u->st = st;
    u->nst = n;
    return 0;
}

/* A free submission entry; a full queue is submitted first. */
static struct io_uring_sqe *danga_ur_sqe(struct danga_ur *u)
{
    struct io_uring_sqe *s = io_uring_get_sqe(&u->ring);
    if (s == NULL) {
        io_uring_submit(&u->ring);
        s = io_uring_get_sqe(&u->ring);
    }
    return s;
}

static int danga_ur_push(int **list, int *n, int *cap, int v)
{
    if (*n == *cap) {
        int c = *cap ? 2 * *cap : 256;
        int *l = realloc(*list, c * sizeof **list);
        if (l == NULL) { errno = ENOMEM; return -1; }
        *list = l;
        *cap = c;
    }
    (*list)[(*n)++] = v;
    return 0;
}

static int danga_ur_queue(struct danga_ur *u, int fd)
{
    if (u->st[fd].queued) return 0;
    if (danga_ur_push(&u->todo, &u->ntodo, &u->captodo, fd) < 0) return -1;
    u->st[fd].queued = 1;
    return 0;
}

/* Cancel fd's armed poll, if any; its completion (-ECANCELED, or the event
 * if it raced) carries the old generation and is ignored. */
static int danga_ur_disarm(struct danga_ur *u, int fd)
{
    struct danga_fdst *st = &u->st[fd];
    if (st->armed < 0) return 0;
    struct io_uring_sqe *s = danga_ur_sqe(u);
    if (s == NULL) { errno = EBUSY; return -1; }
    io_uring_prep_poll_remove(s, DANGA_UR_UD(st->gen, 0, fd));
    io_uring_sqe_set_data64(s, DANGA_UR_NOBODY);
    st->armed = -1;
    return 0;
}

/* Cancel fd's armed receive.  Data it still completes with goes to the same
 * owner; its last completion (no IORING_CQE_F_MORE) ends the cancelling. */
static int danga_ur_stop_recv(struct danga_ur *u, int fd)
{
    struct danga_fdst *st = &u->st[fd];
    if (st->rstate != R_ARMED) return 0;
    struct io_uring_sqe *s = danga_ur_sqe(u);
    if (s == NULL) { errno = EBUSY; return -1; }
    io_uring_prep_cancel64(s, DANGA_UR_UD(st->ogen, DANGA_UR_RECV, fd), 0);
    io_uring_sqe_set_data64(s, DANGA_UR_NOBODY);
    st->rstate = R_CANCELLING;
    return 0;
}

/* Bring fd's armed operations in line with its state. */
static int danga_ur_update(struct danga_ur *u, int fd)
{
    struct danga_fdst *st = &u->st[fd];
    int want = danga_ur_want_poll(st);
    if (st->armed >= 0 && st->armed != want && danga_ur_disarm(u, fd) < 0) return -1;
    if (st->rstate == R_ARMED && !danga_ur_want_recv(st) && danga_ur_stop_recv(u, fd) < 0) return -1;
    return danga_ur_queue(u, fd);
}

int danga_ur_register(struct danga_ur *u, int fd, int mask, int recv)
{
    if (fd < 0 || fcntl(fd, F_GETFD) < 0) { errno = EBADF; return -1; }
    if (danga_ur_grow(u, fd) < 0) return -1;
    struct danga_fdst *st = &u->st[fd];
    if (st->mask >= 0) { errno = EEXIST; return -1; }
    st->mask = mask;
    st->recv = recv && u->br != NULL;
    st->rstate = R_IDLE;
    st->hold = 0;
    st->ogen = ++u->ogen;
    return danga_ur_queue(u, fd);
}

int danga_ur_modify(struct danga_ur *u, int fd, int mask)
{
    if (fd < 0 || fd >= u->nst || u->st[fd].mask < 0) { errno = ENOENT; return -1; }
    if (u->st[fd].mask == mask) return 0;
    u->st[fd].mask = mask;
    return danga_ur_update(u, fd);
}

/* Python's buffer for fd is full (hold=1): stop receiving until it has
 * room again (hold=0). */
int danga_ur_hold(struct danga_ur *u, int fd, int hold)
{
    if (fd < 0 || fd >= u->nst || u->st[fd].mask < 0) { errno = ENOENT; return -1; }
    if (u->st[fd].hold == hold) return 0;
    u->st[fd].hold = hold;
    return danga_ur_update(u, fd);
}

/* fd still has received data that was not read: report READ at the next
 * wait, which then does not block. */
int danga_ur_ready(struct danga_ur *u, int fd)
{
    if (fd < 0 || fd >= u->nst || u->st[fd].mask < 0) return 0;
    return danga_ur_push(&u->ready, &u->nready, &u->capready, fd);
}

/* Whether no receive of fd's is armed or ending: then nothing of the
 * socket's data is in the ring, and reading the socket directly keeps the
 * bytes in order. */
int danga_ur_quiet(struct danga_ur *u, int fd)
{
    if (fd < 0 || fd >= u->nst || u->st[fd].mask < 0) return 1;
    return u->st[fd].rstate == R_IDLE || u->st[fd].rstate == R_DONE;
}

/* Forget fd.  The cancellations are submitted (and their task work run)
 * now, not at the next wait: an armed poll or receive holds a reference to
 * the file, so until the removal is done a socket closed after this call
 * would not really close (no FIN for its peer). */
int danga_ur_unregister(struct danga_ur *u, int fd)
{
    if (fd < 0 || fd >= u->nst || u->st[fd].mask < 0) return 0;
    struct danga_fdst *st = &u->st[fd];
    st->mask = -1;
    int busy = st->armed >= 0 || st->rstate == R_ARMED;
    if (danga_ur_disarm(u, fd) < 0 || danga_ur_stop_recv(u, fd) < 0) return -1;
    st->rstate = R_IDLE;
    st->recv = 0;
    if (!busy) return 0;
    int r = io_uring_submit_and_get_events(&u->ring);
    if (r < 0) { errno = -r; return -1; }
    return 0;
}

/* Add mask m to fd's event of this pass (one pair per descriptor). */
static int danga_ur_event(struct danga_ur *u, int fd, int n, int m)
{
    struct danga_fdst *st = &u->st[fd];
    if (st->evpass == u->pass) {
        u->out[2 * st->evidx + 1] |= m;
        return n;
    }
    st->evpass = u->pass;
    st->evidx = n;
    u->out[2 * n] = fd;
    u->out[2 * n + 1] = m;
    return n + 1;
}

/* Arm what is on the to-arm list, give back the buffers Python copied,
 * submit, wait up to timeout_ms (-1: forever, 0: not at all) for one
 * completion, and write out the (fd, danga mask) pairs of the current
 * completions, and the (fd, pool offset, length) triples of the data that
 * receives delivered (offset -1: EOF; -2: an error, whose errno is the
 * length).  Returns the number of pairs, or -1 with errno (EINTR: call
 * again). */
int danga_ur_wait(struct danga_ur *u, int timeout_ms)
{
    for (int i = 0; i < u->ntodo; i++) {
        int fd = u->todo[i];
        struct danga_fdst *st = &u->st[fd];
        st->queued = 0;
        int want = danga_ur_want_poll(st);
        int arm_poll = want >= 0 && st->armed < 0;
        int arm_recv = st->rstate == R_IDLE && danga_ur_want_recv(st);
        if (!arm_poll && !arm_recv) continue;
        if (io_uring_sq_space_left(&u->ring) < 2) io_uring_submit(&u->ring);
        if (io_uring_sq_space_left(&u->ring) < 2) {
            /* keep the rest for the next call */
            memmove(u->todo, u->todo + i, (u->ntodo - i) * sizeof *u->todo);
            u->ntodo -= i;
            for (int j = 0; j < u->ntodo; j++) u->st[u->todo[j]].queued = 1;
            errno = EBUSY;
            return -1;
        }
        struct io_uring_sqe *s;
        if (arm_poll && (s = io_uring_get_sqe(&u->ring)) != NULL) {
            io_uring_prep_poll_add(s, fd, danga_ur_pollmask(want));
            st->gen = ++u->gen;
            st->armed = want;
            io_uring_sqe_set_data64(s, DANGA_UR_UD(st->gen, 0, fd));
        }
        if (arm_recv && (s = io_uring_get_sqe(&u->ring)) != NULL) {
            io_uring_prep_recv_multishot(s, fd, NULL, 0, 0);
            s->flags |= IOSQE_BUFFER_SELECT;
            s->buf_group = 0;
            st->rstate = R_ARMED;
            io_uring_sqe_set_data64(s, DANGA_UR_UD(st->ogen, DANGA_UR_RECV, fd));
        }
    }
    u->ntodo = 0;
    if (u->nret) {
        int mask = u->nbuf - 1;
        for (int i = 0; i < u->nret; i++) {
            int b = u->ret[i];
            io_uring_buf_ring_add(u->br, u->pool + (size_t)b * u->bufsz, u->bufsz, b, mask, i);
        }
        io_uring_buf_ring_advance(u->br, u->nret);
        u->nret = 0;
    }
    u->pass++;
    int n = 0, nrec = 0;
    *u->nrec = 0;
    for (int i = 0; i < u->nready && n < u->maxevents; i++)
        if (u->st[u->ready[i]].mask >= 0) n = danga_ur_event(u, u->ready[i], n, DANGA_READ);
    u->nready = 0;

    struct io_uring_cqe *cqe = NULL;
    int r;
    if (n || io_uring_cq_ready(&u->ring) || timeout_ms == 0) {
        r = io_uring_submit_and_get_events(&u->ring);
    } else if (timeout_ms < 0) {
        r = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, NULL, NULL);
    } else {
        struct __kernel_timespec ts;
        ts.tv_sec = timeout_ms / 1000;
        ts.tv_nsec = (long long)(timeout_ms % 1000) * 1000000;
        r = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
    }
    if (r < 0 && r != -ETIME && !io_uring_cq_ready(&u->ring) && !n) {
        errno = -r;
        return -1;
    }

    unsigned head, seen = 0;
    io_uring_for_each_cqe(&u->ring, head, cqe) {
        /* the rest waits for the next call */
        if (n == u->maxevents || nrec == u->maxevents) break;
        seen++;
        unsigned long long d = cqe->user_data;
        if (d == DANGA_UR_NOBODY) continue;
        int fd = (int)(unsigned)d;
        unsigned gen = (unsigned)(d >> 33);
        int res = cqe->res;
        if (d & DANGA_UR_RECV) {
            int bid = -1;
            if (cqe->flags & IORING_CQE_F_BUFFER) {
                /* given back at the next wait, once Python has copied it */
                bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
                u->ret[u->nret++] = bid;
            }
            int off = bid >= 0 ? bid * u->bufsz : 0;
            if (fd < 0 || fd >= u->nst) continue;
            struct danga_fdst *st = &u->st[fd];
            if (st->mask < 0 || !st->recv || (st->ogen & 0x7fffffffU) != gen) continue;  /* an old owner's */
            if (!(cqe->flags & IORING_CQE_F_MORE)) {
                /* the receive ended: armed again before the next wait if still wanted */
                st->rstate = R_IDLE;
                if (danga_ur_queue(u, fd) < 0) continue;
            }
            int m;
            if (res > 0) {
                m = DANGA_READ;
                u->rec[3 * nrec] = fd;
                u->rec[3 * nrec + 1] = off;
                u->rec[3 * nrec + 2] = res;
            } else if (res == 0 || (res != -ENOBUFS && res != -ECANCELED)) {
                /* EOF (-1), or an error (-2, its errno): the end of this stream */
                st->rstate = R_DONE;
                m = res == 0 ? DANGA_READ : DANGA_READ | DANGA_ERR | DANGA_HUP;
                u->rec[3 * nrec] = fd;
                u->rec[3 * nrec + 1] = res == 0 ? -1 : -2;
                u->rec[3 * nrec + 2] = -res;
                danga_ur_update(u, fd);  /* a poll for ERR/HUP while not reading */
            } else {
                continue;  /* out of buffers (armed again), or cancelled */
            }
            nrec++;
            n = danga_ur_event(u, fd, n, m);
            continue;
        }
        if (fd < 0 || fd >= u->nst) continue;
        struct danga_fdst *st = &u->st[fd];
        if (st->armed < 0 || (st->gen & 0x7fffffffU) != gen) continue;  /* a poll we cancelled */
        st->armed = -1;
        if (st->mask < 0) continue;
        if (danga_ur_queue(u, fd) < 0) continue;  /* re-armed before the next wait: level-triggered */
        int m;
        if (res < 0)
            m = DANGA_ERR;  /* the poll could not be armed: EBADF for a number closed behind our back */
        else
            m = ((res & POLLIN) ? DANGA_READ : 0) | ((res & POLLOUT) ? DANGA_WRITE : 0)
              | ((res & POLLERR) ? DANGA_ERR : 0) | ((res & POLLHUP) ? DANGA_HUP : 0);
        if (m == 0) continue;
        n = danga_ur_event(u, fd, n, m);
    }
    io_uring_cq_advance(&u->ring, seen);
    *u->nrec = nrec;
    return n;
}
""",
        include_dirs=_inc,
        library_dirs=_libdirs,
        libraries=_libs,
        extra_objects=_objects,
        runtime_library_dirs=_libdirs,
    )

if __name__ == "__main__":
    if _found is None:
        raise SystemExit("danga: liburing not found (Debian: apt-get install liburing-dev, or set LIBURING_PREFIX)")
    ffibuilder.compile(tmpdir=str(HERE.parent), verbose=True)

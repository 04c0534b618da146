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
its generation) and the list of polls to arm before the next wait, so that
a pass is one call, ``danga_ur_wait``: arm what fired last pass or changed,
submit and wait in one ``io_uring_enter``, and flatten the completions into
(fd, danga mask) int pairs.  danga/pollers/io_uring.py explains the design.
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
    struct danga_ur *danga_ur_new(unsigned entries, int maxevents, int *out, int *err, unsigned *flags);
    int danga_ur_register(struct danga_ur *u, int fd, int mask);
    int danga_ur_modify(struct danga_ur *u, int fd, int mask);
    int danga_ur_unregister(struct danga_ur *u, int fd);
    int danga_ur_wait(struct danga_ur *u, int timeout_ms);
    int danga_ur_fd(struct danga_ur *u);
    void danga_ur_free(struct danga_ur *u);
    """
)

_found = _liburing()
if _found is not None:
    _inc, _libdirs, _libs, _objects = _found
    ffibuilder.set_source(
        "danga._ffi_uring",
        "#include <liburing.h>\n#include <poll.h>\n#include <fcntl.h>\n#include <errno.h>\n"
        "#include <stdlib.h>\n#include <string.h>\n#include <unistd.h>\n"
        + MASKS
        + r"""
/* The user data of a removal's own completion: never a descriptor's. */
#define DANGA_UR_NOBODY 0xffffffffffffffffULL

/* One descriptor: its interest (-1: not registered), the mask of its armed
 * poll (-1: none armed) with that poll's generation, and whether it waits on
 * the to-arm list. */
struct danga_fdst { int mask; int armed; unsigned gen; int queued; };

struct danga_ur {
    struct io_uring ring;
    struct danga_fdst *st;
    int nst;
    int *todo;          /* descriptors to arm before the next wait */
    int ntodo, captodo;
    int *out;           /* (fd, mask) pairs for Python */
    int maxevents;
    unsigned gen;       /* the last generation handed out */
};

static unsigned danga_ur_pollmask(int mask)
{
    return ((mask & DANGA_READ) ? POLLIN : 0) | ((mask & DANGA_WRITE) ? POLLOUT : 0);
}

struct danga_ur *danga_ur_new(unsigned entries, int maxevents, int *out, int *err, unsigned *flags)
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
    u->out = out;
    u->maxevents = maxevents;
    return u;
}

int danga_ur_fd(struct danga_ur *u) { return u->ring.ring_fd; }

void danga_ur_free(struct danga_ur *u)
{
    io_uring_queue_exit(&u->ring);
    free(u->st);
    free(u->todo);
    free(u);
}

static int danga_ur_grow(struct danga_ur *u, int fd)
{
    if (fd < u->nst) return 0;
    int n = u->nst ? u->nst : 64;
    while (n <= fd) n *= 2;
    struct danga_fdst *st = realloc(u->st, n * sizeof *st);
    if (st == NULL) { errno = ENOMEM; return -1; }
    for (int i = u->nst; i < n; i++) { st[i].mask = -1; st[i].armed = -1; st[i].gen = 0; st[i].queued = 0; }
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

static int danga_ur_queue(struct danga_ur *u, int fd)
{
    if (u->st[fd].queued) return 0;
    if (u->ntodo == u->captodo) {
        int n = u->captodo ? 2 * u->captodo : 256;
        int *todo = realloc(u->todo, n * sizeof *todo);
        if (todo == NULL) { errno = ENOMEM; return -1; }
        u->todo = todo;
        u->captodo = n;
    }
    u->todo[u->ntodo++] = fd;
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
    io_uring_prep_poll_remove(s, ((unsigned long long)st->gen << 32) | (unsigned)fd);
    io_uring_sqe_set_data64(s, DANGA_UR_NOBODY);
    st->armed = -1;
    return 0;
}

int danga_ur_register(struct danga_ur *u, int fd, int mask)
{
    if (fd < 0 || fcntl(fd, F_GETFD) < 0) { errno = EBADF; return -1; }
    if (danga_ur_grow(u, fd) < 0) return -1;
    if (u->st[fd].mask >= 0) { errno = EEXIST; return -1; }
    u->st[fd].mask = mask;
    return danga_ur_queue(u, fd);
}

int danga_ur_modify(struct danga_ur *u, int fd, int mask)
{
    if (fd < 0 || fd >= u->nst || u->st[fd].mask < 0) { errno = ENOENT; return -1; }
    struct danga_fdst *st = &u->st[fd];
    if (st->mask == mask) return 0;
    st->mask = mask;
    if (st->armed == mask) return 0;
    if (danga_ur_disarm(u, fd) < 0) return -1;
    return danga_ur_queue(u, fd);
}

/* Forget fd.  The removal is submitted (and its task work run) now, not at
 * the next wait: an armed poll holds a reference to the file, so until the
 * removal is done a socket closed after this call would not really close
 * (no FIN for its peer). */
int danga_ur_unregister(struct danga_ur *u, int fd)
{
    if (fd < 0 || fd >= u->nst || u->st[fd].mask < 0) return 0;
    u->st[fd].mask = -1;
    if (u->st[fd].armed < 0) return 0;
    if (danga_ur_disarm(u, fd) < 0) return -1;
    int r = io_uring_submit_and_get_events(&u->ring);
    if (r < 0) { errno = -r; return -1; }
    return 0;
}

/* Arm what is on the to-arm list, submit, wait up to timeout_ms (-1:
 * forever, 0: not at all) for one completion, and write the (fd, danga
 * mask) pairs of the current completions to out.  Returns their number, or
 * -1 with errno (EINTR: call again). */
int danga_ur_wait(struct danga_ur *u, int timeout_ms)
{
    for (int i = 0; i < u->ntodo; i++) {
        int fd = u->todo[i];
        struct danga_fdst *st = &u->st[fd];
        st->queued = 0;
        if (st->mask < 0 || st->armed >= 0) continue;
        struct io_uring_sqe *s = danga_ur_sqe(u);
        if (s == NULL) {
            /* keep the rest for the next call */
            memmove(u->todo, u->todo + i, (u->ntodo - i) * sizeof *u->todo);
            u->ntodo -= i;
            for (int j = 0; j < u->ntodo; j++) u->st[u->todo[j]].queued = 1;
            errno = EBUSY;
            return -1;
        }
        io_uring_prep_poll_add(s, fd, danga_ur_pollmask(st->mask));
        st->gen = ++u->gen;
        st->armed = st->mask;
        io_uring_sqe_set_data64(s, ((unsigned long long)st->gen << 32) | (unsigned)fd);
    }
    u->ntodo = 0;

    struct io_uring_cqe *cqe = NULL;
    int r;
    if (io_uring_cq_ready(&u->ring) || timeout_ms == 0) {
        r = io_uring_submit_and_get_events(&u->ring);
    } else if (timeout_ms < 0) {
        r = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, NULL, NULL);
    } else {
        struct __kernel_timespec ts;
        ts.tv_sec = timeout_ms / 1000;
        ts.tv_nsec = (long long)(timeout_ms % 1000) * 1000000;
        r = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
    }
    if (r < 0 && r != -ETIME && !io_uring_cq_ready(&u->ring)) {
        errno = -r;
        return -1;
    }

    int n = 0;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&u->ring, head, cqe) {
        if (n == u->maxevents) break;  /* the rest waits for the next call */
        seen++;
        unsigned long long d = cqe->user_data;
        if (d == DANGA_UR_NOBODY) continue;
        int fd = (int)(unsigned)d;
        if (fd < 0 || fd >= u->nst) continue;
        struct danga_fdst *st = &u->st[fd];
        if (st->armed < 0 || st->gen != (unsigned)(d >> 32)) continue;  /* a poll we cancelled */
        st->armed = -1;
        if (st->mask < 0) continue;
        if (danga_ur_queue(u, fd) < 0) continue;  /* re-armed before the next wait: level-triggered */
        int res = cqe->res, m;
        if (res < 0)
            m = DANGA_ERR;  /* the poll could not be armed: EBADF for a number closed behind our back */
        else
            m = ((res & POLLIN) ? DANGA_READ : 0) | ((res & POLLOUT) ? DANGA_WRITE : 0)
              | ((res & POLLERR) ? DANGA_ERR : 0) | ((res & POLLHUP) ? DANGA_HUP : 0);
        if (m == 0) continue;
        u->out[2 * n] = fd;
        u->out[2 * n + 1] = m;
        n++;
    }
    io_uring_cq_advance(&u->ring, seen);
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

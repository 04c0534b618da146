"""cffi builder for danga._ffi_kqueue (out-of-line API mode).

Run by setuptools through ``cffi_modules`` in setup.py, or by hand:
``python _build/kqueue_build.py``.  Not a package; never imported at run time.

Where it builds: natively on the BSDs and macOS, where ``<sys/event.h>`` is
the kernel's; on Linux only when ``$LIBKQUEUE_PREFIX`` names an install of
libkqueue (its headers in ``include/kqueue`` or ``include``, its library in
``lib`` or ``lib64``).  The library's directory goes into the module's rpath,
so nothing has to be put on ``LD_LIBRARY_PATH``.  ``available()`` below says
whether this machine qualifies; setup.py asks it before listing the builder.

The compiler fills in every constant (``#define X ...``); ``struct kevent``
is opaque to Python, which never touches a kevent.  The C helpers keep the
whole changelist in C memory and do all of the translation:

* ``danga_kq_register`` / ``danga_kq_unregister`` append their changes and
  apply everything pending at once (no wait; an errno per change: a receipt
  each, or under libkqueue one change per call), so that a refused
  registration is an errno for ``register`` to raise;
* ``danga_kq_modify`` only appends: the changes reach the kernel in the same
  ``kevent()`` call as the next wait (under libkqueue, in calls of their own
  just before it: ``danga_kq_flush``);
* under libkqueue (``DANGA_KQ_EMULATED``) an ``EV_DELETE`` that fails while
  its fd is open puts the fd on the ``lost`` list: libkqueue has lost track of that number in this kqueue,
  and ``danga_kq_rebuild`` moves the registrations to a new one;
* ``danga_kq_wait`` applies the pending changes, waits, and flattens the
  batch into (fd, danga mask) int pairs, one pair per fd: the EVFILT_READ and
  EVFILT_WRITE events of one fd are merged, ``EV_EOF`` becomes HUP/ERR the
  way epoll reports them, and ``EV_ERROR`` entries (``flags & EV_ERROR``,
  never equality: libkqueue keeps the change's own flags) become ERR on the
  fd they name.  danga/pollers/kqueue.py explains the choices.
"""
import os
import pathlib
import sys

from cffi import FFI

HERE = pathlib.Path(__file__).parent
MASKS = (HERE / "masks.h").read_text()

NATIVE = ("darwin", "freebsd", "openbsd", "netbsd", "dragonfly")


def _libkqueue() -> "tuple[str, str] | None":
    """(include dir, lib dir) of the libkqueue install in $LIBKQUEUE_PREFIX."""
    prefix = os.environ.get("LIBKQUEUE_PREFIX", "")
    if not prefix:
        return None
    root = pathlib.Path(prefix)
    inc = next((d for d in (root / "include" / "kqueue", root / "include") if (d / "sys" / "event.h").exists()), None)
    lib = next((d for d in (root / "lib", root / "lib64")
                if any(d.glob("libkqueue.so*")) or (d / "libkqueue.dylib").exists()), None)
    if inc is None or lib is None:
        raise SystemExit(f"danga: LIBKQUEUE_PREFIX={prefix} has no include/kqueue/sys/event.h "
                         "or lib/libkqueue.so (install libkqueue there first)")
    return str(inc), str(lib)


def available() -> bool:
    """True where this builder can compile: a native kqueue, or libkqueue."""
    return sys.platform.startswith(NATIVE) or (sys.platform.startswith("linux") and _libkqueue() is not None)


CDEF = """
    #define EVFILT_READ ...
    #define EVFILT_WRITE ...
    #define EV_ADD ...
    #define EV_DELETE ...
    #define EV_ENABLE ...
    #define EV_DISABLE ...
    #define EV_CLEAR ...
    #define EV_RECEIPT ...
    #define EV_EOF ...
    #define EV_ERROR ...
    #define DANGA_READ ...
    #define DANGA_WRITE ...
    #define DANGA_ERR ...
    #define DANGA_HUP ...
    #define DANGA_KQ_WKNOTE ...
    #define DANGA_KQ_EMULATED ...

    struct kevent { ...; };

    struct danga_kq {
        int kq;
        int nchanges; int maxchanges; struct kevent *changes;
        int maxevents; struct kevent *evs;
        int nerrs; int maxerrs; int *errs;
        int *out;
        unsigned int gen; int hsize; unsigned int *hgen; int *hidx;
        int nsockerrs; int *sockerrs;
        int nlost; int maxlost; int *lost;
        ...;
    };
    int danga_kq_open(struct danga_kq *k);
    void danga_kq_close(struct danga_kq *k);
    int danga_kq_register(struct danga_kq *k, int fd, int mask);
    int danga_kq_modify(struct danga_kq *k, int fd, int state, int mask);
    int danga_kq_unregister(struct danga_kq *k, int fd, int state);
    int danga_kq_wait(struct danga_kq *k, int timeout_ms);
    void danga_kq_flush(struct danga_kq *k);
    int danga_kq_rebuild(struct danga_kq *k, int n, int *fds, int *states, int *failed);

"""

SOURCE = r"""
#include <sys/types.h>
#include <sys/stat.h>
#include <sys/event.h>
#include <sys/time.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
""" + MASKS + r"""
/* The state of one fd, as the Python side keeps it: the interest bits, and
 * whether an EVFILT_WRITE knote exists (made on the first write interest,
 * then only enabled and disabled). */
#define DANGA_KQ_WKNOTE 0x100

/* Built against libkqueue (an emulation over epoll, see kqueue.py's essay),
 * not a kernel's kqueue. */
#ifdef DANGA_LIBKQUEUE
#define DANGA_KQ_EMULATED 1
#else
#define DANGA_KQ_EMULATED 0
#endif

struct danga_kq {
    int kq;
    int nchanges; int maxchanges; struct kevent *changes;
    int maxevents; struct kevent *evs;
    int nerrs; int maxerrs; int *errs;   /* (fd, errno) of failed deferred changes */
    int *out;                            /* 2 * (maxevents + maxerrs) ints */
    unsigned int gen; int hsize; unsigned int *hgen; int *hidx;  /* fd -> pair, per batch */
    int pipe_r; dev_t pipe_dev; ino_t pipe_ino;  /* libkqueue: the read end behind the kqueue fd */
    int nsockerrs; int *sockerrs;  /* (fd, errno) of this batch's EV_EOF fflags: the socket errors */
    int nlost; int maxlost; int *lost;  /* libkqueue: fds this kqueue lost track of (danga_kq_apply) */
};

/* kqueue(2), close-on-exec (a kqueue is never inherited across fork on the
 * BSDs; across exec it would be a leak).  Returns the fd or -1.
 *
 * libkqueue's kqueue fd is the write end of a pipe; a monitoring thread sees
 * it closed and only then releases the kqueue's epoll fd and the pipe's read
 * end.  Remember that read end, so that danga_kq_close can wait for it. */
static int danga_kq_open(struct danga_kq *k)
{
    struct stat kst, st;
    int kq = kqueue();
    k->kq = kq;
    k->pipe_r = -1;
    if (kq < 0)
        return -1;
    (void)fcntl(kq, F_SETFD, FD_CLOEXEC);
    if (fstat(kq, &kst) == 0 && S_ISFIFO(kst.st_mode)) {
        for (int fd = kq - 1, tries = 0; tries < 64; tries++, fd = (fd > 0 ? fd - 1 : kq + 1 + tries)) {
            if (fd != kq && fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode)
                    && st.st_dev == kst.st_dev && st.st_ino == kst.st_ino) {
                k->pipe_r = fd;
                k->pipe_dev = st.st_dev;
                k->pipe_ino = st.st_ino;
                break;
            }
        }
    }
    return kq;
}

/* Close the kqueue; under libkqueue, wait (up to a second) until its
 * descriptors are really released, so that close() means closed. */
static void danga_kq_close(struct danga_kq *k)
{
    struct stat st;
    if (k->kq < 0)
        return;
    close(k->kq);
    k->kq = -1;
    if (k->pipe_r < 0)
        return;
    for (int i = 0; i < 5000; i++) {
        if (fstat(k->pipe_r, &st) < 0 || st.st_ino != k->pipe_ino || st.st_dev != k->pipe_dev)
            break;
        struct timespec nap = {0, 200000};
        nanosleep(&nap, NULL);
    }
    k->pipe_r = -1;
}

static void danga_kq_note_err(struct danga_kq *k, int fd, int err)
{
    if (k->nerrs < k->maxerrs) {
        k->errs[2 * k->nerrs] = fd;
        k->errs[2 * k->nerrs + 1] = err;
        k->nerrs++;
    }
}

/* Hand `m` changes to kqueue `kq` now, without waiting; afterwards each
 * change's `data` is its errno (0: it worked).  A kernel's kqueue takes them
 * in one call with a receipt each (the receipts land in `ch` itself, in its
 * order).  libkqueue takes them one call each and with no event list, where
 * a failed change makes the call return -1 with its errno: a receipt there
 * would make EV_ENABLE also run the filter's modify, which fails for
 * sockets, with whatever errno was left over. */
static void danga_kq_send(int kq, struct kevent *ch, int m)
{
    static const struct timespec zero = {0, 0};
    if (DANGA_KQ_EMULATED) {
        for (int i = 0; i < m; i++) {
            errno = 0;
            int r = kevent(kq, &ch[i], 1, NULL, 0, &zero);
            ch[i].data = r < 0 ? (errno ? errno : EINVAL) : 0;
        }
        return;
    }
    for (int i = 0; i < m; i++)
        ch[i].flags |= EV_RECEIPT;
    int got = kevent(kq, ch, m, ch, m, &zero);
    int e = got < 0 ? errno : EINVAL;
    for (int i = got < 0 ? 0 : got; i < m; i++)
        ch[i].data = e;  /* no receipt: failed with the call */
}

/* libkqueue has lost track of `fd` in this kqueue: remember it, and drop the
 * changes for it among the `*n` pending ones from `from` on (they would meet
 * libkqueue's stale state for that number).  Returns `from`. */
static int danga_kq_lose(struct danga_kq *k, int fd, int from, int *n)
{
    int seen = 0, keep = from;
    for (int i = 0; i < k->nlost; i++)
        seen |= k->lost[i] == fd;
    if (!seen && k->nlost < k->maxlost)
        k->lost[k->nlost++] = fd;
    for (int i = from; i < *n; i++)
        if ((int)k->changes[i].ident != fd)
            k->changes[keep++] = k->changes[i];
    *n = keep;
    return from;
}

/* Apply every pending change now, without waiting.  Each change gets its
 * own errno (danga_kq_send), so nothing can be lost: errors for `fd` come
 * back as its errno; errors for other fds (deferred modifies) are kept for
 * the next wait to report as ERR.
 *
 * Under libkqueue the changes go one at a time.  A delete that fails while
 * its fd is open means that the number names another file now (its old one
 * was closed behind our back): libkqueue has freed the knote but kept the
 * number's epoll state pointing at it, and any later change for that number
 * in this kqueue works on freed memory.  The fd goes on the lost list and
 * its remaining changes are dropped; the caller then rebuilds the kqueue
 * (danga_kq_rebuild).  A delete that fails on a closed fd found no knote,
 * and that is harmless. */
static void danga_kq_apply(struct danga_kq *k, int fd, int *fd_err)
{
    int n = k->nchanges, err = 0, step = DANGA_KQ_EMULATED ? 1 : n;
    k->nchanges = 0;
    for (int i = 0; i < n; i += step) {
        struct kevent *seg = &k->changes[i];
        int m = step < n - i ? step : n - i;
        int last = (int)seg[m - 1].ident, deleting = (seg[m - 1].flags & EV_DELETE) != 0;
        danga_kq_send(k->kq, seg, m);
        for (int j = 0; j < m; j++) {
            struct kevent *e = &seg[j];
            if (e->data == 0)
                continue;  /* a change that worked */
            if ((int)e->ident == fd) {
                if (!err) err = (int)e->data;
            } else {
                danga_kq_note_err(k, (int)e->ident, (int)e->data);
            }
        }
        if (DANGA_KQ_EMULATED && deleting && seg[m - 1].data != 0 && fcntl(last, F_GETFD) >= 0)
            danga_kq_lose(k, last, i + m, &n);
    }
    if (fd_err) *fd_err = err;
}

/* Make room for `need` more changes, applying the pending ones if full. */
static void danga_kq_room(struct danga_kq *k, int need)
{
    if (k->nchanges + need > k->maxchanges)
        danga_kq_apply(k, -1, NULL);
}

static void danga_kq_push(struct danga_kq *k, int fd, int filter, int flags, intptr_t udata)
{
    struct kevent *e = &k->changes[k->nchanges++];
    EV_SET(e, (uintptr_t)fd, filter, flags, 0, 0, (void *)udata);
}

/* The read knote, always present: level-triggered while READ is wanted;
 * otherwise EV_CLEAR (edge), so that it still reports EOF and errors, as
 * epoll reports HUP/ERR without interest, but never spins on unread data.
 * Its udata says which (libkqueue cannot change EV_CLEAR on a live knote,
 * so a change of mode is a delete and an add). */
static void danga_kq_add_read(struct danga_kq *k, int fd, int mask)
{
    int want = mask & DANGA_READ;
    danga_kq_push(k, fd, EVFILT_READ, want ? EV_ADD : (EV_ADD | EV_CLEAR), want);
}

/* Watch `fd` with `mask`; return its new state, or -errno.  The changes
 * still pending (other fds') go first, their errors kept as theirs; then
 * this fd's own, whose receipts say which knote was made, so that a refused
 * registration is undone exactly (no delete of a knote that was never made,
 * which under libkqueue would look like a lost fd). */
static int danga_kq_register(struct danga_kq *k, int fd, int mask)
{
    int err = 0, m;
    if (k->nchanges)
        danga_kq_apply(k, -1, NULL);
    danga_kq_add_read(k, fd, mask);
    if (mask & DANGA_WRITE)
        danga_kq_push(k, fd, EVFILT_WRITE, EV_ADD, 0);
    m = k->nchanges;
    k->nchanges = 0;
    danga_kq_send(k->kq, k->changes, m);
    int made[2] = {0, 0};
    for (int j = 0; j < m; j++) {
        if (k->changes[j].data != 0) {
            if (!err) err = (int)k->changes[j].data;
        } else {
            made[j] = 1;
        }
    }
    if (err) {
        /* undo a half-made registration; its own errors don't matter */
        if (made[0])
            danga_kq_push(k, fd, EVFILT_READ, EV_DELETE, 0);
        if (made[1])
            danga_kq_push(k, fd, EVFILT_WRITE, EV_DELETE, 0);
        danga_kq_send(k->kq, k->changes, k->nchanges);
        k->nchanges = 0;
        /* libkqueue says EFAULT for any descriptor it cannot look at */
        if (err == EFAULT && fcntl(fd, F_GETFD) < 0)
            err = errno;
        return -err;
    }
    return (mask & (DANGA_READ | DANGA_WRITE)) | ((mask & DANGA_WRITE) ? DANGA_KQ_WKNOTE : 0);
}

/* Change the interest; the changes go with the next wait.  Return the new state. */
static int danga_kq_modify(struct danga_kq *k, int fd, int state, int mask)
{
    danga_kq_room(k, 3);
    if ((state ^ mask) & DANGA_READ) {
        danga_kq_push(k, fd, EVFILT_READ, EV_DELETE, 0);
        danga_kq_add_read(k, fd, mask);
    }
    int wknote = state & DANGA_KQ_WKNOTE;
    if (mask & DANGA_WRITE) {
        if (!wknote)
            danga_kq_push(k, fd, EVFILT_WRITE, EV_ADD, 0);
        else if (!(state & DANGA_WRITE))
            danga_kq_push(k, fd, EVFILT_WRITE, EV_ENABLE, 0);
        wknote = DANGA_KQ_WKNOTE;
    } else if (state & DANGA_WRITE) {
        danga_kq_push(k, fd, EVFILT_WRITE, EV_DISABLE, 0);
    }
    return (mask & (DANGA_READ | DANGA_WRITE)) | wknote;
}

/* Delete both knotes now, before the caller closes the fd: libkqueue keeps
 * the knotes of a closed fd, and a new fd of the same number would inherit
 * them.  Errors (the fd was closed behind our back) are not reported. */
static int danga_kq_unregister(struct danga_kq *k, int fd, int state)
{
    int ignored;
    danga_kq_room(k, 2);
    danga_kq_push(k, fd, EVFILT_READ, EV_DELETE, 0);
    if (state & DANGA_KQ_WKNOTE)
        danga_kq_push(k, fd, EVFILT_WRITE, EV_DELETE, 0);
    danga_kq_apply(k, fd, &ignored);
    return 0;
}

/* Apply the pending changes now (libkqueue: before each wait, so that a
 * lost fd is found and the kqueue rebuilt before any wait on it). */
static void danga_kq_flush(struct danga_kq *k)
{
    if (k->nchanges)
        danga_kq_apply(k, -1, NULL);
}

/* The kqueue lost track of some fds (k->lost): move the `n` registrations
 * (fds, states) to a new kqueue and close this one.  Pending changes are
 * dropped: `states` already says where they lead.  A write knote is made
 * again only where write interest is on, and `states` is updated.  The fds
 * the new kqueue refuses are written to `failed` and reported with ERR in
 * the next batch.  Returns their number, or -errno with nothing changed. */
static int danga_kq_rebuild(struct danga_kq *k, int n, int *fds, int *states, int *failed)
{
    struct danga_kq fresh;
    int nfailed = 0;
    memset(&fresh, 0, sizeof fresh);
    if (danga_kq_open(&fresh) < 0)
        return -errno;
    /* The old kqueue: delete the knotes while their fds are open (freeing a
     * kqueue that holds knotes of closed fds has crashed libkqueue). */
    k->nchanges = 0;
    for (int i = 0; i < n; i++) {
        if (k->nchanges + 2 > k->maxchanges) {
            danga_kq_send(k->kq, k->changes, k->nchanges);
            k->nchanges = 0;
        }
        danga_kq_push(k, fds[i], EVFILT_READ, EV_DELETE, 0);
        if (states[i] & DANGA_KQ_WKNOTE)
            danga_kq_push(k, fds[i], EVFILT_WRITE, EV_DELETE, 0);
    }
    danga_kq_send(k->kq, k->changes, k->nchanges);
    k->nchanges = 0;
    danga_kq_close(k);
    k->kq = fresh.kq;
    k->pipe_r = fresh.pipe_r;
    k->pipe_dev = fresh.pipe_dev;
    k->pipe_ino = fresh.pipe_ino;
    k->nlost = 0;
    /* The new one, a chunk at a time; a receipt per change, in order. */
    for (int i = 0; i < n; ) {
        while (i < n && k->nchanges + 2 <= k->maxchanges) {
            int st = states[i];
            danga_kq_add_read(k, fds[i], st);
            if (st & DANGA_WRITE)
                danga_kq_push(k, fds[i], EVFILT_WRITE, EV_ADD, 0);
            states[i] = (st & (DANGA_READ | DANGA_WRITE)) | ((st & DANGA_WRITE) ? DANGA_KQ_WKNOTE : 0);
            i++;
        }
        int m = k->nchanges, from = nfailed;
        danga_kq_send(k->kq, k->changes, m);
        k->nchanges = 0;
        for (int j = 0; j < m; j++) {
            struct kevent *e = &k->changes[j];
            int fd = (int)e->ident;  /* an fd's changes are next to each other */
            if (e->data != 0 && (nfailed == from || failed[nfailed - 1] != fd)) {
                failed[nfailed++] = fd;
                danga_kq_note_err(k, fd, (int)e->data);
            }
        }
        /* a refused fd keeps no knote in the new kqueue */
        for (int q = from; q < nfailed; q++) {
            if (k->nchanges + 2 > k->maxchanges) {
                danga_kq_send(k->kq, k->changes, k->nchanges);
                k->nchanges = 0;
            }
            danga_kq_push(k, failed[q], EVFILT_READ, EV_DELETE, 0);
            danga_kq_push(k, failed[q], EVFILT_WRITE, EV_DELETE, 0);
        }
        if (k->nchanges)
            danga_kq_send(k->kq, k->changes, k->nchanges);
        k->nchanges = 0;
    }
    return nfailed;
}

/* HUP and ERR as epoll would report them: poll(2) with no events asked says
 * whether both directions are down (POLLHUP) or an error is pending. */
static int danga_kq_hup_bits(int fd)
{
    struct pollfd p;
    p.fd = fd;
    p.events = 0;
    p.revents = 0;
    if (poll(&p, 1, 0) <= 0)
        return 0;
    return ((p.revents & POLLHUP) ? DANGA_HUP : 0) | ((p.revents & (POLLERR | POLLNVAL)) ? DANGA_ERR : 0);
}

/* The pair for `fd` in this batch, made on first sight. */
static int danga_kq_pair(struct danga_kq *k, int fd, int *n)
{
    unsigned int h = ((unsigned int)fd * 2654435761u) & (unsigned int)(k->hsize - 1);
    for (;;) {
        if (k->hgen[h] != k->gen) {
            k->hgen[h] = k->gen;
            k->hidx[h] = *n;
            k->out[2 * *n] = fd;
            k->out[2 * *n + 1] = 0;
            return (*n)++;
        }
        if (k->out[2 * k->hidx[h]] == fd)
            return k->hidx[h];
        h = (h + 1) & (unsigned int)(k->hsize - 1);
    }
}

/* Apply the pending changes and wait once, in one kevent() call; write the
 * ready (fd, danga mask) pairs to out and return their number, or -1.
 * (A kernel's kqueue returns at once with the errors of failed changes.
 * libkqueue would write them to the front of the event list, wait, and on a
 * timeout return 0 without counting them: there the changes were applied
 * by danga_kq_flush first, and this call has none.) */
static int danga_kq_wait(struct danga_kq *k, int timeout_ms)
{
    struct timespec ts, *tsp = NULL;
    int n = 0, nch = k->nchanges;
    if (timeout_ms >= 0) {
        ts.tv_sec = timeout_ms / 1000;
        ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
        tsp = &ts;
    }
    if (k->nerrs)  /* errors kept from an earlier apply: report them now */
        tsp = &ts, ts.tv_sec = 0, ts.tv_nsec = 0;
    k->nchanges = 0;  /* applied, even when the wait itself fails */
    int got = kevent(k->kq, k->changes, nch, k->evs, k->maxevents, tsp);
    if (got < 0 && !k->nerrs)
        return -1;
    if (got < 0)
        got = 0;
    if (++k->gen == 0) {  /* wrapped: forget every old stamp */
        memset(k->hgen, 0, sizeof(unsigned int) * (size_t)k->hsize);
        k->gen = 1;
    }
    for (int i = 0; i < k->nerrs; i++) {
        int p = danga_kq_pair(k, k->errs[2 * i], &n);
        k->out[2 * p + 1] |= DANGA_ERR;
    }
    k->nerrs = 0;
    k->nsockerrs = 0;
    for (int i = 0; i < got; i++) {
        struct kevent *e = &k->evs[i];
        int fd = (int)e->ident, bits = 0;
        if (e->flags & EV_ERROR) {
            if (e->data == 0)
                continue;
            bits = DANGA_ERR;  /* a change in this call failed: its fd, ERR */
        } else if (e->filter == EVFILT_READ) {
            if (e->udata)
                bits = DANGA_READ;
        } else if (e->filter == EVFILT_WRITE) {
            /* libkqueue reports a disabled write knote at a hang-up */
            if (!(e->flags & EV_DISABLE))
                bits = DANGA_WRITE;
        } else {
            continue;
        }
        if (e->flags & EV_EOF) {
            bits |= danga_kq_hup_bits(fd);
            if (e->fflags) {
                bits |= DANGA_ERR;  /* the socket's error, in fflags */
                /* kept for Python: libkqueue read SO_ERROR to fill fflags, which cleared it */
                if (k->nsockerrs < k->maxevents) {
                    k->sockerrs[2 * k->nsockerrs] = fd;
                    k->sockerrs[2 * k->nsockerrs + 1] = (int)e->fflags;
                    k->nsockerrs++;
                }
            }
        }
        if (!bits)
            continue;  /* the edge-triggered EOF watch saw data or a half-close */
        int p = danga_kq_pair(k, fd, &n);
        k->out[2 * p + 1] |= bits;
    }
    return n;
}
"""


def make_builder() -> FFI:
    """The FFI builder for this machine; fails where ``available()`` is false."""
    ffi = FFI()
    ffi.cdef(CDEF)
    kwargs: dict = {}
    paths = _libkqueue() if sys.platform.startswith("linux") else None
    if paths is not None:
        inc, lib = paths
        kwargs = {"include_dirs": [inc], "library_dirs": [lib], "libraries": ["kqueue"],
                  "extra_link_args": [f"-Wl,-rpath,{lib}"], "define_macros": [("DANGA_LIBKQUEUE", "1")]}
    ffi.set_source("danga._ffi_kqueue", SOURCE, **kwargs)
    return ffi


ffibuilder = make_builder()

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(HERE.parent), verbose=True)

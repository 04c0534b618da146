"""cffi builder for danga._ffi_epoll (out-of-line API mode).

Run by setuptools through ``cffi_modules`` in setup.py, or by hand:
``python _build/epoll_build.py``.  Not a package; never imported at run time.

The compiler fills in every constant (``#define X ...``) and the layout of
``struct epoll_event`` (packed on x86-64), so nothing here is hard-coded.
``danga_epoll_wait`` is the one call the loop makes per pass: it waits and
flattens the ready events into ``out`` as (fd, danga mask) int pairs.  Its
buffers travel in one ``struct danga_ep`` so that the call takes two
arguments (cffi parses each argument of each call).
"""
import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).parent
MASKS = (HERE / "masks.h").read_text()

ffibuilder = FFI()
ffibuilder.cdef(
    """
    #define EPOLLIN ...
    #define EPOLLOUT ...
    #define EPOLLERR ...
    #define EPOLLHUP ...
    #define EPOLL_CTL_ADD ...
    #define EPOLL_CTL_MOD ...
    #define EPOLL_CTL_DEL ...
    #define EPOLL_CLOEXEC ...
    #define DANGA_READ ...
    #define DANGA_WRITE ...
    #define DANGA_ERR ...
    #define DANGA_HUP ...

    struct epoll_event { uint32_t events; ...; };

    int epoll_create1(int flags);
    int danga_epoll_ctl(int epfd, int op, int fd, int mask);
    struct danga_ep { int epfd; int maxevents; struct epoll_event *evs; int *out; };
    int danga_epoll_wait(struct danga_ep *ep, int timeout);
    int close(int fd);
    """
)
ffibuilder.set_source(
    "danga._ffi_epoll",
    "#include <sys/epoll.h>\n#include <unistd.h>\n#include <stdint.h>\n"
    + MASKS
    + r"""
static uint32_t danga_to_epoll(int mask)
{
    uint32_t e = 0;
    if (mask & DANGA_READ) e |= EPOLLIN;
    if (mask & DANGA_WRITE) e |= EPOLLOUT;
    return e;
}

/* register, modify or unregister `fd` with a danga mask; -1 and errno on failure */
static int danga_epoll_ctl(int epfd, int op, int fd, int mask)
{
    struct epoll_event ev;
    ev.events = danga_to_epoll(mask);
    ev.data.u64 = 0;
    ev.data.fd = fd;
    return epoll_ctl(epfd, op, fd, &ev);
}

/* Everything a wait needs, so that the per-pass call takes two arguments. */
struct danga_ep { int epfd; int maxevents; struct epoll_event *evs; int *out; };

/* wait once; write n (fd, danga mask) pairs to out[0 .. 2n); return n or -1 */
static int danga_epoll_wait(struct danga_ep *ep, int timeout)
{
    struct epoll_event *evs = ep->evs;
    int *out = ep->out;
    int n = epoll_wait(ep->epfd, evs, ep->maxevents, timeout);
    for (int i = 0; i < n; i++) {
        uint32_t e = evs[i].events;
        out[2 * i] = evs[i].data.fd;
        out[2 * i + 1] = ((e & EPOLLIN) ? DANGA_READ : 0)
                       | ((e & EPOLLOUT) ? DANGA_WRITE : 0)
                       | ((e & EPOLLERR) ? DANGA_ERR : 0)
                       | ((e & EPOLLHUP) ? DANGA_HUP : 0);
    }
    return n;
}
""",
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(HERE.parent), verbose=True)

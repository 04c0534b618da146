"""cffi builder for danga._ffi_poll (out-of-line API mode).

Run by setuptools through ``cffi_modules`` in setup.py, or by hand:
``python _build/poll_build.py``.  Not a package; never imported at run time.

The poller keeps its ``struct pollfd`` array in C memory and edits it in
place, so a pass costs one ``danga_poll`` call: poll(2), then a scan in C
that writes the ready (fd, danga mask) pairs to ``out``.
"""
import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).parent
MASKS = (HERE / "masks.h").read_text()

ffibuilder = FFI()
ffibuilder.cdef(
    """
    #define POLLIN ...
    #define POLLOUT ...
    #define POLLERR ...
    #define POLLHUP ...
    #define POLLNVAL ...
    #define DANGA_READ ...
    #define DANGA_WRITE ...
    #define DANGA_ERR ...
    #define DANGA_HUP ...

    struct pollfd { int fd; short events; short revents; ...; };

    short danga_to_poll(int mask);
    int danga_poll(struct pollfd *fds, int nfds, int timeout, int *out);
    """
)
ffibuilder.set_source(
    "danga._ffi_poll",
    "#include <poll.h>\n"
    + MASKS
    + r"""
static short danga_to_poll(int mask)
{
    short e = 0;
    if (mask & DANGA_READ) e |= POLLIN;
    if (mask & DANGA_WRITE) e |= POLLOUT;
    return e;
}

/* poll once; write the ready (fd, danga mask) pairs to out; return their
 * number or -1.  POLLNVAL (an fd closed behind the loop's back) is an error. */
static int danga_poll(struct pollfd *fds, int nfds, int timeout, int *out)
{
    int n = poll(fds, (nfds_t)nfds, timeout);
    int k = 0;
    for (int i = 0; i < nfds && k < n; i++) {
        short e = fds[i].revents;
        if (!e) continue;
        out[2 * k] = fds[i].fd;
        out[2 * k + 1] = ((e & POLLIN) ? DANGA_READ : 0)
                       | ((e & POLLOUT) ? DANGA_WRITE : 0)
                       | ((e & (POLLERR | POLLNVAL)) ? DANGA_ERR : 0)
                       | ((e & POLLHUP) ? DANGA_HUP : 0);
        k++;
    }
    return n < 0 ? n : k;
}
""",
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(HERE.parent), verbose=True)

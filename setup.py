"""Only here to hand the cffi builders to setuptools (cffi has no declarative key).

kqueue is built where the kernel has it (BSD, macOS) and, on Linux, only
against libkqueue: ``LIBKQUEUE_PREFIX=/path/to/libkqueue pip install .``.
The io_uring backend is built on Linux where liburing's headers are found
(Debian: ``apt-get install liburing-dev``; or ``LIBURING_PREFIX``).
On Windows nothing is compiled: the iocp backend binds kernel32, ntdll and
ws2_32 at import time through cffi's ABI mode (danga/_winapi.py).
"""
import os
import sys

from setuptools import setup

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "_build"))
import kqueue_build  # noqa: E402  (asks only whether it can build here)
import uring_build  # noqa: E402  (the same)

builders = ["_build/poll_build.py:ffibuilder"]
if sys.platform.startswith("linux"):
    builders.insert(0, "_build/epoll_build.py:ffibuilder")
if uring_build.available():
    builders.insert(0, "_build/uring_build.py:ffibuilder")
if kqueue_build.available():
    builders.insert(0, "_build/kqueue_build.py:ffibuilder")

if sys.platform == "win32":
    builders = []  # pure Python there: no compiler needed

setup(cffi_modules=builders)

"""Only here to hand the cffi builders to setuptools (cffi has no declarative key)."""
import sys

from setuptools import setup

builders = ["_build/poll_build.py:ffibuilder"]
if sys.platform.startswith("linux"):
    builders.insert(0, "_build/epoll_build.py:ffibuilder")

setup(cffi_modules=builders)

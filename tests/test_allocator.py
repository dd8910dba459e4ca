"""The allocator policy: glibc accepts the settings; other C libraries are left alone."""

from __future__ import annotations

import ctypes
import platform

import pytest

from retinanet.engine import allocator


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_accepts_every_setting():
    assert allocator.keep_freed_memory() is True


def test_no_glibc_changes_nothing(monkeypatch):
    def missing(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", missing)
    assert allocator.keep_freed_memory() is False


def test_a_refused_setting_is_reported(monkeypatch):
    class Libc:
        @staticmethod
        def mallopt(param, value):
            return 0 if param == allocator.M_MMAP_THRESHOLD else 1

    monkeypatch.setattr(ctypes, "CDLL", lambda name: Libc())
    assert allocator.keep_freed_memory() is False

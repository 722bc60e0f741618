"""``retain_freed_memory``: large blocks come from the heap (and stay there) instead of fresh mmaps."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable

import numpy as np
import pytest

from ssmrec.runtime import retain_freed_memory


class _MallInfo2(ctypes.Structure):
    _FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(name, ctypes.c_size_t) for name in _FIELDS.split()]


def _mallinfo2() -> Callable[[], _MallInfo2]:
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc malloc settings exist on Linux only")
    try:
        function = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallinfo2
    except (OSError, AttributeError):
        pytest.skip("this C library has no mallinfo2 (glibc >= 2.33)")
    function.restype = _MallInfo2
    return function


def test_large_blocks_are_served_from_the_heap_after_the_call() -> None:
    info = _mallinfo2()
    assert retain_freed_memory() is True
    mapped_before = info().hblkhd
    block = np.ones(64 * 2**20 // 8)  # 64 MiB: above glibc's largest default mmap threshold (32 MiB)
    mapped_during = info().hblkhd
    del block
    assert mapped_during == mapped_before  # not an mmap of its own: it came from the heap
    assert info().fordblks >= 64 * 2**20 - 4096  # and after free it stays there, free for the next step


def test_refuses_limits_mallopt_cannot_take() -> None:
    assert retain_freed_memory(0) is False
    assert retain_freed_memory(2**31) is False

"""The process keeps freed memory (glibc's malloc switches), unless the user set those switches themselves."""

import platform
import sys

import pytest

from defocus_lit.malloc import keep_freed_memory

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's malloc"
)


def test_glibc_keeps_freed_memory():
    assert keep_freed_memory() is True


@pytest.mark.parametrize(
    "name, value", [("MALLOC_MMAP_THRESHOLD_", "131072"), ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")]
)
def test_the_users_own_malloc_settings_win(name, value, monkeypatch):
    monkeypatch.setenv(name, value)
    assert keep_freed_memory() is False

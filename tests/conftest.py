"""Shared test setup: every test runs offline, with no Nextmv account and an empty home directory."""

from __future__ import annotations

import os
import tempfile

import pytest

# The nextmv SDK computes ~/.nextmv paths when imported: give it an empty home first.
_HOME = tempfile.mkdtemp(prefix="nextpipe-test-home-")
os.environ["HOME"] = _HOME

_PLATFORM_VARIABLES = (
    "NEXTMV_API_KEY",
    "NEXTMV_APP_ID",
    "NEXTMV_RUN_ID",
    "NEXTMV_ENDPOINT",
    "NEXTPIPE_LOCAL_APPS",
    "NEXTPIPE_CACHE_DIR",
    "XDG_CACHE_HOME",
)


@pytest.fixture(autouse=True)
def offline_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No platform variables unless a test sets them."""
    for name in _PLATFORM_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", _HOME)

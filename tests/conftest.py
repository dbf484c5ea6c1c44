"""Shared test setup: every test runs offline, with no Nextmv account and an empty home directory."""

from __future__ import annotations

import os
import shutil
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


REQUIRE_PROGRAMS_VARIABLE = "NEXTPIPE_REQUIRE_PROGRAMS"
"""Set to 1 (``.ci/run`` does) to make a test whose system program is missing fail instead of skip."""


def require_program(name: str, purpose: str) -> str:
    """
    The path of a system program a test needs; skip the test, with the reason shown, when it is missing.

    With ``NEXTPIPE_REQUIRE_PROGRAMS=1`` (set by ``.ci/run``) a missing program fails the test instead.
    """
    path = shutil.which(name)
    if path is None:
        message = f"{purpose} needs the '{name}' program, which is not on PATH"
        if os.environ.get(REQUIRE_PROGRAMS_VARIABLE) == "1":
            pytest.fail(f"{message} (mandatory: {REQUIRE_PROGRAMS_VARIABLE}=1)")
        pytest.skip(message)
    return path

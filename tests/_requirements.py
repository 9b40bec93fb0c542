"""Optional test dependencies: a missing one skips its tests on a developer machine, and fails them under CI.

`.ci/run` installs the test extra (open_clip_torch, trl, ...), so in CI a missing package is a broken install step,
never a reason to skip (the same rule as tests/test_report.py's Chromium).
"""

from __future__ import annotations

import importlib.util
import os

import pytest


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_installed(module: str, why: str) -> None:
    """Call at module level: skip the module's tests without ``module`` (say ``why``), or fail them under CI."""
    if importlib.util.find_spec(module) is not None:
        return
    if under_ci():
        pytest.fail(f"{module} is not installed under CI: .ci/run's test extra should have installed it ({why})",
                    pytrace=False)
    pytest.skip(f"{module} is not installed: {why}", allow_module_level=True)

"""The property tests draw the same examples on every run: CI never fails by chance."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def test_the_suite_profile_is_deterministic_and_untimed() -> None:
    xfer = settings.get_profile("xfer")
    assert xfer.derandomize and xfer.database is None and xfer.deadline is None
    assert HealthCheck.too_slow in xfer.suppress_health_check


def test_it_is_the_default_unless_another_is_asked_for(request: pytest.FixtureRequest) -> None:
    asked = request.config.getoption("hypothesis_profile", default=None)
    if asked is not None:
        pytest.skip(f"--hypothesis-profile={asked} given")
    assert settings.default == settings.get_profile("xfer")
    # a test's own @settings keeps what it does not name
    assert _own._hypothesis_internal_use_settings.derandomize  # type: ignore[attr-defined]
    assert _own._hypothesis_internal_use_settings.deadline is None  # type: ignore[attr-defined]


@settings(max_examples=5)
@given(st.integers())
def _own(n: int) -> None:
    pass

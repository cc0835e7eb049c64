"""Security regression tests: the reliability suite's ``tally`` and class hooks.

Each module's ``CLASS`` is its attack class (``security: …``); bench/reliability_report.py
runs tests/security with tests/reliability and lists these classes in its security table.
"""

from tests.reliability.conftest import (  # noqa: F401 - pytest finds hooks and fixtures by name
    Tally,
    pytest_configure,
    pytest_runtest_logreport,
    pytest_runtest_makereport,
    tally,
)

"""Hypothesis profiles of the differential suites: a fixed slice for the default suite
(``derandomize``: the same examples every run, never chance) and a random soak slice."""

from hypothesis import HealthCheck, Phase, settings

FAST = settings(
    max_examples=4,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    # shrinking reruns whole transfers for minutes; the failing example is printed whole
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
SOAK = settings(FAST, max_examples=60, derandomize=False)

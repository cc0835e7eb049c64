"""The scheduler conformance suite, run unchanged for the builtin local and slurm schedulers
and for the third-party sge scheduler (plugins/xfer-sge, installed into the dev environment like
a user would), each against a real instance."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from xfer_sge.testing import SgeCell

from xfer_core.testing.scheduler_conformance import SchedulerConformance
from xfer_core.testing.services import SlurmCluster


class TestLocalScheduler(SchedulerConformance):
    @pytest.fixture
    def scheduler(self) -> str:
        return "local"


@pytest.mark.slurm
class TestSlurmScheduler(SchedulerConformance):
    """Slurm may send the ``--signal`` warning up to 60 s before the time it is asked for
    (sbatch(1)): under a 1-minute limit it can come at any moment, also in the middle of the
    throttle test (CI saw it). A 5-minute limit keeps it out of every test of the suite; the
    time-limit test delivers the warning itself (:meth:`send_time_limit_warning`)."""

    time_limit = "5"

    @pytest.fixture
    def scheduler(self, slurm: SlurmCluster) -> str:
        return "slurm"

    @pytest.fixture
    def scheduler_env(self, slurm: SlurmCluster) -> dict[str, str]:
        self.cluster = slurm
        return slurm.env

    def send_time_limit_warning(self, sub: Any) -> None:
        # what --signal=B:USR1@N makes slurmctld do, at a moment the test chooses
        # (tests/e2e/test_slurm_s3.py waits for slurmctld's own warning)
        self.cluster.run(["scancel", "--batch", "--signal=USR1", str(sub.job_id)], check=True)


@pytest.mark.sge
class TestSgeScheduler(SchedulerConformance):
    """The third-party plugin against a real Grid Engine cell (fixture ``sge`` of xfer_sge.testing).
    Grid Engine's soft limit ``s_rt`` is in seconds: a 60 s limit, SIGUSR1 5 s in."""

    signal_seconds = 55

    @pytest.fixture
    def scheduler(self, sge: SgeCell) -> str:
        return "sge"

    @pytest.fixture
    def scheduler_env(self, sge: SgeCell) -> dict[str, str]:
        return sge.env


class TestPluginsMdBackgroundScheduler(SchedulerConformance):
    """plugins.md's batch-scheduler example (job file, options, requeue hooks, states, cancel),
    taken from the page as it is and run through the same suite."""

    scheduler_options: ClassVar[dict[str, str]] = {"limit": "5"}

    @pytest.fixture
    def scheduler(self) -> Iterator[str]:
        from tests.docs.test_plugins_md import blocks, run_block
        from xfer_core.registry import get_registry

        [code] = [c for c in blocks("python") if "class BackgroundScheduler" in c]
        module = run_block(code, "plugins_md_background")
        get_registry().add(module, name="background", distribution="plugins-md")
        yield "background"
        get_registry.cache_clear()

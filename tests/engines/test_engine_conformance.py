"""The shard-engine conformance suite, run unchanged for the builtin rclone engine and for the
third-party s5cmd engine (plugins/xfer-s5cmd, installed into the dev environment like a user would)."""

from __future__ import annotations

import pytest

from xfer_core.testing.engine_conformance import ShardEngineConformance

pytestmark = pytest.mark.s3


class TestRcloneEngine(ShardEngineConformance):
    @pytest.fixture
    def engine(self) -> str:
        return "rclone"


class TestS5cmdEngine(ShardEngineConformance):
    @pytest.fixture
    def engine(self) -> str:
        return "s5cmd"

"""The conformance suite, unchanged, for the rsync backend (current rsync and an emulated 2.6.9)."""

from __future__ import annotations

import pytest

from xfer_backends.rsync import RsyncBackend
from xfer_core.sync.backend import TransferBackend
from xfer_core.testing.conformance import TransferBackendConformance


class TestRsync(TransferBackendConformance):
    @pytest.fixture
    def backend(self) -> TransferBackend:
        return RsyncBackend()


class TestRsyncWithoutModernFlags(TransferBackendConformance):
    """As if the workstation had rsync 2.6.9 (macOS): no --mkpath, -s, --info=progress2."""

    @pytest.fixture
    def backend(self) -> TransferBackend:
        return RsyncBackend(emulate="2.6.9")

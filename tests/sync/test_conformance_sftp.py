"""The conformance suite, unchanged, for the sftp (asyncssh) backend."""

from __future__ import annotations

import pytest

from xfer_backends.sftp import SftpBackend
from xfer_core.sync.backend import TransferBackend
from xfer_core.testing.conformance import TransferBackendConformance


class TestSftp(TransferBackendConformance):
    @pytest.fixture
    def backend(self) -> TransferBackend:
        return SftpBackend()

"""Shared by the whole suite: the real-service fixtures (sshd, slurm, s3)."""

pytest_plugins = ["xfer_core.testing.fixtures"]

"""xfer: move data to, from and between HPC clusters.

Kept import-free so that `xfer --version` starts fast.
"""

__version__ = "0.1.0"

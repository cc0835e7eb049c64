"""``python -m xfer_core.cli`` runs the CLI (same as the ``xfer`` script)."""

from xfer_core.cli import script

script()

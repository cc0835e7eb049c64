"""The manifest: one JSON Lines record per object (``xfer.manifest.v1``)."""

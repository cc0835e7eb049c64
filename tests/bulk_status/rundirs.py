"""Run dirs made by the real manifest and shard code, and the CLI as a subprocess."""

from __future__ import annotations

import json
from pathlib import Path

from xfer_core.manifest.jsonl import write_manifest
from xfer_core.manifest.record import ManifestRecord
from xfer_core.manifest.shard import load_shard_meta, shard_manifest
from xfer_core.testing.cli import xfer

__all__ = ["make_run", "put", "xfer"]


def make_run(tmp_path: Path, shards: int = 4, objects: int = 12) -> tuple[Path, list[str]]:
    """A run dir with ``shards`` shards; returns it and the shard digests."""
    run = tmp_path / "run"
    run.mkdir()
    records = [
        ManifestRecord(
            path=f"dir/obj {i}.bin",
            size=1000 * (i + 1),
            source_root="/src",
            dest_root="/dst",
            source=f"/src/dir/obj {i}.bin",
            dest=f"/dst/dir/obj {i}.bin",
        )
        for i in range(objects)
    ]
    write_manifest(run / "manifest.jsonl", records)
    shard_manifest(run / "manifest.jsonl", run / "shards", num_shards=shards)
    (run / "config.resolved.json").write_text(json.dumps({"max_attempts": 2}))
    digests = [s.sha256 for s in load_shard_meta(run / "shards").shards]
    (run / "state").mkdir()
    return run, digests


def put(run: Path, name: str, text: str) -> None:
    (run / "state" / name).write_text(text + "\n")

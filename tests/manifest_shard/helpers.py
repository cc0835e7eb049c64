"""Helpers for the analyze/shard tests: manifests from (name, size) pairs, shard readers, the CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path

from xfer_core.manifest.jsonl import write_manifest
from xfer_core.manifest.record import ManifestRecord, path_fields
from xfer_core.testing import cli

SRC = "s3src:bucket/data"
DST = "s3dst:bucket/data"


def records(items: list[tuple[bytes, int]], src: str = SRC, dst: str = DST) -> list[ManifestRecord]:
    """Manifest records for ``(name, size)`` pairs under one pair of roots."""
    out = []
    for name, size in items:
        path, meta = path_fields(name)
        out.append(
            ManifestRecord(
                path=path,
                size=size,
                source_root=src,
                dest_root=dst,
                source=f"{src}/{path}",
                dest=f"{dst}/{path}",
                meta=meta,
            )
        )
    return out


def write_items(path: Path, items: list[tuple[bytes, int]]) -> Path:
    """Write a manifest of ``(name, size)`` pairs; returns ``path``."""
    write_manifest(path, records(items))
    return path


def sized(sizes: list[int]) -> list[tuple[bytes, int]]:
    """Distinct names for a list of sizes."""
    return [(f"d{i % 7}/obj-{i:06d}".encode(), s) for i, s in enumerate(sizes)]


def shard_lines(outdir: Path) -> dict[int, list[bytes]]:
    """{shard index: its .jsonl lines} for every shard file in ``outdir``."""
    return {
        int(p.name[6:-6]): p.read_bytes().splitlines(keepends=True)
        for p in sorted(outdir.glob("shard_*.jsonl"))
    }


def tree_bytes(outdir: Path) -> dict[str, bytes]:
    """Every file in ``outdir`` by name."""
    return {p.name: p.read_bytes() for p in sorted(outdir.iterdir())}


def xfer(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed ``xfer`` console script (what ``uv run xfer`` runs)."""
    return cli.xfer(*args, env={"COLUMNS": "120"}, timeout=120, script=True)

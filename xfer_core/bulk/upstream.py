"""Resume a run dir written by upstream xfer (FluidNumerics/xfer, seed 004).

Upstream's run dir has the same layout as ours (``manifest.jsonl``, ``shards/``,
``state/``, ``config.resolved.json``) and the same manifest schema, but its
``shards.meta.json`` shares our old schema name with other contents, its
``config.resolved.json`` is ``xfer.runconfig.v1``, and its ``state/shard_N.done``
markers are empty files that say nothing about which objects arrived (upstream
re-used them even after re-sharding). :func:`adopt` keeps what can be trusted and
sets the rest aside:

- the manifest is read as it is (the same schema);
- its ``state/`` moves to ``state.upstream/`` (nothing is deleted): its ``.done``
  markers are unverified, its attempt counters belong to upstream's shards;
- its ``config.resolved.json`` moves to ``config.resolved.upstream.json``, and its
  values (roots, shard count, Slurm options, rclone flags) seed the new render.

The caller then shards and renders as usual: every shard runs once more (rclone
skips objects already at the destination), is verified, and only then marked done.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import msgspec

from xfer_core.errors import XferError

UPSTREAM_RUNCONFIG = "xfer.runconfig.v1"
UPSTREAM_SHARDS = "xfer.shards.v1"


class Adopted(msgspec.Struct, kw_only=True):
    """What :func:`adopt` found and set aside."""

    #: Upstream's frozen config (``config.resolved.upstream.json``), {} if there was none.
    config: dict[str, Any]
    #: ``.done`` markers set aside unverified.
    unverified_done: int
    #: Where upstream's state went (None when it had none).
    state_dir: str | None
    #: Upstream's shard count (from its config, else its shard metadata).
    num_shards: int | None = None
    #: True when the manifest was rebuilt from upstream's shards (they carry other roots:
    #: ``manifest rebase`` then re-shard); the original is ``manifest.upstream.jsonl``.
    from_shards: bool = False


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_upstream(root: Path) -> bool:
    """True when ``root`` holds upstream xfer's run config or shard metadata."""
    config = _read_json(root / "config.resolved.json")
    if config is not None and config.get("schema") == UPSTREAM_RUNCONFIG:
        return True
    meta = _read_json(root / "shards" / "shards.meta.json")
    return meta is not None and meta.get("schema") == UPSTREAM_SHARDS and "manifest" not in meta


def _aside(path: Path, name: str) -> Path:
    """Rename ``path`` to ``name`` beside it (``name.2``, ... if taken)."""
    target = path.with_name(name)
    n = 2
    while target.exists():
        target = path.with_name(f"{name}.{n}")
        n += 1
    os.replace(path, target)
    return target


def adopt(root: Path) -> Adopted | None:
    """Set an upstream run dir's unverifiable parts aside; None when ``root`` is not one."""
    if not is_upstream(root):
        return None
    meta = _read_json(root / "shards" / "shards.meta.json") or {}
    config: dict[str, Any] = {}
    resolved = root / "config.resolved.json"
    found = _read_json(resolved)
    if found is not None and found.get("schema") == UPSTREAM_RUNCONFIG:
        config = found
        _aside(resolved, "config.resolved.upstream.json")
    state = root / "state"
    done = 0
    moved: str | None = None
    if state.is_dir():
        done = sum(1 for p in state.glob("shard_*.done"))
        moved = str(_aside(state, "state.upstream"))
    rebased = _manifest_from_shards(root, meta)
    if not (root / "manifest.jsonl").is_file():
        raise XferError(
            f"{root} is an upstream xfer run dir without manifest.jsonl; nothing to resume",
            hint="rebuild it: xfer run --run-dir RUN --source SRC --dest DST --num-shards N",
        )
    count = config.get("num_shards", meta.get("num_shards"))
    return Adopted(
        config=config,
        unverified_done=done,
        state_dir=moved,
        num_shards=count if isinstance(count, int) and count > 0 else None,
        from_shards=rebased,
    )


def _first_roots(path: Path) -> tuple[str, str] | None:
    try:
        with path.open("rb") as fh:
            for line in fh:
                if line.strip():
                    rec = json.loads(line)
                    return str(rec.get("source_root")), str(rec.get("dest_root"))
    except (OSError, ValueError, AttributeError):
        return None
    return None


def _manifest_from_shards(root: Path, meta: dict[str, Any]) -> bool:
    """Upstream renders from its shards, which may have been cut from a rebased manifest
    (``manifest rebase`` → ``manifest shard`` → ``slurm render --manifest``) while
    ``manifest.jsonl`` keeps the old roots. When the shard files are complete (their
    lines add up to the metadata's ``num_records``) and their roots differ, the shards'
    records become ``manifest.jsonl``; the original moves to ``manifest.upstream.jsonl``."""
    from xfer_core.atomic import atomic_write_bytes

    files = sorted((root / "shards").glob("shard_*.jsonl"))
    manifest = root / "manifest.jsonl"
    wanted = meta.get("num_records")
    if not files or not isinstance(wanted, int):
        return False
    roots = _first_roots(files[0])
    if roots is None or (manifest.is_file() and _first_roots(manifest) == roots):
        return False
    data = b"".join(
        line if line.endswith(b"\n") else line + b"\n"
        for f in files
        for line in f.read_bytes().splitlines(keepends=True)
        if line.strip()
    )
    if data.count(b"\n") != wanted:
        return False  # incomplete shards: the manifest is the better source
    if manifest.is_file():
        _aside(manifest, "manifest.upstream.jsonl")
    atomic_write_bytes(manifest, data)
    return True


#: upstream's config.resolved.json key → our RenderOptions field.
RENDER_KEYS = {
    "array_concurrency": "array_concurrency",
    "job_name": "job_name",
    "time_limit": "time_limit",
    "partition": "partition",
    "cpus_per_task": "cpus_per_task",
    "mem": "mem",
    "rclone_image": "rclone_image",
    "rclone_config_host": "rclone_config",
    "rclone_flags": "rclone_flags",
    "max_attempts": "max_attempts",
    "pyxis_extra": "pyxis_extra",
}


def render_values(config: dict[str, Any]) -> dict[str, Any]:
    """The RenderOptions fields upstream's frozen config gives (only those it has).
    Upstream ran on Slurm only: its ``sbatch_extras`` is the slurm plugin's ``extras``."""
    values = {ours: config[theirs] for theirs, ours in RENDER_KEYS.items() if theirs in config}
    if config.get("sbatch_extras"):
        values["scheduler_options"] = {"extras": config["sbatch_extras"]}
    return values

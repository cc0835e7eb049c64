"""Edit the remotes config in place, keeping the user's comments, layout and key order (tomlkit).

Each edit takes the file's text and returns the new text; nothing is written
unless the result validates. :func:`write_config` writes atomically and keeps the
file's permission bits.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from xfer_core.atomic import atomic_write_text
from xfer_core.config.load import ConfigValidationError, validate_text
from xfer_core.errors import ConfigError

__all__ = ["STARTER_CONFIG", "add_cluster", "add_dir", "write_config"]

STARTER_CONFIG = """\
# xfer remotes config: the clusters `xfer sync` pushes to and `xfer fetch` pulls from.
# Reference: docs/config.md. Check it with `xfer config validate`.
# Add entries by hand or with `xfer config add-cluster` / `xfer config add-dir`
# (those keep your comments and the order of your keys).

[global]
# Default transfer backend: "rsync" (falls back to "sftp" when rsync is missing),
# "sftp", or any installed plugin (`xfer plugins`). `-b/--backend` overrides it.
transfer_backend = "rsync"

# Exclude patterns use rsync's rules: "name" matches at any depth, "/name" only at
# the top of the pair, "dir/" directories only, "*" within a name, "**" across "/".
# Merged in this order: common_excludes, sync_/fetch_excludes, the cluster's
# excludes, its sync_/fetch_excludes, the pair's excludes, then -e/--exclude.
common_excludes = [".git", ".venv", "__pycache__"]   # both directions
sync_excludes = []                                   # xfer sync (push) only
fetch_excludes = []                                  # xfer fetch (pull) only

# One [[clusters]] block per cluster. port, user and key_path are optional:
# what is missing comes from ~/.ssh/config, then ssh's defaults.
#
# [[clusters]]
# name = "cluster-a"
# host = "login.cluster-a.example.org"
# user = "alice"
# key_path = "~/.ssh/id_ed25519"
# excludes = ["scratch"]           # every transfer with this cluster
#
#   # local -> remote, pushed by `xfer sync` (-a myproject selects it)
#   [[clusters.sync_dirs]]
#   alias = "myproject"
#   local = "~/projects/myproject"
#   remote = "~/myproject"         # "~" and "$VARS" are expanded on the cluster
#   excludes = ["data", "results"]
#
#   # remote -> local, pulled by `xfer fetch`
#   [[clusters.fetch_dirs]]
#   alias = "myproject"
#   remote = "$SCRATCH/myproject/results"
#   local = "~/results/myproject"
"""


def _parse(text: str, source: str) -> Any:
    import tomlkit

    problems = validate_text(text, source)
    if problems:
        raise ConfigError(
            f"{problems[0]}",
            hint="fix the config first (`xfer config validate` lists every problem)",
        )
    return tomlkit.parse(text)


def _check_result(text: str, source: str) -> str:
    problems = validate_text(text, source)
    if problems:
        raise ConfigValidationError(problems)
    return text


def _style_like(new: Any, siblings: Sequence[Any], default_indent: str) -> None:
    """Indent ``new`` like its last sibling and separate it from what precedes it by a blank line."""
    indent = default_indent
    if siblings:
        indent = siblings[-1].trivia.indent.rsplit("\n", 1)[-1]
        blank = siblings[-1].as_string().endswith("\n\n")
    else:
        blank = False
    new.trivia.indent = indent if blank else "\n" + indent
    for key, item in new.value.body:
        if key is not None:
            item.trivia.indent = indent


def _table(values: dict[str, Any]) -> Any:
    import tomlkit

    table = tomlkit.table()
    for key, value in values.items():
        if value is None or value == []:
            continue
        table.add(key, list(value) if isinstance(value, (list, tuple)) else value)
    return table


def _clusters(doc: Any) -> list[Any]:
    found = doc.get("clusters")
    return list(found) if found is not None else []


def add_cluster(
    text: str,
    name: str,
    host: str,
    *,
    port: int | None = None,
    user: str | None = None,
    key_path: str | None = None,
    excludes: Sequence[str] = (),
    source: str = "remotes.toml",
) -> str:
    """Append a ``[[clusters]]`` block to the config ``text``; return the new text.

    Refuses a name that is already used. Comments and the order of existing keys are kept.
    """
    import tomlkit

    doc = _parse(text, source)
    clusters = _clusters(doc)
    if any(c.get("name") == name for c in clusters):
        raise ConfigError(f"{source}: a cluster named '{name}' already exists")
    table = _table(
        {
            "name": name,
            "host": host,
            "port": port,
            "user": user,
            "key_path": key_path,
            "excludes": list(excludes),
        }
    )
    _style_like(table, clusters, "")
    if clusters:
        doc["clusters"].append(table)
    else:
        aot = tomlkit.aot()
        aot.append(table)
        doc.append("clusters", aot)
    return _check_result(doc.as_string(), source)


def add_dir(
    text: str,
    cluster: str,
    alias: str,
    local: str,
    remote: str,
    *,
    direction: Literal["push", "pull"] = "push",
    excludes: Sequence[str] = (),
    source: str = "remotes.toml",
) -> str:
    """Add a ``[[clusters.sync_dirs]]`` (push) or ``[[clusters.fetch_dirs]]`` (pull) block to ``cluster``.

    Refuses an unknown cluster (listing the known ones) and an alias already used
    in that cluster's list. Comments and key order are kept.
    """
    import tomlkit

    doc = _parse(text, source)
    kind = "sync_dirs" if direction == "push" else "fetch_dirs"
    clusters = _clusters(doc)
    target = next((c for c in clusters if c.get("name") == cluster), None)
    if target is None:
        known = ", ".join(str(c.get("name")) for c in clusters) or "none"
        raise ConfigError(
            f"{source}: unknown cluster '{cluster}'; known: {known}",
            hint="add it first with `xfer config add-cluster`",
        )
    existing = target.get(kind)
    pairs = list(existing) if existing is not None else []
    if any(p.get("alias") == alias for p in pairs):
        raise ConfigError(f"{source}: cluster '{cluster}' already has a {kind} alias '{alias}'")
    values = {"alias": alias, "local": local, "remote": remote, "excludes": list(excludes)}
    if existing is not None and not isinstance(existing, tomlkit.items.AoT):
        # written inline: `sync_dirs = [{...}]`; stay inline
        inline = tomlkit.inline_table()
        inline.update({k: v for k, v in values.items() if v != []})
        existing.append(inline)
    else:
        table = _table(values)
        _style_like(table, pairs, "  ")
        if existing is not None:
            existing.append(table)
        else:
            aot = tomlkit.aot()
            aot.append(table)
            target.append(kind, aot)
    return _check_result(doc.as_string(), source)


def write_config(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file + rename), keeping the file's mode."""
    target = Path(path)
    try:
        perms: int | None = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        perms = None
    atomic_write_text(target, text, perms=perms)

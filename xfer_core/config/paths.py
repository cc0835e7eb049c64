"""Which remotes config file a command reads, and why.

Order: ``--config``, else ``$XFER_CONFIG``, else ``$XDG_CONFIG_HOME/xfer/remotes.toml``
(``~/.config/xfer/remotes.toml``). When that file does not exist but sbatchman's
``remotes-config.toml`` does, sbatchman's file is read unchanged (same schema), so a
user switches from ``sbatchman sync`` with zero edits.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

#: How the path was chosen.
Origin = Literal["option", "env", "default", "sbatchman"]


@dataclass(frozen=True)
class ConfigLocation:
    """The config file a command uses."""

    path: Path
    origin: Origin
    #: One sentence for ``xfer config path``: why this file.
    reason: str

    @property
    def exists(self) -> bool:
        return self.path.is_file()


def _config_home(env: Mapping[str, str]) -> Path:
    xdg = env.get("XDG_CONFIG_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg)
    return Path(env.get("HOME") or os.path.expanduser("~")) / ".config"


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/xfer/remotes.toml`` (``~/.config/xfer/remotes.toml``)."""
    return _config_home(os.environ if env is None else env) / "xfer" / "remotes.toml"


def sbatchman_config_paths(env: Mapping[str, str] | None = None) -> list[Path]:
    """Where sbatchman keeps its ``remotes-config.toml`` (platformdirs' user config dir)."""
    env = os.environ if env is None else env
    paths = [_config_home(env) / "sbatchman" / "remotes-config.toml"]
    if sys.platform == "darwin":
        home = Path(env.get("HOME") or os.path.expanduser("~"))
        paths.append(home / "Library" / "Application Support" / "sbatchman" / "remotes-config.toml")
    return paths


def resolve_config_path(
    option: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> ConfigLocation:
    """The config file to use: ``option`` (``--config``), ``$XFER_CONFIG``, the default, sbatchman's.

    The returned path may not exist (``xfer config init`` creates it there).
    """
    env = os.environ if env is None else env
    if option is not None and str(option) != "":
        path = Path(os.path.expanduser(os.fspath(option)))
        return ConfigLocation(path, "option", "given with --config")
    from_env = env.get("XFER_CONFIG")
    if from_env:
        return ConfigLocation(Path(os.path.expanduser(from_env)), "env", "set by $XFER_CONFIG")
    default = default_config_path(env)
    if default.is_file():
        return ConfigLocation(default, "default", "the default location")
    for legacy in sbatchman_config_paths(env):
        if legacy.is_file():
            return ConfigLocation(
                legacy,
                "sbatchman",
                f"{display_path(default)} does not exist; reading sbatchman's config unchanged",
            )
    return ConfigLocation(default, "default", "the default location (not created yet)")


def display_path(path: str | os.PathLike[str]) -> str:
    """``path`` with the home directory shown as ``~`` (for messages)."""
    text = os.fspath(path)
    home = os.path.expanduser("~")
    if home not in ("", "/") and (text == home or text.startswith(home + os.sep)):
        return "~" + text[len(home) :]
    return text

"""Read, validate and select from the remotes config.

Every problem is reported as ``FILE:LINE: key.path: what is wrong`` (for example
``remotes.toml:14: clusters[1].sync_dirs[0]: 'alias' is required``), unknown keys
with a did-you-mean. Local paths (``local``, ``key_path``) get ``~`` and ``$VAR``
expanded here; ``remote`` paths are kept as written, the remote shell expands them.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from xfer_core.config.locate import KeyPath, duplicate_key, format_key_path, key_lines, line_of
from xfer_core.config.model import Cluster, Config, DirPair
from xfer_core.config.paths import ConfigLocation, display_path, resolve_config_path
from xfer_core.errors import ConfigError

__all__ = [
    "ConfigValidationError",
    "Problem",
    "backend_for",
    "load_config",
    "parse_config",
    "read_config",
    "select",
    "validate_text",
]

Direction = Literal["push", "pull"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file."""

    source: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigValidationError(ConfigError):
    """A config file with problems; the message is the first, ``problems`` has them all."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        more = len(self.problems) - 1
        super().__init__(
            str(self.problems[0]),
            hint=(
                f"{more} more problem{'s' if more > 1 else ''}: `xfer config validate` lists them all"
                if more
                else None
            ),
        )


# -- schema ----------------------------------------------------------------------

_STRING = "a string"
_INTEGER = "an integer"
_STRINGS = "an array of strings"
_SECONDS = "a number of seconds"


@dataclass(frozen=True)
class _Tables:
    """An array of tables (``[[clusters]]``) whose tables have ``fields``."""

    fields: dict[str, Any]
    required: tuple[str, ...]


_PAIR_FIELDS: dict[str, Any] = {
    "alias": _STRING,
    "local": _STRING,
    "remote": _STRING,
    "excludes": _STRINGS,
}
_CLUSTER_FIELDS: dict[str, Any] = {
    "name": _STRING,
    "host": _STRING,
    "port": _INTEGER,
    "user": _STRING,
    "key_path": _STRING,
    "transfer_backend": _STRING,
    "io_timeout": _SECONDS,
    "excludes": _STRINGS,
    "sync_excludes": _STRINGS,
    "fetch_excludes": _STRINGS,
    # sbatchman's fetch_dirs have no alias: it is derived from `remote` when absent
    "sync_dirs": _Tables(_PAIR_FIELDS, ("alias", "local", "remote")),
    "fetch_dirs": _Tables(_PAIR_FIELDS, ("local", "remote")),
}
_GLOBAL_FIELDS: dict[str, Any] = {
    "transfer_backend": _STRING,
    "local_base": _STRING,
    "io_timeout": _SECONDS,
    "common_excludes": _STRINGS,
    "sync_excludes": _STRINGS,
    "fetch_excludes": _STRINGS,
}
_TOP_FIELDS: dict[str, Any] = {
    "global": _GLOBAL_FIELDS,
    "clusters": _Tables(_CLUSTER_FIELDS, ("name", "host")),
}
_NON_EMPTY = frozenset({"name", "host", "alias", "local", "remote", "user", "key_path"})


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


class _Validator:
    def __init__(self, source: str, lines: dict[KeyPath, int]) -> None:
        self.source = source
        self.lines = lines
        self.problems: list[Problem] = []

    def add(self, path: KeyPath, message: str) -> None:
        self.problems.append(
            Problem(self.source, line_of(self.lines, path), format_key_path(path), message)
        )

    def table(self, data: dict[str, Any], fields: dict[str, Any], path: KeyPath) -> None:
        for key, value in data.items():
            spec = fields.get(key)
            if spec is None:
                close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
                hint = (
                    f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(fields)}"
                )
                self.add((*path, key), f"unknown key; {hint}")
            else:
                self.value(value, spec, (*path, key))

    def value(self, value: Any, spec: Any, path: KeyPath) -> None:
        if isinstance(spec, _Tables):
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                self.add(
                    path, f"expected an array of tables ([[{path[-1]}]]), got {_type_name(value)}"
                )
                return
            for index, item in enumerate(value):
                # a misspelt required key is reported once, as unknown with a did-you-mean
                guessed = {
                    g
                    for key in item
                    if key not in spec.fields
                    for g in difflib.get_close_matches(key, list(spec.fields), n=1, cutoff=0.6)
                }
                for key in spec.required:
                    if key not in item and key not in guessed:
                        self.add((*path, index), f"'{key}' is required")
                self.table(item, spec.fields, (*path, index))
        elif isinstance(spec, dict):
            if not isinstance(value, dict):
                self.add(path, f"expected a table, got {_type_name(value)}")
            else:
                self.table(value, spec, path)
        elif spec == _STRINGS:
            if not isinstance(value, list):
                self.add(path, f"expected {_STRINGS}, got {_type_name(value)}")
                return
            for index, item in enumerate(value):
                if not isinstance(item, str):
                    self.add((*path, index), f"expected a string, got {_type_name(item)}")
                elif not item:
                    self.add((*path, index), "an exclude pattern must not be empty")
                elif "\0" in item:
                    self.add((*path, index), "an exclude pattern must not contain NUL")
        elif spec == _INTEGER:
            if not isinstance(value, int) or isinstance(value, bool):
                self.add(path, f"expected an integer, got {_type_name(value)}")
            elif path[-1] == "port" and not 1 <= value <= 65535:
                self.add(path, f"port {value} is out of range (1-65535)")
        elif spec == _SECONDS:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                self.add(path, f"expected {_SECONDS}, got {_type_name(value)}")
            elif not 4 <= value <= 86400:
                self.add(path, f"{value} is out of range (4-86400 seconds)")
        elif spec == _STRING:
            if not isinstance(value, str):
                self.add(path, f"expected a string, got {_type_name(value)}")
            elif not value.strip() and path[-1] in _NON_EMPTY:
                self.add(path, "must not be empty")
            elif "\0" in value:
                self.add(path, "must not contain a NUL byte")

    def duplicates(self, data: dict[str, Any]) -> None:
        clusters = data.get("clusters")
        if not isinstance(clusters, list):
            return
        seen: dict[str, int] = {}
        for ci, cluster in enumerate(clusters):
            if not isinstance(cluster, dict):
                continue
            name = cluster.get("name")
            if isinstance(name, str):
                if name in seen:
                    self.add(
                        ("clusters", ci, "name"),
                        f"duplicate cluster name '{name}' (first at clusters[{seen[name]}])",
                    )
                else:
                    seen[name] = ci
            for kind in ("sync_dirs", "fetch_dirs"):
                pairs = cluster.get(kind)
                if not isinstance(pairs, list):
                    continue
                aliases: dict[str, int] = {}
                for pi, pair in enumerate(pairs):
                    if not isinstance(pair, dict):
                        continue
                    alias = pair.get("alias")
                    explicit = alias is not None
                    if alias is None and isinstance(pair.get("remote"), str):
                        alias = _derived_alias(pair["remote"])
                    if not isinstance(alias, str):
                        continue
                    if alias in aliases:
                        first = f"{kind}[{aliases[alias]}]"
                        self.add(
                            ("clusters", ci, kind, pi, "alias")
                            if explicit
                            else ("clusters", ci, kind, pi),
                            f"duplicate alias '{alias}' in this cluster (first at {first})"
                            + ("" if explicit else "; add an explicit 'alias'"),
                        )
                    else:
                        aliases[alias] = pi


def _derived_alias(remote: str) -> str:
    """The alias of a ``fetch_dirs`` entry without one: the last component of ``remote``."""
    return os.path.basename(remote.rstrip("/")) or remote


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    import tomlkit
    from tomlkit.exceptions import ParseError, TOMLKitError

    try:
        doc = tomlkit.parse(text)
    except ParseError as exc:
        reason = str(exc).rsplit(f" at line {exc.line}", 1)[0].replace("'\\x00'", "end of file")
        raise ConfigValidationError(
            [Problem(source, exc.line, "", f"TOML syntax error: {reason} (column {exc.col + 1})")]
        ) from None
    except TOMLKitError as exc:
        # raised without a position (e.g. a key assigned twice in one table)
        dup = duplicate_key(text)
        problem = (
            Problem(source, dup[1], format_key_path(dup[0]), "TOML syntax error: key defined twice")
            if dup
            else Problem(source, None, "", f"TOML syntax error: {exc}")
        )
        raise ConfigValidationError([problem]) from None
    data: dict[str, Any] = doc.unwrap()
    return data


def validate_text(text: str, source: str = "remotes.toml") -> list[Problem]:
    """Every problem of the config ``text`` (empty when it is valid). ``source`` names it in messages."""
    try:
        data = _parse_toml(text, source)
    except ConfigValidationError as exc:
        return exc.problems
    validator = _Validator(source, key_lines(text))
    validator.table(data, _TOP_FIELDS, ())
    validator.duplicates(data)
    return sorted(validator.problems, key=lambda p: p.line or 0)


def _expand_local(path: str, base: Path | None) -> str:
    expanded = os.path.expanduser(os.path.expandvars(path))
    if base is not None and not os.path.isabs(expanded):
        expanded = os.path.join(base, expanded)
    return expanded


def parse_config(
    text: str, source: str = "remotes.toml", *, base_dir: str | os.PathLike[str] | None = None
) -> Config:
    """Validate the config ``text`` and build the :class:`Config`.

    Raises :class:`ConfigValidationError` (a :class:`ConfigError`, exit 2) naming the
    file, line and key of the first problem. Local paths are expanded: ``~`` and
    ``$VAR``; a relative ``local`` is taken relative to ``[global] local_base`` when
    set, else to ``base_dir`` (the config file's directory). ``remote`` is left as written.
    """
    import msgspec

    problems = validate_text(text, source)
    if problems:
        raise ConfigValidationError(problems)
    data = _parse_toml(text, source)
    for cluster_data in data.get("clusters", []):
        for pair_data in cluster_data.get("fetch_dirs", []):
            pair_data.setdefault("alias", _derived_alias(pair_data["remote"]))
    config = msgspec.convert(data, Config)
    local_base = config.global_.local_base
    base = (
        Path(_expand_local(local_base, Path(base_dir) if base_dir else None))
        if local_base
        else (Path(base_dir) if base_dir else None)
    )
    clusters = []
    for cluster in config.clusters:
        pairs = {
            kind: [
                msgspec.structs.replace(
                    pair,
                    local=_expand_local(pair.local, base),
                )
                for pair in getattr(cluster, kind)
            ]
            for kind in ("sync_dirs", "fetch_dirs")
        }
        key = cluster.key_path
        clusters.append(
            msgspec.structs.replace(
                cluster,
                key_path=os.path.expanduser(os.path.expandvars(key)) if key else None,
                **pairs,
            )
        )
    return msgspec.structs.replace(config, clusters=clusters, source=source)


def read_config(location: ConfigLocation) -> Config:
    """Read and validate the file at ``location`` (a missing file is a :class:`ConfigError`)."""
    path = location.path
    shown = display_path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"no config file at {shown} ({location.reason})",
            hint="create one with `xfer config init`, or pass --config FILE",
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{shown} is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {shown}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{shown}:{line}: not valid UTF-8 text") from None
    return parse_config(text, shown, base_dir=path.parent.absolute())


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Find (``--config`` → ``$XFER_CONFIG`` → default → sbatchman's), read and validate the config."""
    return read_config(resolve_config_path(path))


def _unknown(kind: str, names: Sequence[str], known: Sequence[str], where: str) -> ConfigError:
    listed = ", ".join(known) if known else "none"
    guesses = [g for n in names for g in difflib.get_close_matches(n, known, n=1)]
    hint = f"did you mean {', '.join(repr(g) for g in guesses)}?" if guesses else None
    plural = "s" if len(names) > 1 else ""
    return ConfigError(
        f"unknown {kind}{plural} {', '.join(repr(n) for n in names)}{where}; known: {listed}",
        hint=hint,
    )


def select(
    config: Config,
    clusters: Sequence[str],
    aliases: Sequence[str],
    direction: Direction,
) -> list[tuple[Cluster, DirPair]]:
    """The (cluster, pair) pairs a ``sync`` (push: ``sync_dirs``) or ``fetch`` (pull: ``fetch_dirs``) run does.

    Empty ``clusters``/``aliases`` mean all. Names that are not in the config are a
    :class:`ConfigError` listing the known ones; so is a selection with nothing in it.
    The result keeps the config's order.
    """
    if direction not in ("push", "pull"):
        raise ValueError(f"direction must be 'push' or 'pull', not {direction!r}")
    kind = "sync_dirs" if direction == "push" else "fetch_dirs"
    where = f" in {config.source}" if config.source else ""
    known_clusters = [c.name for c in config.clusters]
    missing = [n for n in dict.fromkeys(clusters) if n not in known_clusters]
    if missing:
        raise _unknown("cluster", missing, known_clusters, where)
    chosen = [c for c in config.clusters if not clusters or c.name in clusters]
    pairs_of: Callable[[Cluster], list[DirPair]] = lambda c: getattr(c, kind)  # noqa: E731
    known_aliases = list(dict.fromkeys(p.alias for c in chosen for p in pairs_of(c)))
    missing = [a for a in dict.fromkeys(aliases) if a not in known_aliases]
    if missing:
        scope = f" for cluster{'s' if len(chosen) > 1 else ''} {', '.join(c.name for c in chosen)}"
        raise _unknown(f"{kind[:-1].replace('_', ' ')} alias", missing, known_aliases, scope)
    selected = [(c, p) for c in chosen for p in pairs_of(c) if not aliases or p.alias in aliases]
    if not selected:
        names = ", ".join(c.name for c in chosen) or "any cluster"
        raise ConfigError(
            f"nothing to {'sync' if direction == 'push' else 'fetch'}: no [[clusters.{kind}]] "
            f"for {names}{where}",
            hint=f"add one with `xfer config add-dir --{'sync' if direction == 'push' else 'fetch'}`",
        )
    return selected


def backend_for(config: Config, cluster: Cluster, option: str | None = None) -> str:
    """The transfer backend name: ``--backend``, else the cluster's, else ``[global]``'s, else rsync."""
    return option or cluster.transfer_backend or config.global_.transfer_backend or "rsync"

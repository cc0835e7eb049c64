"""Read, validate and select from the remotes config.

Every problem is reported as ``FILE:LINE: key.path: what is wrong`` (for example
``remotes.toml:14: clusters[1].sync_dirs[0]: 'alias' is required``), unknown keys
with a did-you-mean. Local paths (``local``, ``key_path``) get ``~`` and ``$VAR``
expanded here; ``remote`` paths are kept as written, the remote shell expands them.

Two dialects: xfer's own file is strict. sbatchman's file (``remotes-config.toml``)
is read the way sbatchman reads it: unknown keys, the legacy ``[[clusters.dirs]]``
table and a quoted ``port`` are warnings (``FILE:LINE: ...``), not errors; a
``sync_dirs`` pair needs no ``alias``; a relative ``local`` is taken relative to the
current directory. ``xfer config validate --strict`` turns those warnings into errors.
"""

from __future__ import annotations

import difflib
import os
import re
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
    "check_text",
    "derive_aliases",
    "dialect_of",
    "load_config",
    "parse_config",
    "read_config",
    "select",
    "select_partial",
    "validate_text",
]

Direction = Literal["push", "pull"]
#: ``xfer``: our own, strict format. ``sbatchman``: sbatchman's file, read as sbatchman does.
Dialect = Literal["xfer", "sbatchman"]
#: The file name sbatchman gives its config: a file of that name is read in sbatchman's dialect.
SBATCHMAN_FILENAME = "remotes-config.toml"


def dialect_of(path: str | os.PathLike[str]) -> Dialect:
    """``sbatchman`` for a file named like sbatchman's (``remotes-config.toml``), else ``xfer``."""
    return "sbatchman" if os.path.basename(os.fspath(path)) == SBATCHMAN_FILENAME else "xfer"


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


def check_host(host: str) -> str | None:
    """Why ``host`` cannot be a cluster's host (``None``: it can).

    A host name, an ssh config ``Host`` alias or an IP address: letters, digits and
    ``.-_`` not starting with ``-``, or an IPv6 address (bare or in brackets). Anything
    else could reach ssh as an option (``-oProxyCommand=...``) or turn rsync's
    ``HOST:PATH`` into a local path (a ``/`` before the ``:``).
    """
    if host.startswith("-"):
        return f"host {host!r} must not start with '-' (ssh would read it as an option)"
    if "/" in host:
        return f"host {host!r} must not contain '/' (rsync would take HOST:PATH as a local path)"
    if "@" in host:
        return f"host {host!r} must not contain '@': put the user name in 'user'"
    if ":" in host:
        import ipaddress

        try:
            ipaddress.IPv6Address(host.removeprefix("[").removesuffix("]"))
        except ValueError:
            return (
                f"host {host!r} must not contain ':' (except in an IPv6 address); "
                "put the port in 'port'"
            )
        return None
    if not _HOST_RE.fullmatch(host):
        return (
            f"host {host!r} is not a host name: use letters, digits, '.', '-' and '_' "
            "(an ssh config Host alias, a DNS name or an IP address)"
        )
    return None


def check_user(user: str) -> str | None:
    """Why ``user`` cannot be a login name (``None``: it can)."""
    if user.startswith("-"):
        return f"user {user!r} must not start with '-' (ssh would read it as an option)"
    if any(c in user for c in "/:") or not user.isprintable() or " " in user:
        return f"user {user!r} must not contain '/', ':', spaces or control characters"
    return None


def check_path_text(path: str) -> str | None:
    """Why ``path`` (a ``local`` or ``remote`` directory) cannot be used (``None``: it can)."""
    if "\0" in path:
        return "a path must not contain a NUL byte"
    return None


_HOST_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_CHECKED: dict[str, Callable[[str], str | None]] = {
    "host": check_host,
    "user": check_user,
    "local": check_path_text,
    "remote": check_path_text,
}


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
    """Checks parsed data against the schema; ``lenient`` (sbatchman's file) also repairs it.

    In lenient mode what sbatchman accepts is a warning and the data is changed to
    what sbatchman makes of it: unknown keys dropped, ``dirs`` read as ``fetch_dirs``,
    a quoted port read as a number.
    """

    def __init__(self, source: str, lines: dict[KeyPath, int], lenient: bool = False) -> None:
        self.source = source
        self.lines = lines
        self.lenient = lenient
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []

    def _problem(self, path: KeyPath, message: str) -> Problem:
        return Problem(self.source, line_of(self.lines, path), format_key_path(path), message)

    def add(self, path: KeyPath, message: str) -> None:
        self.problems.append(self._problem(path, message))

    def tolerate(self, path: KeyPath, message: str) -> None:
        """What sbatchman accepts: a warning in its file, an error in ours."""
        if self.lenient:
            self.warnings.append(self._problem(path, f"{message} (as sbatchman does)"))
        else:
            self.add(path, message)

    def table(self, data: dict[str, Any], fields: dict[str, Any], path: KeyPath) -> None:
        for key, value in list(data.items()):
            spec = fields.get(key)
            if key == "dirs" and "fetch_dirs" in fields:
                self._legacy_dirs(data, path)
            elif spec is None:
                close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
                hint = (
                    f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(fields)}"
                )
                if self.lenient:
                    del data[key]
                    self.tolerate((*path, key), f"unknown key, ignored; {hint}")
                else:
                    self.add((*path, key), f"unknown key; {hint}")
            else:
                if key == "transfer_backend" and isinstance(value, str):
                    value = data[key] = value.strip().lower()  # sbatchman: any case
                elif (
                    spec == _INTEGER
                    and self.lenient
                    and isinstance(value, str)
                    and value.strip().isdigit()
                ):
                    value = data[key] = int(value)
                    self.tolerate((*path, key), f"a quoted number, read as {value}")
                self.value(value, spec, (*path, key))

    def _legacy_dirs(self, cluster: dict[str, Any], path: KeyPath) -> None:
        """sbatchman's old name for ``fetch_dirs`` (used only when ``fetch_dirs`` is absent)."""
        where = (*path, "dirs")
        if not self.lenient:
            self.add(where, "legacy sbatchman key; rename it to 'fetch_dirs'")
            return
        dirs = cluster.pop("dirs")
        if "fetch_dirs" in cluster:
            self.tolerate(where, "legacy key ignored: 'fetch_dirs' is set")
            return
        self.tolerate(where, "legacy key, read as 'fetch_dirs'")
        cluster["fetch_dirs"] = dirs
        n = len(where)  # the pairs' lines, under their new name
        moved = {(*path, "fetch_dirs", *k[n:]): v for k, v in self.lines.items() if k[:n] == where}
        self.lines.update(moved)
        self.value(dirs, _CLUSTER_FIELDS["fetch_dirs"], (*path, "fetch_dirs"))

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
                required = [k for k in spec.required if not (self.lenient and k == "alias")]
                for key in required:
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
            elif path[-1] in _CHECKED:
                reason = _CHECKED[path[-1]](value)
                if reason:
                    self.add(path, reason)

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
                    alias = pair.get("alias") if isinstance(pair, dict) else None
                    if not isinstance(alias, str):
                        continue  # derived aliases never collide (derive_aliases)
                    if alias in aliases:
                        first = f"{kind}[{aliases[alias]}]"
                        self.add(
                            ("clusters", ci, kind, pi, "alias"),
                            f"duplicate alias '{alias}' in this cluster (first at {first})",
                        )
                    else:
                        aliases[alias] = pi


def derive_aliases(remotes: Sequence[str], taken: Sequence[str] = ()) -> list[str]:
    """Aliases for pairs written without one (what sbatchman's TUI writes), from their ``remote``.

    Each gets the shortest tail of its path that no other alias-less pair of the list
    shares and no explicit alias (``taken``) uses: ``~/a/data`` and ``~/b/data`` become
    ``a/data`` and ``b/data``, a lone ``~/runs/`` becomes ``runs``. Identical paths get
    ``-2``, ``-3``, ... Pure and order-stable: the same list gives the same aliases.
    """
    parts = [r.rstrip("/").split("/") for r in remotes]

    def tail(i: int, k: int) -> str:
        return "/".join(parts[i][-k:]).strip() or remotes[i]

    used = set(taken)
    out: list[str] = []
    for i in range(len(remotes)):
        alias = None
        for k in range(1, len(parts[i]) + 1):
            candidate = tail(i, k)
            clash = any(tail(j, k) == candidate for j in range(len(remotes)) if j != i)
            if not clash and candidate not in used:
                alias = candidate
                break
        if alias is None:  # the very same path twice
            alias, n = tail(i, 1), 2
            while alias in used:
                alias, n = f"{tail(i, 1)}-{n}", n + 1
        used.add(alias)
        out.append(alias)
    return out


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


def check_text(
    text: str, source: str = "remotes.toml", dialect: Dialect = "xfer"
) -> tuple[dict[str, Any], list[Problem], list[Problem]]:
    """Parse and check ``text``: (the data, repaired in sbatchman's dialect; problems; warnings)."""
    try:
        data = _parse_toml(text, source)
    except ConfigValidationError as exc:
        return {}, exc.problems, []
    validator = _Validator(source, key_lines(text), lenient=dialect == "sbatchman")
    validator.table(data, _TOP_FIELDS, ())
    validator.duplicates(data)

    def order(problems: list[Problem]) -> list[Problem]:
        return sorted(problems, key=lambda p: p.line or 0)

    return data, order(validator.problems), order(validator.warnings)


def validate_text(
    text: str, source: str = "remotes.toml", dialect: Dialect = "xfer"
) -> list[Problem]:
    """Every problem of the config ``text`` (empty when it is valid). ``source`` names it in messages."""
    return check_text(text, source, dialect)[1]


def _expand_local(path: str, base: Path | None) -> str:
    expanded = os.path.expanduser(os.path.expandvars(path))
    if base is not None and not os.path.isabs(expanded):
        expanded = os.path.join(base, expanded)
    return expanded


def parse_config(
    text: str,
    source: str = "remotes.toml",
    *,
    base_dir: str | os.PathLike[str] | None = None,
    dialect: Dialect = "xfer",
) -> Config:
    """Validate the config ``text`` and build the :class:`Config`.

    Raises :class:`ConfigValidationError` (a :class:`ConfigError`, exit 2) naming the
    file, line and key of the first problem. Local paths are expanded: ``~`` and
    ``$VAR``; a relative ``local`` is taken relative to ``[global] local_base`` when
    set, else to ``base_dir`` (the config file's directory). In sbatchman's dialect a
    relative ``local`` is taken relative to the current directory (sbatchman ignores
    ``local_base``), and what sbatchman tolerates is in ``Config.warnings``.
    ``remote`` is left as written. Pairs without an ``alias`` get one from
    :func:`derive_aliases`.
    """
    import msgspec

    data, problems, warnings = check_text(text, source, dialect)
    if problems:
        raise ConfigValidationError(problems)
    for cluster_data in data.get("clusters", []):
        for kind in ("sync_dirs", "fetch_dirs"):
            pairs = cluster_data.get(kind, [])
            bare = [p for p in pairs if "alias" not in p]
            taken = [p["alias"] for p in pairs if "alias" in p]
            for pair_data, alias in zip(
                bare, derive_aliases([p["remote"] for p in bare], taken), strict=True
            ):
                pair_data["alias"] = alias
    config = msgspec.convert(data, Config)
    local_base = config.global_.local_base
    base: Path | None
    if dialect == "sbatchman":
        base = Path.cwd()
    elif local_base:
        base = Path(_expand_local(local_base, Path(base_dir) if base_dir else None))
    else:
        base = Path(base_dir) if base_dir else None
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
    return msgspec.structs.replace(
        config, clusters=clusters, source=source, warnings=[str(w) for w in warnings]
    )


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
    config = parse_config(text, shown, base_dir=path.parent.absolute(), dialect=dialect_of(path))
    if config.warnings:
        from xfer_core.output import current

        for warning in config.warnings:
            current().warn(warning)
    return config


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
    selected, unknown = select_partial(config, clusters, aliases, direction)
    if unknown:
        raise unknown[0]
    return selected


def select_partial(
    config: Config,
    clusters: Sequence[str],
    aliases: Sequence[str],
    direction: Direction,
) -> tuple[list[tuple[Cluster, DirPair]], list[ConfigError]]:
    """Like :func:`select`, but names not in the config do not stop the others (sbatchman's way).

    Returns the pairs of the names that exist and one :class:`ConfigError` per kind of
    unknown name (clusters, aliases). Raises when nothing at all is left to run: every
    named cluster (or alias) unknown, or nothing configured for the direction.
    """
    if direction not in ("push", "pull"):
        raise ValueError(f"direction must be 'push' or 'pull', not {direction!r}")
    kind = "sync_dirs" if direction == "push" else "fetch_dirs"
    where = f" in {config.source}" if config.source else ""
    unknown: list[ConfigError] = []
    known_clusters = [c.name for c in config.clusters]
    missing = [n for n in dict.fromkeys(clusters) if n not in known_clusters]
    if missing:
        unknown.append(_unknown("cluster", missing, known_clusters, where))
        if len(missing) == len(set(clusters)):
            raise unknown[0]
    chosen = [c for c in config.clusters if not clusters or c.name in clusters]
    pairs_of: Callable[[Cluster], list[DirPair]] = lambda c: getattr(c, kind)  # noqa: E731
    known_aliases = list(dict.fromkeys(p.alias for c in chosen for p in pairs_of(c)))
    missing = [a for a in dict.fromkeys(aliases) if a not in known_aliases]
    if missing:
        scope = f" for cluster{'s' if len(chosen) > 1 else ''} {', '.join(c.name for c in chosen)}"
        unknown.append(
            _unknown(f"{kind[:-1].replace('_', ' ')} alias", missing, known_aliases, scope)
        )
        if len(missing) == len(set(aliases)):
            raise unknown[-1]
    selected = [(c, p) for c in chosen for p in pairs_of(c) if not aliases or p.alias in aliases]
    if not selected:
        names = ", ".join(c.name for c in chosen) or "any cluster"
        raise ConfigError(
            f"nothing to {'sync' if direction == 'push' else 'fetch'}: no [[clusters.{kind}]] "
            f"for {names}{where}",
            hint=f"add one with `xfer config add-dir --{'sync' if direction == 'push' else 'fetch'}`",
        )
    return selected, unknown


def backend_for(config: Config, cluster: Cluster, option: str | None = None) -> str:
    """The transfer backend name: ``--backend``, else the cluster's, else ``[global]``'s, else rsync."""
    return option or cluster.transfer_backend or config.global_.transfer_backend or "rsync"

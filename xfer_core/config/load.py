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
import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec
import msgspec.inspect as mi

from xfer_core.config.locate import KeyPath, duplicate_key, format_key_path, key_lines, line_of
from xfer_core.config.model import Cluster, Config, DirPair, GlobalConfig
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


# -- schema: derived from the structs of config/model.py ---------------------------


@functools.cache
def _struct(cls: type) -> mi.StructType:
    """The schema of a model struct (computed on first use: not at import)."""
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return info


def _keys(struct: mi.StructType) -> dict[str, mi.Field]:
    """The config keys of ``struct`` by their TOML name (``__name__`` fields are not keys)."""
    return {f.encode_name: f for f in struct.fields if not f.encode_name.startswith("__")}


def _plain(t: mi.Type) -> tuple[mi.Type, dict[str, Any]]:
    """``t`` without ``| None`` and ``Annotated`` wrappers, and the ``Meta(extra=...)`` found."""
    extra: dict[str, Any] = {}
    while True:
        if isinstance(t, mi.UnionType):
            rest = [u for u in t.types if not isinstance(u, mi.NoneType)]
            if len(rest) != 1:
                return t, extra
            t = rest[0]
        elif isinstance(t, mi.Metadata):
            extra.update(t.extra or {})
            t = t.type
        else:
            return t, extra


def _described(t: mi.Type, extra: dict[str, Any]) -> str:
    """What a value of ``t`` is, in messages: ``an integer``, ``a number of seconds``."""
    if isinstance(t, mi.IntType):
        return "an integer"
    if isinstance(t, mi.FloatType):
        return f"a number of {extra['unit']}" if "unit" in extra else "a number"
    if isinstance(t, mi.BoolType):
        return "a boolean"
    if isinstance(t, mi.ListType):
        item, _ = _plain(t.item_type)
        if isinstance(item, mi.StructType):
            return "an array of tables"
        return f"an array of {_described(item, {}).split(' ', 1)[1]}s"
    if isinstance(t, (mi.StructType, mi.DictType)):
        return "a table"
    return "a string"


def _within(value: float, low: float | None, high: float | None) -> bool:
    """``low <= value <= high`` (a bound of None is none); False for NaN."""
    return (low is None or low <= value) and (high is None or value <= high)


#: The field of ``Cluster``/``GlobalConfig`` that holds plugin tables (not a key itself).
BACKEND_TABLES = "__backend_tables__"


def backend_config_keys(name: str) -> type | None:
    """The ``config_keys`` struct of the installed transfer backend ``name``, or None.

    Only asked about keys the model does not know, so a config without plugin tables
    never loads the plugins.
    """
    from xfer_core.registry import get_registry

    registry = get_registry()
    if name not in registry.names("transfer"):
        return None
    keys = getattr(registry.get("transfer", name), "config_keys", None)
    return keys if isinstance(keys, type) else None


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

    def table(self, data: dict[str, Any], struct: mi.StructType, path: KeyPath) -> None:
        fields = _keys(struct)
        # tables that transfer-backend plugins may add ([global.NAME], [clusters.NAME])
        plugin_tables = any(f.encode_name == BACKEND_TABLES for f in struct.fields)
        for key, value in list(data.items()):
            spec = fields.get(key)
            if key == "dirs" and "fetch_dirs" in fields:
                self._legacy_dirs(data, path)
            elif spec is None and plugin_tables and (keys := backend_config_keys(key)):
                self._plugin_table(value, keys, (*path, key))
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
                kind, _ = _plain(spec.type)
                if key == "transfer_backend" and isinstance(value, str):
                    value = data[key] = value.strip().lower()  # sbatchman: any case
                elif (
                    isinstance(kind, mi.IntType)
                    and self.lenient
                    and isinstance(value, str)
                    and value.strip().isdigit()
                ):
                    value = data[key] = int(value)
                    self.tolerate((*path, key), f"a quoted number, read as {value}")
                self.value(value, spec.type, (*path, key))

    def _plugin_table(self, value: Any, keys: type, path: KeyPath) -> None:
        """A backend's table: checked like core keys, then by msgspec itself for field
        types this checker has no words for (a dict, a literal, a union)."""
        before = len(self.problems)
        self.value(value, _struct(keys), path)
        if len(self.problems) == before:
            try:
                msgspec.convert(value, keys)
            except msgspec.ValidationError as exc:
                self.add(path, str(exc))

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
        self.value(dirs, _keys(_struct(Cluster))["fetch_dirs"].type, (*path, "fetch_dirs"))

    def value(self, value: Any, spec: mi.Type, path: KeyPath, what: str = "") -> None:
        """Check ``value`` against the type ``spec`` (of the model) at ``path``."""
        t, extra = _plain(spec)
        expected = _described(t, extra)
        if isinstance(t, mi.ListType):
            item, item_extra = _plain(t.item_type)
            if isinstance(item, mi.StructType):
                self._tables(value, item, path, tuple(extra.get("optional", ())))
                return
            if not isinstance(value, list):
                self.add(path, f"expected {expected}, got {_type_name(value)}")
                return
            for index, element in enumerate(value):
                self.value(element, t.item_type, (*path, index), item_extra.get("what", ""))
        elif isinstance(t, mi.StructType):
            if not isinstance(value, dict):
                self.add(path, f"expected a table, got {_type_name(value)}")
            else:
                self.table(value, t, path)
        elif isinstance(t, (mi.IntType, mi.FloatType)):
            number = isinstance(value, int) or (
                isinstance(value, float) and isinstance(t, mi.FloatType)
            )
            if not number or isinstance(value, bool):
                self.add(path, f"expected {expected}, got {_type_name(value)}")
            elif not _within(float(value), t.ge, t.le):
                unit = f" {extra['unit']}" if "unit" in extra else ""
                self.add(path, f"{path[-1]} {value} is out of range ({t.ge}-{t.le}{unit})")
        elif isinstance(t, mi.BoolType):
            if not isinstance(value, bool):
                self.add(path, f"expected {expected}, got {_type_name(value)}")
        elif isinstance(t, mi.StrType):
            subject = f"{what} " if what else ""
            if not isinstance(value, str):
                self.add(path, f"expected a string, got {_type_name(value)}")
            elif t.min_length and not (value.strip() if extra.get("not_blank") else value):
                self.add(path, f"{subject}must not be empty")
            elif "\0" in value:
                self.add(path, f"{subject}must not contain a NUL byte")
            elif "check" in extra and (reason := extra["check"](value)):
                self.add(path, reason)

    def _tables(
        self, value: Any, struct: mi.StructType, path: KeyPath, optional: tuple[str, ...]
    ) -> None:
        """An array of tables (``[[clusters]]``), each checked against ``struct``."""
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.add(path, f"expected an array of tables ([[{path[-1]}]]), got {_type_name(value)}")
            return
        fields = _keys(struct)
        for index, item in enumerate(value):
            # a misspelt required key is reported once, as unknown with a did-you-mean
            guessed = {
                g
                for key in item
                if key not in fields
                for g in difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
            }
            for key, field in fields.items():
                if not field.required or key in optional or (self.lenient and key == "alias"):
                    continue
                if key not in item and key not in guessed:
                    self.add((*path, index), f"'{key}' is required")
            self.table(item, struct, (*path, index))

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
    """The document's data; a :class:`ConfigValidationError` with tomlkit's message (line,
    column) when it is no valid TOML. The standard library's parser reads it when there is
    one (Python 3.11+): a third of tomlkit's import and parse time on every command."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        pass
    else:
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            pass  # tomlkit says where and what, as it always has
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
    validator.table(data, _struct(Config), ())
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


def _set_aside_backend_tables(data: dict[str, Any]) -> None:
    """Move plugin tables (keys the model does not know; validated already) to their field."""
    tables: list[tuple[Any, type]] = [(data.get("global"), GlobalConfig)]
    tables += [(cluster, Cluster) for cluster in data.get("clusters", [])]
    for table, model in tables:
        if isinstance(table, dict):
            known = _keys(_struct(model))
            table[BACKEND_TABLES] = {k: table.pop(k) for k in list(table) if k not in known}


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
    _set_aside_backend_tables(data)
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


def read_config(location: ConfigLocation, *, warn: bool = True) -> Config:
    """Read and validate the file at ``location`` (a missing file is a :class:`ConfigError`).

    ``warn``: print the config's warnings (a caller that reads it twice says them once)."""
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
    if warn and config.warnings:
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

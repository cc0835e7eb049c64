"""Remote paths of the config (``~/proj``, ``$SCRATCH/data``): expanded by the remote side, safely.

The config's remote paths are expanded where they live -- ``$SCRATCH`` is a
cluster's variable, not the workstation's. Handing the path to a remote shell
would also run whatever else is in it (``$(...)``, backquotes, ``;``), so xfer
parses the path itself, asks the remote side only for the *values* it needs
(``$HOME``, each ``$NAME``, each ``~user``) with a fixed script, and
substitutes them locally. Anything else in the path is taken literally.

A path with nothing to expand needs no round trip: a relative path is relative
to the login directory for both rsync and SFTP.
"""

from __future__ import annotations

import re
import shlex

import msgspec

from xfer_core.errors import ConfigError

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_USER = r"[A-Za-z0-9._][A-Za-z0-9._-]*"
_TOKEN = re.compile(rf"\$\{{({_NAME})\}}|\$({_NAME})|\$\{{[^}}]*\}}?")
_TILDE = re.compile(rf"~({_USER})?(?=/|$)")


class Ref(msgspec.Struct, frozen=True):
    """A value the remote side must supply: ``kind`` is ``home``, ``var`` or ``user``."""

    kind: str
    name: str = ""


def needs_expansion(path: str) -> bool:
    """True when ``path`` has a leading ``~`` or a ``$`` reference."""
    return path.startswith("~") or "$" in path


def parse(path: str) -> list[str | Ref]:
    """``path`` as literal text and :class:`Ref` parts, in order.

    Only a leading ``~`` / ``~user`` is special (as in the shell). ``$NAME`` and
    ``${NAME}`` are references; a ``$`` not followed by a name is literal. A
    ``${...}`` that is not a plain name (``${A:-x}``, ``${A``) is refused.
    """
    parts: list[str | Ref] = []
    rest = path
    tilde = _TILDE.match(rest)
    if tilde is not None:
        user = tilde.group(1)
        parts.append(Ref("user", user) if user else Ref("home"))
        rest = rest[tilde.end() :]
    pos = 0
    for m in _TOKEN.finditer(rest):
        name = m.group(1) or m.group(2)
        if name is None:
            raise ConfigError(
                f"remote path {path!r}: unsupported expansion {m.group(0)!r}",
                hint="only ~, ~user, $NAME and ${NAME} are expanded in remote paths",
            )
        if m.start() > pos:
            parts.append(rest[pos : m.start()])
        parts.append(Ref("var", name))
        pos = m.end()
    if pos < len(rest):
        parts.append(rest[pos:])
    return parts


def refs(path: str) -> list[Ref]:
    """The distinct references of ``path``, in order of first use."""
    seen: list[Ref] = []
    for part in parse(path):
        if isinstance(part, Ref) and part not in seen:
            seen.append(part)
    return seen


def query_command(wanted: list[Ref]) -> str:
    """A command for the remote login shell printing each wanted value, NUL-terminated.

    A variable prints two fields: ``x`` when set (empty when unset), then its
    value. The script runs under ``sh -c`` so csh/tcsh login shells work too; it
    contains only validated names, so nothing from the config is executed.
    """
    words: list[str] = []
    for ref in wanted:
        if ref.kind == "home":
            words.append('"$HOME"')
        elif ref.kind == "var":
            words += [f'"${{{ref.name}+x}}"', f'"${{{ref.name}-}}"']
        else:
            words.append(f"~{ref.name}")
    script = "printf '%s\\0' " + " ".join(words)
    return "sh -c " + shlex.quote(script)


def substitute(path: str, wanted: list[Ref], output: bytes, *, cluster: str) -> str:
    """``path`` with the values printed by :func:`query_command` substituted.

    An unset variable or an unknown user is a :class:`ConfigError` naming the
    cluster -- never silently an empty string (``$SCRATCH/x`` must not become ``/x``).
    """
    fields = output.decode("utf-8", "surrogateescape").split("\0")
    values: dict[Ref, str] = {}
    i = 0
    for ref in wanted:
        if ref.kind == "var":
            if i + 1 >= len(fields) or fields[i] != "x":
                raise ConfigError(
                    f"remote path {path!r}: ${ref.name} is not set on cluster {cluster!r}",
                    hint="set it in the cluster's shell startup files or use an absolute path",
                )
            values[ref] = fields[i + 1]
            i += 2
        else:
            value = fields[i] if i < len(fields) else ""
            if not value.startswith("/"):
                who = f"~{ref.name}" if ref.name else "~ ($HOME)"
                raise ConfigError(f"remote path {path!r}: {who} is unknown on cluster {cluster!r}")
            values[ref] = value
            i += 1
    return "".join(values[p] if isinstance(p, Ref) else p for p in parse(path))

"""Roots read from a manifest or shard metadata are untrusted input.

A manifest travels between people and tools, and its ``source_root`` /
``dest_root`` reach rclone. An rclone *connection string* — an on-the-fly
backend ``:sftp,host=x,ssh="sh -c …":path`` or a remote with options
``name,opt=val:path`` — can make rclone run a program (the sftp backend's
``ssh`` option) or talk to any server with any credentials. So a root read
from a manifest must be a local path or a plain ``remote:path`` naming a
remote of the user's own rclone.conf; anything else is refused unless the user
gives the root on the command line or opts in (``--trust-manifest-roots``).

:func:`classify_root` says what rclone would make of a root (the same parse as
rclone's ``fspath.Parse``: the part before the first ``:`` is a remote name
only when it is a valid rclone remote name); :func:`check_manifest_roots` is
the one check every command that acts on roots from a manifest or shard
metadata calls; :func:`redact_root` hides credentials in a connection string
for anything printed or written.
"""

from __future__ import annotations

import re
from typing import Literal

from xfer_core.errors import ConfigError, ManifestError

RootKind = Literal["local", "remote", "connection", "other", "invalid"]

#: rclone's remote names (fs/config: letters, digits, ``_ . + @``, inner ``-`` and space).
_REMOTE_NAME = re.compile(r"[\w.+@]+(?:[ -]+[\w.+@-]+)*")

#: Option names (of a connection string) or flag names that carry credentials.
SECRET_WORDS = re.compile(
    r"secret|passw|pass\b|pass_|_pass|token|key|credential|sas_?url|auth|bearer|cookie|header",
    re.IGNORECASE,
)

#: ... except names of paths and switches (``key_file``, ``key_use_agent``).
_NOT_SECRET = re.compile(r"_file$|_use_agent$", re.IGNORECASE)

REDACTED = "<redacted>"


def is_secret_name(name: str) -> bool:
    """True for an option name (``secret_access_key``; flags with ``-`` read as ``_``)
    that carries a credential: secret, pass(word), token, key, credentials, sas_url..."""
    name = name.replace("-", "_")
    return bool(SECRET_WORDS.search(name)) and not _NOT_SECRET.search(name)


TRUST_HINT = (
    "give the roots on the command line (--dest, or `xfer manifest rebase --source-root S "
    "--dest-root D`), or pass --trust-manifest-roots if you wrote this manifest yourself"
)


def classify_root(root: str) -> RootKind:
    """What rclone makes of ``root``.

    ``local``: a local path (absolute, or relative without a ``:`` before its
    first ``/``); ``remote``: ``name:path`` with a valid remote name;
    ``connection``: an on-the-fly backend (``:backend…:``) or a remote with
    options (``name,opt=…:``); ``other``: any other ``head:path`` rclone would
    not read as a plain remote; ``invalid``: empty, a NUL byte, or a leading
    ``-`` (would read as an option).
    """
    if not root or "\x00" in root or root.startswith("-"):
        return "invalid"
    if root.startswith("/"):
        return "local"
    head, colon, _path = root.partition(":")
    if not colon:
        return "local"
    if not head or "," in head:
        # ":backend:", ":backend,opt=v:" and "name,opt=v:" (option values may hold "/",
        # and ":" in quotes: "x,key_file=/k:" is the remote x with an option)
        return "connection"
    if "/" in head:
        return "local"
    if _REMOTE_NAME.fullmatch(head):
        return "remote"
    return "other"


def _split_connection(root: str) -> tuple[str, list[tuple[str, str, str]], str] | None:
    """``(name, [(key, "=" or "", raw value)…], path)`` of a connection string, or None.

    As rclone parses it: options follow the name after ``,``; a value may be quoted
    with ``"`` or ``'`` (a doubled quote is a literal one, and ``,``/``:`` inside
    quotes are literal); the raw value keeps its quotes so the root can be rebuilt."""
    if classify_root(root) != "connection":
        return None
    n = len(root)
    i = 1 if root.startswith(":") else 0
    while i < n and root[i] not in ",:":
        i += 1
    name = root[:i]
    items: list[tuple[str, str, str]] = []
    while i < n and root[i] == ",":
        i += 1
        k = i
        while i < n and root[i] not in "=,:":
            i += 1
        key = root[k:i]
        if i < n and root[i] == "=":
            i += 1
            v = i
            if i < n and root[i] in "\"'":
                q = root[i]
                i += 1
                while i < n:
                    if root[i] == q:
                        if i + 1 < n and root[i + 1] == q:
                            i += 2
                            continue
                        i += 1
                        break
                    i += 1
            while i < n and root[i] not in ",:":
                i += 1
            items.append((key, "=", root[v:i]))
        else:
            items.append((key, "", ""))
    if i >= n or root[i] != ":":
        return None
    return name, items, root[i + 1 :]


def root_secret_options(root: str) -> list[str]:
    """Names of the credential-looking options of a connection-string ``root``."""
    split = _split_connection(root)
    if split is None:
        return []
    return [key for key, _eq, _value in split[1] if is_secret_name(key)]


def redact_root(root: str) -> str:
    """``root`` with the values of credential-looking connection-string options
    (``secret_access_key``, ``pass``, ``token``, ``sas_url``…) replaced by ``<redacted>``."""
    split = _split_connection(root)
    if split is None:
        return root
    name, items, path = split
    opts = "".join(
        f",{key}{eq}{REDACTED if eq and is_secret_name(key) else value}" for key, eq, value in items
    )
    return f"{name}{opts}:{path}"


def check_manifest_roots(origin: str, roots: dict[str, str], *, trusted: bool = False) -> None:
    """Refuse roots from ``origin`` (a manifest or shard metadata) that rclone would not
    read as a local path or a plain ``remote:path``, unless ``trusted`` (the user gave
    them on the command line or passed ``--trust-manifest-roots``). Empty roots pass
    (the caller says what it needs); invalid ones (NUL, a leading ``-``) never do.

    ``roots`` maps a field name (``dest_root``) to its value. Raises
    :class:`~xfer_core.errors.ManifestError` (exit 2) with one line.
    """
    for field, root in roots.items():
        if not root:
            continue
        kind = classify_root(root)
        shown = redact_root(root)
        if kind == "invalid":
            why = "holds a NUL byte" if "\x00" in root else "starts with '-'"
            raise ManifestError(
                f"{origin}: {field} {shown!r} {why}; it is not a usable root",
                hint="`xfer manifest rebase --source-root S --dest-root D` sets new roots",
            )
        if trusted or kind in ("local", "remote"):
            continue
        what = (
            "an rclone connection string (options in the root can make rclone run commands)"
            if kind == "connection"
            else "not a local path or a plain remote:path"
        )
        raise ManifestError(
            f"{origin}: {field} {shown!r} is {what}; roots read from a manifest are "
            "refused unless they are local paths or remote:path",
            hint=TRUST_HINT,
        )


def check_root_credentials(root: str, what: str) -> None:
    """Refuse a root given by the user whose connection string carries credentials
    (``:s3,secret_access_key=…:``): they would be written into every manifest record
    and shown to every user of the machine in the process list of rclone."""
    secret = root_secret_options(root)
    if secret:
        raise ConfigError(
            f"{what} {redact_root(root)!r} carries credentials ({', '.join(secret)}) in a "
            "connection string; they would land in the manifest and in rclone's command line",
            hint="define the remote in rclone.conf (mode 0600, --rclone-config), or keep the "
            "option out of the root and set it in the environment "
            "(e.g. RCLONE_S3_SECRET_ACCESS_KEY=…)",
        )

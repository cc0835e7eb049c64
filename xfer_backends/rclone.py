"""Builtin shard engine ``rclone``: ``rclone copy --files-from-raw``, verified from its own report.

Copy: ``rclone copy --files-from-raw LIST --combined REPORT SRC DST`` with the
user's flags plus the shard's lookup flags (the cost model's choice, written by
:meth:`RcloneEngine.prepare` to ``shard_%06d.rclone`` beside the list: ``list``
its directories, ``objects`` one request each with ``--no-traverse``, and
``--no-check-dest --s3-no-check-bucket`` when the manifest says every record
must be sent (the destination was listed for the run) -- only on the first
attempt; a retry looks again). With ``--verify hash``
the copy compares by size and hash (``--checksum``), so an object already at
the destination is equal only when its hash is.

Verify, without listing anything again: rclone checks every object it sends
(the size, and the hash where both sides have one: an upload to S3 is read back
with a HEAD), and compares every object it skips (size and hash, or size and
modification time with ``--verify size``). So the copy is verified when it exits 0
and its report names *every* record of the list as equal (``=``), sent (``+``) or
re-sent (``*``). A name the report lacks -- or gives only as an error (``!``) or as
present at the destination only (``-``) -- was not found at the source: rclone
skips such names without failing, so the shard fails. Names are counted once
(``sort -u``): rclone's high-level retries may log a name twice. Counting uses
``sort``, ``cut`` and ``wc``: no Python, jq or awk on the compute node.

Flags that let a copy exit 0 without sending or checking everything
(``--dry-run``, ``--max-transfer``, ``--ignore-existing``, ``--ignore-checksum``,
``--s3-no-head``, ...; with ``--verify hash`` also ``--size-only`` and the like)
switch the shard to the old verification: ``rclone check --one-way
--files-from-raw LIST --combined - SRC DST`` after the copy (``--verify check``
asks for it always), which lists the shard's directories once more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from shlex import quote

from xfer_core.atomic import atomic_write_text
from xfer_core.bulk.engine import EngineContext, ShardEngine
from xfer_core.hookspecs import hookimpl

#: Flags after which a copy's exit 0 does not prove every record sent and checked.
UNPROVEN_COPY = frozenset(
    {
        "--dry-run",
        "-n",
        "--max-transfer",
        "--max-duration",
        "--cutoff-mode",
        "--ignore-existing",
        "--immutable",
        "--update",
        "-u",
        "--ignore-checksum",
        "--s3-no-head",
        "--compare-dest",
        "--copy-dest",
        "--max-size",
        "--min-size",
        "--max-age",
        "--min-age",
    }
)
#: Flags that choose how a copy compares (``--verify hash`` adds ``--checksum`` when none is given).
COMPARE = frozenset(
    {"--checksum", "-c", "--size-only", "--ignore-size", "--ignore-times", "-I", "--modify-window"}
)
#: Under ``--verify hash``, comparing without hashes is not a hash verification.
NO_HASH_COMPARE = frozenset({"--size-only", "--ignore-size"})

#: Lookup mode -> rclone flags (see :mod:`xfer_core.manifest.locality`).
LOOKUP_FLAGS = {"list": "--no-traverse=false", "objects": "--no-traverse"}

_FUNCTIONS = r"""
# xfer_root ROOT [SUB]: ROOT (or its directory SUB) with a trailing / (so rclone does
# not HEAD it to see whether it is a file)
xfer_root() {
    local root=$1
    case $root in *: | */) ;; *) root=$root/ ;; esac
    if [ -n "${2:-}" ]; then root=$root$2/; fi
    printf '%s' "$root"
}

# the shard's own settings, from shard_N.rclone (written at render): its lookup flags
# (line 1 on the first attempt, line 2 after) and its sub-root (line 3: the directory
# holding all of its names; its copy runs there and lists no parent directory).
# Sets XFER_SHARD_ARGS, XFER_S and XFER_D (the roots) and XFER_LIST (the names,
# relative to the sub-root: LOG.list when there is one)
xfer_shard_args() {  # FILES LOG
    local file="${1%.files}.rclone" first="" later="" sub=""
    XFER_SHARD_ARGS=()
    XFER_LIST=$1
    XFER_SUB=""
    if [ -r "$file" ]; then
        { IFS= read -r first; IFS= read -r later; IFS= read -r sub; } <"$file"
        if [ "${CUR_ATTEMPT:-1}" -gt 1 ]; then
            read -r -a XFER_SHARD_ARGS <<<"$later"
        else
            read -r -a XFER_SHARD_ARGS <<<"$first"
        fi
    fi
    # only a plain relative directory that every name lies in (else the shard's root)
    case $sub in *[!A-Za-z0-9._+=@,~/-]* | /* | */ | .* | */.*) sub="" ;; esac
    if [ -n "$sub" ] && LC_ALL=C cut -c1-$((${#sub} + 1)) -- "$1" | LC_ALL=C grep -qvxF -- "$sub/"; then
        sub=""
    fi
    XFER_S=$(xfer_root "$XFER_SRC" "$sub")
    XFER_D=$(xfer_root "$XFER_DST" "$sub")
    if [ -n "$sub" ]; then
        XFER_SUB=$sub/
        XFER_LIST=$2.list
        xfer_new_file "$XFER_LIST" || return 1
        LC_ALL=C cut -c$((${#sub} + 2))- -- "$1" >>"$XFER_LIST" || return 1
    fi
}

xfer_copy() {  # FILES LOG
    local rc last
    xfer_shard_args "$1" "$2" || return 1
    if [ -e "$2.report" ] || [ -L "$2.report" ]; then rm -f "$2.report"; fi
    xfer_tool copy ${XFER_RCLONE_ARGS[@]+"${XFER_RCLONE_ARGS[@]}"} ${XFER_SPLIT_ARGS[@]+"${XFER_SPLIT_ARGS[@]}"} \
        ${XFER_COPY_ARGS[@]+"${XFER_COPY_ARGS[@]}"} \
        ${XFER_SHARD_ARGS[@]+"${XFER_SHARD_ARGS[@]}"} --combined "$2.report" \
        --files-from-raw "$XFER_LIST" -- "$XFER_S" "$XFER_D" >>"$2" 2>&1 </dev/null
    rc=$?
    [ "$XFER_LIST" = "$1" ] || rm -f "$XFER_LIST"
    if [ "$rc" -ne 0 ]; then
        # rclone's last ERROR or CRITICAL line (a dead endpoint gives only CRITICAL ones)
        last=$(LC_ALL=C grep -aE ' (ERROR|CRITICAL) ?:' "$2" | tail -n 1)
        # else the first line that is not the worker's own (e.g. srun refusing an option)
        [ -n "$last" ] || last=$(LC_ALL=C grep -av '^xfer worker: ' "$2" | grep -am 1 .)
        printf 'rclone copy exit %d: %s\n' "$rc" "${last:-no output}" >"$XFER_REASON"
    fi
    return "$rc"
}

xfer_verify() {  # FILES LOG
    local rc
    if [ "$XFER_VERIFY_MODE" != check ]; then
        xfer_verify_report "$1" "$2"
        return
    fi
    xfer_shard_args "$1" "$2" || return 1
    xfer_verify_check "$XFER_LIST" "$2"
    rc=$?
    [ "$XFER_LIST" = "$1" ] || rm -f "$XFER_LIST"
    return "$rc"
}

# the copy's own report: every name of the list sent, re-sent or found equal. The
# report names them relative to the copy's sub-root: the shard's names less one common
# prefix, so the counts compare as they are; the names are rebuilt only to say which
# are missing.
xfer_verify_report() {  # FILES LOG
    local report="$2.report" expected seen errors first=""
    [ -f "$report" ] || : >"$report"
    expected=$(LC_ALL=C sort -u "$1" | wc -l)
    seen=$(LC_ALL=C grep -a '^[=+*] ' "$report" | cut -c3- | LC_ALL=C sort -u | wc -l)
    errors=$(LC_ALL=C grep -ac '^! ' "$report")
    echo "xfer verify: rclone copy report: $seen of $expected sent or equal (checked by the copy), $errors error lines, $((expected - seen)) missing at source" >>"$2"
    if [ "$seen" -lt "$expected" ] && xfer_shard_args "$1" "$2"; then
        # the names of the list the copy never reported: gone from the source
        LC_ALL=C grep -a '^[=+*] ' "$report" | cut -c3- | LC_ALL=C grep -vxF -f - "$XFER_LIST" |
            head -n 20 | sed "s|^|missing at source: $XFER_SUB|" >>"$2"
        first=$(LC_ALL=C grep -a '^[=+*] ' "$report" | cut -c3- | LC_ALL=C grep -vxF -f - "$XFER_LIST" | head -n 1)
        first=" (first: $XFER_SUB$first)"
        [ "$XFER_LIST" = "$1" ] || rm -f "$XFER_LIST"
    fi
    rm -f "$report"
    if [ "$seen" -eq "$expected" ] && [ "$expected" -gt 0 ]; then
        return 0
    fi
    printf 'verify: %d of %d records not verified (0 missing at destination, 0 differ, %d errors, %d missing at source%s)\n' \
        "$((expected - seen))" "$expected" "$errors" "$((expected - seen))" "$first" >"$XFER_REASON"
    return 1
}

# a listing check of every record (--verify check, or flags the report cannot vouch for)
xfer_verify_check() {  # FILES LOG
    local combined="$2.check" rc expected ok missing differ errors unseen first
    rm -f "$2.report"
    xfer_new_file "$combined" || return 1
    xfer_tool check ${XFER_RCLONE_ARGS[@]+"${XFER_RCLONE_ARGS[@]}"} ${XFER_SPLIT_ARGS[@]+"${XFER_SPLIT_ARGS[@]}"} \
        ${XFER_CHECK_ARGS[@]+"${XFER_CHECK_ARGS[@]}"} \
        --one-way --files-from-raw "$1" --combined - -- "$XFER_S" "$XFER_D" \
        >>"$combined" 2>>"$2" </dev/null
    rc=$?
    expected=$(wc -l <"$1")
    ok=$(LC_ALL=C grep -ac '^= ' "$combined")
    missing=$(LC_ALL=C grep -ac '^+ ' "$combined")
    differ=$(LC_ALL=C grep -ac '^\* ' "$combined")
    errors=$(LC_ALL=C grep -ac '^! ' "$combined")
    unseen=$((expected - ok - missing - differ - errors))
    first=""
    {
        echo "xfer verify: rclone check exit $rc: $ok of $expected equal, $missing missing at destination, $differ differ, $errors errors, $unseen missing at source"
        LC_ALL=C grep -av '^= ' "$combined" | head -n 20
        if [ "$unseen" -gt 0 ]; then
            # the names of the list that the check never reported: gone from the source
            LC_ALL=C sed 's/^. //' "$combined" | LC_ALL=C grep -vxF -f - "$1" | head -n 20 |
                sed "s|^|missing at source: $XFER_SUB|"
        fi
    } >>"$2"
    if [ "$unseen" -gt 0 ]; then
        first=$(LC_ALL=C sed 's/^. //' "$combined" | LC_ALL=C grep -vxF -f - "$1" | head -n 1)
        first=" (first: $XFER_SUB$first)"
    fi
    rm -f "$combined"
    if [ "$ok" -eq "$expected" ] && [ "$expected" -gt 0 ]; then
        return 0
    fi
    printf 'verify: %d of %d records not verified (%d missing at destination, %d differ, %d errors, %d missing at source%s)\n' \
        "$((expected - ok))" "$expected" "$missing" "$differ" "$errors" "$unseen" "$first" >"$XFER_REASON"
    return 1
}
"""


def _flag_names(flags: Sequence[str]) -> set[str]:
    return {f.partition("=")[0] for f in flags if f.startswith("-")}


def verify_mode(ctx: EngineContext) -> str:
    """``report`` (the copy's own checks) or ``check`` (an ``rclone check`` after the copy)."""
    names = _flag_names(ctx.flags)
    if ctx.verify == "check" or names & UNPROVEN_COPY:
        return "check"
    if ctx.verify == "hash" and names & NO_HASH_COMPARE:
        return "check"
    return "report"


#: rclone's parallelism flags: the machine's total when shards share one machine.
PARALLEL = ("--transfers", "--checkers")


def parallel_flags(flags: Sequence[str]) -> list[tuple[str, int]]:
    """``(name, value)`` of each of :data:`PARALLEL` in ``flags`` (``--transfers 16`` or
    ``--transfers=16``; the last one given wins, as in rclone), in :data:`PARALLEL`'s
    order. A value that is not a positive number is left to rclone to refuse."""
    found: dict[str, int] = {}
    for k, flag in enumerate(flags):
        name, eq, value = flag.partition("=")
        if name not in PARALLEL:
            continue
        if not eq:
            value = flags[k + 1] if k + 1 < len(flags) else ""
        if value.isascii() and value.isdigit() and int(value) > 0:
            found[name] = int(value)
    return [(name, found[name]) for name in PARALLEL if name in found]


#: First attempt of a shard that does not look at the destination: nor at its bucket
#: (the run's listing of the destination just found it; rclone would otherwise try to
#: create it before its first upload or copy, one PUT per shard). A retry checks again.
NO_CHECK_DEST = "--no-check-dest --s3-no-check-bucket"


def shard_flags(lookup: str, check_dest: bool) -> tuple[str, str]:
    """(first attempt, later attempts) flags of a shard, one line each."""
    later = LOOKUP_FLAGS.get(lookup, "")
    first = later if check_dest else f"{later} {NO_CHECK_DEST}".strip()
    return first, later


class RcloneEngine(ShardEngine):
    """Copy a shard with ``rclone copy --files-from-raw``, verified from its report."""

    name = "rclone"
    tool = "rclone"
    description = "rclone copy --files-from-raw, verified by the copy's own checks of every record"

    def render_functions(self, ctx: EngineContext) -> str:
        args = []
        if ctx.config_path:
            args += ["--config", ctx.config_path]
        args += list(ctx.flags)
        check_args = ["--size-only"] if ctx.verify == "size" else []
        copy_args = []
        if ctx.verify in ("hash", "check") and not _flag_names(ctx.flags) & COMPARE:
            copy_args.append("--checksum")
        header = "\n".join(
            [
                f"XFER_SRC={quote(ctx.source_root)}",
                f"XFER_DST={quote(ctx.dest_root)}",
                f"XFER_VERIFY_MODE={verify_mode(ctx)}",
                "XFER_RCLONE_ARGS=(" + " ".join(quote(a) for a in args) + ")",
                "XFER_COPY_ARGS=(" + " ".join(quote(a) for a in copy_args) + ")",
                "XFER_CHECK_ARGS=(" + " ".join(quote(a) for a in check_args) + ")",
            ]
        )
        return header + "\n" + _FUNCTIONS

    def verify_mode(self, ctx: EngineContext) -> str:
        return verify_mode(ctx)

    def machine_flags(self, flags: Sequence[str]) -> list[tuple[str, int]]:
        """``--transfers`` and ``--checkers`` as given (the last of each wins, as in rclone)."""
        return parallel_flags(flags)

    def prepare(self, run_dir: Path, shard_indices: Sequence[int], ctx: EngineContext) -> None:
        """Write each shard's lookup flags (``shard_%06d.rclone``) from ``shards.meta.json``."""
        from xfer_core.manifest.shard import load_shard_meta

        shards = Path(run_dir) / "shards"
        meta = load_shard_meta(shards, check_files=False)
        wanted = set(shard_indices)
        for info in meta.shards:
            if info.index in wanted:
                first, later = shard_flags(info.lookup, info.check_dest)
                path = shards / f"shard_{info.index:06d}.rclone"
                text = f"{first}\n{later}\n{info.subdir}\n"
                if not path.is_file() or path.read_text() != text:
                    atomic_write_text(path, text)


@hookimpl
def register_shard_engines(register: Callable[[ShardEngine], None]) -> None:
    register(RcloneEngine())

"""Builtin shard engine ``rclone``: ``rclone copy --files-from-raw`` then ``rclone check``.

Copy: ``rclone copy --files-from-raw LIST SRC DST`` with the user's flags. rclone
skips names of the list that do not exist at the source without failing, so
copy success proves nothing; verification does:

Verify: ``rclone check --one-way --files-from-raw LIST --combined - SRC DST``
prints one line per object it compared (``= name`` equal, ``- name`` missing at
the destination, ``* name`` differs, ``! name`` error). The shard is verified
only when the number of ``=`` lines equals the number of names in the list; any
name the check did not report at all is missing at the source. Sizes are always
compared; hashes too when both sides have a common one (rclone's default;
``verify="size"`` adds ``--size-only``). Counting uses ``grep -c`` and ``wc -l``:
no Python, jq or awk on the compute node.
"""

from __future__ import annotations

from collections.abc import Callable
from shlex import quote

from xfer_core.bulk.engine import EngineContext, ShardEngine
from xfer_core.hookspecs import hookimpl

_FUNCTIONS = r"""
xfer_copy() {  # FILES LOG
    local rc last
    xfer_tool copy ${XFER_RCLONE_ARGS[@]+"${XFER_RCLONE_ARGS[@]}"} --files-from-raw "$1" -- "$XFER_SRC" "$XFER_DST" \
        >>"$2" 2>&1 </dev/null
    rc=$?
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
    local combined="$2.check" rc expected ok missing differ errors unseen first
    xfer_tool check ${XFER_RCLONE_ARGS[@]+"${XFER_RCLONE_ARGS[@]}"} ${XFER_CHECK_ARGS[@]+"${XFER_CHECK_ARGS[@]}"} \
        --one-way --files-from-raw "$1" --combined - -- "$XFER_SRC" "$XFER_DST" \
        >"$combined" 2>>"$2" </dev/null
    rc=$?
    expected=$(wc -l <"$1")
    ok=$(LC_ALL=C grep -ac '^= ' "$combined")
    missing=$(LC_ALL=C grep -ac '^- ' "$combined")
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
                sed 's/^/missing at source: /'
        fi
    } >>"$2"
    if [ "$unseen" -gt 0 ]; then
        first=$(LC_ALL=C sed 's/^. //' "$combined" | LC_ALL=C grep -vxF -f - "$1" | head -n 1)
        first=" (first: $first)"
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


class RcloneEngine(ShardEngine):
    """Copy a shard with ``rclone copy --files-from-raw``, verify with ``rclone check``."""

    name = "rclone"
    tool = "rclone"
    description = "rclone copy --files-from-raw, then rclone check of every record"

    def render_functions(self, ctx: EngineContext) -> str:
        args = []
        if ctx.config_path:
            args += ["--config", ctx.config_path]
        args += list(ctx.flags)
        check_args = ["--size-only"] if ctx.verify == "size" else []
        header = "\n".join(
            [
                f"XFER_SRC={quote(ctx.source_root)}",
                f"XFER_DST={quote(ctx.dest_root)}",
                "XFER_RCLONE_ARGS=(" + " ".join(quote(a) for a in args) + ")",
                "XFER_CHECK_ARGS=(" + " ".join(quote(a) for a in check_args) + ")",
            ]
        )
        return header + "\n" + _FUNCTIONS


@hookimpl
def register_shard_engines(register: Callable[[ShardEngine], None]) -> None:
    register(RcloneEngine())

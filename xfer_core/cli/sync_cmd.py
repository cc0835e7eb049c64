"""``xfer sync`` (push) and ``xfer fetch`` (pull): one implementation, a direction."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from xfer_core.output import Output, current, set_current

ClustersOpt = Annotated[
    list[str] | None,
    typer.Option(
        "-c", "--clusters", metavar="NAME", help="Cluster to use. Repeatable. Default: all."
    ),
]
AliasesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "-a", "--aliases", metavar="ALIAS", help="Pair alias to move. Repeatable. Default: all."
    ),
]
BackendOpt = Annotated[
    str | None,
    typer.Option(
        "-b",
        "--backend",
        metavar="NAME",
        help="rsync, sftp or an installed plugin. Default: the cluster's transfer_backend, "
        "then [global]'s, then rsync (sftp when rsync is not on PATH).",
    ),
]
ExcludeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "-e",
        "--exclude",
        metavar="PATTERN",
        help="Extra exclude pattern (rsync syntax), applied last. Repeatable.",
    ),
]
DryRunOpt = Annotated[
    bool,
    typer.Option(
        "-n", "--dry-run", help="List what would be sent or deleted; change nothing anywhere."
    ),
]
JobsOpt = Annotated[
    int,
    typer.Option("-j", "--jobs", min=1, metavar="N", help="Pairs moved at once (across clusters)."),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="One JSON event per line on stdout, then a summary.")
]
ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config",
        metavar="FILE",
        help="Config file. Default: $XFER_CONFIG, ~/.config/xfer/remotes.toml, "
        "then ~/.config/sbatchman/remotes-config.toml.",
    ),
]
AcceptOpt = Annotated[
    bool,
    typer.Option(
        "--accept-new-host-key",
        help="Trust and remember the key of a host never seen before. A changed key is "
        "always refused.",
    ),
]
BatchOpt = Annotated[
    bool,
    typer.Option(
        "--batch",
        help="Never ask for a passphrase, one-time password or password: a login that "
        "needs one fails at once (also without a terminal, and with --json). See docs/login.md.",
    ),
]
DeleteOpt = Annotated[
    bool,
    typer.Option(
        "--delete",
        help="Delete destination files that are gone from the source (never excluded ones).",
    ),
]
CompressOpt = Annotated[
    bool,
    typer.Option(
        "-z", "--compress", help="Compress data on the wire (rsync -z; zlib on the SSH link)."
    ),
]
ChecksumOpt = Annotated[
    bool,
    typer.Option("--checksum", help="Compare file content, not size and modification time."),
]


def _run(
    direction: str,
    clusters: list[str] | None,
    aliases: list[str] | None,
    backend: str | None,
    exclude: list[str] | None,
    dry_run: bool,
    jobs: int,
    json: bool,
    config: str | None,
    accept_new_host_key: bool,
    delete: bool,
    checksum: bool,
    compress: bool = False,
    batch: bool = False,
) -> None:
    from xfer_core.config.load import read_config
    from xfer_core.config.paths import resolve_config_path
    from xfer_core.sync.backend import TransferOptions
    from xfer_core.sync.engine import SyncRequest, run_sync
    from xfer_core.sync.progress import reporter_for
    from xfer_core.sync.ssh_login import is_interactive

    out = current()
    if json and not out.json:
        out = Output(json=True, quiet=out.quiet, verbose=out.verbose)
        set_current(out)
    location = resolve_config_path(config)
    if not location.exists and location.origin == "default" and _offer_config(location.path):
        return
    loaded = read_config(location)
    request = SyncRequest(
        direction="push" if direction == "push" else "pull",
        clusters=clusters or (),
        aliases=aliases or (),
        backend=backend,
        excludes=exclude or (),
        dry_run=dry_run,
        delete=delete,
        checksum=checksum,
        jobs=jobs,
        accept_new_host_key=accept_new_host_key,
        options=TransferOptions(compress=compress),
        interactive=is_interactive(json=out.json, batch=batch),
    )
    summary = run_sync(loaded, request, reporter_for(out, dry_run=dry_run))
    if not summary.ok:
        raise typer.Exit(1)


def _offer_config(path: Path) -> bool:
    """First run without any config: on a terminal, offer to write the starter file (as sbatchman does).

    Returns True when it was written (the caller stops: the file has no clusters yet).
    Never asks without a terminal on stdin and stderr; then the caller's usual error follows.
    """
    import sys

    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return False
    from xfer_core.config.edit import STARTER_CONFIG, write_config
    from xfer_core.config.paths import display_path

    shown = display_path(path)
    print(
        f"xfer: no config yet. Create {shown} with a commented example? [Y/n] ",
        end="",
        file=sys.stderr,
        flush=True,
    )
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("", "y", "yes"):
        return False
    write_config(path, STARTER_CONFIG)
    current().info(
        f"wrote {shown}; add a cluster with `xfer config add-cluster` (or edit it), then run again"
    )
    return True


SYNC_HELP = """Push every `[[clusters.sync_dirs]]` pair (local → cluster).

    A file is sent when the cluster lacks it, or its size or modification time
    differs and the cluster's copy is not newer (rsync `--update`). Missing remote
    directories are created; `~` and `$VAR` in `remote` are expanded on the
    cluster. Excludes merge in this order: `common_excludes`, `[global]
    sync_excludes`, the cluster's `excludes` and `sync_excludes`, the pair's
    `excludes`, then `-e`.

    Exit status: 0 all pairs done; 1 a pair or cluster failed (the others still
    ran); 2 bad option or config; 3 no usable backend.

    Examples:

        xfer sync                                      # all clusters, all sync_dirs

        xfer sync -c cluster-a                         # one cluster

        xfer sync -a myproject                         # one alias on every cluster

        xfer sync -c cluster-a -a myproject -a experiments

        xfer sync --dry-run                            # list what would be uploaded

        xfer sync -e checkpoints -e wandb              # extra excludes

        xfer sync -b sftp                              # SFTP instead of rsync

        xfer sync -z                                   # compress on the wire (slow links)

        xfer sync -j 4 --json | jq 'select(.event == "summary")'
    """

FETCH_HELP = """Pull every `[[clusters.fetch_dirs]]` pair (cluster → local): `xfer sync`'s twin.

    Same options, skip rule and exit status as `xfer sync`; the excludes merge
    `common_excludes`, `[global] fetch_excludes`, the cluster's `excludes` and
    `fetch_excludes`, the pair's `excludes`, then `-e`. Missing local directories
    are created.

    Examples:

        xfer fetch                                     # all clusters, all fetch_dirs

        xfer fetch -c cluster-a -a results

        xfer fetch --dry-run                           # list what would be downloaded

        xfer fetch -e '*.ckpt' -b sftp
    """


def _command(direction: str, doc: str) -> Callable[..., None]:
    """The Typer command for one direction (``sync`` and ``fetch`` share every option)."""

    def command(
        clusters: ClustersOpt = None,
        aliases: AliasesOpt = None,
        backend: BackendOpt = None,
        exclude: ExcludeOpt = None,
        dry_run: DryRunOpt = False,
        jobs: JobsOpt = 1,
        json: JsonOpt = False,
        config: ConfigOpt = None,
        accept_new_host_key: AcceptOpt = False,
        delete: DeleteOpt = False,
        checksum: ChecksumOpt = False,
        compress: CompressOpt = False,
        batch: BatchOpt = False,
    ) -> None:
        _run(
            direction,
            clusters,
            aliases,
            backend,
            exclude,
            dry_run,
            jobs,
            json,
            config,
            accept_new_host_key,
            delete,
            checksum,
            compress,
            batch,
        )

    command.__doc__ = doc
    command.__name__ = "sync" if direction == "push" else "fetch"
    return command


def register(app: typer.Typer) -> None:
    """Add ``sync`` and ``fetch`` to ``app``."""
    app.command("sync")(_command("push", SYNC_HELP))
    app.command("fetch")(_command("pull", FETCH_HELP))

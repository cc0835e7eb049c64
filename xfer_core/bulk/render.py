"""Render a run dir's scripts: ``worker.sh``, the scheduler's job files (its
:meth:`~xfer_core.bulk.scheduler.Scheduler.job_files`), ``config.resolved.json``, and
``files.sha256`` (each shard list's digest from ``shards.meta.json``, which the
worker checks before it copies a shard).

Every value that reaches a shell is quoted with :func:`shlex.quote`; a scheduler
checks the values it writes into its own directives against strict formats. ``rclone.conf`` is referenced by path only: it
must be mode 0600, is mounted read-only into containers, and is never copied
into the run dir or printed.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from xfer_core import __version__
from xfer_core.atomic import atomic_write_text
from xfer_core.bulk.engine import EngineContext, ShardEngine
from xfer_core.bulk.rundir import check_run_dir, make_subdirs, no_group_write
from xfer_core.bulk.runtime import ContainerRuntime
from xfer_core.errors import ConfigError, XferError
from xfer_core.manifest.roots import REDACTED, is_secret_name, redact_root

if TYPE_CHECKING:
    from xfer_core.bulk.scheduler import Scheduler
    from xfer_core.manifest.shard import ShardMeta

_SENTINEL = "\x00xfer-args\x00"


def sh(value: str | int) -> str:
    """``value`` quoted for bash (shorthand of :func:`shlex.quote`)."""
    return shlex.quote(str(value))


class RenderOptions(msgspec.Struct, kw_only=True):
    """Every option of a rendered run (frozen into ``config.resolved.json``)."""

    num_shards: int | None = None
    array_concurrency: int = 16
    job_name: str = "xfer"
    time_limit: str = "24:00:00"
    partition: str | None = None
    cpus_per_task: int = 4
    mem: str = "8G"
    rclone_image: str | None = None
    rclone_config: str | None = None
    #: Extra flags for the engine's tool, one string as typed (split with shlex).
    rclone_flags: str = ""
    #: Runtime name; None picks ``pyxis`` when an image is given, else ``host``.
    runtime: str | None = None
    max_attempts: int = 3
    #: The scheduler whose job files are rendered (``xfer run``: the one it picked).
    scheduler: str = "slurm"
    #: The scheduler's own options (``-O NAME=VALUE``), checked against its ``Options``.
    scheduler_options: dict[str, Any] = {}
    engine: str = "rclone"
    #: ``hash`` (size + hash where both sides have one), ``size``, or ``check``
    #: (hash, plus a listing check of every record after the copy).
    verify: str = "hash"
    #: None: ask the scheduler (:meth:`~xfer_core.bulk.scheduler.Scheduler.max_tasks`).
    max_array_size: int | None = None
    #: Seconds before the time limit when the scheduler warns the worker (USR1).
    signal_seconds: int = 120
    #: Override the roots recorded in the shards (default: from shard 0's first record).
    #: Roots given here come from the user, not from a file: they are trusted.
    source_root: str | None = None
    dest_root: str | None = None
    #: More ``srun`` flags for the pyxis runtime (``--pyxis-extra``), one string as typed.
    pyxis_extra: str = ""
    #: Accept rclone connection strings among the roots read from shards.meta.json
    #: (``--trust-manifest-roots``); without it only local paths and ``remote:path``.
    trust_manifest_roots: bool = False
    #: The engine's parallelism flags (rclone: ``--transfers``/``--checkers``) are the
    #: machine's total on the local scheduler, split across the shards it runs at once
    #: (``--no-split-transfers``: each shard gets the full values).
    split_transfers: bool = True


class ResolvedConfig(msgspec.Struct, kw_only=True):
    """``config.resolved.json``: every option, frozen, plus what was derived. No secrets."""

    xfer_version: str
    rendered_at: float
    run_dir: str
    source_root: str
    dest_root: str
    num_shards: int
    #: Array tasks; task t runs shards t, t+tasks, ...
    tasks: int
    #: Most tasks per submission (0: no limit).
    max_array_size: int
    array_concurrency: int
    max_attempts: int
    engine: str
    runtime: str
    rclone_image: str | None
    #: Path only; the file is never copied or read into the run dir.
    rclone_config: str | None
    rclone_flags: list[str]
    verify: str
    job_name: str
    time_limit: str
    partition: str | None
    cpus_per_task: int
    mem: str
    signal_seconds: int
    #: The runtime-wrapped tool command (``"$@"`` = the engine's arguments).
    tool_command: str
    #: The scheduler whose job files were rendered, and its options (``-O``).
    scheduler: str = ""
    scheduler_options: dict[str, Any] = {}
    #: The job files it rendered.
    job_files: list[str] = []
    #: ``--pyxis-extra``, split.
    pyxis_extra: list[str] = []
    #: Why this runtime (``--runtime``, or which default), printed by the CLI.
    runtime_reason: str = ""
    #: The engine's parallelism flags as given (``--transfers 16 --checkers 32``): the
    #: machine's total, which the local scheduler splits across the shards it runs at
    #: once (``worker.sh``'s ``XFER_SPLIT_FLAGS``); empty with ``--no-split-transfers``.
    split_flags: list[str] = []


# --- checks ------------------------------------------------------------------------


def check_rclone_config(path: str | os.PathLike[str]) -> str:
    """The absolute path of an rclone config that exists and is private (mode 0600)."""
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ConfigError(
            f"rclone config {str(p)!r} does not exist",
            hint="pass --rclone-config PATH of an existing rclone.conf",
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"rclone config {str(p)!r} is not a regular file")
    if st.st_mode & 0o077:
        q = sh(str(p))
        raise ConfigError(
            f"rclone config {str(p)!r} is mode {stat.S_IMODE(st.st_mode):04o}; it holds "
            "credentials and must be readable by its owner only",
            hint=f"chmod 600 {q}",
        )
    return str(p.resolve())


_FLAG_NAME = re.compile(r"--[A-Za-z0-9][A-Za-z0-9_-]*")


def _is_secret_flag(name: str) -> bool:
    """``--s3-secret-access-key``, ``--header``, ``--azureblob-sas-url``,
    ``--drive-service-account-credentials``, ``--webdav-bearer-token``..."""
    # only plain flag names: the name becomes an environment variable's name in secrets.env
    return bool(_FLAG_NAME.fullmatch(name)) and is_secret_name(name[2:])


class SecretFlags(msgspec.Struct, frozen=True):
    """Flags split by :func:`split_secret_flags`."""

    #: The flags without the credential-looking ones (safe in an argv and in files).
    kept: list[str]
    #: ``RCLONE_<FLAG>`` -> value for each credential-looking flag with a value.
    env: dict[str, str]
    #: The flags as they may be shown: credential values replaced by ``<redacted>``.
    shown: list[str]
    #: Credential flags given more than once (only one value fits in ``env``).
    repeated: list[str]


def split_secret_flags(flags: Sequence[str]) -> SecretFlags:
    """Split credential-looking flags (``--s3-secret-access-key X``, ``--header=…``) off.

    A flag takes a value when written ``--flag=value`` or followed by an argument not
    starting with ``-``; one without a value (``--sftp-key-use-agent``) is kept as it is.
    rclone reads every flag from ``RCLONE_<FLAG>`` too, so the values go to the
    environment instead of the command line. A credential flag given twice cannot (one
    environment variable each): it is listed in ``repeated``.
    """
    kept: list[str] = []
    env: dict[str, str] = {}
    shown: list[str] = []
    repeated: list[str] = []
    i = 0
    while i < len(flags):
        flag = flags[i]
        name, eq, value = flag.partition("=")
        takes_next = not eq and i + 1 < len(flags) and not flags[i + 1].startswith("-")
        if not _is_secret_flag(name) or not (eq or takes_next):
            kept.append(flag)
            shown.append(flag)
            i += 1
            continue
        if takes_next:
            value = flags[i + 1]
        var = "RCLONE_" + name[2:].replace("-", "_").upper()
        if var in env:
            repeated.append(name)
        env[var] = value
        shown += [name, REDACTED] if takes_next else [f"{name}={REDACTED}"]
        i += 2 if takes_next else 1
    return SecretFlags(kept=kept, env=env, shown=shown, repeated=repeated)


def redact_flags(flags: Sequence[str]) -> list[str]:
    """``flags`` with the values of credential-looking flags (``--s3-secret-access-key X``,
    ``--header 'Authorization: …'``) replaced by ``<redacted>``, for anything shown."""
    return split_secret_flags(flags).shown


#: The run dir's file of credentials from ``--rclone-flags`` (mode 0600; worker.sh reads it).
SECRETS_ENV = "secrets.env"


def _secret_flags(flags: list[str], engine: ShardEngine, runtime: ContainerRuntime) -> SecretFlags:
    """The credential flags of ``--rclone-flags``, to be passed through the environment."""
    secrets = split_secret_flags(flags)
    if not secrets.env:
        return secrets
    if engine.tool != "rclone":
        # RCLONE_<FLAG> means nothing to another tool: its flags stay as given (worker.sh
        # is 0700 either way), shown redacted
        from xfer_core.output import current

        current().warn(
            f"--rclone-flags for the {engine.name} engine look like credentials "
            f"({' '.join(secrets.shown)}): they are on {engine.tool}'s command line; prefer "
            "its own config file or environment"
        )
        return SecretFlags(kept=list(flags), env={}, shown=secrets.shown, repeated=[])
    if secrets.repeated:
        raise ConfigError(
            f"--rclone-flags gives {secrets.repeated[0]} twice; credential flags reach rclone "
            "through one environment variable each",
            hint="put the remote's credentials in rclone.conf (--rclone-config)",
        )
    if not runtime.passes_host_env:
        raise ConfigError(
            f"--rclone-flags carries credentials, and runtime {runtime.name!r} would need them "
            "on its command line to pass them into the container",
            hint="put them in rclone.conf (--rclone-config: mounted read-only)",
        )
    return secrets


def parse_flags(flags: str) -> list[str]:
    """Split ``--rclone-flags`` like a shell would (quotes group, nothing expands)."""
    try:
        return shlex.split(flags)
    except ValueError as exc:
        raise ConfigError(f"--rclone-flags {flags!r}: {exc}") from None


# --- shards ------------------------------------------------------------------------


def load_meta(run_dir: Path) -> ShardMeta:
    """The current sharding of ``run_dir`` (``shards/shards.meta.json``)."""
    from xfer_core.manifest.shard import load_shard_meta

    shards_dir = run_dir / "shards"
    if not (shards_dir / "shards.meta.json").is_file():
        raise XferError(
            f"{shards_dir}: no shards.meta.json",
            hint="shard the manifest first: xfer manifest shard --in RUN/manifest.jsonl "
            "--outdir RUN/shards --num-shards N",
        )
    return load_shard_meta(shards_dir)


# --- rendering -----------------------------------------------------------------------


def runtime_choice(opts: RenderOptions) -> tuple[str, str]:
    """``(runtime name, why)``: ``--runtime``, else ``pyxis`` when an image is given (the
    seed's setup), else ``host``. ``why`` is printed, so the choice is never silent."""
    if opts.runtime:
        return opts.runtime, "--runtime"
    if opts.rclone_image:
        return "pyxis", "the default with --rclone-image; --runtime NAME picks another"
    return "host", "the default without --rclone-image"


def with_pyxis_extra(runtime: str, argv: list[str], extra: Sequence[str]) -> list[str]:
    """``argv`` with ``--pyxis-extra``'s flags after ``srun`` (pyxis only; others: a warning)."""
    if not extra:
        return argv
    if runtime != "pyxis" or argv[:1] != ["srun"]:
        from xfer_core.output import current

        current().warn(f"--pyxis-extra ignored: the runtime is {runtime}, not pyxis")
        return argv
    return [argv[0], *extra, *argv[1:]]


def tool_function_body(
    runtime: ContainerRuntime,
    engine: ShardEngine,
    ctx: EngineContext,
    image: str | None,
    pyxis_extra: Sequence[str] = (),
) -> str:
    """The body of ``xfer_tool``: the runtime-wrapped tool with ``"$@"`` for the arguments.

    A runtime that runs the host's binary (``needs_image`` False) gets the tool's
    absolute path, resolved now (``$XFER_RCLONE``, PATH, the wheel's copy): worker.sh
    may run with another PATH and working directory.
    """
    from xfer_core.tools import require_tool

    tool = engine.tool if runtime.needs_image else require_tool(engine.tool)
    argv = runtime.wrap(
        [tool, _SENTINEL],
        image=image if runtime.needs_image else None,
        mounts=engine.mounts(ctx),
    )
    argv = with_pyxis_extra(runtime.name, argv, pyxis_extra)
    if argv.count(_SENTINEL) != 1:
        raise XferError(
            f"runtime {runtime.name!r} dropped or repeated the tool's arguments",
            hint="a runtime's wrap() must keep every argv element",
        )
    return " ".join('"$@"' if a == _SENTINEL else sh(a) for a in argv)


def render_worker(
    *,
    run_dir: Path,
    num_shards: int,
    tasks: int,
    max_attempts: int,
    runtime: ContainerRuntime,
    engine: ShardEngine,
    ctx: EngineContext,
    image: str | None,
    pyxis_extra: Sequence[str] = (),
    split_flags: Sequence[str] = (),
) -> tuple[str, str]:
    """``(worker.sh text, xfer_tool body)``. ``split_flags``: the engine's parallelism
    flags, the machine's total (see ``xfer_split_args`` in the template)."""
    template = resources.files("xfer_core.bulk").joinpath("templates/worker.sh").read_text()
    settings = "\n".join(
        [
            f"RUN_DIR={sh(str(run_dir))}",
            f"NUM_SHARDS={int(num_shards)}",
            f"TASKS={int(tasks)}",
            f"MAX_ATTEMPTS={int(max_attempts)}",
            "XFER_SPLIT_FLAGS=(" + " ".join(sh(a) for a in split_flags) + ")",
        ]
    )
    tool = tool_function_body(runtime, engine, ctx, image, pyxis_extra)
    text = fill_template(
        template,
        {
            "SETTINGS": settings,
            "RUNTIME": runtime.name,
            "TOOL": tool,
            "ENGINE": engine.name,
            "ENGINE_FUNCTIONS": engine.render_functions(ctx),
        },
    )
    return text, tool


_MARKER = re.compile(r"@@([A-Z_]+)@@")


def fill_template(template: str, values: dict[str, str]) -> str:
    """``template`` with every ``@@NAME@@`` replaced by ``values[NAME]`` in one pass: a
    value that holds a marker (a run dir named ``@@TOOL@@``) is never substituted again.
    An unknown marker is an error (a template and its renderer out of step)."""
    unknown = sorted({m for m in _MARKER.findall(template) if m not in values})
    if unknown:
        raise XferError(
            f"worker template has unknown markers: {', '.join(unknown)}",
            hint="reinstall xfer: the template and its renderer do not match",
        )
    return _MARKER.sub(lambda m: values[m.group(1)], template)


#: What the batch options may hold whatever the scheduler (each checks its own format too):
#: they are written into job file directives, never through a shell.
_BATCH_VALUES = {
    "--job-name": (re.compile(r"[A-Za-z0-9_.+@=-]{1,200}"), "xfer-run1"),
    "--partition": (re.compile(r"[A-Za-z0-9_.@*-]+(,[A-Za-z0-9_.@*-]+)*"), "transfer"),
    "--time-limit": (re.compile(r"[0-9A-Za-z:-]{1,32}"), "24:00:00"),
    "--mem": (re.compile(r"[0-9]+[A-Za-z]{0,2}"), "8G"),
}


def check_batch_values(opts: RenderOptions) -> None:
    """Refuse batch option values no scheduler could write into a directive, before
    anything is written (also when the run's scheduler writes no job file)."""
    values = {
        "--job-name": opts.job_name,
        "--partition": opts.partition,
        "--time-limit": opts.time_limit,
        "--mem": opts.mem,
    }
    for flag, value in values.items():
        pattern, example = _BATCH_VALUES[flag]
        if value is not None and not pattern.fullmatch(value):
            raise ConfigError(
                f"{flag} {value!r} is not a value a batch scheduler can take",
                hint=f"use a value like {example}",
            )


def resolve_max_array_size(
    opts: RenderOptions, scheduler: Scheduler, env: dict[str, str] | None = None
) -> int | None:
    """``opts.max_array_size``, else the scheduler's limit (None: no limit)."""
    if opts.max_array_size is not None:
        if opts.max_array_size < 1:
            raise ConfigError("--max-array-size must be at least 1")
        return opts.max_array_size
    return scheduler.max_tasks(env)


def write_job_files(root: Path, scheduler: Scheduler, resolved: ResolvedConfig) -> list[str]:
    """Write ``scheduler``'s job files for ``resolved`` into ``root`` (mode 0700)."""
    options = scheduler.parse_options(resolved.scheduler_options)
    files = scheduler.job_files(root, resolved, options)
    for name in files:
        if not _PLAIN_NAME.fullmatch(name) or name in _CORE_FILES:
            raise XferError(
                f"scheduler {scheduler.name} renders {name!r}: not a plain file name of its own"
            )
    for name, text in files.items():
        atomic_write_text(root / name, text, perms=0o700)
    return sorted(files)


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_CORE_FILES = frozenset(
    {"worker.sh", "config.resolved.json", "files.sha256", "jobs.json", "secrets.env"}
)


@no_group_write()
def render_run(
    run_dir: str | os.PathLike[str],
    opts: RenderOptions,
    *,
    env: dict[str, str] | None = None,
    checked: bool = False,
) -> ResolvedConfig:
    """Write ``worker.sh``, the scheduler's job files and ``config.resolved.json``.

    Raises :class:`XferError` for bad options (before writing anything). ``checked``:
    the caller has already run :func:`check_run_dir` on ``run_dir`` in this command.
    """
    from xfer_core.registry import get_registry

    root = Path(run_dir).resolve() if checked else check_run_dir(run_dir)
    registry = get_registry()
    scheduler: Scheduler = registry.get("scheduler", opts.scheduler)
    sched_options = scheduler.parse_options(dict(opts.scheduler_options))
    engine: ShardEngine = registry.get("shard_engine", opts.engine)
    runtime_name, why = runtime_choice(opts)
    runtime: ContainerRuntime = registry.get("runtime", runtime_name)
    if runtime.needs_image and not opts.rclone_image:
        raise ConfigError(
            f"--runtime {runtime_name} needs --rclone-image",
            hint="e.g. --rclone-image rclone/rclone:latest, or --runtime host",
        )
    avail = runtime.check()
    if not avail.ok:
        from xfer_core.output import current

        current().warn(
            f"runtime {runtime_name} ({why}) is not available here: {avail.reason}; "
            "its shards fail unless the compute nodes have it"
        )
    check_batch_values(opts)
    if opts.max_attempts < 1:
        raise ConfigError("--max-attempts must be at least 1")
    if opts.array_concurrency < 1:
        raise ConfigError("--array-concurrency must be at least 1")
    if opts.cpus_per_task < 1:
        raise ConfigError("--cpus-per-task must be at least 1")
    if opts.verify not in ("hash", "size", "check"):
        raise ConfigError(f"--verify {opts.verify!r}: use hash, size or check")
    meta = load_meta(root)
    found = len(meta.shards)
    if opts.num_shards is not None and opts.num_shards != found:
        raise ConfigError(
            f"--num-shards {opts.num_shards} but {root / 'shards'} holds {found} shards",
            hint=f"re-shard with the wanted count, or pass --num-shards {found} (or leave it out)",
        )
    conf = check_rclone_config(opts.rclone_config) if opts.rclone_config else None
    if opts.source_root and opts.dest_root:
        source_root, dest_root = opts.source_root, opts.dest_root
    else:
        from xfer_core.manifest.roots import check_manifest_roots
        from xfer_core.manifest.shard import META_NAME

        source_root, dest_root = meta.source_root, meta.dest_root
        check_manifest_roots(
            str(root / "shards" / META_NAME),
            {"source_root": source_root, "dest_root": dest_root},
            trusted=opts.trust_manifest_roots,
        )
    if not source_root or not dest_root:
        raise ConfigError(
            f"{root / 'shards'}: the manifest records no source/dest root",
            hint="rebuild the manifest with --source and --dest",
        )
    flags = parse_flags(opts.rclone_flags)
    try:
        pyxis_extra = shlex.split(opts.pyxis_extra)
    except ValueError as exc:
        raise ConfigError(f"--pyxis-extra {opts.pyxis_extra!r}: {exc}") from None
    secrets = _secret_flags(flags, engine, runtime)
    max_array = resolve_max_array_size(opts, scheduler, env)
    tasks = min(found, max_array) if max_array else found
    ctx = EngineContext(
        source_root=source_root,
        dest_root=dest_root,
        flags=tuple(secrets.kept),
        config_path=conf,
        run_dir=str(root),
        verify=opts.verify,
    )
    if runtime.needs_image and dest_root.startswith("/"):
        # a container runtime bind-mounts the local destination: it must exist
        Path(dest_root).mkdir(parents=True, exist_ok=True)
    split = (
        [a for name, value in engine.machine_flags(secrets.kept) for a in (name, str(value))]
        if opts.split_transfers
        else []
    )
    worker, tool = render_worker(
        run_dir=root,
        num_shards=found,
        tasks=tasks,
        max_attempts=opts.max_attempts,
        runtime=runtime,
        engine=engine,
        ctx=ctx,
        image=opts.rclone_image,
        pyxis_extra=pyxis_extra,
        split_flags=split,
    )
    engine.prepare(root, range(found), ctx)
    resolved = ResolvedConfig(
        xfer_version=__version__,
        rendered_at=time.time(),
        run_dir=str(root),
        source_root=redact_root(source_root),
        dest_root=redact_root(dest_root),
        num_shards=found,
        tasks=tasks,
        max_array_size=max_array or 0,
        array_concurrency=opts.array_concurrency,
        max_attempts=opts.max_attempts,
        engine=engine.name,
        runtime=runtime.name,
        rclone_image=opts.rclone_image if runtime.needs_image else None,
        rclone_config=conf,
        rclone_flags=secrets.shown,
        verify=opts.verify,
        job_name=opts.job_name,
        time_limit=opts.time_limit,
        partition=opts.partition,
        cpus_per_task=opts.cpus_per_task,
        mem=opts.mem,
        signal_seconds=opts.signal_seconds,
        tool_command=tool,
        pyxis_extra=pyxis_extra,
        runtime_reason=why,
        split_flags=split,
        scheduler=scheduler.name,
        scheduler_options=msgspec.to_builtins(sched_options),
    )
    # the scheduler checks what it writes now, before anything is written
    jobs = scheduler.job_files(root, resolved, sched_options)
    resolved.job_files = sorted(jobs)
    make_subdirs(root)
    if secrets.env:
        from xfer_core.output import current

        current().warn(
            "--rclone-flags carries credentials: rclone gets them from the environment "
            f"({root / SECRETS_ENV}, mode 0600), never on its command line; prefer rclone.conf"
        )
        exports = "".join(f"export {k}={sh(v)}\n" for k, v in secrets.env.items())
        atomic_write_text(root / SECRETS_ENV, exports, perms=0o600)
    else:
        (root / SECRETS_ENV).unlink(missing_ok=True)
    # the run dir's files hold the roots and options: readable by the owner only
    atomic_write_text(root / "worker.sh", worker, perms=0o700)
    atomic_write_text(
        root / "files.sha256",
        "".join(f"{s.files_sha256}  {s.files}\n" for s in meta.shards),
        perms=0o600,
    )
    write_job_files(root, scheduler, resolved)
    atomic_write_text(
        root / "config.resolved.json",
        msgspec.json.format(msgspec.json.encode(resolved)).decode() + "\n",
        perms=0o600,
    )
    return resolved


def load_resolved(run_dir: str | os.PathLike[str]) -> ResolvedConfig:
    """``RUN/config.resolved.json``; an :class:`XferError` when the run is not rendered."""
    path = Path(run_dir) / "config.resolved.json"
    try:
        return msgspec.json.decode(path.read_bytes(), type=ResolvedConfig)
    except FileNotFoundError:
        raise XferError(
            f"{path} does not exist: the run dir is not rendered",
            hint="render it first: xfer run --run-dir RUN ... (or xfer slurm render)",
        ) from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        from xfer_core.bulk.upstream import is_upstream

        if is_upstream(Path(run_dir)):
            raise XferError(
                f"{path}: upstream xfer's run config (xfer.runconfig.v1), not xfer's",
                hint=f"resume the run dir with `xfer run --run-dir {run_dir}`: its manifest is "
                "re-sharded and its .done markers are verified, not trusted",
            ) from None
        raise XferError(f"{path}: {exc}", hint="re-render the run dir") from None


def tasks_for_shards(shards: Sequence[int], tasks: int) -> list[int]:
    """Array task ids that cover ``shards`` when task t runs shards t, t+tasks, ..."""
    return sorted({s % tasks for s in shards})

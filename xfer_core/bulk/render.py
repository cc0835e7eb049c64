"""Render a run dir's scripts: ``worker.sh``, ``sbatch_array.sh``, ``submit.sh``,
``config.resolved.json``, and ``files.sha256`` (each shard list's digest from
``shards.meta.json``, which the worker checks before it copies a shard).

Every value that reaches a shell is quoted with :func:`shlex.quote`; values that
land in ``#SBATCH`` lines (which sbatch parses itself, not a shell) are checked
against strict formats instead. ``rclone.conf`` is referenced by path only: it
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
from typing import TYPE_CHECKING

import msgspec

from xfer_core import __version__
from xfer_core.atomic import atomic_write_text
from xfer_core.bulk.engine import EngineContext, ShardEngine
from xfer_core.bulk.rundir import check_run_dir, make_subdirs, no_group_write
from xfer_core.bulk.runtime import ContainerRuntime
from xfer_core.errors import ConfigError, XferError
from xfer_core.manifest.roots import REDACTED, is_secret_name, redact_root

if TYPE_CHECKING:
    from xfer_core.manifest.shard import ShardMeta

#: Slurm's default ``MaxArraySize`` when the cluster cannot be asked.
DEFAULT_MAX_ARRAY_SIZE = 1001

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
    engine: str = "rclone"
    #: ``hash`` (size + hash where both sides have one), ``size``, or ``check``
    #: (hash, plus a listing check of every record after the copy).
    verify: str = "hash"
    #: None: ask the Slurm scheduler (``scontrol show config``), else 1001.
    max_array_size: int | None = None
    #: Seconds before the time limit when Slurm sends USR1 (``--signal=B:USR1@N``).
    signal_seconds: int = 120
    #: Override the roots recorded in the shards (default: from shard 0's first record).
    #: Roots given here come from the user, not from a file: they are trusted.
    source_root: str | None = None
    dest_root: str | None = None
    #: More sbatch options (``--sbatch-extras``): ``--account=x --qos=y`` or ``#SBATCH`` lines.
    sbatch_extras: str = ""
    #: More ``srun`` flags for the pyxis runtime (``--pyxis-extra``), one string as typed.
    pyxis_extra: str = ""
    #: Accept rclone connection strings among the roots read from shards.meta.json
    #: (``--trust-manifest-roots``); without it only local paths and ``remote:path``.
    trust_manifest_roots: bool = False


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
    #: ``--sbatch-extras`` as the ``#SBATCH`` options written into sbatch_array.sh.
    sbatch_extras: list[str] = []
    #: ``--pyxis-extra``, split.
    pyxis_extra: list[str] = []
    #: Why this runtime (``--runtime``, or which default), printed by the CLI.
    runtime_reason: str = ""


# --- checks ------------------------------------------------------------------------

_JOB_NAME = re.compile(r"[A-Za-z0-9_.+@=-]{1,200}")
_PARTITION = re.compile(r"[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*")
_TIME = re.compile(r"(\d+-)?\d+(:\d+){0,2}|(\d+-\d+)|UNLIMITED|INFINITE|infinite|unlimited")
_MEM = re.compile(r"\d+[KMGT]?")


def _check_sbatch_value(flag: str, value: str, pattern: re.Pattern[str], example: str) -> str:
    if not pattern.fullmatch(value):
        raise ConfigError(
            f"{flag} {value!r} is not accepted in an #SBATCH line",
            hint=f"use a value like {example}",
        )
    return value


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


_SBATCH_NAME = re.compile(r"--?[A-Za-z][A-Za-z0-9-]*")
_SBATCH_VALUE = re.compile(r"[A-Za-z0-9_.,:@%+/=*\[\]-]*")
#: Options xfer sets itself (the array and its throttle, the log path, the environment).
_SBATCH_OWN = frozenset({"--array", "-a", "--export", "--output", "-o", "--wrap"})


def sbatch_extra_options(text: str) -> list[str]:
    """``--sbatch-extras`` as ``--name=value`` options, one per ``#SBATCH`` line.

    Takes ``--account=proj --qos high`` or upstream's ``#SBATCH --account=proj\\n#SBATCH
    --qos=high`` (a literal ``\\n`` is a line break, as upstream reads it). Values are
    limited to characters that cannot end the directive or reach a shell.
    """
    words: list[str] = []
    for raw in text.replace("\\n", "\n").splitlines():
        line = raw.strip()
        if line.startswith("#SBATCH"):
            line = line[len("#SBATCH") :]
        elif line.startswith("#"):
            continue
        try:
            words += shlex.split(line)
        except ValueError as exc:
            raise ConfigError(f"--sbatch-extras {text!r}: {exc}") from None
    options: list[str] = []
    for word in words:
        if not word.startswith("-") and options and "=" not in options[-1]:
            options[-1] += f"={word}"  # "--qos high"
            continue
        options.append(word)
    for option in options:
        name, _, value = option.partition("=")
        if not _SBATCH_NAME.fullmatch(name) or not _SBATCH_VALUE.fullmatch(value):
            raise ConfigError(
                f"--sbatch-extras: {option!r} is not an sbatch option xfer can write",
                hint="write options as --name=value, e.g. --account=proj --qos=high",
            )
        if name in _SBATCH_OWN:
            raise ConfigError(
                f"--sbatch-extras: {name} is set by xfer itself",
                hint="--array-concurrency sets the throttle; logs go to RUN/logs",
            )
    return options


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
) -> tuple[str, str]:
    """``(worker.sh text, xfer_tool body)``."""
    template = resources.files("xfer_core.bulk").joinpath("templates/worker.sh").read_text()
    settings = "\n".join(
        [
            f"RUN_DIR={sh(str(run_dir))}",
            f"NUM_SHARDS={int(num_shards)}",
            f"TASKS={int(tasks)}",
            f"MAX_ATTEMPTS={int(max_attempts)}",
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


def render_sbatch(run_dir: Path, opts: RenderOptions, tasks: int, concurrency: int) -> str:
    """``sbatch_array.sh``: the array job; each task runs ``worker.sh --task $SLURM_ARRAY_TASK_ID``."""
    job_name = _check_sbatch_value("--job-name", opts.job_name, _JOB_NAME, "xfer-run1")
    time_limit = _check_sbatch_value("--time-limit", opts.time_limit, _TIME, "24:00:00")
    mem = _check_sbatch_value("--mem", opts.mem, _MEM, "8G")
    lines = [
        "#!/usr/bin/env bash",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --array=0-{tasks - 1}%{concurrency}",
        f"#SBATCH --time={time_limit}",
    ]
    if opts.partition:
        part = _check_sbatch_value("--partition", opts.partition, _PARTITION, "transfer")
        lines.append(f"#SBATCH --partition={part}")
    lines += [f"#SBATCH {option}" for option in sbatch_extra_options(opts.sbatch_extras)]
    lines += [
        "#SBATCH --ntasks=1",
        f"#SBATCH --cpus-per-task={int(opts.cpus_per_task)}",
        f"#SBATCH --mem={mem}",
        f"#SBATCH --output={_log_pattern(run_dir)}",
        "#SBATCH --requeue",
        f"#SBATCH --signal=B:USR1@{int(opts.signal_seconds)}",
        "# Generated by xfer. Submit with submit.sh, `xfer slurm submit`, or sbatch:",
        "#   sbatch RUN_DIR/sbatch_array.sh",
        "# `xfer slurm submit` submits only the tasks whose shards are not done.",
        "# The batch shell becomes worker.sh, so USR1 (time limit) reaches its trap.",
        f'exec bash {sh(str(run_dir / "worker.sh"))} --task "$SLURM_ARRAY_TASK_ID"',
        "",
    ]
    return "\n".join(lines)


_PLAIN_PATH = re.compile(r"[A-Za-z0-9_./+-]+")


def _log_pattern(run_dir: Path) -> str:
    """Slurm's output path: absolute, so ``sbatch RUN/sbatch_array.sh`` works from anywhere
    (upstream's habit); relative to the run dir when the path has characters an
    ``#SBATCH`` line cannot carry (then submit from the run dir, as submit.sh does)."""
    path = f"{run_dir}/logs/slurm-%A_%a.out"
    return path if _PLAIN_PATH.fullmatch(str(run_dir)) else "logs/slurm-%A_%a.out"


def render_submit(run_dir: Path) -> str:
    """``submit.sh``: submit (or re-submit) the whole array by hand."""
    return "\n".join(
        [
            "#!/usr/bin/env bash",
            "# Submit this run's array job; tasks whose shards are done exit at once.",
            "# `xfer slurm submit --run-dir RUN` submits only tasks with work left and",
            "# records the job id in jobs.json. Extra arguments go to sbatch.",
            "set -euo pipefail",
            f"cd -- {sh(str(run_dir))}",
            'exec sbatch --parsable "$@" sbatch_array.sh',
            "",
        ]
    )


def resolve_max_array_size(opts: RenderOptions, env: dict[str, str] | None = None) -> int:
    """``opts.max_array_size``, else the Slurm scheduler's answer, else 1001."""
    if opts.max_array_size is not None:
        if opts.max_array_size < 1:
            raise ConfigError("--max-array-size must be at least 1")
        return opts.max_array_size
    from xfer_core.registry import get_registry

    try:
        slurm = get_registry().get("scheduler", "slurm")
    except XferError:
        return DEFAULT_MAX_ARRAY_SIZE
    found = slurm.max_tasks(env)
    return int(found) if found else DEFAULT_MAX_ARRAY_SIZE


@no_group_write()
def render_run(
    run_dir: str | os.PathLike[str],
    opts: RenderOptions,
    *,
    env: dict[str, str] | None = None,
) -> ResolvedConfig:
    """Write ``worker.sh``, ``sbatch_array.sh``, ``submit.sh`` and ``config.resolved.json``.

    Raises :class:`XferError` for bad options (before writing anything).
    """
    from xfer_core.registry import get_registry

    root = check_run_dir(run_dir)
    registry = get_registry()
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
    extras = sbatch_extra_options(opts.sbatch_extras)
    try:
        pyxis_extra = shlex.split(opts.pyxis_extra)
    except ValueError as exc:
        raise ConfigError(f"--pyxis-extra {opts.pyxis_extra!r}: {exc}") from None
    secrets = _secret_flags(flags, engine, runtime)
    max_array = resolve_max_array_size(opts, env)
    tasks = min(found, max_array)
    concurrency = min(opts.array_concurrency, tasks)
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
    )
    sbatch = render_sbatch(root, opts, tasks, concurrency)
    engine.prepare(root, range(found), ctx)
    resolved = ResolvedConfig(
        xfer_version=__version__,
        rendered_at=time.time(),
        run_dir=str(root),
        source_root=redact_root(source_root),
        dest_root=redact_root(dest_root),
        num_shards=found,
        tasks=tasks,
        max_array_size=max_array,
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
        sbatch_extras=extras,
        pyxis_extra=pyxis_extra,
        runtime_reason=why,
    )
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
    atomic_write_text(root / "sbatch_array.sh", sbatch, perms=0o700)
    atomic_write_text(root / "submit.sh", render_submit(root), perms=0o700)
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
            hint="render it first: xfer slurm render --run-dir RUN ... (or xfer run)",
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

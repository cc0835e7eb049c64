"""Rendering: quoting of hostile values, runtimes' argv, #SBATCH lines, rclone.conf rules."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xfer_backends.runtimes import (
    ApptainerRuntime,
    DockerRuntime,
    EnrootRuntime,
    HostRuntime,
    PodmanRuntime,
    PyxisRuntime,
)
from xfer_backends.slurm import array_spec, parse_job_id
from xfer_core.bulk.engine import EngineContext, ShardEngine
from xfer_core.bulk.pipeline import PrepareOptions, prepare_run
from xfer_core.bulk.render import RenderOptions, render_run, tasks_for_shards
from xfer_core.bulk.runtime import Mount
from xfer_core.errors import ConfigError, XferError
from xfer_core.hookspecs import hookimpl
from xfer_core.registry import build_registry

from .runtools import make_tree, read_tree, xfer

HOSTILE_FLAG = "x'y\"$(touch CANARY)`touch CANARY` z;#"


def _prepare(tmp_path: Path, run: Path, *, n: int = 3, **render: Any) -> Path:
    """A run dir with ``n`` shards of a small local tree, rendered with ``render``."""
    src = tmp_path / "src"
    if not src.exists():
        make_tree(src, [f"f{i}.txt" for i in range(6)])
    render.setdefault("max_array_size", 1001)
    prepare_run(
        run,
        PrepareOptions(source=str(src), dest=str(tmp_path / "dst"), num_shards=n),
        RenderOptions(**render),
    )
    return src


def _tool_argv(worker: Path) -> list[str]:
    """The argv of the rendered ``xfer_tool`` function, ``"$@"`` kept as a marker."""
    text = worker.read_text()
    body = re.search(r"xfer_tool\(\) \{\n(.*?)\n\}", text, re.S)
    assert body, "no xfer_tool function"
    return shlex.split(body.group(1).replace('"$@"', "ARGS"))


def test_hostile_values_are_quoted_and_nothing_executes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run dir, roots, flags and config path full of shell syntax: the worker passes them
    to rclone byte-identical, and no canary file appears anywhere."""
    run = tmp_path / "run 'a' $(touch CANARY) `touch CANARY` \"q\""
    src = tmp_path / "src $(touch CANARY) 'x'"
    files = make_tree(src, ["a.txt", "$(touch CANARY).txt", "b c/`touch CANARY`"])
    dst = tmp_path / 'dst `touch CANARY` "y"'
    conf = tmp_path / "rclone $(touch CANARY).conf"
    conf.write_text("[unused]\ntype = local\n")
    conf.chmod(0o600)
    # a wrapper records the argv rclone gets, one NUL-terminated element each
    from xfer_core.tools import find_rclone

    argv_log = tmp_path / "argv.log"
    wrapper = tmp_path / "rclone-rec"
    wrapper.write_text(
        f"#!/usr/bin/env bash\nprintf '%s\\0' \"$@\" >> {shlex.quote(str(argv_log))}\n"
        f'printf "\\0\\0" >> {shlex.quote(str(argv_log))}\n'
        f'exec {shlex.quote(find_rclone() or "rclone")} "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv("XFER_RCLONE", str(wrapper))
    prepare_run(
        run,
        PrepareOptions(source=str(src), dest=str(dst), num_shards=2),
        RenderOptions(
            max_array_size=1001,
            rclone_config=str(conf),
            rclone_flags=f"--user-agent {shlex.quote(HOSTILE_FLAG)} --checkers 2",
        ),
    )
    monkeypatch.delenv("XFER_RCLONE")
    subprocess.run(["bash", "-n", str(run / "worker.sh")], check=True)
    proc = subprocess.run(
        ["bash", str(run / "worker.sh"), "0", "1"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert read_tree(dst) == files
    calls = [c.split("\0") for c in argv_log.read_text().split("\0\0\0") if c]
    assert calls, "rclone was not called"
    for call in calls:
        assert call[0] in ("copy", "check")
        assert call[call.index("--user-agent") + 1] == HOSTILE_FLAG
        assert call[call.index("--config") + 1] == str(conf)
        # the roots as given, with the trailing / that spares rclone a HEAD per root
        assert call[-2:] == [f"{src}/", f"{dst}/"]
    assert not list(tmp_path.rglob("CANARY")), "a rendered value was executed"
    assert not (Path.cwd() / "CANARY").exists()


def _template_markers() -> list[str]:
    from importlib import resources

    text = resources.files("xfer_core.bulk").joinpath("templates/worker.sh").read_text()
    return sorted(set(re.findall(r"@@[A-Z_]+@@", text)))


def test_template_markers_in_names_are_data_and_the_run_completes(tmp_path: Path) -> None:
    """Issue 16: a run dir named ``@@TOOL@@`` rendered ``RUN_DIR=<the rclone command>``
    (placeholders were replaced one after another). Every marker of the template goes into
    the run dir, the roots and the file names; the run completes."""
    markers = _template_markers()
    assert {"@@TOOL@@", "@@SETTINGS@@", "@@ENGINE_FUNCTIONS@@"} <= set(markers)
    joined = "".join(markers)
    run = tmp_path / f"run {joined}"
    src, dst = tmp_path / f"src{joined}", tmp_path / f"dst {' '.join(markers)}"
    files = make_tree(src, [f"{m}.txt" for m in markers] + [f"{joined}/inner"])
    prepare_run(
        run,
        PrepareOptions(source=str(src), dest=str(dst), num_shards=2),
        RenderOptions(max_array_size=1001),
    )
    text = (run / "worker.sh").read_text()
    assert f"\nRUN_DIR={shlex.quote(str(run))}\n" in text
    assert f"\nXFER_SRC={shlex.quote(str(src))}\n" in text
    assert text.count("xfer_tool() {") == 1
    subprocess.run(["bash", "-n", str(run / "worker.sh")], check=True)
    proc = xfer("run", "--run-dir", str(run), "--scheduler", "local", "--submit")
    assert proc.returncode == 0, proc.stderr
    assert "2/2 shards done" in proc.stderr
    assert read_tree(dst) == files


@given(st.lists(st.sampled_from(["@@A@@", "@@B@@", "@", "x", "\n", "@@"]), max_size=8), st.data())
def test_fill_template_is_one_pass(parts: list[str], data: st.DataObject) -> None:
    from xfer_core.bulk.render import fill_template

    values = {
        k: "".join(data.draw(st.lists(st.sampled_from(["@@A@@", "@@B@@", "v", "@"]), max_size=4)))
        for k in ("A", "B")
    }
    template = "".join(parts)
    # the oracle: scan the template left to right; a value goes in verbatim, never rescanned
    expected, i = [], 0
    while i < len(template):
        name = next((k for k in values if template.startswith(f"@@{k}@@", i)), None)
        if name is None:
            expected.append(template[i])
            i += 1
        else:
            expected.append(values[name])
            i += len(name) + 4
    assert fill_template(template, values) == "".join(expected)


def test_fill_template_refuses_unknown_markers() -> None:
    from xfer_core.bulk.render import fill_template

    with pytest.raises(XferError, match="unknown markers: NEW"):
        fill_template("a @@TOOL@@ @@NEW@@", {"TOOL": "t"})


def test_rclone_conf_must_be_private_and_is_never_copied(tmp_path: Path) -> None:
    run = tmp_path / "run"
    conf = tmp_path / "rclone.conf"
    conf.write_text("[s3]\ntype = s3\nsecret_access_key = SUPERSECRET123\n")
    conf.chmod(0o644)
    with pytest.raises(ConfigError) as err:
        _prepare(tmp_path, run, rclone_config=str(conf))
    assert "0644" in err.value.message
    assert err.value.hint == f"chmod 600 {conf}"
    assert not (run / "worker.sh").exists()
    conf.chmod(0o600)
    _prepare(tmp_path, run, rclone_config=str(conf))
    for path in run.rglob("*"):
        if path.is_file():
            assert b"SUPERSECRET123" not in path.read_bytes(), path
    resolved = json.loads((run / "config.resolved.json").read_text())
    assert resolved["rclone_config"] == str(conf)


def test_cli_refuses_group_readable_conf_with_the_fix(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _prepare(tmp_path, run)
    conf = tmp_path / "rc.conf"
    conf.write_text("[x]\ntype = local\n")
    conf.chmod(0o640)
    proc = xfer("slurm", "render", "--run-dir", str(run), "--rclone-config", str(conf))
    assert proc.returncode == 2
    assert "must be readable by its owner only" in proc.stderr
    assert f"chmod 600 {conf}" in proc.stderr
    assert "type = local" not in proc.stderr + proc.stdout


SHARED_ARGS = [
    *["--array-concurrency", "7", "--job-name", "my-job", "--time-limit", "1-02:00:00"],
    *["--partition", "transfer", "--cpus-per-task", "3", "--mem", "6G", "--max-attempts", "4"],
    *["--max-array-size", "2", "--verify", "size", "--rclone-flags", "--transfers 5"],
]
#: What every rendered run records of SHARED_ARGS (config.resolved.json).
SHARED_RESOLVED = {
    "array_concurrency": 7,
    "job_name": "my-job",
    "time_limit": "1-02:00:00",
    "partition": "transfer",
    "cpus_per_task": 3,
    "mem": "6G",
    "max_attempts": 4,
    "max_array_size": 2,
    "verify": "size",
    "rclone_flags": ["--transfers", "5"],
    "tasks": 2,
}


def test_run_and_slurm_render_take_the_same_options(tmp_path: Path) -> None:
    """`xfer run` and `xfer slurm render` declare the worker/Slurm options once: same
    spelling, same meaning in config.resolved.json and the #SBATCH lines."""
    src = tmp_path / "src"
    make_tree(src, [f"f{i}.txt" for i in range(6)])
    ran, rendered = tmp_path / "ran", tmp_path / "rendered"
    common = ["--source", str(src), "--dest", str(tmp_path / "dst"), "--num-shards", "4"]
    proc = xfer("run", "--run-dir", str(ran), "--scheduler", "slurm", *common, *SHARED_ARGS)
    assert proc.returncode == 0, proc.stderr
    _prepare(tmp_path, rendered, n=4)
    proc = xfer("slurm", "render", "--run-dir", str(rendered), "-n", "4", *SHARED_ARGS)
    assert proc.returncode == 0, proc.stderr
    for run in (ran, rendered):
        resolved = json.loads((run / "config.resolved.json").read_text())
        assert {k: resolved[k] for k in SHARED_RESOLVED} == SHARED_RESOLVED
        sbatch = (run / "sbatch_array.sh").read_text().splitlines()
        assert "#SBATCH --partition=transfer" in sbatch
        assert "#SBATCH --array=0-1%2" in sbatch  # throttle capped at the task count
    proc = xfer("slurm", "render", "--run-dir", str(rendered), "-n", "5")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr


def test_sbatch_script_and_resolved_config(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _prepare(
        tmp_path,
        run,
        n=5,
        max_array_size=2,
        array_concurrency=7,
        job_name="my-job",
        time_limit="1-02:00:00",
        partition="transfer",
        cpus_per_task=3,
        mem="6G",
        max_attempts=4,
    )
    sbatch = (run / "sbatch_array.sh").read_text()
    for line in (
        "#SBATCH --job-name=my-job",
        "#SBATCH --array=0-1%2",
        "#SBATCH --time=1-02:00:00",
        "#SBATCH --partition=transfer",
        "#SBATCH --cpus-per-task=3",
        "#SBATCH --mem=6G",
        "#SBATCH --signal=B:USR1@120",
        "#SBATCH --requeue",
    ):
        assert line in sbatch.splitlines()
    # the batch shell itself runs the worker (sourced), after the plugin's requeue hooks
    assert f'. {shlex.quote(str(run / "worker.sh"))} --task "$SLURM_ARRAY_TASK_ID"' in sbatch
    assert sbatch.index("xfer_requeue()") < sbatch.index(". /")
    resolved = json.loads((run / "config.resolved.json").read_text())
    assert resolved["num_shards"] == 5
    assert resolved["tasks"] == 2
    assert resolved["max_attempts"] == 4
    assert resolved["runtime"] == "host"
    assert resolved["scheduler"] == "slurm"
    assert resolved["job_files"] == ["sbatch_array.sh", "submit.sh"]
    worker = (run / "worker.sh").read_text()
    assert "NUM_SHARDS=5\nTASKS=2\nMAX_ATTEMPTS=4" in worker
    submit = (run / "submit.sh").read_text()
    assert f"cd -- {shlex.quote(str(run))}" in submit


def test_more_shards_than_max_array_size_maps_several_shards_per_task(tmp_path: Path) -> None:
    run = tmp_path / "run"
    src = _prepare(tmp_path, run, n=5, max_array_size=2)
    proc = subprocess.run(
        ["bash", str(run / "worker.sh"), "--task", "1"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    done = sorted(p.name for p in (run / "state").glob("*.done"))
    assert done == ["shard_1.done", "shard_3.done"]
    proc = subprocess.run(
        ["bash", str(run / "worker.sh"), "--task", "0"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert len(list((run / "state").glob("*.done"))) == 5
    assert read_tree(tmp_path / "dst") == read_tree(src)


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("job_name", "a b"),
        ("job_name", "x\n#SBATCH --uid=0"),
        ("partition", "p;rm"),
        ("time_limit", "$(date)"),
        ("mem", "8G --x"),
    ],
)
def test_values_for_sbatch_lines_are_checked(tmp_path: Path, flag: str, value: str) -> None:
    # refused by core whatever the scheduler (before anything is written)
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="not a value a batch scheduler can take"):
        options: dict[str, Any] = {flag: value}
        _prepare(tmp_path, run, **options)
    assert not (run / "worker.sh").exists()


def test_the_slurm_plugin_checks_its_own_directives(tmp_path: Path) -> None:
    # a Grid Engine queue instance name passes core's check; an #SBATCH line refuses it
    with pytest.raises(ConfigError, match="is not accepted in an #SBATCH line"):
        _prepare(tmp_path, tmp_path / "run", partition="all.q@node1")
    assert not (tmp_path / "run" / "worker.sh").exists()


def test_num_shards_mismatch_and_missing_image(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _prepare(tmp_path, run, n=3)
    with pytest.raises(ConfigError, match="holds 3 shards"):
        render_run(run, RenderOptions(num_shards=4, max_array_size=10))
    with pytest.raises(ConfigError, match="needs --rclone-image"):
        render_run(run, RenderOptions(runtime="podman", max_array_size=10))
    with pytest.raises(XferError, match="unknown runtime"):
        render_run(run, RenderOptions(runtime="nope", max_array_size=10))


# --- runtimes: rendered argv against each runtime's documented syntax -------------------

MOUNTS = [
    Mount("/etc/rclone.conf", "/etc/rclone.conf", read_only=True),
    Mount("/data/src", "/data/src", read_only=True),
    Mount("/data/dst", "/data/dst", read_only=False),
]
IMAGE = "rclone/rclone:1.68"


def test_pyxis_argv() -> None:
    # srun --container-image=IMAGE --container-mounts=SRC:DST[:FLAGS][,SRC:DST...] (pyxis wiki)
    assert PyxisRuntime().wrap(["rclone", "copy"], image=IMAGE, mounts=MOUNTS) == [
        "srun",
        "--ntasks=1",
        "--container-image=rclone/rclone:1.68",
        "--container-mounts=/etc/rclone.conf:/etc/rclone.conf:ro,/data/src:/data/src:ro,"
        "/data/dst:/data/dst",
        "rclone",
        "copy",
    ]


def test_enroot_argv(tmp_path: Path) -> None:
    # enroot start [--mount SRC:DST:TYPE:OPTIONS (fstab fields, colon-separated)] [--] IMAGE CMD
    d = tmp_path / "d"
    d.mkdir()
    f = tmp_path / "f.conf"
    f.write_text("")
    argv = EnrootRuntime().wrap(
        ["rclone", "copy"],
        image="/images/rclone.sqsh",
        mounts=[Mount(str(f), str(f)), Mount(str(d), str(d), read_only=False)],
    )
    assert argv == [
        "enroot",
        "start",
        "--mount",
        f"{f}:{f}:none:x-create=file,bind,ro",
        "--mount",
        f"{d}:{d}:none:x-create=dir,bind",
        "--",
        "/images/rclone.sqsh",
        "rclone",
        "copy",
    ]


def test_apptainer_argv() -> None:
    # apptainer exec --bind src:dest[:opts] IMAGE CMD; docker:// for registry images
    assert ApptainerRuntime().wrap(["rclone", "version"], image=IMAGE, mounts=MOUNTS[:2]) == [
        "apptainer",
        "exec",
        "--bind",
        "/etc/rclone.conf:/etc/rclone.conf:ro",
        "--bind",
        "/data/src:/data/src:ro",
        "docker://rclone/rclone:1.68",
        "rclone",
        "version",
    ]
    assert ApptainerRuntime().wrap(["rclone"], image="/x/rclone.sif")[-2] == "/x/rclone.sif"


@pytest.mark.parametrize("runtime", [PodmanRuntime(), DockerRuntime()])
def test_oci_argv(runtime: PodmanRuntime | DockerRuntime) -> None:
    # podman/docker run --rm --network host -v SRC:DST[:ro] --entrypoint TOOL IMAGE ARGS
    assert runtime.wrap(["rclone", "copy", "a"], image=IMAGE, mounts=MOUNTS) == [
        runtime.program,
        "run",
        "--rm",
        "--network",
        "host",
        "-v",
        "/etc/rclone.conf:/etc/rclone.conf:ro",
        "-v",
        "/data/src:/data/src:ro",
        "-v",
        "/data/dst:/data/dst",
        "--entrypoint",
        "rclone",
        IMAGE,
        "copy",
        "a",
    ]


def test_host_argv_resolves_rclone() -> None:
    argv = HostRuntime().wrap(["rclone", "copy"], image=None)
    assert Path(argv[0]).is_absolute() and Path(argv[0]).name == "rclone"
    assert argv[1:] == ["copy"]


ENV = {"RCLONE_CONFIG": "/etc/rclone.conf", "A": "b c"}


PREFIX = {
    "pyxis": ["srun", "--ntasks=1", f"--container-image={IMAGE}"],
    "enroot": ["enroot", "start"],
    "apptainer": ["apptainer", "exec"],
    "podman": ["podman", "run", "--rm", "--network", "host"],
}
ENV_FLAGS = {
    "enroot": ["--env", "RCLONE_CONFIG=/etc/rclone.conf", "--env", "A=b c"],
    "apptainer": ["--env", "RCLONE_CONFIG=/etc/rclone.conf", "--env", "A=b c"],
    "podman": ["-e", "RCLONE_CONFIG=/etc/rclone.conf", "-e", "A=b c"],
}
TAIL = {
    "pyxis": ["env", "RCLONE_CONFIG=/etc/rclone.conf", "A=b c", "rclone", "copy"],
    "enroot": ["--", IMAGE, "rclone", "copy"],
    "apptainer": [f"docker://{IMAGE}", "rclone", "copy"],
    "podman": ["--entrypoint", "rclone", IMAGE, "copy"],
}


@pytest.mark.parametrize(
    "runtime",
    [PyxisRuntime(), EnrootRuntime(), ApptainerRuntime(), PodmanRuntime()],
    ids=lambda r: r.name,
)
def test_env_reaches_the_tool(runtime: Any) -> None:
    # pyxis has no env option of its own (srun's --export is for srun): `env K=V` runs first
    expected = [*PREFIX[runtime.name], *ENV_FLAGS.get(runtime.name, []), *TAIL[runtime.name]]
    assert runtime.wrap(["rclone", "copy"], image=IMAGE, env=ENV) == expected


def test_host_env_prefix() -> None:
    argv = HostRuntime().wrap(["rclone", "copy"], image=None, env=ENV)
    assert argv[:3] == ["env", "RCLONE_CONFIG=/etc/rclone.conf", "A=b c"]
    assert Path(argv[3]).name == "rclone" and argv[4:] == ["copy"]
    assert HostRuntime().wrap(["rclone"], image=None, env={})[0] != "env"


def test_mount_syntax_refuses_separator_characters() -> None:
    with pytest.raises(ConfigError, match="cannot mount"):
        PyxisRuntime().wrap(["rclone"], image=IMAGE, mounts=[Mount("/a,b", "/a,b")])
    with pytest.raises(ConfigError, match="needs an image"):
        PodmanRuntime().wrap(["rclone"], image=None)


@pytest.mark.parametrize("runtime", ["pyxis", "enroot", "apptainer", "podman", "docker"])
def test_rendered_worker_runs_tool_through_runtime(tmp_path: Path, runtime: str) -> None:
    """The worker's xfer_tool is the runtime's argv with the config mounted read-only."""
    run = tmp_path / "run"
    conf = tmp_path / "rclone.conf"
    conf.write_text("")
    conf.chmod(0o600)
    _prepare(tmp_path, run, runtime=runtime, rclone_image=IMAGE, rclone_config=str(conf))
    argv = _tool_argv(run / "worker.sh")
    assert argv[0] == {"pyxis": "srun"}.get(runtime, runtime)
    assert argv[-1] == "ARGS"
    joined = " ".join(argv)
    assert f"{conf}:{conf}" in joined
    assert f"{run / 'shards'}:{run / 'shards'}" in joined
    mount = next(a for a in argv if a.startswith(str(conf)) or f"{conf}:{conf}" in a)
    assert "ro" in mount.rsplit(":", 1)[-1] or ":ro," in mount
    subprocess.run(["bash", "-n", str(run / "worker.sh")], check=True)


# --- pure helpers -----------------------------------------------------------------------


@given(st.sets(st.integers(0, 3000), min_size=1), st.integers(1, 500))
def test_array_spec_round_trips(tasks: set[int], concurrency: int) -> None:
    spec = array_spec(sorted(tasks), concurrency)
    body, _, throttle = spec.partition("%")
    assert throttle == str(concurrency)
    back: set[int] = set()
    for part in body.split(","):
        lo, _, hi = part.partition("-")
        back.update(range(int(lo), int(hi or lo) + 1))
    assert back == tasks


@given(st.sets(st.integers(0, 5000), min_size=1), st.integers(1, 1001))
def test_tasks_cover_exactly_the_shards(shards: set[int], tasks: int) -> None:
    covered = tasks_for_shards(sorted(shards), tasks)
    assert all(0 <= t < tasks for t in covered)
    assert {s % tasks for s in shards} == set(covered)


def test_parse_job_id() -> None:
    assert parse_job_id("1234\n") == "1234"
    assert parse_job_id("77;cluster\n") == "77"
    with pytest.raises(XferError):
        parse_job_id("sbatch: error\n")


def test_credentials_in_flags_are_redacted_from_resolved_config(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _prepare(
        tmp_path,
        run,
        rclone_flags="--s3-secret-access-key TOPSECRET --webdav-pass=ALSOSECRET --transfers 4",
    )
    resolved = (run / "config.resolved.json").read_text()
    assert "TOPSECRET" not in resolved and "ALSOSECRET" not in resolved
    assert json.loads(resolved)["rclone_flags"] == [
        "--s3-secret-access-key",
        "<redacted>",
        "--webdav-pass=<redacted>",
        "--transfers",
        "4",
    ]
    assert (run / "worker.sh").stat().st_mode & 0o077 == 0


class _FlagProbe(ShardEngine):
    """An engine whose tool is not rclone; remembers the flags it was rendered with."""

    name = "flag-probe"
    tool = "cp"
    description = "test engine"
    seen: ClassVar[list[tuple[str, ...]]] = []

    def render_functions(self, ctx: EngineContext) -> str:
        self.seen.append(ctx.flags)
        return "xfer_copy() { :; }\nxfer_verify() { :; }\n"


class _Probes:
    @hookimpl
    def register_shard_engines(self, register: Any) -> None:
        register(_FlagProbe())


def test_analyze_suggestions_reach_only_engines_that_take_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`xfer run` without --rclone-flags: the rclone engine gets analyze's rclone flags,
    an engine on another tool gets none of them (it declares what it takes)."""
    registry = build_registry([_Probes()])
    monkeypatch.setattr("xfer_core.registry.get_registry", lambda: registry)
    src = tmp_path / "src"
    make_tree(src, [f"f{i}.txt" for i in range(6)])
    resolved = {}
    for engine in ("rclone", "flag-probe"):
        run = tmp_path / engine
        prepare_run(
            run,
            PrepareOptions(source=str(src), dest=str(tmp_path / "dst"), num_shards=2),
            RenderOptions(engine=engine, max_array_size=10),
        )
        resolved[engine] = json.loads((run / "config.resolved.json").read_text())
    suggested = json.loads((tmp_path / "rclone" / "analysis.json").read_text())
    assert "--transfers" in suggested["suggested_rclone_flags"]
    assert resolved["rclone"]["rclone_flags"] == suggested["suggested_rclone_flags"]
    assert resolved["flag-probe"]["rclone_flags"] == []
    assert _FlagProbe.seen == [()]
    # flags the user gives still reach any engine as they are
    prepare_run(
        tmp_path / "given",
        PrepareOptions(source=str(src), dest=str(tmp_path / "dst"), num_shards=2),
        RenderOptions(engine="flag-probe", max_array_size=10, rclone_flags="--mine 1"),
    )
    assert _FlagProbe.seen[-1] == ("--mine", "1")

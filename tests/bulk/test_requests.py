"""Request counts of a bulk run, pinned: S3 requests must not grow with the shard count.

A :class:`~xfer_core.testing.faultproxy.FaultProxy` (no faults) sits in front of the
``s3`` fixture and counts every request by S3 operation. The baseline is one
``rclone copy`` plus one ``rclone check --one-way`` of the same tree with the same
flags; ``xfer run`` with 1 and 8 shards must stay within 1.1× of its total, and
its LIST requests within a few per shard (each shard lists only its own
directories and verifies from the copy's report, never by listing again).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from xfer_core.bulk.plan import Plan, load_plan
from xfer_core.bulk.state import load_run_state
from xfer_core.manifest.jsonl import read_manifest
from xfer_core.manifest.shard import load_shard_meta
from xfer_core.testing.cli import write_files
from xfer_core.testing.faultproxy import FaultProxy
from xfer_core.testing.services import S3Server

from .runtools import read_tree, xfer

pytestmark = pytest.mark.s3

FLAGS = "--transfers 4 --checkers 4"


@pytest.fixture
def proxy(s3: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(s3.endpoint) as p:
        yield p


@pytest.fixture
def conf(proxy: FaultProxy, s3: S3Server, tmp_path: Path) -> Path:
    return proxy.rclone_config(s3.rclone_config, tmp_path / "proxy-rclone.conf")


def _tree(root: Path, names: list[str]) -> None:
    write_files(root, {name: os.urandom(50 + i % 300) for i, name in enumerate(names)})


def deep_names(files: int, per_dir: int = 100) -> list[str]:
    return [f"d000/s{i // per_dir:03d}/f{i:05d}.bin" for i in range(files)]


def flat_names(files: int) -> list[str]:
    return [f"k{i:05d}.bin" for i in range(files)]


def counted(proxy: FaultProxy, argv: list[str], *, rclone: str | None = None) -> Counter[str]:
    """Run one command (the xfer CLI, or rclone when ``rclone`` is given) and return
    the requests it made, by S3 operation: the answered ones (``FaultProxy.ok``).

    A loaded machine can make a client send a request again (a low-level retry after
    a dropped or failed answer); such retries are not the tool's plan, so the counts
    leave them out, and they are bounded here instead (a few, never a second pass).
    """
    proxy.reset_counts()
    if rclone:
        proc = subprocess.run([rclone, *argv], capture_output=True, text=True, check=False)
    else:
        proc = xfer(*argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return answered(proxy)


def answered(proxy: FaultProxy) -> Counter[str]:
    """The requests answered since the last ``reset_counts()``, by S3 operation, after
    checking that the client sent only a few again (a few, never a second pass)."""
    ok = Counter(proxy.ok)
    retried = Counter(proxy.kinds) - ok
    assert total(retried) <= max(4, total(ok) // 50), (retried, ok)
    return ok


def baseline(proxy: FaultProxy, s3: S3Server, conf: Path, src: Path, dest: str) -> Counter[str]:
    """One ``rclone copy`` + one ``rclone check --one-way`` of the whole tree."""
    common = ["--config", str(conf), *FLAGS.split()]
    copy = counted(proxy, [*common, "copy", str(src), dest], rclone=s3.rclone)
    check = counted(proxy, [*common, "check", "--one-way", str(src), dest], rclone=s3.rclone)
    return copy + check


def xfer_run(
    proxy: FaultProxy, conf: Path, run: Path, src: Path, dest: str, shards: int
) -> Counter[str]:
    return counted(
        proxy,
        [
            *["run", "--run-dir", str(run), "--source", str(src), "--dest", dest],
            *["--num-shards", str(shards), "--array-concurrency", "2"],
            *["--rclone-config", str(conf), "--rclone-flags", FLAGS],
            *["--scheduler", "local", "--submit"],
        ],
    )


def total(kinds: Counter[str]) -> int:
    return sum(kinds.values())


@pytest.mark.parametrize("layout", ["deep", "flat"])
def test_requests_stay_within_a_tenth_of_copy_plus_check_at_1_and_8_shards(
    proxy: FaultProxy, s3: S3Server, conf: Path, tmp_path: Path, layout: str
) -> None:
    names = deep_names(400) if layout == "deep" else flat_names(400)
    src = tmp_path / "src"
    _tree(src, names)
    prefix = f"req-{uuid.uuid4().hex[:8]}"
    base = baseline(proxy, s3, conf, src, f"s3:dst/{prefix}/base")
    assert base["PUT"] >= 400 and base["HEAD"] >= 400  # every object sent, and read back
    runs = {}
    for shards in (1, 8):
        run = tmp_path / f"run{shards}"
        runs[shards] = xfer_run(proxy, conf, run, src, f"s3:dst/{prefix}/x{shards}", shards)
        assert load_run_state(run).complete
        # a small run keeps the plain mode: each shard looks the destination up itself
        plan = load_plan(run)
        assert plan is not None and plan.dest_listing == ""
        assert len(read_tree(s3.root / "dst" / prefix / f"x{shards}")) == 400
        # every object sent once and read back once, plus a few per rclone run (answered
        # requests: low-level retries are bounded in counted()); a per-object
        # re-listing or re-check would add 400
        # no request per rclone run either: its roots end in "/" (no HEAD to see whether
        # the root is a file) and the destination listing finds the bucket (no PUT)
        assert 400 <= runs[shards]["PUT"] <= 400 + 2
        assert 400 <= runs[shards]["HEAD"] <= 400 + 2
        assert total(runs[shards]) <= 1.1 * total(base), (shards, runs[shards], base)
        # a re-run of a finished run sends no request at all
        assert total(xfer_run(proxy, conf, run, src, f"s3:dst/{prefix}/x{shards}", shards)) == 0
    # listing: one shard lists at most what the baseline does; eight list only their
    # own directory (the deep tree: 4 of 100 files, two shards each; each copy runs
    # in its directory, so lists no parent), never every directory again (the
    # byte-balanced layout listed 6 per shard, twice)
    assert runs[1]["LIST"] <= base["LIST"]
    assert runs[8]["LIST"] <= 8 + 2, runs[8]


def _prepare_then_submit(
    proxy: FaultProxy, conf: Path, run: Path, source: str, dest: str, shards: int
) -> tuple[Plan, Counter[str]]:
    """``xfer run --plan`` (lists the source, prints and records the plan, submits
    nothing), then the submission alone, counted."""
    args = [
        *["run", "--run-dir", str(run), "--source", source, "--dest", dest],
        *["--num-shards", str(shards), "--array-concurrency", "2"],
        *["--rclone-config", str(conf), "--rclone-flags", FLAGS, "--scheduler", "local"],
    ]
    proxy.reset_counts()
    planned = xfer(*args, "--plan", "--submit")
    assert planned.returncode == 0, planned.stderr
    assert "plan: " in planned.stderr and "req/s" in planned.stderr
    assert not list(run.glob("state/*.attempt")), "--plan must not submit anything"
    # listing a source on S3 reads its listing pages, not one HEAD per object (answered
    # requests: a low-level retry of a HEAD is the environment's, bounded in answered())
    listed = answered(proxy)
    assert listed["HEAD"] <= 2 and proxy.kinds["PUT"] + proxy.kinds["COPY"] == 0, proxy.kinds
    plan = load_plan(run)
    assert plan is not None
    submitted = counted(proxy, ["run", "--run-dir", str(run), "--scheduler", "local", "--submit"])
    assert load_run_state(run).complete
    return plan, submitted


@pytest.mark.parametrize("route", ["local->s3", "s3->s3 (server-side)"])
def test_plan_estimate_within_a_tenth_of_the_measured_requests(
    proxy: FaultProxy, s3: S3Server, conf: Path, tmp_path: Path, route: str
) -> None:
    prefix = f"plan-{uuid.uuid4().hex[:8]}"
    if route == "local->s3":
        src = tmp_path / "src"
        _tree(src, deep_names(300))
        source = str(src)
    else:
        _tree(s3.root / "src" / prefix, deep_names(300))
        source = f"s3:src/{prefix}"
    run = tmp_path / "run"
    plan, measured = _prepare_then_submit(proxy, conf, run, source, f"s3:dst/{prefix}", 4)
    assert plan.route == route and plan.objects == 300 and plan.shards == 4
    assert abs(plan.total_requests - total(measured)) <= 0.1 * total(measured), (plan, measured)
    # per operation too, for the ones that carry the cost
    for op in ("PUT", "COPY"):
        assert abs(plan.requests.get(op, 0) - measured[op]) <= 0.1 * max(measured[op], 10), op
    # the status shows the plan beside what was done
    status = xfer("status", "--run-dir", str(run))
    assert f"plan: {plan.total_requests:,} requests" in status.stdout, status.stdout


def test_server_side_shards_pay_no_fixed_requests(
    proxy: FaultProxy, s3: S3Server, conf: Path, tmp_path: Path
) -> None:
    """S3 -> S3 at 16 shards of 25 objects: each shard lists its own directory once per
    side and nothing else; every object costs its source HEAD, the COPY and the read-back
    HEAD, as in one rclone copy."""
    prefix = f"fixed-{uuid.uuid4().hex[:8]}"
    _tree(s3.root / "src" / prefix, deep_names(400))  # d000/s000..s003, 100 each
    run = tmp_path / "run"
    plan, measured = _prepare_then_submit(
        proxy, conf, run, f"s3:src/{prefix}", f"s3:dst/{prefix}", 16
    )
    assert read_tree(s3.root / "dst" / prefix) == read_tree(s3.root / "src" / prefix)
    meta = load_shard_meta(run / "shards")
    assert {s.lookup for s in meta.shards} == {"list"}
    assert all(s.subdir.startswith("d000/s") and s.list_pages == 1 for s in meta.shards)
    assert "d000/s" in (run / "shards" / "shard_000000.rclone").read_text()
    # a HEAD per rclone run (its roots) would add 16-32, parents' listings 64
    assert measured["COPY"] == 400, measured
    assert 800 <= measured["HEAD"] <= 800 + 2, measured
    assert measured["LIST"] <= 16 * 2 + 2, measured
    assert abs(plan.total_requests - total(measured)) <= 0.1 * total(measured), (plan, measured)


def test_diff_dest_rerun_costs_what_changed(
    proxy: FaultProxy, s3: S3Server, conf: Path, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    names = deep_names(200)
    _tree(src, names)
    prefix = f"diff-{uuid.uuid4().hex[:8]}"
    dest = f"s3:dst/{prefix}"
    first = xfer_run(proxy, conf, tmp_path / "run1", src, dest, 4)
    # 4 of 200 change: two contents of the same size, one size, one deleted at the destination
    for name in names[:2]:
        data = (src / name).read_bytes()
        (src / name).write_bytes(bytes(b ^ 0xFF for b in data))
    (src / names[50]).write_bytes(b"longer now" * 100)
    (s3.root / "dst" / prefix / names[120]).unlink()
    run = tmp_path / "run2"
    manifest = run / "manifest.jsonl"
    run.mkdir()
    build = counted(
        proxy,
        [
            *["manifest", "build", "--source", str(src), "--dest", dest, "--out", str(manifest)],
            *["--hash", "md5", "--rclone-config", str(conf), "--diff-dest"],
        ],
    )
    # the destination listed once, from its listing pages alone: no HEAD per object
    assert build["HEAD"] <= 2 and build["LIST"] <= 6, build
    kept = {r.path: r.meta["diff"] for r in read_manifest(manifest)}
    assert kept == {names[0]: "hash", names[1]: "hash", names[50]: "size", names[120]: "missing"}
    shard = xfer(
        "manifest", "shard", "--in", str(manifest), "--outdir", str(run / "shards"), "-n", "2"
    )
    assert shard.returncode == 0, shard.stderr
    meta = load_shard_meta(run / "shards")
    assert [s.check_dest for s in meta.shards] == [False, False]
    render = xfer(
        *["slurm", "render", "--run-dir", str(run), "--rclone-config", str(conf)],
        *["--rclone-flags", FLAGS, "--max-array-size", "10"],
    )
    assert render.returncode == 0, render.stderr
    assert "--no-check-dest" in (run / "shards" / "shard_000000.rclone").read_text()
    again = counted(proxy, ["run", "--run-dir", str(run), "--scheduler", "local", "--submit"])
    assert load_run_state(run).complete
    assert again["LIST"] == 0 and again["PUT"] <= 4 + 2, again
    assert total(again) + total(build) <= 0.1 * total(first), (again, build, first)
    assert read_tree(s3.root / "dst" / prefix) == read_tree(src)
    # the same through `xfer run --diff-dest`: one changed object is all it sends ...
    (src / names[7]).write_bytes(b"changed again")
    args = [
        *["run", "--run-dir", str(tmp_path / "run3"), "--source", str(src), "--dest", dest],
        *["--num-shards", "1", "--rclone-config", str(conf), "--rclone-flags", FLAGS],
        *["--scheduler", "local", "--diff-dest", "--submit"],
    ]
    rerun = counted(proxy, args)
    assert rerun["PUT"] <= 2 and rerun["HEAD"] <= 4, rerun  # the object, and the bucket
    assert [r.path for r in read_manifest(tmp_path / "run3" / "manifest.jsonl")] == [names[7]]
    # ... and when nothing differs it says so and sends nothing
    proxy.reset_counts()
    same = xfer(*args)
    assert same.returncode == 0, same.stderr
    assert "nothing to send" in same.stderr
    assert proxy.kinds["PUT"] == 0 and answered(proxy)["HEAD"] <= 2, proxy.kinds
    assert read_tree(s3.root / "dst" / prefix) == read_tree(src)


def test_many_small_shards_of_a_flat_prefix_list_the_destination_once(
    proxy: FaultProxy, s3: S3Server, conf: Path, tmp_path: Path
) -> None:
    """S3 -> S3, a flat prefix of 120 objects in 60 shards: each shard would list the
    whole prefix on both sides (120 LISTs, 1.3x copy + check), so `xfer run` lists the
    destination once instead and says so. It keeps the plain mode's promise: the
    manifest holds every object, and an object already at the destination is compared
    by the copy (one of the same size but other bytes is sent again, not taken as done)."""
    prefix = f"auto-{uuid.uuid4().hex[:8]}"
    names = flat_names(120)
    _tree(s3.root / "src" / prefix, names)
    source, dest = f"s3:src/{prefix}", f"s3:dst/{prefix}"
    base = counted(
        proxy,
        ["--config", str(conf), *FLAGS.split(), "copy", source, f"{dest}-base"],
        rclone=s3.rclone,
    ) + counted(
        proxy,
        ["--config", str(conf), *FLAGS.split(), "check", "--one-way", source, f"{dest}-base"],
        rclone=s3.rclone,
    )
    stale = s3.root / "dst" / prefix / names[5]
    stale.parent.mkdir(parents=True)
    stale.write_bytes(bytes(b ^ 0xFF for b in (s3.root / "src" / prefix / names[5]).read_bytes()))
    args = [
        *["run", "--source", source, "--dest", dest, "--num-shards", "60"],
        *["--array-concurrency", "4", "--rclone-config", str(conf), "--rclone-flags", FLAGS],
        *["--scheduler", "local"],
    ]
    # the plain mode, planned only: every shard lists the prefix on both sides
    plain = xfer(*args, "--run-dir", str(tmp_path / "plain"), "--no-diff-dest", "--plan")
    assert plain.returncode == 0, plain.stderr
    assert "destination: listed once" not in plain.stderr
    planned = load_plan(tmp_path / "plain")
    assert planned is not None and planned.dest_listing == ""
    assert planned.requests["LIST"] == 60 * 2 and planned.total_requests > 1.1 * total(base)
    # the default: the destination listed once, for the run
    run = tmp_path / "run"
    proxy.reset_counts()
    done = xfer(*args, "--run-dir", str(run), "--submit")
    assert done.returncode == 0, done.stderr
    measured = answered(proxy)
    assert "destination: listed once (119 of 120 objects missing there)" in done.stderr
    plan = load_plan(run)
    assert plan is not None and plan.dest_listing == "auto"
    assert any("listed once for this run" in note for note in plan.notes), plan.notes
    records = list(read_manifest(run / "manifest.jsonl"))
    assert len(records) == 120  # every object: the plain mode's manifest, marked
    assert sum(r.meta.get("diff") == "missing" for r in records) == 119
    meta = load_shard_meta(run / "shards")
    checking = [s for s in meta.shards if s.check_dest]
    assert len(checking) == 1 and checking[0].lookup == "list"  # the one with names[5]
    assert load_run_state(run).complete
    # the stale object was compared by its shard's copy and sent again
    assert read_tree(s3.root / "dst" / prefix) == read_tree(s3.root / "src" / prefix)
    # answered requests: the source listed to build the manifest, the destination once,
    # one shard's two listings; every object its source HEAD, COPY and read-back HEAD
    assert measured["COPY"] == 120, measured
    assert 240 <= measured["HEAD"] <= 240 + 4, measured
    assert measured["LIST"] <= 2 + 2 + 2, measured
    assert total(measured) <= 1.1 * total(base), (measured, base)
    assert abs(plan.total_requests - total(measured)) <= 0.1 * total(measured), (plan, measured)
    status = xfer("status", "--run-dir", str(run))
    assert "the destination listed once for the run (auto)" in status.stdout, status.stdout
    # a re-run reuses the manifest (no listing at all) and finds every shard done
    proxy.reset_counts()
    again = xfer(*args, "--run-dir", str(run), "--submit")
    assert again.returncode == 0, again.stderr
    assert "destination: listed once" not in again.stderr
    assert total(proxy.kinds) == 0, proxy.kinds
    kept = load_plan(run)  # planned again, from the same marked manifest
    assert kept is not None and kept.dest_listing == "auto" and kept.per_shard == plan.per_shard


def test_diff_dest_flags_need_the_roots(tmp_path: Path) -> None:
    """--diff-dest / --no-diff-dest decide how a manifest is built: resuming a run dir
    without --source/--dest, either is refused in one line and nothing is written."""
    run = tmp_path / "run"
    for flag in ("--diff-dest", "--no-diff-dest"):
        proc = xfer("run", "--run-dir", str(run), "--scheduler", "local", flag, "--submit")
        assert proc.returncode == 2, proc.stderr
        assert f"{flag} decides how the manifest is built: give --source and --dest" in (
            proc.stderr
        )
        assert not run.exists()


def test_the_run_keeps_the_plain_mode_when_it_cannot_or_need_not_list_the_destination(
    s3: S3Server, tmp_path: Path
) -> None:
    """The same flat prefix in 60 shards: a destination bucket that does not exist yet
    cannot be listed (the copies would create it): the run says so and plans the plain
    mode; another engine than rclone keeps it too (the listing saves rclone's lookups)."""
    prefix = f"keep-{uuid.uuid4().hex[:8]}"
    _tree(s3.root / "src" / prefix, flat_names(120))
    common = [
        *["run", "--source", f"s3:src/{prefix}", "--num-shards", "60", "--plan"],
        *["--rclone-config", str(s3.rclone_config), "--scheduler", "local"],
    ]
    for tag, extra, said in [
        ("nobucket", ["--dest", f"s3:nobucket-{prefix}/p"], "destination: not listed ("),
        ("s5cmd", ["--dest", f"s3:dst/{prefix}", "--engine", "s5cmd"], None),
    ]:
        run = tmp_path / tag
        proc = xfer(*common, "--run-dir", str(run), *extra)
        assert proc.returncode == 0, proc.stderr
        assert "destination: listed once" not in proc.stderr
        if said:
            assert said in proc.stderr and "each shard looks it up" in proc.stderr
        plan = load_plan(run)
        assert plan is not None and plan.dest_listing == "" and plan.shards == 60
        assert all(s.check_dest for s in load_shard_meta(run / "shards").shards)
        assert not any("diff" in r.meta for r in read_manifest(run / "manifest.jsonl"))
    assert not (s3.root / f"nobucket-{prefix}").exists()
    # --json: the same as an event
    proc = xfer(
        "--json", *common, "--run-dir", str(tmp_path / "json"), "--dest", f"s3:nobucket-{prefix}/p"
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    said = [e for e in events if e.get("event") == "dest_listing"]
    assert len(said) == 1 and said[0]["listed"] is False and said[0]["plain_lookups"] == 120, said

"""S3 endpoints that are slow, erroring, rate-limited or reset connections mid-body.

A :class:`~xfer_core.testing.faultproxy.FaultProxy` sits in front of the ``s3``
fixture; xfer gets an rclone.conf whose remote ``s3`` (same keys) points at the
proxy. Through it: ``xfer manifest build`` (the rclone lister) and ``xfer run`` on
the local scheduler, local → S3 and S3 → S3, with the ``rclone`` engine and the
``s5cmd`` plugin engine. Each case checks that a run either completes with every
object byte-identical or fails cleanly (one-line error, exit 1, no shard reported
done), and that after the endpoint heals a retry completes. (The S3 server stopped
mid-run on Slurm is in tests/e2e/test_slurm_s3.py.)

Faults are scheduled (``every=N``: the N-th, 2N-th... matching request), never left to
chance, and every test calls ``proxy.require_fired(...)`` after the faulted run and
before judging its outcome; the ``proxy`` fixture fails a test that never did.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from xfer_core.bulk.state import load_run_state
from xfer_core.manifest.jsonl import read_manifest
from xfer_core.testing.engine_conformance import make_tree, read_tree
from xfer_core.testing.faultproxy import FaultProxy
from xfer_core.testing.services import S3Server

from .conftest import Tally
from .helpers import xfer

CLASS = "faults: S3 slow, erroring, rate-limited"

pytestmark = pytest.mark.s3

#: Few parallel requests (the fixture server lists a directory per request); a few
#: tries per tool run. s5cmd gets --numworkers 4 --retry-count 5 from these.
FLAGS = "--transfers 4 --checkers 4 --retries 5 --low-level-retries 10"
#: Give up fast against an endpoint that always errors.
FAST_FAIL = "--transfers 4 --checkers 4 --retries 1 --low-level-retries 2"
ENGINES = ["rclone", "s5cmd"]


def engines(default: str) -> list[Any]:
    """Both engines; only ``default`` in the default suite (the other is a soak variant)."""
    return [e if e == default else pytest.param(e, marks=pytest.mark.soak) for e in ENGINES]


@pytest.fixture
def proxy(s3: S3Server, tmp_path: Path) -> Iterator[FaultProxy]:
    """A fault-free proxy in front of the s3 fixture (tests configure the faults and
    must check with ``require_fired`` that they fired)."""
    with FaultProxy(s3.endpoint, seed=1) as p:
        yield p
        assert p.checked, "the test never checked that its faults fired (require_fired)"


@pytest.fixture
def conf(proxy: FaultProxy, s3: S3Server, tmp_path: Path) -> str:
    """The s3 fixture's rclone.conf with remote ``s3`` pointing at ``proxy``."""
    return str(proxy.rclone_config(s3.rclone_config, tmp_path / "proxy-rclone.conf"))


def _prefix(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


def _names(n: int) -> list[str]:
    return [f"d{i % 3}/obj {i:02d}.bin" for i in range(n)] + ["big.bin", "empty.bin"]


def _run_args(
    run: Path, source: str, dest: str, conf: str, engine: str, shards: int, *extra: str
) -> list[str]:
    return [
        *["--json", "run", "--run-dir", str(run), "--source", source, "--dest", dest],
        *["--num-shards", str(shards), "--array-concurrency", "2"],
        *["--rclone-config", conf, "--engine", engine, "--scheduler", "local"],
        *extra,
    ]


def _status(run: Path) -> tuple[int, dict[str, Any]]:
    proc = xfer("--json", "status", "--run-dir", str(run))
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout.splitlines()[-1])


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "xfer: error:" in proc.stderr or '"failed"' in proc.stdout, proc.stderr


def _false_done(run: Path, dest_root: Path, files: dict[str, bytes]) -> int:
    """Records of shards reported done whose object is not byte-identical at the destination."""
    got = read_tree(dest_root)
    bad = 0
    for shard in load_run_state(run).shards:
        if shard.status != "done":
            continue
        for record in read_manifest(run / "shards" / f"shard_{shard.index:06d}.jsonl"):
            if got.get(record.path) != files[record.path]:
                bad += 1
    return bad


def _figures(proxy: FaultProxy) -> dict[str, int]:
    c = proxy.counters
    return {
        "faults": proxy.faults,
        "retries": c["retries"],
        "requests": c["requests"],
        "errors_503": c["slowdown"] + c["rate_limited"] + c["service_unavailable"],
        "errors_500": c["internal_error"],
        "resets": c["reset_request"] + c["reset_response"],
        "matched": c["matched"],
    }


def _source(kind: str, s3: S3Server, tmp_path: Path, prefix: str, n: int) -> tuple[str, dict]:
    if kind == "local":
        src = tmp_path / "src"
        return str(src), make_tree(src, _names(n))
    return s3.remote("src", prefix), make_tree(s3.root / "src" / prefix, _names(n))


def _complete(
    proxy: FaultProxy,
    run: Path,
    args: list[str],
    dest: Path,
    files: dict,
    heal_after: int = 1,
    fired: tuple[str, ...] = (),
) -> tuple[int, int]:
    """Run ``args --submit``; check that the faults ``fired`` (counter names, default any
    fault) fired; while it fails (cleanly: exit 1, one line), ``xfer retry
    --include-failed``, healing the proxy after ``heal_after`` failed submissions. Checks
    every submission for shards reported done that are not, and the end result.
    Returns (records falsely reported done, submissions)."""
    proc = xfer(*args, "--submit", timeout=900)
    proxy.require_fired(*fired)
    false_done, submissions = _false_done(run, dest, files), 1
    while proc.returncode != 0:
        _one_line_error(proc)
        assert proc.returncode == 1, proc.stderr
        assert submissions <= heal_after, f"still failing after the proxy healed: {proc.stderr}"
        if submissions == heal_after:
            proxy.heal()
        proc = xfer("retry", "--run-dir", str(run), "--include-failed", timeout=900)
        false_done += _false_done(run, dest, files)
        submissions += 1
    assert false_done == 0
    assert read_tree(dest) == files
    assert load_run_state(run).complete
    return false_done, submissions


# -- manifest build (the rclone lister) ----------------------------------------


def _build_args(s3: S3Server, conf: str, prefix: str, out: Path) -> list[str]:
    return [
        *["manifest", "build", "-s", s3.remote("src", prefix), "-d", s3.remote("dst", prefix)],
        *["-o", str(out), "--rclone-config", conf],
    ]


def test_manifest_build_through_errors_and_resets(
    s3: S3Server, proxy: FaultProxy, conf: str, tmp_path: Path, tally: Tally
) -> None:
    prefix = _prefix("mb")
    files = make_tree(s3.root / "src" / prefix, [f"l{i % 4}/o{i:03d}" for i in range(16)])
    out = tmp_path / "m.jsonl"
    # an error, a reset and an error on the first three requests (a listing of this tree
    # takes only a few: one LIST per page, no HEAD per object): it completes, exactly
    proxy.configure(at=(1, 2, 3), fault=["SlowDown", "reset", "InternalError"])
    proc = xfer(*_build_args(s3, conf, prefix, out), timeout=180)
    proxy.require_fired("slowdown", at_least=1)
    proxy.require_fired("reset_response", "reset_request", at_least=1)
    assert proc.returncode == 0, proc.stderr
    listed = {r.path: r.size for r in read_manifest(out)}
    assert listed == {name: len(data) for name, data in files.items()}
    tally(cases=1, **_figures(proxy))


@pytest.mark.soak
def test_manifest_build_against_an_always_erroring_endpoint(
    s3: S3Server, proxy: FaultProxy, conf: str, tmp_path: Path, tally: Tally
) -> None:
    prefix = _prefix("mbdown")
    make_tree(s3.root / "src" / prefix, ["a/one", "b/two"])
    out = tmp_path / "m.jsonl"
    proxy.configure(error_rate=1.0, errors=["InternalError", "SlowDown"])
    # rclone's default 10 low-level retries, each with the S3 SDK's own 10 backed-off
    # attempts, take many minutes to give up; 3 take ~25 s
    args = [*_build_args(s3, conf, prefix, out), "--extra-lsjson-flags", "--low-level-retries 3"]
    proc = xfer(*args, timeout=300)
    proxy.require_fired("internal_error", "slowdown")
    assert proc.returncode in (1, 3), proc.stderr
    _one_line_error(proc)
    assert not out.exists() and not list(tmp_path.glob("m.jsonl*")), "partial manifest left"
    proxy.heal()
    proc = xfer(*args, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert sorted(r.path for r in read_manifest(out)) == ["a/one", "b/two"]
    tally(cases=1, **_figures(proxy))


# -- xfer run: moderate errors and resets (the engines retry) ------------------


@pytest.mark.parametrize("engine", engines("rclone"))
def test_run_local_to_s3_through_errors_resets_and_latency(
    s3: S3Server, proxy: FaultProxy, conf: str, tmp_path: Path, engine: str, tally: Tally
) -> None:
    prefix = _prefix(f"l2s-{engine}")
    source, files = _source("local", s3, tmp_path, prefix, 8)
    run = tmp_path / "run"
    # every fourth request faulted: an S3 error, a reset, the other error, in turn
    proxy.configure(every=4, fault=["SlowDown", "reset", "InternalError"], latency=0.01)
    proxy.configure(jitter=0.02)
    args = _run_args(run, source, s3.remote("dst", prefix), conf, engine, 3)
    dest = s3.root / "dst" / prefix
    args += ["--rclone-flags", FLAGS]
    false_done, submissions = _complete(proxy, run, args, dest, files, fired=("slowdown",))
    proxy.require_fired("reset_request", "reset_response")
    proxy.require_fired("delayed")
    tally(cases=1, false_done=false_done, submissions=submissions, **_figures(proxy))


def test_run_s3_to_local_answers_reset_mid_body(
    s3: S3Server, proxy: FaultProxy, conf: str, tmp_path: Path, tally: Tally
) -> None:
    """Downloads cut half-way (GET answers reset mid-body): a truncated file must never
    be reported done; rclone notices the short body or the check finds the size."""
    prefix = _prefix("s2l")
    source, files = _source("s3", s3, tmp_path, prefix, 8)
    run = tmp_path / "run"
    dest = tmp_path / "back"
    args = _run_args(run, source, str(dest), conf, "rclone", 2, "--rclone-flags", FLAGS)
    # object downloads only, not listings (the S3 SDK tags GETs of objects x-id=GetObject);
    # every second one is cut half-way
    proxy.configure(every=2, fault="reset", methods=["GET"])
    proxy.configure(target=r"^/src/[^?]+(\?x-id=GetObject)?$")
    fired = ("reset_response",)
    false_done, submissions = _complete(proxy, run, args, dest, files, fired=fired)
    tally(cases=1, false_done=false_done, submissions=submissions, **_figures(proxy))


@pytest.mark.soak
@pytest.mark.parametrize("engine", ENGINES)
def test_run_s3_to_s3_rate_limited_and_slow(
    s3: S3Server, proxy: FaultProxy, conf: str, tmp_path: Path, engine: str, tally: Tally
) -> None:
    prefix = _prefix(f"s2s-{engine}")
    source, files = _source("s3", s3, tmp_path, prefix, 6)
    run = tmp_path / "run"
    proxy.configure(latency=0.03, jitter=0.03, rate_limit=4)
    args = _run_args(run, source, s3.remote("dst", prefix), conf, engine, 2)
    dest = s3.root / "dst" / prefix
    args += ["--rclone-flags", FLAGS]
    false_done, submissions = _complete(proxy, run, args, dest, files, fired=("rate_limited",))
    proxy.require_fired("delayed")
    tally(cases=1, false_done=false_done, submissions=submissions, **_figures(proxy))


# -- xfer run: an endpoint that always errors, then heals ----------------------


@pytest.mark.parametrize(
    ("engine", "kind"),
    [("rclone", "local"), pytest.param("s5cmd", "s3", marks=pytest.mark.soak)],
)
def test_run_against_an_always_erroring_endpoint_then_healed(
    s3: S3Server,
    proxy: FaultProxy,
    conf: str,
    tmp_path: Path,
    engine: str,
    kind: str,
    tally: Tally,
) -> None:
    prefix = _prefix(f"down-{engine}")
    source, files = _source(kind, s3, tmp_path, prefix, 6)
    run = tmp_path / "run"
    args = _run_args(run, source, s3.remote("dst", prefix), conf, engine, 2, "--rclone-flags")
    args += [FAST_FAIL, "--max-attempts", "1"]
    prepared = xfer(*args, timeout=120)
    assert prepared.returncode == 0, prepared.stderr
    proxy.configure(every=1, fault=["SlowDown", "InternalError"])
    proc = xfer(*args, "--submit", timeout=300)
    proxy.require_fired("slowdown", at_least=1)
    proxy.require_fired("internal_error", at_least=1)
    assert proc.returncode == 1, proc.stderr
    _one_line_error(proc)
    false_done = _false_done(run, s3.root / "dst" / prefix, files)
    state = load_run_state(run)
    assert state.totals.done == 0 and state.totals.failed == 2, state.totals
    # xfer status tells the truth: exit 1, every shard failed with a reason
    rc, doc = _status(run)
    assert rc == 1 and not doc["complete"], doc
    assert doc["totals"]["done"] == 0 and len(doc["failed"]) == 2, doc["totals"]
    for failed in doc["failed"]:  # the tool's own last error line, not just "see the log"
        assert "see the log" not in failed["last_error"], failed
        assert len(failed["last_error"].splitlines()) == 1, failed
    # healed: a retry of the failed shards completes, byte-identical
    proxy.heal()
    retry = xfer("retry", "--run-dir", str(run), "--include-failed", timeout=300)
    assert retry.returncode == 0, retry.stderr
    assert read_tree(s3.root / "dst" / prefix) == files
    rc, doc = _status(run)
    assert rc == 0 and doc["complete"], doc["totals"]
    assert false_done == 0
    tally(cases=1, false_done=false_done, **_figures(proxy))


# -- soak: more seeds, both directions, heavier faults -------------------------


@pytest.mark.soak
@pytest.mark.timeout(1200)  # s5cmd backs off long on 503s: minutes per run
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", ["local", "s3"])
@pytest.mark.parametrize("seed", [1, 2])
def test_soak_run_through_heavy_faults(
    s3: S3Server, tmp_path: Path, engine: str, kind: str, seed: int, tally: Tally
) -> None:
    prefix = _prefix(f"soak-{kind}-{engine}")
    source, files = _source(kind, s3, tmp_path, prefix, 30)
    run = tmp_path / "run"
    with FaultProxy(
        s3.endpoint, seed=seed, rate_limit=15, error_rate=0.3, reset_rate=0.15, latency=0.02
    ) as proxy:
        conf = str(proxy.rclone_config(s3.rclone_config, tmp_path / "p.conf"))
        args = _run_args(run, source, s3.remote("dst", prefix), conf, engine, 4)
        args += ["--rclone-flags", FLAGS]
        dest = s3.root / "dst" / prefix
        # seeded rates: how many of the first n matching requests fail depends on the
        # seed only, and 30 files through 4 shards make well over enough requests
        false_done, submissions = _complete(proxy, run, args, dest, files, heal_after=3)
        proxy.require_fired("reset_request", "reset_response")
        proxy.require_fired("slowdown", "internal_error")
        tally(cases=1, false_done=false_done, submissions=submissions, **_figures(proxy))


# -- the proxy itself ------------------------------------------------------------


def _get(endpoint: str, path: str = "/src") -> tuple[int, bytes]:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(endpoint)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_proxy_injects_what_it_is_told(s3: S3Server, proxy: FaultProxy) -> None:
    import http.client
    import xml.etree.ElementTree as ET

    # faultless, it forwards the server's answer (unsigned: the server refuses it, 4xx)
    status, body = _get(proxy.endpoint)
    assert 400 <= status < 500 and b"<Error>" in body, (status, body)
    refused = status
    proxy.configure(error_rate=1.0, errors=["SlowDown"])
    status, body = _get(proxy.endpoint, "/src/a&b")
    assert status == 503
    error = ET.fromstring(body)
    assert error.findtext("Code") == "SlowDown" and error.findtext("Resource") == "/src/a&b"
    proxy.configure(error_rate=0.0, reset_rate=1.0)
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        _get(proxy.endpoint)
    # 1 request per second: the first is forwarded, the next ones (answered at once,
    # within the second) get 503 SlowDown
    proxy.configure(reset_rate=0.0, rate_limit=1)
    statuses = [_get(proxy.endpoint)[0] for _ in range(6)]
    assert statuses[0] == refused and 503 in statuses, statuses
    proxy.heal()
    assert _get(proxy.endpoint)[0] == refused
    c = proxy.counters
    assert (c["slowdown"], c["reset_response"]) == (1, 1) and c["rate_limited"] >= 1, c
    assert c["retries"] >= 1 and proxy.faults == 2 + c["rate_limited"]
    proxy.require_fired("slowdown", "reset_response", at_least=2)


def test_proxy_schedule_faults_the_chosen_requests(s3: S3Server, proxy: FaultProxy) -> None:
    """``every``/``at`` fault exactly the chosen matching requests, kinds in turn; rate
    decisions depend on the seed and the matching request's number only; a test whose
    faults did not fire cannot pass ``require_fired``."""
    with pytest.raises(AssertionError, match="faults did not fire"):
        proxy.require_fired()
    proxy.configure(every=3, fault=["SlowDown", "InternalError"], target=r"^/src/m")
    statuses = []
    for i in range(1, 8):
        _get(proxy.endpoint, "/other")  # not matching: neither faulted nor counted
        statuses.append(_get(proxy.endpoint, f"/src/m{i}")[0])
    assert [s >= 500 for s in statuses] == [False, False, True, False, False, True, False]
    assert statuses[2] == 503 and statuses[5] == 500, statuses
    c = proxy.counters
    assert (c["matched"], c["requests"], c["slowdown"], c["internal_error"]) == (7, 14, 1, 1)
    proxy.require_fired("slowdown", "internal_error", at_least=2)
    with pytest.raises(AssertionError, match="7 of 14 requests matched"):
        proxy.require_fired("reset_response")
    # at=: counted from the configure that set it
    proxy.configure(every=None, at=[2], fault="InternalError")
    assert [_get(proxy.endpoint, "/src/m")[0] >= 500 for _ in range(3)] == [False, True, False]
    proxy.heal()

    def rate_pattern(noise: int) -> list[bool]:
        with FaultProxy(s3.endpoint, error_rate=0.5, target="^/src/", seed=7) as other:
            hits = []
            for _ in range(12):
                for _ in range(noise):
                    _get(other.endpoint, "/dst")
                hits.append(_get(other.endpoint, "/src/x")[0] >= 500)
            return hits

    assert rate_pattern(0) == rate_pattern(2)  # the same requests, whatever came between
    assert any(rate_pattern(0))


@pytest.mark.soak
@pytest.mark.timeout(900)
@pytest.mark.parametrize("engine", ENGINES)
def test_endpoint_stopped_mid_shard_on_the_local_scheduler(
    s3: S3Server, proxy: FaultProxy, conf: str, tmp_path: Path, engine: str, tally: Tally
) -> None:
    """The endpoint goes away (connections dropped, then refused) while shards copy."""
    import time

    from .helpers import popen_xfer

    prefix = _prefix(f"stop-{engine}")
    source, files = _source("local", s3, tmp_path, prefix, 10)
    run = tmp_path / "run"
    args = _run_args(run, source, s3.remote("dst", prefix), conf, engine, 2)
    args += ["--rclone-flags", FAST_FAIL, "--max-attempts", "1"]
    proxy.configure(latency=0.4)  # slow enough to be caught mid-shard
    proc = popen_xfer(*args, "--submit")
    try:
        deadline = time.monotonic() + 120
        while proxy.counters["forwarded"] < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list((run / "state").glob("shard_*.running")), "no shard was running"
        proxy.require_fired("delayed", at_least=3)  # the run was under way through the proxy
        proxy.stop()
        _out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    assert b"Traceback" not in err, err
    dest = s3.root / "dst" / prefix
    false_done = _false_done(run, dest, files)
    rc, doc = _status(run)
    assert rc == 1 and doc["totals"]["failed"] >= 1, doc["totals"]
    proxy.heal()
    proxy.start()
    retry = xfer("retry", "--run-dir", str(run), "--include-failed", timeout=300)
    assert retry.returncode == 0, retry.stderr
    assert read_tree(dest) == files and load_run_state(run).complete
    assert false_done == 0
    tally(cases=1, false_done=false_done, **_figures(proxy))

"""Load (soak): a sync of 100,000 files and a local run of 1,000 shards.

Peak RSS and open fds of the xfer process (and of its whole process tree) are
sampled while it runs and recorded for docs/reliability.md; afterwards every file
is compared with its source (nothing lost) and every shard state checked.
Run by bench/reliability_report.py --soak (XFER_SOAK=1).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from xfer_core.bulk.state import load_run_state
from xfer_core.testing.services import SshServer

from .conftest import Tally
from .helpers import PeakMonitor, cluster_config, local_run, popen_xfer, ssh_env

CLASS = "load"

pytestmark = [pytest.mark.soak, pytest.mark.timeout(3600)]


def _make(root: Path, n: int, per_dir: int = 1000) -> dict[str, str]:
    """``n`` small files (distinct content), ``per_dir`` a directory; {name: sha256}."""
    digests = {}
    for i in range(n):
        name = f"d{i // per_dir:04d}/f{i:06d}.dat"
        data = f"{i}\n".encode() * (1 + i % 13)
        path = root / name
        if i % per_dir == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        digests[name] = hashlib.sha256(data).hexdigest()
    return digests


def _digests(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _run(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, dict[str, float]]:
    start = time.monotonic()
    proc = popen_xfer(*args, env=env)
    with PeakMonitor(proc.pid) as monitor:
        _, err = proc.communicate(timeout=3600)
    figures = {**monitor.figures(), "seconds": round(time.monotonic() - start, 1)}
    return proc.returncode, err.decode(errors="replace"), figures


@pytest.mark.sshd
@pytest.mark.parametrize("backend", ["rsync", "sftp"])
def test_sync_100k_files(sshd: SshServer, tmp_path: Path, backend: str, tally: Tally) -> None:
    n = 100_000
    src = tmp_path / "src"
    want = _make(src, n)
    rdir = sshd.mkdtemp("load")
    remote = f"~/{rdir.relative_to(sshd.home)}/dst"
    config = cluster_config(
        tmp_path / "remotes.toml",
        sshd,
        sync_dirs=[{"alias": "p", "local": str(src), "remote": remote}],
    )
    rc, err, figures = _run(
        ["sync", "--config", str(config), "-b", backend], env=ssh_env(sshd, tmp_path)
    )
    assert rc == 0, err
    got = _digests(rdir / "dst")
    lost = sum(1 for name, digest in want.items() if got.get(name) != digest)
    assert lost == 0 and len(got) == n
    tally(cases=n, lost=lost, load=f"sync {n:,} files ({backend})", **figures)


def test_local_run_1000_shards(tmp_path: Path, tally: Tally) -> None:
    shards, n = 1000, 3000
    src = tmp_path / "src"
    want = _make(src, n, per_dir=100)
    run, dst = tmp_path / "run", tmp_path / "dst"
    rc, err, figures = _run(local_run(run, src, dst, shards, "--array-concurrency", "2"))
    assert rc == 0, err[-2000:]
    state = load_run_state(run)
    assert state.totals.shards == shards and state.complete
    got = _digests(dst)
    lost = sum(1 for name, digest in want.items() if got.get(name) != digest)
    assert lost == 0 and len(got) == n
    tally(
        cases=shards,
        lost=lost,
        false_done=0,
        load=f"local run, {shards:,} shards ({n:,} files, 2 at once)",
        **figures,
    )

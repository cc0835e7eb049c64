"""Hostile input: coverage-guided fuzzing (atheris, libFuzzer) of the config loader and
the manifest reader.

Complements the hypothesis tests (test_fuzz_config.py, test_fuzz_manifest.py):
atheris mutates bytes towards new coverage of xfer_core. Each target runs in a
subprocess (tests/reliability/atheris_fuzz.py) from a small seed corpus with a fixed
seed, for a bounded number of runs (and at most ``SECONDS`` of fuzzing); any
exception but xfer's own clear errors, a failed invariant, or one input running
10 s is a crash and fails the test. Soak: three more seeds, ten times the runs
(at most ``5 * SECONDS`` each).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Tally

CLASS = "hostile input: atheris fuzz"

HARNESS = Path(__file__).with_name("atheris_fuzz.py")
RUNS = 20_000
SECONDS = 10

SEEDS = {
    "config": [
        b'[global]\ntransfer_backend = "rsync"\ncommon_excludes = [".git"]\n\n'
        b'[[clusters]]\nname = "c"\nhost = "h"\nport = 22\nuser = "u"\n'
        b'excludes = ["*.tmp", "/top"]\n[[clusters.sync_dirs]]\nalias = "p"\n'
        b'local = "/a"\nremote = "~/b"\n[[clusters.fetch_dirs]]\nlocal = "x"\nremote = "/r"\n',
        b"[[clusters]]\nname = 'c'\nhost = '127.0.0.1'\n",
    ],
    "manifest": [
        b'{"schema":"xfer.manifest.v1","path":"a/b.txt","size":3,"mtime":1.5,'
        b'"hashes":{"md5":"00"},"source_root":"/s","dest_root":"s3:b/p"}\n',
        b'{"schema":"xfer.manifest.v1","path":"x\\udcff","size":0,"meta":{"path_b64":"eP8="}}\n',
    ],
}


def fuzz(target: str, tmp_path: Path, runs: int, seconds: int, seed: int) -> int:
    """Run ``target`` under atheris; return the number of inputs it ran."""
    pytest.importorskip("atheris", reason="atheris has wheels for Linux x86_64, CPython 3.11-3.13")
    corpus = tmp_path / f"corpus-{target}"
    corpus.mkdir()
    for i, data in enumerate(SEEDS[target]):
        (corpus / f"seed{i}").write_bytes(data)
    work = tmp_path / f"work-{target}"
    work.mkdir()
    argv = [
        sys.executable, str(HARNESS), target, str(work), f"-runs={runs}", f"-seed={seed}",
        f"-max_total_time={seconds}", "-timeout=10", "-rss_limit_mb=1024", "-max_len=4096",
        f"-artifact_prefix={work}/", str(corpus),
    ]  # fmt: skip
    proc = subprocess.run(
        argv, capture_output=True, text=True, errors="replace", timeout=seconds + 120, cwd=work
    )
    crashes = sorted(p.name for p in work.glob("*-*") if p.name.startswith(("crash", "timeout")))
    assert proc.returncode == 0 and not crashes, (crashes, proc.stdout[-4000:], proc.stderr[-4000:])
    done = re.findall(r"^#(\d+)\s+DONE", proc.stderr, re.M)
    assert done, proc.stderr[-2000:]
    return int(done[-1])


@pytest.mark.parametrize("target", ["config", "manifest"])
def test_atheris(target: str, tmp_path: Path, tally: Tally) -> None:
    ran = fuzz(target, tmp_path, RUNS, SECONDS, seed=1)
    assert ran > 100
    tally(cases=ran)


@pytest.mark.soak
@pytest.mark.parametrize("seed", [2, 3, 4])
@pytest.mark.parametrize("target", ["config", "manifest"])
def test_atheris_soak(target: str, seed: int, tmp_path: Path, tally: Tally) -> None:
    ran = fuzz(target, tmp_path, 10 * RUNS, 5 * SECONDS, seed=seed)
    tally(cases=ran)


def test_harness_reports_foreign_exceptions(tmp_path: Path) -> None:
    """The harness is not vacuous: a target raising a foreign exception is a crash."""
    pytest.importorskip("atheris", reason="atheris has wheels for Linux x86_64, CPython 3.11-3.13")
    script = tmp_path / "boom.py"
    script.write_text(
        "import sys, atheris\n"
        "def t(data):\n"
        "    if data[:1] == b'{':\n"
        "        raise KeyError('foreign')\n"
        "atheris.Setup(sys.argv, t)\n"
        "atheris.Fuzz()\n"
    )
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "s").write_bytes(b"{}")
    proc = subprocess.run(
        [sys.executable, str(script), "-runs=10", f"-artifact_prefix={tmp_path}/", str(corpus)],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=120,
        env={**os.environ},
    )
    assert proc.returncode != 0, proc.stderr[-2000:]
    assert list(tmp_path.glob("crash-*")), proc.stderr[-2000:]  # the input, kept to replay

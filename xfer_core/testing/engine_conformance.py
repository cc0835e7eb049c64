"""The shard-engine conformance suite: what every engine must do against a real S3 server.

The builtin ``rclone`` engine and third-party engines (``xfer-s5cmd``) run the same
tests, end to end through ``xfer run --scheduler local --engine NAME`` against the
``s3`` fixture (``rclone serve s3`` with buckets ``src`` and ``dst``). A plugin
author runs it on an installed engine with one import and one fixture::

    # tests/test_engine_conformance.py
    import pytest
    from xfer_core.testing.engine_conformance import ShardEngineConformance

    # top-level conftest.py: pytest_plugins = ["xfer_core.testing.fixtures"]  (the s3 fixture)

    class TestMyEngine(ShardEngineConformance):
        @pytest.fixture
        def engine(self):
            return "myengine"          # the name it registers

What it checks: local → S3 with names a shell would misread (every object arrives
byte-identical, nothing executes), S3 → S3, a re-run that skips done shards, an
object that disappears from the source (its shard fails with a reason and is
never marked done; after it is restored only that shard runs again), names few
tools can carry (newline, tab, carriage return, invalid UTF-8: copied exactly or
refused before anything runs, with an error naming them — never silently
dropped), and that no secret of the rclone config reaches the run dir or the
output.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from xfer_core.bulk.state import load_run_state
from xfer_core.testing import cli
from xfer_core.testing.cli import read_tree, xfer
from xfer_core.testing.services import S3Server

#: Names every engine must carry unchanged (spaces, quotes, shell syntax, globs, non-ASCII).
PORTABLE_NAMES = [
    "plain.txt",
    "with space.txt",
    "quote'single.txt",
    'quote"double.txt',
    "$(touch CANARY).txt",
    "`touch CANARY`.txt",
    "semi;colon #hash&amp<lt>gt.txt",
    "-leading-dash.txt",
    "--rf",
    "back\\slash.txt",
    "star*question?[bracket].txt",
    "ünïcødé/ファイル.txt",
    "line\u2028separator.txt",
    "deep/a/b/c.bin",
    "empty.bin",
    "big.bin",
]

#: Names an engine may refuse (before anything runs, naming them) instead of copying.
#: (Not sent to the S3 test server: ``rclone serve s3`` hangs on such keys.)
AWKWARD_NAMES = ["new\nline.txt", "tab\there.txt", "carriage\rreturn.txt"]
#: Not valid UTF-8 (Latin-1 é): POSIX allows it, S3 keys cannot hold it as is.
NON_UTF8_NAME = os.fsdecode(b"latin1-\xe9.txt")


def make_tree(root: Path, names: list[str]) -> dict[str, bytes]:
    """Write ``names`` under ``root`` with distinct contents of assorted sizes
    (``big.bin``: 300,003 random bytes, not a multiple of any chunk size)."""
    return cli.make_tree(root, names, big=300_003)


class ShardEngineConformance:
    """Subclass it and override the ``engine`` fixture; every test must pass unchanged."""

    @pytest.fixture
    def engine(self) -> str:
        """The name of the engine under test (installed, registered in group ``xfer``)."""
        raise NotImplementedError("override the `engine` fixture with your engine's name")

    @pytest.fixture
    def prefix(self) -> str:
        return f"conf-{uuid.uuid4().hex[:10]}"

    def run_args(
        self, engine: str, s3: S3Server, run: Path, source: str, dest: str, shards: int = 3
    ) -> list[str]:
        return [
            "--json",
            "run",
            "--run-dir",
            str(run),
            "--source",
            source,
            "--dest",
            dest,
            "--num-shards",
            str(shards),
            "--array-concurrency",
            "2",
            "--rclone-config",
            str(s3.rclone_config),
            "--max-attempts",
            "1",
            # one try per tool run: a failure is expected in some tests, and the
            # suggested 10 retries would only make them slow (s5cmd: --retry-count)
            "--rclone-flags",
            "--retries 1",
            "--engine",
            engine,
            "--scheduler",
            "local",
            "--submit",
        ]

    def test_local_to_s3_portable_names_rerun_and_no_secret(
        self, engine: str, s3: S3Server, tmp_path: Path, prefix: str
    ) -> None:
        src = tmp_path / "src 'q' $(x)"
        files = make_tree(src, PORTABLE_NAMES)
        run = tmp_path / "run"
        args = self.run_args(engine, s3, run, str(src), s3.remote("dst", prefix))
        proc = xfer(*args, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr + proc.stdout[-3000:]
        assert read_tree(s3.root / "dst" / prefix) == files
        assert load_run_state(run).complete
        assert not list(tmp_path.rglob("CANARY")), "a name was executed by a shell"
        # a re-run starts no new attempt: done shards are skipped
        logs_before = sorted(p.name for p in (run / "logs").iterdir())
        again = xfer(*args, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert sorted(p.name for p in (run / "logs").iterdir()) == logs_before
        # no secret of the rclone config in the output or anywhere in the run dir
        secret = s3.secret_key.encode()
        assert secret not in (proc.stdout + proc.stderr + again.stdout + again.stderr).encode()
        for path in run.rglob("*"):
            if path.is_file():
                assert secret not in path.read_bytes(), f"secret found in {path}"

    def test_s3_to_s3(self, engine: str, s3: S3Server, tmp_path: Path, prefix: str) -> None:
        files = make_tree(s3.root / "src" / prefix, [f"d{i % 3}/o {i}.bin" for i in range(10)])
        run = tmp_path / "run"
        args = self.run_args(
            engine, s3, run, s3.remote("src", prefix), s3.remote("dst", prefix), shards=2
        )
        proc = xfer(*args)
        assert proc.returncode == 0, proc.stderr + proc.stdout[-3000:]
        assert read_tree(s3.root / "dst" / prefix) == files

    def test_object_missing_at_source_fails_its_shard_only(
        self, engine: str, s3: S3Server, tmp_path: Path, prefix: str
    ) -> None:
        src = tmp_path / "src"
        files = make_tree(src, [f"d{i % 2}/f {i}.txt" for i in range(6)])
        run = tmp_path / "run"
        args = self.run_args(engine, s3, run, str(src), s3.remote("dst", prefix), shards=2)
        # render only (no --submit), then lose one object before the copy
        prepared = xfer(*args[:-1])
        assert prepared.returncode == 0, prepared.stderr
        (src / "d1/f 3.txt").unlink()
        proc = xfer(*args)
        assert proc.returncode == 1, proc.stderr
        state = load_run_state(run)
        assert (state.totals.done, state.totals.failed) == (1, 1)
        (fail,) = list((run / "state").glob("shard_*.fail"))
        assert fail.read_text().strip(), "a failed shard must say why"
        # restored, the re-run completes the failed shard only
        (src / "d1/f 3.txt").write_bytes(files["d1/f 3.txt"])
        proc = xfer(*args)
        assert proc.returncode == 0, proc.stderr + proc.stdout[-3000:]
        assert load_run_state(run).complete
        assert read_tree(s3.root / "dst" / prefix) == files

    def test_awkward_names_refused_before_anything_runs_or_accepted(
        self, engine: str, s3: S3Server, tmp_path: Path, prefix: str
    ) -> None:
        # Rendered only: the S3 test server (rclone serve s3) hangs on such keys, so
        # an engine that accepts them is checked against servers that can store them.
        src = tmp_path / "src"
        make_tree(src, ["ok.txt", *AWKWARD_NAMES])
        (src / NON_UTF8_NAME).write_bytes(b"latin-1 name\n")
        run = tmp_path / "run"
        args = self.run_args(engine, s3, run, str(src), s3.remote("dst", prefix), shards=1)
        proc = xfer(*args[:-1])
        if proc.returncode == 0:
            return  # accepted: the engine claims it can carry every one of them
        # refused: a usage error naming what was refused, and nothing can run
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("xfer: error:"), proc.stderr
        assert "new\\nline" in proc.stderr, proc.stderr
        assert read_tree(s3.root / "dst" / prefix) == {}
        assert list(run.glob("state/shard_*.done")) == []

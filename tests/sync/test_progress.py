"""Reporters: rich rows on a terminal, plain lines otherwise, JSON events with --json."""

from __future__ import annotations

import io
import json
import os

import pytest
from rich.console import Console

from xfer_core.output import Output
from xfer_core.sync.backend import PairJob, PairResult
from xfer_core.sync.excludes import ExcludeMatcher
from xfer_core.sync.progress import (
    JsonReporter,
    PlainReporter,
    RichReporter,
    human_bytes,
    summarize_pairs,
)

NON_UTF8 = os.fsdecode(b"caf\xe9\nx.txt")


def job(dry_run: bool = False) -> PairJob:
    return PairJob("c1", "proj", "push", "/src", "~/dst", ExcludeMatcher([]), dry_run=dry_run)


def drive(reporter: PlainReporter | RichReporter | JsonReporter, dry_run: bool = False) -> None:
    j = job(dry_run)
    sink = reporter.pair_start(j)
    sink.planned(2, 3000)
    sink.item("send", "a.txt", 1000)
    sink.item("send", NON_UTF8, 2000)
    sink.advance(3000)
    sink.item("delete", "old")
    result = PairResult("c1", "proj", "push", files_sent=2, bytes_sent=3000, skipped=5, deleted=1)
    reporter.pair_done(j, result)
    failed = PairResult("c2", "proj", "push", error="c2 (h): unreachable: Connection refused")
    reporter.pair_done(job(dry_run), failed)
    reporter.summary(summarize_pairs("push", "rsync", dry_run, [result, failed], 1.5))
    reporter.close()


def test_json_events(capsys: pytest.CaptureFixture[str]) -> None:
    drive(JsonReporter(Output(json=True)))
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in lines] == [
        "pair_start", "file", "file", "file", "pair_done", "pair_done", "summary",
    ]  # fmt: skip
    odd = lines[2]
    assert odd["path"] == "caf\\xe9\nx.txt" and "path_b64" in odd
    assert os.fsencode(NON_UTF8) == __import__("base64").b64decode(odd["path_b64"])
    summary = lines[-1]
    assert summary["ok"] is False and summary["failed_pairs"] == 1
    assert summary["files_sent"] == 2 and summary["bytes_sent"] == 3000


def test_plain_lines_list_items_only_on_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    drive(PlainReporter(Output(), dry_run=False))
    err = capsys.readouterr().err
    assert "c1/proj: sent 2 files (2.9 KiB), 5 up to date, deleted 1" in err
    assert "c2/proj: FAILED: c2 (h): unreachable: Connection refused" in err
    assert "a.txt" not in err
    drive(PlainReporter(Output(), dry_run=True), dry_run=True)
    err = capsys.readouterr().err
    assert "c1/proj: would send a.txt" in err
    assert "c1/proj: would send caf\\xe9\\nx.txt" in err  # one line, escaped
    assert "c1/proj: would delete old" in err


def test_rich_rows_and_summary() -> None:
    out = Output()
    buf = io.StringIO()
    out.__dict__["console"] = Console(file=buf, force_terminal=True, width=150, highlight=False)
    drive(RichReporter(out))
    text = buf.getvalue()
    assert "c1/proj" in text and "2 files" in text
    assert "FAILED" in text and "1 pair FAILED" in text


def test_human_bytes() -> None:
    assert human_bytes(0) == "0 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(3 * 1024**3) == "3.0 GiB"


def test_pull_says_fetched_not_sent(capsys: pytest.CaptureFixture[str]) -> None:
    reporter = PlainReporter(Output(), dry_run=True)
    j = PairJob("c1", "res", "pull", "~/r", "/r", ExcludeMatcher([]), dry_run=True)
    reporter.pair_start(j).item("send", "out.txt", 10)
    pulled = PairResult("c1", "res", "pull", files_sent=1, bytes_sent=10, skipped=2)
    reporter.pair_done(j, pulled)
    reporter.summary(summarize_pairs("pull", "rsync", False, [pulled], 0.5))
    err = capsys.readouterr().err
    assert "c1/res: would fetch out.txt" in err
    assert "c1/res: fetched 1 files (10 B), 2 up to date" in err
    assert "1 pair: fetched 1 file (10 B)" in err
    assert " sent " not in err and "would send" not in err


def test_rate_is_binary_units_and_never_a_question_mark() -> None:
    out = Output()
    buf = io.StringIO()
    out.__dict__["console"] = Console(file=buf, force_terminal=True, width=150, highlight=False)
    progress = out.byte_progress()
    task = progress.add_task("c1/proj", total=4 * 1024**2)
    progress.advance(task, 3 * 1024**2)  # one sample only: rich itself has no speed yet
    assert progress.tasks[task].speed is None
    text = "".join(str(column.render(progress.tasks[task])) for column in progress.columns[-2:])
    assert "iB/s" in text and "?" not in text and "MB/s" not in text and "GB/s" not in text

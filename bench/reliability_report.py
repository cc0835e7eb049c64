"""Run the reliability suite and write docs/reliability.md from its measured results.

Runs ``pytest tests/reliability tests/security tests/differential`` with a
result-collecting hook (tests/reliability/conftest.py, shared by
tests/security/conftest.py, appends one JSON line per test outcome and per
``tally``), counts cases per class of fault or hostile input and their outcomes
(passed, known bugs, data lost, false "done"), lists the security regression
tests (classes ``security: …``) per attack class in a table of their own, adds
the load figures (peak RSS and fds of a 100,000-file sync
and a 1,000-shard local run; soak only), and writes the page. Nothing in the tables
is typed by hand.

    uv run python bench/reliability_report.py            # default suite (CI share)
    uv run python bench/reliability_report.py --soak     # + soak: more seeds, sftp variants, load
    uv run python bench/reliability_report.py --results r.jsonl   # re-render saved results
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "reliability.md"

#: Order and one-line description of each class (the tests' CLASS constants).
CLASSES = {
    "hostile input: config fuzz": "random TOML-ish text and random-valued config structures "
    "through validate_text / parse_config and the exclude matcher",
    "hostile input: manifest fuzz": "random bytes, JSON values, truncated records and files "
    "through decode_line / read_manifest",
    "hostile input: atheris fuzz": "coverage-guided fuzzing (atheris) of the config loader and "
    "the manifest reader; only xfer's own errors allowed, no hang",
    "hostile input: every byte in names": "names that together hold every byte 0x01-0xFF but "
    "`/` through sync and fetch (rsync, sftp), manifest build + run (rclone local, S3, s5cmd)",
    "hostile input: shell injection": "`$(…)`, backticks, `;`, quotes in config paths, excludes, "
    "host/user/key, CLI flags, file names and manifest paths (sync, fetch, run); CANARY never "
    "appears",
    "hostile input: path traversal": "`..`/absolute manifest paths (text and exact bytes); "
    "symlinks out of the root and a local trap symlink on fetch",
    "secrets": "loose rclone.conf, key problems, unknown/changed host keys, S3 secret grepped in "
    "all outputs and run dirs",
    "faults: interrupts (SIGINT/SIGTERM)": "signals at seeded random points of sync (rsync, "
    "sftp), manifest build, manifest shard and a local run, plus pinned races (signal inside "
    "the event loop, during the handler hand-back, at interpreter exit, a second signal); "
    "then re-run",
    "faults: ssh, remote disk, changing files": "sshd killed mid-fetch, read-only remote dir, "
    "1 MiB tmpfs remote disk full, files changing while sent",
    "faults: network link dropped": "the link to an sshd in a network namespace cut (`ip link "
    "set down`) mid-file during sync and fetch on rsync and sftp, and down before the run: "
    "exit 1 within io_timeout, one-line error, nothing counted sent that did not arrive, "
    "re-run byte-identical",
    "faults: Slurm": "node drained mid-array (running tasks finish, pending wait); node set "
    "DOWN (running tasks killed and requeued); slurmctld restarted, and down while tasks "
    "finish; admin requeue storms then a real failure that is still retried",
    "faults: S3 slow, erroring, rate-limited": "a fault-injecting proxy in front of the S3 "
    "server: latency, 503 SlowDown / 500 errors, rate limits, connections reset mid-body; "
    "manifest build and run with the rclone and s5cmd engines",
    "differential: sync/fetch vs rsync": "random trees and destination pre-states (type "
    "changes, read-only, mtimes past/future, same size other content, excluded and hostile "
    "names) through sync and fetch on rsync and sftp vs raw `rsync -rlpt --update`: same "
    "tree, same verdict (cases = pairs compared)",
    "differential: run vs rclone copy": "random trees (local, S3) onto S3 prefixes already "
    "holding objects, `xfer run` with 1, 3 and 8 shards vs one `rclone copy`: same objects, "
    "same verdict; `manifest verify` vs `rclone check` (cases = runs compared)",
    "load": "100,000-file sync (rsync, sftp) and 1,000-shard runs (local, Slurm) (soak); "
    "40 shards on 10 Slurm array tasks (default)",
}

#: Attack classes of tests/security (their CLASS constants start with ``security: ``);
#: a class missing here is still listed, without a description.
SECURITY_PREFIX = "security: "
SECURITY_CLASSES = {
    "security: manifest roots run commands": 'rclone connection strings (`:sftp,ssh="sh -c '
    '…"`) as roots of a manifest or shards.meta.json through manifest verify, manifest '
    "shard, slurm render and the worker of xfer run (marker never written; the same with "
    "--trust-manifest-roots does run it); the root classifier property-tested",
    "security: secrets at rest and in argv": "an S3 secret and a header token given as "
    "--rclone-flags: argv of every rclone the worker starts, outputs (plain, --json) and "
    "every run-dir file readable by others grepped; credentials in connection-string roots; "
    "redaction of --header, --*-sas-url, --*-credentials",
    "security: robustness (NUL, nesting, tampered lists)": "NUL in config strings (sync, "
    "fetch, validate), meta nested past the limit through every manifest command, a shard's "
    ".files list changed after sharding (nothing copied)",
    "security: hostile sync servers, names, hosts and temp files": "a real asyncssh SFTP "
    "server listing `../x`, `a/b`, `/x`, NUL, empty and duplicate names to fetch and "
    "sync --delete (nothing written outside, exit 1); terminal escapes in remote names "
    "(property-tested escaping); look-alike temp files kept; `-oProxyCommand=…` and `a/b` "
    "hosts refused before ssh or rsync run",
    "security: run dirs on shared filesystems": "a run dir owned by a second real user, "
    "group/world-writable entries, symlinks planted at logs, reasons, checks and state files "
    "(0600 targets untouched), another user's .done, a FIFO in state/, requeue of an outer "
    "Slurm array job",
}

NOT_COVERED = [
    "containers: pyxis/enroot/apptainer are rendered and checked as text only (no enroot, "
    "pyxis or apptainer here; podman installs but cannot start containers in this VM)",
    "Slurm accounting (sacct): the fixture has no slurmdbd; status reads squeue and the run dir",
]


def run_suite(
    soak: bool,
    results: Path,
    extra: list[str],
    paths: tuple[str, ...] | list[str] = (
        "tests/reliability",
        "tests/security",
        "tests/differential",
    ),
) -> float:
    env = {**os.environ, "XFER_RELIABILITY_OUT": str(results)}
    if soak:
        env["XFER_SOAK"] = "1"
    else:
        env.pop("XFER_SOAK", None)
    argv = [sys.executable, "-m", "pytest", *paths, "-q", "-p", "no:cacheprovider"]
    start = time.monotonic()
    proc = subprocess.run([*argv, *extra], cwd=ROOT, env=env, check=False)
    print(f"pytest exit status {proc.returncode}", file=sys.stderr)
    return time.monotonic() - start


def rerun_path(results: Path) -> Path:
    """Where the re-run of ``results``' failed tests keeps its results."""
    return results.with_name(results.name + ".rerun")


def rerun_failed(soak: bool, outcomes: list[dict[str, Any]], results: Path) -> Path | None:
    """Run each failed test once more (results in :func:`rerun_path`); None if none failed."""
    failed = sorted({o["nodeid"] for o in outcomes if o["outcome"] == "failed"})
    if not failed:
        return None
    rerun = rerun_path(results)
    rerun.write_text("")
    print(f"re-running {len(failed)} failed test(s) once", file=sys.stderr)
    run_suite(soak, rerun, failed, paths=[])
    return rerun


def merge_rerun(
    outcomes: list[dict[str, Any]], tallies: list[dict[str, Any]], rerun: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[tuple[str, str]]]:
    """The first run's results with each re-run test's results in place of its first ones;
    and (nodeid, outcome of the re-run) of every test that was re-run."""
    again_outcomes, again_tallies = load(rerun)
    again = {o["nodeid"] for o in again_outcomes}
    merged = [o for o in outcomes if o["nodeid"] not in again] + again_outcomes
    merged_tallies = [t for t in tallies if t["nodeid"] not in again] + again_tallies
    final = {o["nodeid"]: o["outcome"] for o in again_outcomes}
    return merged, merged_tallies, sorted(final.items())


def load(results: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    outcomes: list[dict[str, Any]] = []
    tallies: list[dict[str, Any]] = []
    for line in results.read_text().splitlines():
        rec = json.loads(line)
        (outcomes if "outcome" in rec else tallies).append(rec)
    return outcomes, tallies


def security_section(rows: dict[str, dict[str, Any]]) -> list[str]:
    """The "Security" table: one row per attack class of tests/security (see docs/security.md)."""
    lines = [
        "",
        "## Security",
        "",
        "Regression tests of [the security model](security.md) (`tests/security/`): each runs "
        "the attack for real and checks it fails (command not run, nothing written outside, "
        "refused with a one-line reason, no secret on a command line or in a file others can "
        "read).",
        "",
    ]
    if not rows:
        return [*lines, "Not run in this report."]
    lines += [
        "| attack class | what is tried | tests | cases | passed | known bugs (xfail) | failed |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    order = [c for c in SECURITY_CLASSES if c in rows] + sorted(set(rows) - set(SECURITY_CLASSES))
    total: defaultdict[str, int] = defaultdict(int)
    for cls in order:
        r = rows[cls]
        for k in ("tests", "cases", "passed", "xfailed", "failed"):
            total[k] += r[k]
        lines.append(
            f"| {cls.removeprefix(SECURITY_PREFIX)} | {SECURITY_CLASSES.get(cls, '')} "
            f"| {r['tests']} | {r['cases']:,} | {r['passed']} | {r['xfailed']} | {r['failed']} |"
        )
    lines.append(
        f"| **total** | | {total['tests']} | {total['cases']:,} | {total['passed']} "
        f"| {total['xfailed']} | {total['failed']} |"
    )
    return lines


def render(
    outcomes: list[dict[str, Any]],
    tallies: list[dict[str, Any]],
    seconds: float,
    soak: bool,
    reruns: list[tuple[str, str]] | None = None,
    note: str = "",
) -> str:
    by_test: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in tallies:
        by_test[t["nodeid"]].append(t)
    rows: dict[str, dict[str, Any]] = {}
    bugs: list[tuple[str, str]] = []
    for o in outcomes:
        row = rows.setdefault(
            o["class"],
            {
                "tests": 0,
                "cases": 0,
                "passed": 0,
                "failed": 0,
                "xfailed": 0,
                "skipped": 0,
                "lost": 0,
                "false_done": 0,
            },
        )
        outcome = o["outcome"]
        if outcome == "skipped":
            row["skipped"] += 1
            continue
        row["tests"] += 1
        row[outcome if outcome in row else "failed"] += 1
        marks = by_test.get(o["nodeid"], [])
        row["cases"] += sum(t["cases"] for t in marks) if marks else 1
        row["lost"] += sum(t["lost"] for t in marks)
        row["false_done"] += sum(t["false_done"] for t in marks)
        if outcome == "xfailed":
            bugs.append((o["nodeid"], o.get("reason", "")))
    security = {c: r for c, r in rows.items() if c.startswith(SECURITY_PREFIX)}
    rows = {c: r for c, r in rows.items() if c not in security}
    order = [c for c in CLASSES if c in rows] + sorted(set(rows) - set(CLASSES))
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Reliability and security",
        "",
        "<!-- GENERATED by bench/reliability_report.py from a real run; do not edit by hand. -->",
        "",
        "Every fault and hostile input below is injected for real (real sshd, rsync, rclone, "
        "S3 server, signals, tmpfs), then the result is checked: nothing lost, nothing "
        "reported done that is not, nothing executed, nothing written outside its root, no "
        "secret echoed. A *case* is one injected input or fault (one fuzz example, one "
        "hostile name through one backend, one signal at one point, ...).",
        "",
        f"Run: {now}, `{'XFER_SOAK=1 ' if soak else ''}pytest tests/reliability tests/security "
        "tests/differential` "
        f"({'default + soak' if soak else 'default suite'}), {seconds:.0f} s wall, "
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}.",
        *([f"Note on this run: {note}", ""] if note else [""]),
        "| class | what is tried | tests | cases | passed | known bugs (xfail) | failed "
        '| data lost | false "done" |',
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    total: defaultdict[str, int] = defaultdict(int)
    for cls in order:
        r = rows[cls]
        if not r["tests"]:
            continue
        for k, v in r.items():
            total[k] += v
        lines.append(
            f"| {cls} | {CLASSES.get(cls, '')} | {r['tests']} | {r['cases']:,} | {r['passed']} "
            f"| {r['xfailed']} | {r['failed']} | {r['lost']} | {r['false_done']} |"
        )
    lines.append(
        f"| **total** | | {total['tests']} | {total['cases']:,} | {total['passed']} "
        f"| {total['xfailed']} | {total['failed']} | {total['lost']} | {total['false_done']} |"
    )
    lines += security_section(security)
    default_s = sum(o.get("seconds", 0) for o in outcomes if not o.get("soak"))
    soak_s = sum(o.get("seconds", 0) for o in outcomes if o.get("soak"))
    lines += [
        "",
        f"Time in test calls: default suite {default_s:.0f} s, soak variants {soak_s:.0f} s "
        "(whether other work shared the machine: see the note on the run, if any).",
    ]
    skipped = sum(r["skipped"] for r in rows.values())
    if skipped:
        lines += [
            "",
            f"{skipped} tests skipped (soak variants without XFER_SOAK=1, or a service missing).",
        ]
    loads = [t for t in tallies if "load" in t]
    lines += ["", "## Load", ""]
    if loads:
        lines += [
            "Sampled every 0.2 s from /proc while the command ran: the xfer process alone, and "
            "its whole process tree (rsync/ssh or the workers and rclone). A peak shorter than "
            "a sample can be missed: `manifest shard` keeps two files per shard open while the "
            "fd limit allows (up to ~1,900 fds for 1,000 shards, seen at 0.05 s sampling), "
            "then falls back to reopening them. Slurm workers run under slurmstepd, not under "
            "xfer, so the Slurm rows' tree is `xfer run --submit` and `xfer status --watch`.",
            "",
            "| load | wall s | peak RSS xfer (MiB) | peak RSS tree (MiB) | peak fds xfer "
            "| peak fds tree | peak processes | data lost |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for t in loads:
            lines.append(
                f"| {t['load']} | {t['seconds']} | {t['peak_rss_mib']} | {t['peak_tree_rss_mib']} "
                f"| {t['peak_fds']} | {t['peak_tree_fds']} | {t['peak_procs']} | {t['lost']} |"
            )
    else:
        lines.append("Not run in this report (run with `--soak`).")
    lines += ["", "## Failed, then re-run once", ""]
    if reruns:
        lines += [
            "These tests failed in the run above and were run once more on their own; the "
            "table counts the re-run's outcome and figures.",
            "",
        ] + [f"- `{nodeid}`: {outcome} on re-run" for nodeid, outcome in reruns]
    else:
        lines.append("None: every test passed (or xfailed) at its first run.")
    lines += ["", "## Known bugs found (tests marked xfail, strict)", ""]
    if bugs:
        seen = set()
        for nodeid, reason in bugs:
            reason = reason.removeprefix("reason: ")
            if reason in seen:
                continue
            seen.add(reason)
            lines.append(f"- {reason} (`{nodeid.split('::')[0]}`)")
    else:
        lines.append("None.")
    lines += ["", "## Not covered here", ""] + [f"- {item}" for item in NOT_COVERED]
    lines += [
        "",
        "## Regenerate",
        "",
        "```",
        "uv run python bench/reliability_report.py          # default suite + security",
        "uv run python bench/reliability_report.py --soak   # all seeds, sftp variants, load",
        "```",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soak", action="store_true", help="also the soak variants and load")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--results", type=Path, help="render saved results; do not run")
    parser.add_argument("--seconds", type=float, default=0.0, help="wall time of saved results")
    parser.add_argument(
        "--no-rerun", action="store_true", help="do not re-run failed tests once (see the page)"
    )
    parser.add_argument("--note", default="", help="a line about this run, shown on the page")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments")
    args = parser.parse_args()
    if args.results:
        results, seconds = args.results, args.seconds
    else:
        results = Path(tempfile.mkstemp(prefix="reliability-", suffix=".jsonl")[1])
        seconds = run_suite(args.soak, results, args.pytest_args)
        print(f"results in {results}", file=sys.stderr)
    outcomes, tallies = load(results)
    reruns: list[tuple[str, str]] = []
    if not args.no_rerun:
        # saved results are rendered, never run: their run's re-run file is used if it exists
        saved = rerun_path(results)
        if args.results:
            rerun = saved if saved.is_file() else None
        else:
            rerun = rerun_failed(args.soak, outcomes, results)
        if rerun is not None:
            outcomes, tallies, reruns = merge_rerun(outcomes, tallies, rerun)
    page = render(outcomes, tallies, seconds, args.soak, reruns, args.note)
    from xfer_core.atomic import atomic_write_text

    atomic_write_text(args.out, page)
    print(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Secrets at rest and in argv (issue 19, item 4).

A run given its S3 secret as an rclone flag (``--rclone-flags "--s3-secret-access-key
…"``, the rclone.conf holding no secret) and a bearer-style ``--header`` copies to the
real S3 server; afterwards no file of the run dir that group or others can read holds
either value, worker.sh holds neither, no output shows them (plain and ``--json``),
and the argv of every rclone the worker started (recorded by an ``$XFER_RCLONE``
wrapper, i.e. its /proc/PID/cmdline) holds neither. Credentials inside a
connection-string root are refused before anything is written; the redaction
covers ``--header``, ``--azureblob-sas-url``, ``--drive-service-account-credentials``.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path

import pytest

from tests.reliability.helpers import files_holding, local_run, read_tree, write_tree, xfer
from xfer_core.bulk.render import redact_flags, split_secret_flags
from xfer_core.testing.services import S3Server
from xfer_core.tools import find_rclone

from .conftest import Tally

CLASS = "security: secrets at rest and in argv"


def _conf_without_secret(s3: S3Server, path: Path) -> Path:
    text = s3.rclone_config.read_text()
    kept = [ln for ln in text.splitlines() if not ln.startswith("secret_access_key")]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(kept) + "\n")
    assert s3.secret_key not in path.read_text()
    return path


def _argv_recorder(tmp: Path) -> tuple[Path, Path]:
    """An rclone wrapper that appends its argv (what /proc/PID/cmdline shows) to a log."""
    real = find_rclone()
    assert real
    log = tmp / "argv.log"
    wrapper = tmp / "rclone-wrapper"
    wrapper.write_text(
        "#!/usr/bin/env bash\n"
        f"printf '%s\\0' \"$0\" \"$@\" >>{log}; printf '\\n' >>{log}\n"
        f'exec {real} "$@"\n'
    )
    wrapper.chmod(0o700)
    return wrapper, log


@pytest.mark.s3
@pytest.mark.parametrize("flags", [["--json"], []])
def test_flag_credentials_stay_out_of_argv_and_readable_files(
    tmp_path: Path, s3: S3Server, tally: Tally, flags: list[str]
) -> None:
    secret = s3.secret_key
    token = f"tok-{uuid.uuid4().hex}"
    conf = _conf_without_secret(s3, tmp_path / "rclone.conf")
    wrapper, argv_log = _argv_recorder(tmp_path)
    src = tmp_path / "src"
    files = write_tree(src, [f"f{i}.txt" for i in range(5)])
    prefix = f"sec-{uuid.uuid4().hex[:8]}"
    rclone_flags = f"--s3-secret-access-key {secret} --header 'X-Api-Token: {token}'"
    run = tmp_path / "run"
    proc = xfer(
        *flags,
        *local_run(
            run,
            src,
            s3.remote("dst", prefix),
            2,
            "--rclone-config",
            str(conf),
            "--rclone-flags",
            rclone_flags,
        ),
        env={"XFER_RCLONE": str(wrapper)},
    )
    assert proc.returncode == 0, proc.stderr
    assert read_tree(s3.root / "dst" / prefix) == files, "the env-passed secret did not work"
    argvs = argv_log.read_bytes()
    # a copy per shard (verified by its own report; --verify check would add a check each)
    assert argvs.count(b"\x00copy\x00") >= 2, "no rclone copy argv recorded"
    status = xfer("--json", "status", "--run-dir", str(run))
    outputs = proc.stdout + proc.stderr + status.stdout + status.stderr
    for value in (secret, token):
        assert value.encode() not in argvs, "a credential is on rclone's command line"
        assert value not in outputs, "a credential is in the output"
        holders = files_holding(run, value.encode())
        assert set(holders) == {run / "secrets.env"}, holders
        assert all(mode & 0o077 == 0 for mode in holders.values()), holders
    for name in ("worker.sh", "config.resolved.json", "files.sha256", "secrets.env"):
        mode = stat.S_IMODE((run / name).stat().st_mode)
        assert mode & 0o077 == 0, f"{name} is mode {mode:o}"
    shown = json.loads((run / "config.resolved.json").read_text())["rclone_flags"]
    assert shown == ["--s3-secret-access-key", "<redacted>", "--header", "<redacted>"]
    if flags:
        render = [json.loads(x) for x in proc.stdout.splitlines() if '"render"' in x]
        assert render and render[0]["rclone_flags"] == shown, proc.stdout
    tally(cases=1)


def test_shell_in_a_secret_flag_runs_nothing(tmp_path: Path, tally: Tally) -> None:
    """secrets.env is sourced by the worker: values are quoted, odd names stay flags."""
    src, dst, run = tmp_path / "src", tmp_path / "dst", tmp_path / "run"
    files = write_tree(src, ["a.txt"])
    flags = "--sftp-pass='$(touch CANARY)`touch CANARY`' '--x-token$(touch CANARY)=1'"
    assert split_secret_flags(["--x-token$(touch CANARY)=1"]).env == {}
    proc = xfer(*local_run(run, src, dst, 1, "--rclone-flags", flags), cwd=tmp_path)
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("CANARY")), "a shell ran the flag"
    assert "RCLONE_SFTP_PASS=" in (run / "secrets.env").read_text()
    assert proc.returncode == 1 or read_tree(dst) == files, (
        proc.stderr
    )  # rclone rejects the odd flag
    tally(cases=2)


def test_worker_refuses_a_secrets_file_others_can_read(tmp_path: Path, tally: Tally) -> None:
    src, dst, run = tmp_path / "src", tmp_path / "dst", tmp_path / "run"
    write_tree(src, ["a.txt"])
    prep = xfer(*local_run(run, src, dst, 1, "--rclone-flags", "--sftp-pass=hunter2")[:-1])
    assert prep.returncode == 0, prep.stderr
    assert "hunter2" not in (run / "worker.sh").read_text()
    (run / "secrets.env").chmod(0o644)
    proc = xfer("run", "--run-dir", str(run), "--scheduler", "local", "--submit")
    assert proc.returncode != 0
    assert "secrets.env must be a file of yours with mode 0600" in proc.stderr, proc.stderr
    reason = (run / "state" / "shard_0.fail").read_text()
    assert "secrets.env must be a file of yours with mode 0600" in reason
    assert not dst.exists() or not list(dst.iterdir())
    tally(cases=1)


@pytest.mark.parametrize(
    "dest",
    [
        ':s3,provider=Other,secret_access_key=TOPSECRET1,endpoint="http://x:1":b',
        "webdav,pass=TOPSECRET1:dir",
        ":azureblob,sas_url='https://a/?sig=TOPSECRET1':c",
    ],
)
def test_credentials_in_a_connection_string_root_are_refused(
    tmp_path: Path, dest: str, tally: Tally
) -> None:
    src = tmp_path / "src"
    write_tree(src, ["a.txt"])
    for argv in (
        local_run(tmp_path / "run", src, dest, 1),
        [
            "manifest",
            "build",
            "--source",
            str(src),
            "--dest",
            dest,
            "--out",
            str(tmp_path / "m.jsonl"),
        ],
        [
            "manifest",
            "build",
            "--source",
            dest,
            "--dest",
            str(tmp_path / "d"),
            "--out",
            str(tmp_path / "m.jsonl"),
        ],
    ):
        proc = xfer(*argv)
        assert proc.returncode == 2, proc.stderr
        error = next(ln for ln in proc.stderr.splitlines() if ln.startswith("xfer: error:"))
        assert "carries credentials" in error, proc.stderr
        assert "TOPSECRET1" not in proc.stderr + proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"], "something was written"
    tally(cases=3)


_TOKEN = "--s3-session-token SESSION1"


@pytest.mark.parametrize(
    "flags,extra,why",
    [
        (_TOKEN, ["--runtime", "docker", "--rclone-image", "r/r"], "runtime 'docker'"),
        (_TOKEN, ["--runtime", "podman", "--rclone-image", "r/r"], "runtime 'podman'"),
        (_TOKEN, ["--runtime", "enroot", "--rclone-image", "r/r"], "runtime 'enroot'"),
        ("--header 'X-B: SESSION1' --header 'X-A: SESSION1'", [], "gives --header twice"),
    ],
)
def test_secret_flags_refused_where_they_would_reach_an_argv(
    tmp_path: Path, flags: str, extra: list[str], why: str
) -> None:
    """docker/podman/enroot get env only on their command line, and one variable holds
    one value: refused (exit 2, nothing rendered), never leaked."""
    src, run = tmp_path / "src", tmp_path / "run"
    write_tree(src, ["a.txt"])
    argv = local_run(run, src, tmp_path / "d", 1, "--rclone-flags", flags, *extra)[:-1]
    proc = xfer(*argv)
    assert proc.returncode == 2 and why in proc.stderr, proc.stderr
    assert "SESSION1" not in proc.stderr and not (run / "worker.sh").exists()


@pytest.mark.s3
def test_lister_credential_flags_go_through_the_environment(
    tmp_path: Path, s3: S3Server, tally: Tally
) -> None:
    """`manifest build --extra-lsjson-flags --s3-secret-access-key …` lists a real bucket
    (so the secret reached rclone) without the secret on rclone's command line."""
    secret = s3.secret_key
    conf = _conf_without_secret(s3, tmp_path / "rclone.conf")
    wrapper, argv_log = _argv_recorder(tmp_path)
    prefix = f"lst-{uuid.uuid4().hex[:8]}"
    (s3.root / "dst" / prefix).mkdir(parents=True)
    (s3.root / "dst" / prefix / "a.txt").write_text("a\n")
    out = tmp_path / "m.jsonl"
    proc = xfer(
        "manifest",
        "build",
        "--source",
        s3.remote("dst", prefix),
        "--dest",
        str(tmp_path / "d"),
        "--out",
        str(out),
        "--rclone-config",
        str(conf),
        "--extra-lsjson-flags",
        f"--s3-secret-access-key={secret}",
        env={"XFER_RCLONE": str(wrapper)},
    )
    assert proc.returncode == 0, proc.stderr
    assert '"path":"a.txt"' in out.read_text()
    assert argv_log.read_bytes() and secret.encode() not in argv_log.read_bytes()
    assert secret not in proc.stdout + proc.stderr and secret not in out.read_text()
    tally(cases=1)


def test_redaction_covers_the_flags_the_review_found() -> None:
    flags = [
        "--transfers",
        "8",
        "--header",
        "Authorization: Bearer B1",
        "--azureblob-sas-url=https://acct/?sig=S2",
        "--drive-service-account-credentials",
        '{"private_key": "K3"}',
        "--webdav-bearer-token",
        "T4",
        "--sftp-key-use-agent",
        "--checkers",
        "4",
        "--sftp-key-file",
        "/home/me/.ssh/id",
        "--s3-secret-access-key",
        "S5",
    ]
    shown = redact_flags(flags)
    assert not any(s in " ".join(shown) for s in ("B1", "S2", "K3", "T4", "S5"))
    assert shown[:2] == ["--transfers", "8"]
    assert "--sftp-key-use-agent" in shown and "--checkers" in shown and "4" in shown
    split = split_secret_flags(flags)
    assert split.kept == [
        *("--transfers", "8", "--sftp-key-use-agent", "--checkers", "4"),
        *("--sftp-key-file", "/home/me/.ssh/id"),
    ]
    assert split.env["RCLONE_HEADER"] == "Authorization: Bearer B1"
    assert split.env["RCLONE_AZUREBLOB_SAS_URL"] == "https://acct/?sig=S2"
    assert split.env["RCLONE_S3_SECRET_ACCESS_KEY"] == "S5"
    assert not split.repeated
    assert split_secret_flags(["--header", "a: 1", "--header=b: 2"]).repeated == ["--header"]

"""Each real-service fixture used for real once: if these fail, the service tests mean nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from xfer_core.testing.services import S3Server, SlurmCluster, SshServer


def test_ssh_command_runs_as_test_user(sshd: SshServer) -> None:
    res = sshd.run("id -un && command -v rsync && echo $HOME", check=True)
    user, rsync, home = res.stdout.split()
    assert user == "xfertest"
    assert rsync.endswith("/rsync")
    assert Path(home) == sshd.home


def test_rsync_over_ssh_writes_files_owned_by_test_user(
    sshd: SshServer, remote_tmp_path: Path, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text("hello\n")
    subprocess.run(
        [
            "rsync",
            "-a",
            "-e",
            sshd.ssh_command(),
            f"{tmp_path}/",
            f"{sshd.destination}:{remote_tmp_path}/",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    copied = remote_tmp_path / "a.txt"
    assert copied.read_text() == "hello\n"
    assert copied.stat().st_uid == sshd.uid


def test_sftp_subsystem_works(sshd: SshServer, remote_tmp_path: Path) -> None:
    res = subprocess.run(
        ["sftp", "-b", "-", *sshd.sftp_args(), sshd.destination],
        input=f"mkdir {remote_tmp_path}/made-by-sftp\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert (remote_tmp_path / "made-by-sftp").is_dir()


def test_wrong_host_key_is_refused(sshd: SshServer, tmp_path: Path) -> None:
    other = tmp_path / "known_hosts"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True
    )
    pub = (tmp_path / "k.pub").read_text().split()
    other.write_text(f"[{sshd.host}]:{sshd.port} {pub[0]} {pub[1]}\n")
    args = [
        a if not a.startswith("UserKnownHostsFile=") else f"UserKnownHostsFile={other}"
        for a in sshd.ssh_args()
    ]
    res = subprocess.run(
        ["ssh", *args, sshd.destination, "true"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 255


def test_stop_drops_connections_and_start_restarts_on_same_port(sshd: SshServer) -> None:
    port = sshd.port
    long = subprocess.Popen(
        ["ssh", *sshd.ssh_args(), sshd.destination, "sleep 30"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert sshd.run("true").returncode == 0
        sshd.stop()
        assert sshd.pid is None
        assert long.wait(timeout=20) != 0  # the open session was dropped
        assert sshd.run("true", timeout=30).returncode == 255
    finally:
        long.kill()
        sshd.start()
    assert sshd.port == port
    assert sshd.run("echo back", check=True).stdout == "back\n"


def test_sbatch_wait_job_runs_and_writes_output(slurm: SlurmCluster, tmp_path: Path) -> None:
    out = tmp_path / "job.out"
    res = slurm.run(
        [
            "sbatch",
            "--wait",
            "-D",
            str(tmp_path),
            "-o",
            str(out),
            "--wrap",
            "echo hello from $SLURM_JOB_ID",
        ],
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    job_id = res.stdout.split()[-1]
    assert out.read_text() == f"hello from {job_id}\n"


def test_slurm_array_limit_and_ctld_restart(slurm: SlurmCluster, tmp_path: Path) -> None:
    too_big = slurm.run(
        ["sbatch", f"--array=0-{slurm.max_array_size}", "-o", "/dev/null", "--wrap", "true"]
    )
    assert too_big.returncode != 0
    held = slurm.run(
        ["sbatch", "--parsable", "--hold", "-o", "/dev/null", "--wrap", "true"], check=True
    )
    job_id = held.stdout.strip()
    slurm.restart_ctld()
    # the job survives the controller restart (state is saved in state_dir)
    res = slurm.run(["squeue", "-h", "-j", job_id, "-o", "%i %T"], check=True)
    assert res.stdout.split() == [job_id, "PENDING"]
    slurm.run(["scancel", job_id], check=True)


def test_object_round_trips_through_s3(s3: S3Server, tmp_path: Path) -> None:
    data = "payload with ünïcode\n"
    (tmp_path / "obj.txt").write_text(data)
    s3.run_rclone("copyto", str(tmp_path / "obj.txt"), s3.remote("src", "dir/obj.txt"), check=True)
    assert (s3.root / "src" / "dir" / "obj.txt").read_text() == data
    s3.run_rclone("copy", s3.remote("src"), s3.remote("dst"), check=True)
    assert s3.run_rclone("cat", s3.remote("dst", "dir/obj.txt"), check=True).stdout == data
    assert s3.rclone_config.stat().st_mode & 0o777 == 0o600


def test_files_written_into_root_are_visible_at_once(s3: S3Server) -> None:
    listed = s3.run_rclone("lsf", "-R", s3.remote("src"), check=True)  # fill any listing cache
    seeded = s3.root / "src" / "seeded" / "new.bin"
    seeded.parent.mkdir(parents=True, exist_ok=True)
    seeded.write_bytes(b"x" * 10)
    listed = s3.run_rclone("lsf", "-R", s3.remote("src"), check=True)
    assert "seeded/new.bin" in listed.stdout.splitlines()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_s3_server_idles_after_requests(s3: S3Server, tmp_path: Path) -> None:
    # rclone 1.75's serve s3 with --dir-cache-time 0s spun a core at 100% from its first
    # request on (2 s idle cost ~2 s of CPU), which starved a 2-core CI run into timeouts
    (tmp_path / "obj.txt").write_text("x")
    s3.run_rclone("copyto", str(tmp_path / "obj.txt"), s3.remote("src", "idle/obj.txt"), check=True)
    s3.run_rclone("lsf", "-R", s3.remote("src"), check=True)
    assert s3.pid is not None
    before = _cpu_seconds(s3.pid)
    time.sleep(2)
    assert _cpu_seconds(s3.pid) - before < 0.5


def test_s3_stop_and_restart_keeps_data(s3: S3Server) -> None:
    (s3.root / "dst" / "kept.txt").write_text("kept")
    s3.stop()
    assert s3.pid is None
    down = s3.run_rclone("lsf", s3.remote("dst"), "--retries", "1", "--low-level-retries", "1")
    assert down.returncode != 0
    s3.start()
    assert s3.run_rclone("cat", s3.remote("dst", "kept.txt"), check=True).stdout == "kept"


def _processes_holding(prefix: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fd_dir = f"/proc/{entry}/fd"
            if any(os.readlink(f"{fd_dir}/{fd}").startswith(prefix) for fd in os.listdir(fd_dir)):
                pids.append(int(entry))
        except OSError:
            continue
    return pids


@pytest.mark.usefixtures("slurm")  # a second cluster beside the session's one
def test_second_cluster_close_kills_running_jobs(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    with SlurmCluster() as cluster:
        cluster.run(
            ["sbatch", "-o", "/dev/null", "--wrap", f"touch {marker}; sleep 300"], check=True
        )
        for _ in range(300):
            if marker.exists():
                break
            time.sleep(0.1)
        assert marker.exists(), cluster.run(["squeue"]).stdout
        prefix = f"{cluster.dir}/"
        assert _processes_holding(prefix)  # slurmstepd and friends hold its files
    assert _processes_holding(prefix) == []


def test_a_test_may_leave_sshd_stopped(sshd: SshServer) -> None:
    sshd.stop()  # no start(): the plugin restarts it after the test


def test_sshd_is_back_after_a_test_left_it_stopped(sshd: SshServer) -> None:
    assert sshd.pid is not None
    assert sshd.run("echo up", check=True).stdout == "up\n"


@pytest.mark.usefixtures("s3")  # a second server beside the session's one
def test_hung_s3_server_is_restarted() -> None:
    with S3Server() as server:
        (server.root / "src" / "kept.txt").write_text("kept")
        hung = server.pid
        assert hung is not None
        server.ensure_responsive()
        assert server.pid == hung  # a healthy server is left alone
        os.kill(hung, signal.SIGSTOP)
        server.ensure_responsive()
        assert server.pid not in (None, hung)
        assert (
            server.run_rclone("cat", server.remote("src", "kept.txt"), check=True).stdout == "kept"
        )

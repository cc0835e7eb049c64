"""A manifest cannot make xfer run commands (issue 19, item 1).

The attack: a manifest (or shards.meta.json) whose root is an rclone connection
string for the sftp backend with ``ssh="sh -c …"``: rclone runs that program the
moment it opens the remote. Each entry point that reads roots from a file —
``manifest verify``, ``manifest shard``, ``slurm render`` and so the worker that
``xfer run`` starts — refuses it with one line and exit 2, and the marker the
command would create is never written. The same command with
``--trust-manifest-roots`` does run it (with the real rclone): the attack is live,
so the refusals are what stops it.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reliability.helpers import local_run, write_tree, xfer
from xfer_core.errors import ManifestError
from xfer_core.manifest.roots import (
    REDACTED,
    check_manifest_roots,
    classify_root,
    redact_root,
    root_secret_options,
)

from .conftest import Tally

CLASS = "security: manifest roots run commands"


def hostile_root(marker: Path) -> str:
    """An sftp on-the-fly remote whose ``ssh`` program writes ``marker``."""
    return f':sftp,host=127.0.0.1,ssh="sh -c id>{marker}":data'


def write_manifest(path: Path, src: str, dst: str, names: list[str]) -> Path:
    lines = [
        json.dumps(
            {
                "schema": "xfer.manifest.v1",
                "path": n,
                "size": len(f"0:{n}\n"),
                "source_root": src,
                "dest_root": dst,
                "source": f"{src}/{n}",
                "dest": f"{dst}/{n}",
            }
        )
        for n in names
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


#: For the live controls: rclone gives up on the failed sftp connection at once instead of
#: retrying it for ~11 s (the ``ssh`` program has run, and written the marker, by then).
ONE_TRY = {"RCLONE_LOW_LEVEL_RETRIES": "1"}


def refused(proc: object, marker: Path) -> None:
    """Exit 2, one ``error:`` line naming the connection string, marker absent."""
    rc, err = proc.returncode, proc.stderr  # type: ignore[attr-defined]
    assert rc == 2, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "connection string" in errors[0], err
    assert "Traceback" not in err
    assert not marker.exists(), "the manifest's command ran"


@pytest.fixture
def attack(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(manifest with a hostile dest_root, marker, source dir)."""
    src = tmp_path / "src"
    write_tree(src, ["a.txt", "b.txt"])
    marker = tmp_path / "pwned"
    m = write_manifest(tmp_path / "m.jsonl", str(src), hostile_root(marker), ["a.txt", "b.txt"])
    return m, marker, src


def test_verify_refuses_and_trust_shows_the_attack_is_live(
    attack: tuple[Path, Path, Path], tally: Tally
) -> None:
    manifest, marker, _src = attack
    refused(xfer("manifest", "verify", "--in", str(manifest)), marker)
    # opting in (the user vouches for the manifest) lets rclone open the remote: it runs
    live = xfer("manifest", "verify", "--in", str(manifest), "--trust-manifest-roots", env=ONE_TRY)
    assert live.returncode != 0 and "destination: :sftp," in live.stderr, live.stderr
    assert marker.exists(), "control: the attack did not run even when trusted"
    marker.unlink()
    # a destination given on the command line is the user's: the manifest's is not used
    own = manifest.parent / "own"
    own.mkdir()
    ok = xfer("manifest", "verify", "--in", str(manifest), "--dest", str(own))
    assert ok.returncode == 1 and "2 missing" in ok.stderr, ok.stderr
    assert not marker.exists()
    tally(cases=3)


@pytest.mark.parametrize("field", ["source_root", "dest_root"])
def test_shard_refuses_before_writing(
    tmp_path: Path, attack: tuple[Path, Path, Path], field: str, tally: Tally
) -> None:
    _m, marker, src = attack
    roots = {"source_root": str(src), "dest_root": str(tmp_path / "dst")}
    roots[field] = hostile_root(marker)
    manifest = write_manifest(tmp_path / f"{field}.jsonl", **_roots(roots), names=["a.txt"])
    out = tmp_path / "run" / "shards"
    refused(
        xfer("manifest", "shard", "--in", str(manifest), "--outdir", str(out), "-n", "1"), marker
    )
    assert not out.exists() or not list(out.iterdir()), "shard files written"
    tally(cases=1)


def _roots(roots: dict[str, str]) -> dict[str, str]:
    return {"src": roots["source_root"], "dst": roots["dest_root"]}


def test_render_and_run_refuse_hostile_shard_meta(
    tmp_path: Path, attack: tuple[Path, Path, Path], tally: Tally
) -> None:
    """shards.meta.json is a file too: a hostile root there never reaches worker.sh, so
    ``xfer run`` of that run dir runs nothing. Trusted, the worker does run it (live)."""
    manifest, marker, _src = attack
    run = tmp_path / "run"
    sharded = xfer(
        "manifest",
        "shard",
        "--in",
        str(manifest),
        "--outdir",
        str(run / "shards"),
        "-n",
        "1",
        "--trust-manifest-roots",
    )
    assert sharded.returncode == 0, sharded.stderr
    refused(xfer("slurm", "render", "--run-dir", str(run), "--runtime", "host"), marker)
    assert not (run / "worker.sh").exists() and not (run / "config.resolved.json").exists()
    go = xfer("run", "--run-dir", str(run), "--scheduler", "local", "--submit")
    assert go.returncode == 2 and "not rendered" in go.stderr, go.stderr
    assert not marker.exists()
    # a legit run dir whose meta is edited afterwards: render refuses again
    meta = run / "shards" / "shards.meta.json"
    good = json.loads(meta.read_text())
    good["dest_root"] = str(tmp_path / "dst")
    meta.write_text(json.dumps(good))
    rendered = xfer("slurm", "render", "--run-dir", str(run), "--runtime", "host")
    assert rendered.returncode == 0, rendered.stderr
    assert f"roots: {_src} -> {tmp_path / 'dst'}" in rendered.stderr, rendered.stderr
    good["dest_root"] = hostile_root(marker)
    meta.write_text(json.dumps(good))
    refused(xfer("slurm", "render", "--run-dir", str(run), "--runtime", "host"), marker)
    # control: trusted, the worker started by `xfer run` runs the root's command
    trusted = xfer(
        *("slurm", "render", "--run-dir", str(run), "--runtime", "host", "--max-attempts", "1"),
        "--trust-manifest-roots",
    )
    assert trusted.returncode == 0, trusted.stderr
    live = xfer(
        *("run", "--run-dir", str(run), "--scheduler", "local", "--submit", "--max-attempts", "1"),
        env=ONE_TRY,
    )
    assert live.returncode == 1, live.stderr
    assert marker.exists(), "control: the worker did not run the root even when trusted"
    tally(cases=4)


def test_command_line_roots_stay_usable(tmp_path: Path, tally: Tally) -> None:
    """`xfer run --dest` with a connection string typed by the user still works, and a
    manifest with plain `remote:path` / absolute roots shards and renders unasked."""
    src = tmp_path / "src"
    files = write_tree(src, ["a.txt", "b/c.txt"])
    dest = tmp_path / "dst"
    proc = xfer(*local_run(tmp_path / "run", src, f":local:{dest}", 1))
    assert proc.returncode == 0, proc.stderr
    assert (dest / "b" / "c.txt").read_bytes() == files["b/c.txt"]
    m = write_manifest(tmp_path / "m.jsonl", "s3src:bucket/set", "/data/copy", ["a.txt"])
    run = tmp_path / "run2"
    shard = xfer("manifest", "shard", "--in", str(m), "--outdir", str(run / "shards"), "-n", "1")
    assert shard.returncode == 0 and "roots: s3src:bucket/set -> /data/copy" in shard.stderr
    render = xfer("slurm", "render", "--run-dir", str(run), "--runtime", "host")
    assert render.returncode == 0, render.stderr
    tally(cases=3)


# --- the classifier (pure) ---------------------------------------------------------

_name_chars = string.ascii_letters + string.digits + "_.+@"
# rclone's remote names: no leading "-" or space, no trailing space or "-" (rclone rejects "0-")
names = st.builds(
    lambda a, sep, b: a + (sep + b if sep else ""),
    st.text(_name_chars + "-", min_size=1, max_size=8).filter(lambda t: t[0] != "-"),
    st.sampled_from(["", "-", " ", " - ", "--"]),
    st.text(_name_chars, min_size=1, max_size=8),
).filter(lambda n: not n.endswith("-"))


@pytest.mark.parametrize("root", ["0-:x", "a :x", " a:x", "x{ab}:y"])
def test_names_rclone_rejects_are_not_plain_remotes(root: str) -> None:
    """rclone 1.75 refuses these names ("config name contains invalid characters")."""
    assert classify_root(root) == "other"
    with pytest.raises(ManifestError, match="not a local path or a plain remote:path"):
        check_manifest_roots("m", {"dest_root": root})


paths = st.text(st.characters(blacklist_characters="\x00"), max_size=30)
values = st.text(string.ascii_letters + string.digits + "/+=-_. ", min_size=1, max_size=20)


@given(name=names, path=paths)
def test_plain_remote_is_allowed(name: str, path: str) -> None:
    root = f"{name}:{path}"
    assert classify_root(root) == "remote"
    check_manifest_roots("m", {"dest_root": root})
    assert redact_root(root) == root


@given(
    name=names,
    path=paths,
    key=st.text(string.ascii_lowercase + "_", min_size=1, max_size=12),
    value=values,
    fly=st.booleans(),
)
def test_connection_strings_are_refused(
    name: str, path: str, key: str, value: str, fly: bool
) -> None:
    root = f":{name}:{path}" if fly else f"{name},{key}={value}:{path}"
    assert classify_root(root) == "connection"
    with pytest.raises(ManifestError, match="connection string"):
        check_manifest_roots("m", {"dest_root": root})
    check_manifest_roots("m", {"dest_root": root}, trusted=True)


@given(path=paths)
def test_absolute_paths_are_local(path: str) -> None:
    root = "/" + path
    assert classify_root(root) == "local"
    check_manifest_roots("m", {"source_root": root})


@given(root=st.text(max_size=40))
def test_check_agrees_with_classifier(root: str) -> None:
    kind = classify_root(root)
    try:
        check_manifest_roots("m", {"dest_root": root})
    except ManifestError as exc:
        assert kind in ("connection", "other", "invalid"), kind
        assert "\n" not in exc.message  # one line, whatever the root holds
    else:
        assert kind in ("local", "remote") or not root


@settings(max_examples=200)
@given(
    backend=names,
    secret=st.text(string.ascii_letters + string.digits, min_size=12, max_size=30),
    key=st.sampled_from(["secret_access_key", "pass", "token", "sas_url", "key", "password"]),
    quoted=st.sampled_from(["", '"', "'"]),
    path=st.text(string.ascii_letters + "/", max_size=10),
)
def test_redaction_hides_secret_options(
    backend: str, secret: str, key: str, quoted: str, path: str
) -> None:
    value = f"{quoted}{secret},x:y{quoted}" if quoted else secret
    root = f':{backend},endpoint="http://h:9",{key}={value},region=r:{path}'
    shown = redact_root(root)
    assert secret not in shown
    assert shown == f':{backend},endpoint="http://h:9",{key}={REDACTED},region=r:{path}'
    assert root_secret_options(root) == [key]

"""atheris (libFuzzer, coverage-guided) targets: the config loader and the manifest reader.

Run by tests/reliability/test_atheris.py in a subprocess::

    python tests/reliability/atheris_fuzz.py config|manifest WORKDIR [libFuzzer flags] [CORPUS]

Each input goes through the target; the only exceptions allowed are xfer's own
:class:`XferError` subclasses (with a message naming the input). Anything else
escapes, and atheris reports it as a crash (exit status non-zero, the input
saved under WORKDIR). ``-timeout=N`` makes an input running N seconds a crash too.
"""

from __future__ import annotations

import os
import sys

import atheris

with atheris.instrument_imports(include=["xfer_core"]):
    from xfer_core.config.load import load_config, parse_config, validate_text
    from xfer_core.errors import ConfigError, ManifestError
    from xfer_core.manifest.jsonl import decode_line, read_manifest
    from xfer_core.manifest.record import path_bytes


def fuzz_config(data: bytes) -> None:
    path = os.path.join(WORKDIR, "remotes.toml")
    with open(path, "wb") as fh:
        fh.write(data)
    try:
        load_config(path)
    except ConfigError as exc:
        assert exc.exit_code == 2 and str(exc), exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    problems = validate_text(text, "fuzz.toml")
    try:
        parse_config(text, "fuzz.toml", base_dir="/base")
    except ConfigError as exc:
        assert problems, f"parse_config refused what validate_text accepted: {exc}"
        assert str(exc).startswith("fuzz.toml"), exc
        return
    assert not problems, f"validate_text found {problems} but parse_config accepted"


def _safe(path: str) -> bool:
    return bool(path) and not path.startswith("/") and ".." not in path.split("/")


def fuzz_manifest(data: bytes) -> None:
    line = data.split(b"\n", 1)[0]
    try:
        record = decode_line(line, "m.jsonl:1")
    except ManifestError as exc:
        assert str(exc).startswith("m.jsonl:1: "), exc
    else:
        name = path_bytes(record)
        assert _safe(record.path) and b".." not in name.split(b"/"), record
        assert name and not name.startswith(b"/") and record.size >= 0, record
    path = os.path.join(WORKDIR, "m.jsonl")
    with open(path, "wb") as fh:
        fh.write(data)
    try:
        for record in read_manifest(path):
            assert _safe(record.path), record
    except ManifestError as exc:
        assert str(exc).startswith(f"{path}:"), exc


TARGETS = {"config": fuzz_config, "manifest": fuzz_manifest}

if __name__ == "__main__":
    target, WORKDIR = sys.argv[1], sys.argv[2]
    atheris.Setup([sys.argv[0], *sys.argv[3:]], TARGETS[target])
    atheris.Fuzz()

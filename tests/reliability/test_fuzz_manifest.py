"""Hostile input: the manifest reader never fails with anything but ManifestError.

Random bytes, random JSON values, and records with random field values and random
paths go through ``decode_line`` and ``read_manifest``; each line decodes or raises a
:class:`ManifestError` starting with ``FILE:LINE:``, never anything else, never a hang.
A record that decodes never names a path outside the roots.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xfer_core.errors import ManifestError
from xfer_core.manifest.jsonl import decode_line, read_manifest
from xfer_core.manifest.record import SCHEMA, ManifestRecord, path_bytes

from .conftest import Tally
from .helpers import bounded

CLASS = "hostile input: manifest fuzz"

EXAMPLES = 300

json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
path_text = st.one_of(
    st.text(max_size=30),
    st.lists(
        st.sampled_from(["..", ".", "", "a", "/", "b c", "\x00", "é", "$(x)"]), max_size=6
    ).map("/".join),
)


def _b64text(name: bytes) -> str:
    return base64.b64encode(name).decode()


record_dict = st.fixed_dictionaries(
    {},
    optional={
        "path": st.one_of(path_text, json_value),
        "size": st.one_of(st.integers(min_value=-(2**70), max_value=2**70), json_value),
        "schema": st.one_of(st.just(SCHEMA), st.text(max_size=10), json_value),
        "mtime": json_value,
        "hashes": st.one_of(st.dictionaries(st.text(max_size=5), st.text(max_size=8)), json_value),
        "meta": st.one_of(
            st.dictionaries(st.text(max_size=8), json_value),
            st.fixed_dictionaries(
                {"path_b64": st.one_of(st.binary(max_size=12).map(_b64text), json_value)}
            ),
            json_value,
        ),
        "source_root": json_value,
        "extra": json_value,
    },
)


def _decode(line: bytes) -> ManifestRecord | None:
    with bounded(10):
        try:
            record = decode_line(line, "m.jsonl:1")
        except ManifestError as exc:
            assert str(exc).startswith("m.jsonl:1: "), str(exc)
            assert exc.exit_code == 2
            return None
    path = record.path
    assert path and not path.startswith("/") and ".." not in path.split("/")
    name = path_bytes(record)  # the exact name that gets copied: as safe as path
    assert name and not name.startswith(b"/") and b".." not in name.split(b"/")
    assert "\x00" not in path and record.size >= 0 and record.schema == SCHEMA
    return record


@settings(max_examples=EXAMPLES, suppress_health_check=list(HealthCheck), deadline=None)
@given(line=st.binary(max_size=200))
def test_random_bytes(line: bytes) -> None:
    _decode(line)


@settings(max_examples=EXAMPLES, suppress_health_check=list(HealthCheck), deadline=None)
@given(value=json_value)
def test_random_json_values(value: Any) -> None:
    _decode(json.dumps(value).encode())


@settings(max_examples=EXAMPLES, suppress_health_check=list(HealthCheck), deadline=None)
@given(data=record_dict, cut=st.integers(min_value=0, max_value=400))
def test_random_records_whole_and_truncated(data: dict[str, Any], cut: int) -> None:
    line = json.dumps(data).encode()
    _decode(line)
    _decode(line[:cut])  # a half-written line is refused, not misread


@settings(max_examples=100, suppress_health_check=list(HealthCheck), deadline=None)
@given(
    lines=st.lists(
        st.one_of(st.binary(max_size=80), record_dict.map(json.dumps).map(str.encode)), max_size=8
    )
)
def test_read_manifest_files(tmp_path_factory: Any, lines: list[bytes]) -> None:
    path = Path(tmp_path_factory.mktemp("m")) / "m.jsonl"
    path.write_bytes(b"\n".join(line.replace(b"\n", b" ") for line in lines))
    with bounded(10):
        try:
            records = list(read_manifest(path))
        except ManifestError as exc:
            assert str(exc).startswith(f"{path}:"), str(exc)
            return
    assert all(r.path and not r.path.startswith("/") for r in records)


def test_tally(tally: Tally) -> None:
    """Report the number of fuzz cases these tests ran."""
    tally(cases=3 * EXAMPLES + EXAMPLES + 100)

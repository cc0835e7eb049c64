"""Sizes typed by users (``--target-shard-bytes``, ``--object-overhead``): strict parsing.

Issue 16: ``parse_size("64iB")`` gave 64 bytes and ``"1.5"`` silently became 1.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.manifest_shard.helpers import sized, write_items, xfer
from xfer_core.errors import ConfigError
from xfer_core.sizes import MAX_SIZE, format_size, parse_size

_WS = " \t\n\r\f\v"
_UNITS: dict[str, int] = {"": 1, "B": 1}
for _k, _p in enumerate("KMGTP", start=1):
    _UNITS |= {_p: 1024**_k, _p + "I": 1024**_k, _p + "IB": 1024**_k, _p + "B": 1000**_k}


def oracle(text: str) -> int | None:
    """The documented grammar (xfer_core/sizes.py, docs/manifest.md), written as a hand
    parser: the bytes ``text`` means, or None when it must be refused."""
    t = text.strip(_WS)
    i = 0
    while i < len(t) and t[i] in "0123456789.":
        i += 1
    num, rest = t[:i], t[i:]
    if not num or num.count(".") > 1 or num[0] == "." or num[-1] == ".":
        return None
    if rest.startswith(" "):
        rest = rest[1:]
    unit = rest.upper()
    if unit not in _UNITS:
        return None
    value = Fraction(num) * _UNITS[unit]
    if unit in ("", "B") and value.denominator != 1:
        return None
    whole = math.floor(value)
    return whole if whole <= MAX_SIZE else None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1048576", 1048576),
        ("512B", 512),
        ("512K", 512 * 1024),
        ("64G", 64 << 30),
        ("64GiB", 64 << 30),
        ("64Gi", 64 << 30),
        ("64 GiB", 64 << 30),
        ("64gib", 64 << 30),
        ("64GB", 64 * 10**9),
        ("1.5G", 3 << 29),
        ("1.5GiB", 3 << 29),
        ("0.25TiB", 1 << 38),
        ("1.1K", 1126),  # 1126.4 bytes: rounded down
        ("2P", 2 << 50),
        (" 7MiB\n", 7 << 20),
    ],
)
def test_documented_sizes(text: str, expected: int) -> None:
    assert parse_size(text, "--opt") == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("64iB", "cannot read '64iB' as a size"),
        ("1.5", "'1.5' is not a whole number of bytes"),
        ("1.5B", "'1.5B' is not a whole number of bytes"),
        ("1e9", "cannot read"),
        ("-5", "cannot read"),
        ("+5", "cannot read"),
        ("64 G B", "cannot read"),
        ("64  G", "cannot read"),
        ("64GiBs", "cannot read"),
        ("1_000", "cannot read"),
        (".5G", "cannot read"),
        ("5.G", "cannot read"),
        ("\u0663", "cannot read"),  # an Arabic-Indic digit: \d would take it
        ("64E", "cannot read"),
        ("", "cannot read"),
        ("8EiB", "cannot read"),
        ("8192PiB", "too large"),
    ],
)
def test_garbage_is_refused_naming_the_option(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_size(text, "--target-shard-bytes")
    assert info.value.message.startswith("--target-shard-bytes: ")
    assert message in info.value.message
    assert "\n" not in info.value.message


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=0, max_value=MAX_SIZE))
def test_format_then_parse_round_trips(n: int) -> None:
    text = format_size(n)
    assert parse_size(text, "--x") == n
    assert oracle(text) == n


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=1 << 20), st.sampled_from(range(0, 6)))
def test_format_picks_the_largest_exact_unit(k: int, power: int) -> None:
    n = k * 1024**power
    text = format_size(n)
    if n:
        value = int(text.rstrip("KMGTPiB"))
        assert value % 1024 != 0 or text.endswith("PiB")


_NEAR = st.text(alphabet="0123456789. KMGTPEiIbBe-+_\t", max_size=10)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(_NEAR, st.text(max_size=12)))
@example("64iB")
@example("1.5")
@example("0.99999999999999999999999999999999K")  # float or 28-digit Decimal would give 1024
def test_parse_agrees_with_the_documented_grammar(text: str) -> None:
    want = oracle(text)
    if want is None:
        with pytest.raises(ConfigError) as info:
            parse_size(text, "--object-overhead")
        assert info.value.message.startswith("--object-overhead: ")
    else:
        assert parse_size(text, "--object-overhead") == want


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target-shard-bytes", "64iB"], "--target-shard-bytes: cannot read '64iB' as a size"),
        (["-n", "1", "--object-overhead", "1.5"], "--object-overhead: '1.5' is not a whole"),
    ],
)
def test_cli_refuses_bad_sizes_and_writes_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    manifest = write_items(tmp_path / "m.jsonl", sized([1, 2, 3]))
    res = xfer("manifest", "shard", "--in", str(manifest), "--outdir", str(tmp_path / "out"), *args)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert res.stderr.count("\n") <= 2  # the error line and its hint
    assert not (tmp_path / "out").exists()


def test_cli_takes_a_fractional_size_with_a_unit(tmp_path: Path) -> None:
    manifest = write_items(tmp_path / "m.jsonl", sized([1000] * 6))
    out = tmp_path / "out"
    res = xfer(
        "manifest", "shard", "--in", str(manifest), "--outdir", str(out),
        "--target-shard-bytes", "1.5K", "--object-overhead", "0", "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    # 6000 bytes / 1536 per shard -> 4 shards
    assert '"num_shards":4' in res.stdout.replace(" ", "")

"""Byte sizes typed by users (``--target-shard-bytes 64GiB``): strict parsing and formatting.

Accepted, with one optional space before the unit, units in any letter case:

- a whole number of bytes: ``1048576``, or with ``B``: ``512B`` (a fraction of a byte,
  ``1.5`` or ``1.5B``, is refused);
- ``K M G T P`` and ``Ki Mi Gi Ti Pi`` and ``KiB MiB GiB TiB PiB``: binary (1024^n),
  like rclone's size options;
- ``KB MB GB TB PB``: decimal (1000^n);
- a decimal fraction with a unit: ``1.5G``, ``0.25TiB``; the result is rounded down
  to a whole byte.

Anything else (``64iB``, ``1e9``, ``-5``, ``64 G B``, ``١٢``, a size beyond 2^63-1
bytes) is refused with the option's name.
"""

from __future__ import annotations

import re
from decimal import Decimal, localcontext

from xfer_core.errors import ConfigError

_SIZE = re.compile(
    r"\s*(?P<num>[0-9]+(?:\.[0-9]+)?) ?(?P<unit>(?P<prefix>[KMGTP])(?P<bin>I)?(?P<b>B)?|B)?\s*",
    re.ASCII | re.IGNORECASE,
)
_POWERS = {"K": 1, "M": 2, "G": 3, "T": 4, "P": 5}
#: The largest size accepted (what a signed 64-bit integer holds).
MAX_SIZE = (1 << 63) - 1
_HINT = "use bytes or a unit: 512K, 64MiB, 1.5G (binary, like rclone), 64GB (decimal)"


def parse_size(text: str, option: str) -> int:
    """``text`` as a number of bytes; :class:`ConfigError` naming ``option`` otherwise."""
    m = _SIZE.fullmatch(text)
    if m is None:
        raise ConfigError(f"{option}: cannot read {text!r} as a size", hint=_HINT)
    number = Decimal(m["num"])
    prefix = (m["prefix"] or "").upper()
    if not prefix and number != number.to_integral_value():
        raise ConfigError(
            f"{option}: {text!r} is not a whole number of bytes",
            hint="give whole bytes, or a unit for a fraction: 1.5G, 0.5MiB",
        )
    if prefix:
        base = 1000 if m["b"] and not m["bin"] else 1024
        with localcontext() as ctx:
            ctx.prec = len(m["num"]) + 20  # exact: 1024^5 has 16 digits
            number *= base ** _POWERS[prefix]
    value = int(number)  # rounds toward zero: a fraction of a byte is dropped
    if value > MAX_SIZE:
        raise ConfigError(f"{option}: {text!r} is too large (at most 8 EiB)", hint=_HINT)
    return value


def format_size(n: int) -> str:
    """``n`` bytes in the largest binary unit that holds it exactly (``3GiB``, ``1536KiB``,
    ``17``): :func:`parse_size` reads it back to ``n``."""
    if n < 0:
        raise ValueError("a size is not negative")
    for unit, power in (("PiB", 5), ("TiB", 4), ("GiB", 3), ("MiB", 2), ("KiB", 1)):
        step = 1024**power
        if n and n % step == 0:
            return f"{n // step}{unit}"
    return str(n)

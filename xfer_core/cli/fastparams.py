"""Option values without pydantic: a shortcut in Typer's value coercion for plain values.

Typer 0.29 coerces every option value through a pydantic ``TypeAdapter``: importing
pydantic and building one adapter per option of the command costs about 0.1 s on
every run of the CLI -- more than the rest of ``xfer sync``'s own work on a no-op.
For the values most options take (a string, a list of strings, a decimal integer
within the option's bounds) that coercion returns the value unchanged (an ``int`` for
the digits): :func:`install` answers those directly and builds Typer's adapter only
for any other value, so a bad value still gets Typer's own message. Nothing happens
with a Typer that lacks the hook (other versions coerce as they do).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, get_args, get_origin

_NO = object()


def _plain(annotation: Any, info: Any, value: Any) -> Any:
    """``value`` as Typer's adapter would return it, or ``_NO`` when unsure."""
    if getattr(info, "parser", None) is not None:
        return _NO
    if annotation is str:
        return value if isinstance(value, str) else _NO
    if get_origin(annotation) is list and get_args(annotation) == (str,):
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value)
        return _NO
    if annotation is int and not getattr(info, "clamp", False):
        if isinstance(value, str) and value.isascii() and value.isdigit():
            number = int(value)
        elif type(value) is int:
            number = value
        else:
            return _NO
        low, high = getattr(info, "min", None), getattr(info, "max", None)
        if (low is not None and number < low) or (high is not None and number > high):
            return _NO
        return number
    return _NO


def install() -> None:
    """Put the shortcut in front of Typer's ``build_runtime_param`` (once)."""
    try:
        from typer import _coercion, core
    except ImportError:  # pragma: no cover - another Typer
        return
    found = getattr(core, "build_runtime_param", None)
    base = getattr(_coercion, "RuntimeParam", None)
    if found is None or base is None or getattr(found, "_xfer_fast", False):
        return
    build: Callable[[Any], Any] = found

    @dataclasses.dataclass(frozen=True)
    class FastParam(base):  # type: ignore[misc, valid-type]
        descriptor: Any = None
        full: list[Any] = dataclasses.field(default_factory=list)

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            plain = _plain(self.annotation, self.parameter_info, value)
            if plain is not _NO:
                return plain
            if not self.full:
                self.full.append(build(self.descriptor))
            return self.full[0]._coerce_value(value, param=param, ctx=ctx)

    def fast_build(descriptor: Any) -> Any:
        if getattr(descriptor, "file_annotation", None) is not None:
            return build(descriptor)
        return FastParam(
            parameter_info=descriptor.parameter_info,
            annotation=descriptor.annotation,
            descriptor=descriptor,
        )

    fast_build._xfer_fast = True  # type: ignore[attr-defined]
    core.build_runtime_param = fast_build

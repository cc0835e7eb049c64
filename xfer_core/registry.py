"""The plugin manager: loads entry-point group ``xfer`` and collects plugin objects by kind.

Builtins and third-party plugins load the same way. Loading is isolated per
entry point and per hook call: a plugin that fails to import or raises in its
registration hook is recorded in :attr:`Registry.broken` (shown by ``xfer
plugins``) and everything else still works.
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Iterable
from types import ModuleType
from typing import Any

import msgspec
import pluggy

from xfer_core import hookspecs
from xfer_core.errors import XferError
from xfer_core.plugin import KINDS, Availability, Kind, Plugin

#: hook name for each kind
HOOKS: dict[Kind, str] = {
    "transfer": "register_transfer_backends",
    "shard_engine": "register_shard_engines",
    "scheduler": "register_schedulers",
    "runtime": "register_runtimes",
    "lister": "register_listers",
}


class PluginInfo(msgspec.Struct):
    """One row of ``xfer plugins``."""

    name: str
    kind: str
    distribution: str
    version: str
    available: bool
    reason: str
    description: str = ""
    #: The plugin's own options (a scheduler's ``-O NAME=VALUE``): name -> default.
    options: dict[str, Any] = {}


class BrokenPlugin(msgspec.Struct):
    """An entry point or hook that failed; reported, never fatal."""

    entry_point: str
    distribution: str
    error: str


class Registry:
    """Every loaded plugin object, by kind and name."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._plugins: dict[Kind, dict[str, Plugin]] = {k: {} for k in KINDS}
        self._origin: dict[int, tuple[str, str]] = {}
        self.broken: list[BrokenPlugin] = []

    # -- loading -------------------------------------------------------------
    def load_entry_points(self, group: str = hookspecs.PROJECT) -> None:
        """Import every entry point of ``group`` and register its hooks."""
        for ep in sorted(importlib.metadata.entry_points(group=group), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist is not None else "?"
            version = ep.dist.version if ep.dist is not None else "?"
            try:
                obj = ep.load()
            except (Exception, SystemExit) as exc:  # a broken plugin must not break the CLI
                self.broken.append(BrokenPlugin(ep.name, dist, _describe(exc)))
                continue
            self.add(obj, name=ep.name, distribution=dist, version=version)

    def add(
        self,
        obj: ModuleType | object,
        *,
        name: str | None = None,
        distribution: str = "(local)",
        version: str = "",
    ) -> None:
        """Register one plugin module/object and call its registration hooks."""
        try:
            plugin_name = self.pm.register(obj, name=name)
        except Exception as exc:
            self.broken.append(BrokenPlugin(name or repr(obj), distribution, _describe(exc)))
            return
        # pluggy accepts any hookimpl name; a misspelt hook would silently do nothing
        for caller in self.pm.get_hookcallers(obj) or ():
            if caller.spec is None:
                self.broken.append(
                    BrokenPlugin(
                        f"{plugin_name}.{caller.name}",
                        distribution,
                        f"{caller.name!r} is not an xfer hook (known: {', '.join(HOOKS.values())})",
                    )
                )
        for kind, hook_name in HOOKS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin is not obj:
                    continue
                found: list[Any] = []
                try:
                    impl.function(register=found.append)
                except (Exception, SystemExit) as exc:
                    self.broken.append(
                        BrokenPlugin(f"{plugin_name}.{hook_name}", distribution, _describe(exc))
                    )
                    continue
                for plugin in found:
                    self._accept(kind, plugin, plugin_name or "?", distribution, version)

    def _accept(self, kind: Kind, plugin: Any, source: str, dist: str, version: str) -> None:
        name = getattr(plugin, "name", None)
        if not isinstance(plugin, Plugin) or not isinstance(name, str) or not name:
            self.broken.append(
                BrokenPlugin(
                    source, dist, f"registered {plugin!r}, which is not a named xfer Plugin"
                )
            )
            return
        if getattr(plugin, "kind", kind) != kind:
            self.broken.append(
                BrokenPlugin(
                    source, dist, f"{name!r} is a {plugin.kind} plugin, registered as {kind}"
                )
            )
            return
        if name in self._plugins[kind]:
            self.broken.append(
                BrokenPlugin(source, dist, f"{kind} {name!r} is already registered; ignored")
            )
            return
        self._plugins[kind][name] = plugin
        self._origin[id(plugin)] = (dist, version)

    # -- lookup --------------------------------------------------------------
    def all(self, kind: Kind) -> list[Plugin]:
        """Every plugin of ``kind``, sorted by name."""
        return [self._plugins[kind][n] for n in sorted(self._plugins[kind])]

    def names(self, kind: Kind) -> list[str]:
        return sorted(self._plugins[kind])

    def get(self, kind: Kind, name: str) -> Any:
        """The plugin ``name`` of ``kind``; an :class:`XferError` naming the known ones otherwise."""
        try:
            return self._plugins[kind][name]
        except KeyError:
            known = ", ".join(self.names(kind)) or "none installed"
            label = kind.replace("_", " ")
            raise XferError(
                f"unknown {label} {name!r} (known: {known})",
                hint="`xfer plugins` lists what is installed and whether it can run here",
            ) from None

    def infos(self) -> list[PluginInfo]:
        """One :class:`PluginInfo` per plugin, with its availability checked now."""
        rows = []
        for kind in KINDS:
            for plugin in self.all(kind):
                dist, version = self._origin.get(id(plugin), ("?", "?"))
                try:
                    avail = plugin.check()
                except Exception as exc:
                    avail = Availability(False, f"check() raised {_describe(exc)}")
                rows.append(
                    PluginInfo(
                        name=plugin.name,
                        kind=kind,
                        distribution=dist,
                        version=version,
                        available=avail.ok,
                        reason=avail.reason,
                        description=plugin.description,
                        options=_declared_options(plugin),
                    )
                )
        return rows


def _declared_options(plugin: Plugin) -> dict[str, Any]:
    """``Options`` fields of a plugin that declares them, with their defaults."""
    options = getattr(plugin, "Options", None)
    if not isinstance(options, type) or not issubclass(options, msgspec.Struct):
        return {}
    try:
        return msgspec.to_builtins(options())
    except (TypeError, msgspec.ValidationError):  # a field without a default
        return {name: None for name in options.__struct_fields__}


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def build_registry(extra: Iterable[object] = ()) -> Registry:
    """A fresh registry from the installed entry points plus ``extra`` plugin objects."""
    registry = Registry()
    registry.load_entry_points()
    for obj in extra:
        registry.add(obj)
    return registry


@functools.cache
def get_registry() -> Registry:
    """The process-wide registry (loaded on first use)."""
    return build_registry()

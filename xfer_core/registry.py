"""The plugin manager: loads the ``xfer`` entry points and collects plugin objects by kind.

Builtins and third-party plugins load the same way, by kind: a plugin module is listed
in the entry-point group of each kind it provides (``xfer.transfer``, ``xfer.scheduler``,
...: :func:`kind_group`), and the registry imports it when a plugin of that kind is
first asked for -- ``xfer sync`` imports the transfer backends and nothing else. A
module in the plain group ``xfer`` may provide any kind and is loaded whenever any
plugin is needed. ``xfer plugins`` loads everything. Loading is isolated per entry
point and per hook call: a plugin that fails to import or raises in its registration
hook is recorded in :attr:`Registry.broken` (shown by ``xfer plugins``) and
everything else still works.
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Iterable
from types import ModuleType
from typing import TYPE_CHECKING, Any

import msgspec
import pluggy

from xfer_core import hookspecs
from xfer_core.errors import XferError
from xfer_core.plugin import KINDS, Availability, Kind, Plugin

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

#: The entry-point group of plugin modules of any kind (loaded whenever a plugin is needed).
GROUP = hookspecs.PROJECT

#: hook name for each kind
HOOKS: dict[Kind, str] = {
    "transfer": "register_transfer_backends",
    "shard_engine": "register_shard_engines",
    "scheduler": "register_schedulers",
    "runtime": "register_runtimes",
    "lister": "register_listers",
}


def kind_group(kind: Kind) -> str:
    """The entry-point group of plugin modules of ``kind`` (``xfer.transfer``, ...)."""
    return f"{GROUP}.{kind}"


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
    """Every loaded plugin object, by kind and name.

    ``autoload``: look the installed entry points up on first use, one kind at a time
    (what :func:`build_registry` makes); without it, only what :meth:`add` and
    :meth:`load_entry_points` put in.
    """

    def __init__(self, *, autoload: bool = False) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._plugins: dict[Kind, dict[str, Plugin]] = {k: {} for k in KINDS}
        self._origin: dict[int, tuple[str, str]] = {}
        self._broken: list[BrokenPlugin] = []
        self._autoload = autoload
        #: Kinds whose entry points are loaded (autoload).
        self._loaded: set[Kind] = set()
        self._all_loaded = False
        #: The installed entry points of group ``xfer`` and ``xfer.*``, by group (read once).
        self._installed: dict[str, list[EntryPoint]] | None = None
        #: Entry points already loaded, as (group, name).
        self._done: set[tuple[str, str]] = set()
        #: Hooks already called, as (id of the plugin object, hook name).
        self._called: set[tuple[int, str]] = set()

    @property
    def broken(self) -> list[BrokenPlugin]:
        """Entry points and hooks that failed (with autoload: of every installed plugin)."""
        self.load_all()
        return self._broken

    # -- loading -------------------------------------------------------------
    def load_entry_points(self, group: str = GROUP) -> None:
        """Import every entry point of ``group`` and call all of its hooks."""
        for ep in sorted(importlib.metadata.entry_points(group=group), key=lambda e: e.name):
            self._load(ep, None)

    def load_all(self) -> None:
        """With autoload: load the installed plugins of every kind (``xfer plugins``)."""
        if not self._autoload or self._all_loaded:
            return
        self._all_loaded = True
        for kind in KINDS:
            self._ensure(kind)
        known = {kind_group(k) for k in KINDS}
        for group, eps in sorted(self._entry_points().items()):
            if group != GROUP and group not in known:
                for ep in eps:
                    self._broken.append(
                        BrokenPlugin(
                            ep.name,
                            _dist(ep)[0],
                            f"entry-point group {group!r} is no plugin kind "
                            f"(known: {GROUP}, {', '.join(sorted(known))})",
                        )
                    )

    def _entry_points(self) -> dict[str, list[EntryPoint]]:
        if self._installed is None:
            every = importlib.metadata.entry_points()  # one scan of the installed metadata
            self._installed = {
                group: sorted(every.select(group=group), key=lambda e: e.name)
                for group in every.groups
                if group == GROUP or group.startswith(GROUP + ".")
            }
        return self._installed

    def _ensure(self, kind: Kind) -> None:
        """With autoload: the plugins of ``kind`` loaded (group ``xfer``, then ``xfer.KIND``)."""
        if not self._autoload or kind in self._loaded:
            return
        self._loaded.add(kind)
        installed = self._entry_points()
        for ep in installed.get(GROUP, ()):
            self._load(ep, None)
        for ep in installed.get(kind_group(kind), ()):
            self._load(ep, kind)

    def _load(self, ep: EntryPoint, kind: Kind | None) -> None:
        """Import ``ep`` (once) and call its hook of ``kind`` (None: every hook)."""
        if (ep.group, ep.name) in self._done:
            return
        self._done.add((ep.group, ep.name))
        dist, version = _dist(ep)
        try:
            obj = ep.load()
        except (Exception, SystemExit) as exc:  # a broken plugin must not break the CLI
            self._broken.append(BrokenPlugin(ep.name, dist, _describe(exc)))
            return
        if not self.pm.is_registered(obj):
            if self._register(obj, ep.name, dist) is None:
                return
            if kind is not None:
                self._unlisted_hooks(obj, ep, dist)
        self._call(obj, [kind] if kind else KINDS, ep.name, dist, version)

    def _unlisted_hooks(self, obj: object, ep: EntryPoint, dist: str) -> None:
        """Hooks of kinds whose group does not list ``obj``'s module: never called, reported."""
        listed = {
            group
            for group, eps in self._entry_points().items()
            if any(e.value == ep.value for e in eps)
        }
        if GROUP in listed:
            return
        for kind, hook_name in HOOKS.items():
            if kind_group(kind) not in listed and any(
                impl.plugin is obj for impl in getattr(self.pm.hook, hook_name).get_hookimpls()
            ):
                self._broken.append(
                    BrokenPlugin(
                        f"{ep.name}.{hook_name}",
                        dist,
                        f"{ep.value} implements {hook_name} but is not in entry-point group "
                        f"{kind_group(kind)!r} (only {', '.join(sorted(listed))}): never called",
                    )
                )

    def add(
        self,
        obj: ModuleType | object,
        *,
        name: str | None = None,
        distribution: str = "(local)",
        version: str = "",
    ) -> None:
        """Register one plugin module/object and call its registration hooks (with
        autoload, after the installed plugins: their names come first)."""
        self.load_all()
        plugin_name = self._register(obj, name, distribution)
        if plugin_name is not None:
            self._call(obj, KINDS, plugin_name, distribution, version)

    def _register(self, obj: object, name: str | None, distribution: str) -> str | None:
        """``obj`` registered with pluggy: its name there, or None (reported as broken)."""
        try:
            plugin_name = self.pm.register(obj, name=name)
        except Exception as exc:
            self._broken.append(BrokenPlugin(name or repr(obj), distribution, _describe(exc)))
            return None
        # pluggy accepts any hookimpl name; a misspelt hook would silently do nothing
        for caller in self.pm.get_hookcallers(obj) or ():
            if caller.spec is None:
                self._broken.append(
                    BrokenPlugin(
                        f"{plugin_name}.{caller.name}",
                        distribution,
                        f"{caller.name!r} is not an xfer hook (known: {', '.join(HOOKS.values())})",
                    )
                )
        return plugin_name or "?"

    def _call(
        self, obj: object, kinds: Iterable[Kind], plugin_name: str, distribution: str, version: str
    ) -> None:
        """Call ``obj``'s hooks of ``kinds`` (each once) and accept what they register."""
        for kind in kinds:
            hook_name = HOOKS[kind]
            if (id(obj), hook_name) in self._called:
                continue
            self._called.add((id(obj), hook_name))
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin is not obj:
                    continue
                found: list[Any] = []
                try:
                    impl.function(register=found.append)
                except (Exception, SystemExit) as exc:
                    self._broken.append(
                        BrokenPlugin(f"{plugin_name}.{hook_name}", distribution, _describe(exc))
                    )
                    continue
                for plugin in found:
                    self._accept(kind, plugin, plugin_name, distribution, version)

    def _accept(self, kind: Kind, plugin: Any, source: str, dist: str, version: str) -> None:
        name = getattr(plugin, "name", None)
        if not isinstance(plugin, Plugin) or not isinstance(name, str) or not name:
            self._broken.append(
                BrokenPlugin(
                    source, dist, f"registered {plugin!r}, which is not a named xfer Plugin"
                )
            )
            return
        if getattr(plugin, "kind", kind) != kind:
            self._broken.append(
                BrokenPlugin(
                    source, dist, f"{name!r} is a {plugin.kind} plugin, registered as {kind}"
                )
            )
            return
        if name in self._plugins[kind]:
            self._broken.append(
                BrokenPlugin(source, dist, f"{kind} {name!r} is already registered; ignored")
            )
            return
        self._plugins[kind][name] = plugin
        self._origin[id(plugin)] = (dist, version)

    # -- lookup --------------------------------------------------------------
    def all(self, kind: Kind) -> list[Plugin]:
        """Every plugin of ``kind``, sorted by name."""
        self._ensure(kind)
        return [self._plugins[kind][n] for n in sorted(self._plugins[kind])]

    def names(self, kind: Kind) -> list[str]:
        self._ensure(kind)
        return sorted(self._plugins[kind])

    def get(self, kind: Kind, name: str) -> Any:
        """The plugin ``name`` of ``kind``; an :class:`XferError` naming the known ones otherwise."""
        self._ensure(kind)
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
        self.load_all()
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


def _dist(ep: EntryPoint) -> tuple[str, str]:
    """(distribution name, version) of the distribution that installed ``ep``."""
    if ep.dist is None:
        return "?", "?"
    return ep.dist.name, ep.dist.version


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def build_registry(extra: Iterable[object] = ()) -> Registry:
    """A fresh registry of the installed entry points (each kind loaded when first asked
    for) plus ``extra`` plugin objects (added after every installed plugin)."""
    registry = Registry(autoload=True)
    for obj in extra:
        registry.add(obj)
    return registry


@functools.cache
def get_registry() -> Registry:
    """The process-wide registry (loaded on first use)."""
    return build_registry()

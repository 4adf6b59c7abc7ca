"""podman for the container tests: the image CI builds (.ci/container), containers of it on the
host's network against the test run's PostgreSQL and Redis, and what they say and do.

Containers run as the README says to run them: ``--read-only`` with the documented writable paths
only (a volume at /var/lib/jwtex, tmpfs at /tmp; not podman's own extra tmpfs at /run and
/var/tmp, which docker and Kubernetes do not give), the configuration in the environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

IMAGE = os.environ.get("JWTEX_TEST_CONTAINER_IMAGE", "localhost/jwtex:test")
# .ci/container sets it: then nothing may be missing (the test fails instead of skipping).
MUST_RUN = os.environ.get("JWTEX_TEST_CONTAINER") == "1"


def podman(
    *args: str, timeout: float = 120, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, input=input)
    if check and result.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)}: exit {result.returncode}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return result


def cannot_run() -> str | None:
    """Why the container tests cannot run here, in words a developer can act on; None if they can."""
    if shutil.which("podman") is None:
        return "podman is not installed (the container tests need it: apt-get install podman runc)"
    try:
        info = podman("info", "--format", "{{.Host.OCIRuntime.Name}}", timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"podman cannot run here: {exc}"
    if info.returncode != 0:
        return f"podman cannot run here: {info.stderr.strip()[:300]}"
    if podman("image", "exists", IMAGE, check=False).returncode != 0:
        return f"no image {IMAGE}: .ci/container builds it (or podman build -f Containerfile -t {IMAGE} .)"
    return None


@dataclass
class Container:
    name: str
    command: list[str]
    volume: str | None = None
    port: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    mounts: list[tuple[Path, str]] = field(default_factory=list)  # read-only files: (on the host, in the container)

    def start(self, env_file: Path, *, detach: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        """Run it (in the background, or to its end and removed); its host name is its name."""
        mounts = ["-v", f"{self.volume}:/var/lib/jwtex"] if self.volume else []
        mounts += [item for source, target in self.mounts for item in ("-v", f"{source}:{target}:ro")]
        extra = [item for name, value in self.env.items() for item in ("-e", f"{name}={value}")]
        return podman(
            "run", *(["-d"] if detach else ["--rm"]), "--name", self.name, "--hostname", self.name,
            "--network", "host", "--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp",
            "--health-interval", "disable", "--env-file", str(env_file), *extra, *mounts, IMAGE, *self.command,
            timeout=timeout,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def inspect(self) -> dict:
        return json.loads(podman("inspect", self.name).stdout)[0]

    def exec(self, *argv: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        return podman("exec", self.name, *argv, timeout=timeout, check=check)

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def running(self) -> bool:
        result = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return result.stdout.strip() == "true"

    def uids(self) -> set[str]:
        """The real, effective, saved and filesystem uids of every process in the container."""
        out = self.exec("sh", "-c", "cat /proc/[0-9]*/status 2>/dev/null").stdout
        return {uid for line in out.splitlines() if line.startswith("Uid:") for uid in line.split()[1:]}

    def remove(self) -> None:
        podman("rm", "--force", "--time", "0", self.name, check=False)


def volume_files(volume: str, directory: str) -> list[str]:
    """The files in ``directory`` of a volume, read by a container of the image (whoever runs the test)."""
    result = podman(
        "run",
        "--rm",
        "--read-only",
        "--entrypoint",
        "/bin/sh",
        "-v",
        f"{volume}:/var/lib/jwtex",
        IMAGE,
        "-c",
        f"ls -1 /var/lib/jwtex/{directory} 2>/dev/null || true",
    )
    return [name for name in result.stdout.split() if name]

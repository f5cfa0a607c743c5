"""docker-compose.yml is checked against the code. Where Docker's compose plugin exists, `docker compose config`
must accept it. Everywhere (there is no Docker engine on the build machines), the YAML itself: every sqd
service's command parses as a real `sqd` command (click parses the options and their values), every SQD_*
variable names a field of sqd.settings.Settings and the values, resolved as compose would from the host's
environment, make a valid Settings and artifact store configuration; AWS_* pass-throughs are ones botocore reads;
the local artifact directory is a volume every role shares; the server's health check probes the port it
serves. A renamed setting, option or command fails the check (tested below on altered copies)."""

from __future__ import annotations

import copy
import importlib
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import typer
import yaml
from pydantic import BaseModel, ValidationError

from sqd.artifacts import storage_options
from sqd.cli import ROLE_CLIS
from sqd.errors import ArtifactError
from sqd.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE = yaml.safe_load(COMPOSE_FILE.read_text())
SQD_IMAGE = "sqd:latest"
BOTOCORE_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
                "AWS_REGION", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"}
# what compose is run with: the defaults, and an S3 deployment set in the host's environment
HOSTS = {
    "volume": {"SQD_TOKEN": "compose-check-token"},
    "s3": {"SQD_TOKEN": "compose-check-token", "SQD_ARTIFACTS_URL": "s3://sqd-artifacts/prod",
           "SQD_ARTIFACTS__ENDPOINT_URL": "http://s3.internal:9000", "SQD_ARTIFACTS__ACCESS_KEY_ID": "sqd",
           "SQD_ARTIFACTS__SECRET_ACCESS_KEY": "compose-check-secret", "AWS_DEFAULT_REGION": "eu-west-1"},
}
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::([?-])([^}]*))?\}")


@cache
def sqd_commands() -> dict[str, Any]:
    """The role commands, as click parses them (typer carries its own click)."""
    app = typer.Typer()
    for name in ROLE_CLIS:
        importlib.import_module(name).register(app)
    return dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def interpolate(value: str, host: dict[str, str]) -> str:
    def substitute(m: re.Match[str]) -> str:
        name, op, arg = m.groups()
        if name in host:
            return host[name]
        if op == "?":
            raise KeyError(f"${{{name}}} must be set ({arg})")
        return arg if op == "-" else ""

    return _INTERPOLATION.sub(substitute, value)


def service_env(service: dict[str, Any], host: dict[str, str]) -> dict[str, str]:
    """The environment compose gives the container: a key without a value passes the host's value, if any."""
    env = {}
    for name, value in (service.get("environment") or {}).items():
        if value is None:
            if name in host:
                env[name] = host[name]
        else:
            env[name] = interpolate(str(value), host)
    return env


def setting_problem(name: str) -> str | None:
    model: Any = Settings
    parts = name.removeprefix("SQD_").lower().split("__")
    for i, part in enumerate(parts):
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return f"{name}: {'.'.join(parts[:i])} is not a section of sqd.settings"
        if part not in model.model_fields:
            return f"{name}: sqd.settings has no setting {part!r} (in {model.__name__})"
        model = model.model_fields[part].annotation
    return None


def settings_problem(env: dict[str, str]) -> str | None:
    with mock.patch.dict(os.environ, env, clear=True):
        try:
            settings = Settings(_env_file=None)  # type: ignore[call-arg]
        except ValidationError as exc:
            return " / ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    try:
        storage_options(settings.resolved_artifacts_url, settings.artifacts)
    except ArtifactError as exc:
        return str(exc)
    return None


def command_problem(command: list[str]) -> str | None:
    commands = sqd_commands()
    if command[0] not in commands:
        return f"`sqd {command[0]}` is not a command (there are {', '.join(sorted(commands))})"
    try:
        commands[command[0]].make_context(command[0], list(command[1:]))
    except typer.TyperException as exc:  # click's UsageError / BadParameter, as typer vendors them
        return f"`sqd {' '.join(command)}`: {exc.format_message()}"
    return None


def option(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


def compose_problems(compose: dict[str, Any], host: dict[str, str]) -> list[str]:
    problems: list[str] = []
    services = {name: s for name, s in compose["services"].items() if s.get("image") == SQD_IMAGE}
    volumes: set[str] = set()
    for name, service in sorted(services.items()):
        def fail(message: str, name: str = name) -> None:
            problems.append(f"{name}: {message}")

        if (problem := command_problem(service["command"])) is not None:
            fail(problem)
        for key in service.get("environment") or {}:
            if key.startswith("SQD_") and (problem := setting_problem(key)) is not None:
                fail(problem)
            elif not key.startswith("SQD_") and key not in BOTOCORE_ENV:
                fail(f"{key} is neither an SQD setting nor a variable botocore reads")
        try:
            env = service_env(service, host)
        except KeyError as exc:
            fail(str(exc.args[0]))
            continue
        if (problem := settings_problem(env)) is not None:
            fail(f"its environment is not valid settings: {problem}")
        url = env.get("SQD_ARTIFACTS_URL", "")
        mounts = {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}
        if "://" not in url:
            if url not in mounts:
                fail(f"the artifact directory {url!r} is not a volume, so the roles would not share it")
            else:
                volumes.add(mounts[url])
    if len(volumes) > 1:
        problems.append(f"the roles keep artifacts in different volumes: {sorted(volumes)}")
    server = services.get("server")
    if server is not None:
        port = option(server["command"], "--port")
        probe = " ".join(server["healthcheck"]["test"])
        if port is None or f"127.0.0.1:{port}/api/v1/health" not in probe:
            problems.append(f"server: the health check ({probe}) does not probe the port it serves ({port})")
        if not any(str(p).endswith(f":{port}") for p in server.get("ports", [])):
            problems.append(f"server: port {port} is not published")
    return problems


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_compose_matches_the_code(host: str) -> None:
    assert compose_problems(COMPOSE, HOSTS[host]) == []


def _rename_env(compose: dict[str, Any], service: str, old: str, new: str) -> None:
    env = compose["services"][service]["environment"]
    compose["services"][service]["environment"] = {new if k == old else k: v for k, v in env.items()}


ALTERATIONS = {
    "renamed setting": (lambda c: _rename_env(c, "agent", "SQD_TRAINER__RUNS_PER_GPU", "SQD_TRAINER__GPU_RUNS"),
                        "agent: SQD_TRAINER__GPU_RUNS: sqd.settings has no setting 'gpu_runs' (in TrainerSettings)"),
    "renamed section": (lambda c: _rename_env(c, "agent", "SQD_TRAINER__RUNS_PER_GPU", "SQD_TRAINERS__RUNS_PER_GPU"),
                        "agent: SQD_TRAINERS__RUNS_PER_GPU: sqd.settings has no setting 'trainers' (in Settings)"),
    "bad value": (lambda c: c["services"]["agent"]["environment"].update(SQD_TRAINER__RUNS_PER_GPU="two"),
                  "agent: its environment is not valid settings: trainer.runs_per_gpu: Input should be a valid "
                  "integer, unable to parse string as an integer"),
    "renamed option": (lambda c: c["services"]["server"]["command"].__setitem__(3, "--prot"),
                       "server: `sqd server --host 0.0.0.0 --prot 8765`: No such option: --prot"),
    "renamed command": (lambda c: c["services"]["worker"].__setitem__("command", ["workers"]),
                        "worker: `sqd workers` is not a command"),
    "unknown variable": (lambda c: c["services"]["worker"]["environment"].update(S3_KEY="x"),
                         "worker: S3_KEY is neither an SQD setting nor a variable botocore reads"),
    "store settings on a directory": (
        lambda c: c["services"]["worker"]["environment"].update(SQD_ARTIFACTS__ENDPOINT_URL="http://s3:9000"),
        "worker: its environment is not valid settings: SQD_ARTIFACTS__ENDPOINT_URL apply to s3:// artifact"),
    "unshared artifacts": (lambda c: c["services"]["agent"].__setitem__("volumes", ["other:/artifacts"]),
                           "the roles keep artifacts in different volumes: ['artifacts', 'other']"),
}


@pytest.mark.parametrize("alteration", sorted(ALTERATIONS))
def test_an_altered_compose_fails_the_check(alteration: str) -> None:
    alter, expected = ALTERATIONS[alteration]
    altered = copy.deepcopy(COMPOSE)
    alter(altered)
    problems = compose_problems(altered, HOSTS["volume"])
    assert problems and problems[0].startswith(expected), problems


def test_compose_has_every_role_with_healthy_dependencies() -> None:
    services = {name: s for name, s in COMPOSE["services"].items() if s.get("image") == SQD_IMAGE}
    assert set(services) == {"server", "worker", "agent"}
    for service in services.values():
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("redis", "postgres", "server"):
        assert "healthcheck" in COMPOSE["services"][name]
    for name in ("worker", "agent"):
        assert services[name]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert re.search(r"SQD_TOKEN:\s*\$\{SQD_TOKEN:\?", COMPOSE_FILE.read_text())  # no default admin token


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_docker_compose_config_accepts_it(host: str, tmp_path: Path) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no `docker compose` here: test_compose_matches_the_code checks the file instead")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SQD_", "AWS_"))} | HOSTS[host]
    out = subprocess.run([*cli, "-f", str(COMPOSE_FILE), "config", "--quiet"], env=env, capture_output=True,
                         text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr


def test_dockerfile_installs_the_package_with_facenet_without_pins() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert 'pip install --no-cache-dir ".[all]"' in text and "--no-deps facenet-pytorch==2.6.0" in text

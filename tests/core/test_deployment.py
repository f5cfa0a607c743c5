"""docker-compose.yml cannot be run here (no Docker engine): check what can be checked — it parses, every
service's command is a real `sqd` command with real options, and every SQD_* variable is a real setting."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sqd.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SQD_SERVICES = {name: s for name, s in COMPOSE["services"].items() if s.get("image") == "sqd:latest"}


def test_compose_has_every_role_with_healthy_dependencies():
    assert set(SQD_SERVICES) == {"server", "worker", "agent"}
    for service in SQD_SERVICES.values():
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    for name in ("redis", "postgres", "server"):
        assert "healthcheck" in COMPOSE["services"][name]
    for name in ("worker", "agent"):
        assert SQD_SERVICES[name]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


@pytest.mark.parametrize("name", sorted(SQD_SERVICES))
def test_service_command_exists(name):
    command = SQD_SERVICES[name]["command"]
    out = subprocess.run([sys.executable, "-m", "sqd", command[0], "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for option in (c for c in command[1:] if c.startswith("--")):
        assert option in out.stdout, f"`sqd {command[0]}` has no option {option}"


def test_every_env_var_is_a_setting():
    names = set()
    for service in SQD_SERVICES.values():
        names |= {k for k in service["environment"] if k.startswith("SQD_")}
    assert names
    for name in names:
        path = name.removeprefix("SQD_").lower().split("__")
        model = Settings
        for part in path:
            assert part in model.model_fields, f"{name}: no setting {part!r}"
            model = model.model_fields[part].annotation
    assert re.search(r"SQD_TOKEN:\s*\$\{SQD_TOKEN:\?", (ROOT / "docker-compose.yml").read_text())


def test_dockerfile_installs_the_package_with_facenet_without_pins():
    text = (ROOT / "Dockerfile").read_text()
    assert 'pip install --no-cache-dir ".[all]"' in text and "--no-deps facenet-pytorch==2.6.0" in text

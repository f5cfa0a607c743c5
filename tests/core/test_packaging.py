"""The distribution: a wheel carries every role subpackage and the web files; an editable install maps the
top-level folders onto `sqd.*`; pyproject lists every package folder."""

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"sqd": "sqd", "server": "sqd.server", "worker": "sqd.worker", "trainer": "sqd.trainer", "web": "sqd.web"}


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for folder, name in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]) if rel.parts else name)
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"


@pytest.mark.slow
def test_wheel_contains_roles_migrations_and_web(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True)
    [wheel] = tmp_path.glob("sqd-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("sqd/bus.py", "sqd/server/app.py", "sqd/worker/cli.py", "sqd/trainer/cli.py",
                     "sqd/web/__init__.py"):
        assert required in names
    web_files = [n for n in names if n.startswith("sqd/web/") and n.endswith((".html", ".js", ".css"))]
    source_web = [p for p in (ROOT / "web").rglob("*") if p.suffix in (".html", ".js", ".css")]
    assert len(web_files) == len(source_web)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "sqd = sqd.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.slow
def test_editable_install_maps_role_folders(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)], check=True)
    # find_spec locates each role without running it (the roles' imports need the extras, not installed here).
    code = ("import importlib.util as u; "
            "print(*(u.find_spec(n).origin for n in ('sqd.server', 'sqd.worker', 'sqd.trainer', 'sqd.web')))")
    out = subprocess.run([py, "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    assert out.split() == [str(ROOT / f / "__init__.py") for f in ("server", "worker", "trainer", "web")]

"""What ``pip install airflow-provider-skytap`` gets: the wheel built from this tree holds the
provider whole (the VM-side scripts included), the example DAGs as files under
``airflow_provider_skytap/example_dags/`` (byte for byte the repository's dags/), the Skytap
simulator, both entry points and the licence; and nothing of the repository's tests, demo,
benchmarks or docker files (docs/deploy.md and README say why)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("airflow_provider_skytap", "skytap_simulator")
# What a build reads (pyproject.toml, setup.py, MANIFEST.in); copied, so no build/ or
# egg-info lands in the repository while the suite runs.
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE", "dags", *PACKAGES)


def shipped(path: Path) -> bool:
    return "__pycache__" not in path.parts and path.suffix != ".pyc" and path.is_file()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0 and "setuptools" in done.stdout + done.stderr:
        # The build runs in pip's isolated environment, which installs setuptools from the
        # package index.
        pytest.skip(f"pip could not get setuptools to build the wheel: {done.stderr[-500:]}")
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = out.glob("*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_holds_the_provider_and_the_simulator_whole(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for package in PACKAGES:
        tree = {p.relative_to(ROOT).as_posix() for p in (ROOT / package).rglob("*") if shipped(p)}
        assert tree - names == set(), f"files of {package}/ the wheel leaves out"
    assert "airflow_provider_skytap/quiesce/guardian.sh" in names  # sent to the VMs over SSH


def test_the_wheel_carries_the_example_dags_byte_for_byte(wheel: zipfile.ZipFile) -> None:
    prefix = "airflow_provider_skytap/example_dags/"
    carried = {n.removeprefix(prefix) for n in wheel.namelist() if n.startswith(prefix)}
    dags = {p.name for p in (ROOT / "dags").glob("*.py")}
    assert carried == dags
    for name in dags:
        assert wheel.read(prefix + name) == (ROOT / "dags" / name).read_bytes()


def test_the_wheel_holds_nothing_else_and_declares_both_entry_points(
    wheel: zipfile.ZipFile,
) -> None:
    tops = {n.split("/", 1)[0] for n in wheel.namelist()}
    info = next(t for t in tops if t.endswith(".dist-info"))
    assert tops == {*PACKAGES, info}  # no tests/, demo/, bench/, dags/, docker/
    assert f"{info}/licenses/LICENSE" in wheel.namelist()
    entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    assert "[apache_airflow_provider]" in entry_points
    assert "provider_info = airflow_provider_skytap.get_provider_info:get_provider_info" in (
        entry_points
    )
    assert "[airflow.plugins]" in entry_points
    assert "skytap = airflow_provider_skytap.plugin:SkytapPlugin" in entry_points

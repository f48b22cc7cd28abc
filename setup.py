"""One build step pyproject.toml cannot declare: the wheel carries the example DAGs.

``dags/*.py`` (the one copy, which `make demo`, the tests and docker-compose.yaml use) are
copied into the wheel as package data under ``airflow_provider_skytap/example_dags/``, so a
``pip install`` user can copy them into a DAGs folder. They are files, not a package: nothing
imports them, and Airflow does not parse them from there. An editable install copies nothing
(the repository has dags/), and neither does a build from a tree without dags/ (docker/Dockerfile
copies only the packages; the compose stack mounts ./dags).
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DAGS = Path(__file__).resolve().parent / "dags"
TARGET = ("airflow_provider_skytap", "example_dags")


class BuildPyWithExampleDags(build_py):
    """``build_py``, then the example DAGs into the built package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False) or not DAGS.is_dir():
            return
        target = Path(self.build_lib, *TARGET)
        self.mkpath(str(target))
        for dag in sorted(DAGS.glob("*.py")):
            self.copy_file(str(dag), str(target / dag.name))


setup(cmdclass={"build_py": BuildPyWithExampleDags})

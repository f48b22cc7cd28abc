"""The provider and the simulator never import each other (one stands in for Skytap)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("airflow_provider_skytap", {"skytap_simulator", "tests"}),
        ("skytap_simulator", {"airflow_provider_skytap", "airflow", "tests"}),
    ],
)
def test_no_import_across_the_boundary(package: str, forbidden: set[str]) -> None:
    modules = imported_modules(package)
    assert modules, f"no modules found in {package}"
    offenders = {f: sorted(n & forbidden) for f, n in modules.items() if n & forbidden}
    assert offenders == {}


def test_only_the_hooks_package_knows_skytap_urls() -> None:
    for path in (ROOT / "airflow_provider_skytap").rglob("*.py"):
        if "hooks" in path.parts:
            continue
        text = path.read_text()
        for marker in ("/v2/", "/configurations", "/templates"):
            assert marker not in text, f"{path.relative_to(ROOT)} spells a Skytap URL ({marker})"

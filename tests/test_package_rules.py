"""Rules of the package's shape, read off its source (ast) and its classes.

- Airflow's public API only: no private or underscored Airflow import or attribute, no
  override of an Airflow class's private method, none of the internals one task would need
  to run another task's operator.
- Lower modules never import operator modules (nor the chain that builds on them).
- Every error class lives in exceptions.py.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from functools import cached_property
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "airflow_provider_skytap"
# What running another task's operator inside a task takes; none of it belongs here.
FORBIDDEN_NAMES = {
    "prepare_for_execution",
    "render_template_fields",
    "__wrapped__",
    "_get_next_poke_interval",
    "_log",
    "get_template_context",
    "_execute_task",
    "_run_raw_task",
}
# Top-level modules and packages that build on the operators.
UPPER = {"operators", "frozen_copy"}
# Files the rule cannot be enforced on in this branch: backups.py belongs to the helper fixing
# findings 3 and 4; it imports the verdict names from operators.quiesce and should import them
# from quiesce.report (one line, at merge).
NOT_YET: set[str] = set()


def _airflow(module: str) -> bool:
    return module == "airflow" or module.startswith("airflow.")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def modules() -> list[tuple[str, ast.Module]]:
    return [
        (str(p.relative_to(ROOT)), ast.parse(p.read_text(), str(p)))
        for p in sorted(PACKAGE.rglob("*.py"))
    ]


def own_private_names() -> set[str]:
    """Underscored names the package defines itself (functions, classes, attributes)."""
    names: set[str] = set()
    for _, tree in modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
    return {n for n in names if n.startswith("_")}


def test_no_private_airflow_import() -> None:
    bad = []
    for path, tree in modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and _airflow(node.module):
                parts = node.module.split(".")
                names = [a.name for a in node.names]
                if any(p.startswith("_") for p in parts) or any(n.startswith("_") for n in names):
                    bad.append(f"{path}:{node.lineno} from {node.module} import {names}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if _airflow(alias.name) and any(
                        p.startswith("_") for p in alias.name.split(".")
                    ):
                        bad.append(f"{path}:{node.lineno} import {alias.name}")
    assert bad == []


def test_no_underscored_attribute_the_package_does_not_define_itself() -> None:
    """``hook._log``, ``ti._anything``, ``op.__wrapped__``: reaching into someone else's
    privates (Airflow's); the package's own underscored names are its business."""
    own = own_private_names()
    bad = []
    for path, tree in modules():
        for node in ast.walk(tree):
            name = None
            if isinstance(node, ast.Attribute):
                name = node.attr
            elif isinstance(node, ast.Name):
                name = node.id
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                name = node.value if node.value in FORBIDDEN_NAMES else None
            if name is None:
                continue
            if name in FORBIDDEN_NAMES:
                bad.append(f"{path}:{node.lineno} {name}")
            elif (
                isinstance(node, ast.Attribute)
                and name.startswith("_")
                and not (name.startswith("__") and name.endswith("__"))
                and name not in own
            ):
                bad.append(f"{path}:{node.lineno} .{name}")
    assert bad == []


def _package_classes() -> list[type]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        module = importlib.import_module(name.removesuffix(".__init__"))
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__:
                found.append(cls)
    return found


def test_no_class_overrides_a_private_method_or_attribute_of_airflow() -> None:
    bad = []
    for cls in _package_classes():
        airflow_bases = [b for b in cls.__mro__[1:] if b.__module__.startswith("airflow.")]
        for attr, value in vars(cls).items():
            own_code = inspect.isfunction(value) or isinstance(value, property | cached_property)
            if not _private(attr) or not own_code:
                continue
            for base in airflow_bases:
                if attr in vars(base) or attr in getattr(base, "__slots__", ()):
                    bad.append(f"{cls.__module__}.{cls.__qualname__}.{attr} (from {base})")
    assert bad == []


def _imports(tree: ast.Module, path: str) -> set[str]:
    found: set[str] = set()
    package = ".".join(Path(path).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)
    return {m for m in found if m.startswith("airflow_provider_skytap")}


def test_lower_modules_never_import_operator_modules() -> None:
    bad = []
    for path, tree in modules():
        top = Path(path).relative_to("airflow_provider_skytap").with_suffix("").parts[0]
        if top in UPPER or path in NOT_YET:
            continue
        for module in sorted(_imports(tree, path)):
            parts = module.split(".")
            if len(parts) > 1 and parts[1] in UPPER:
                bad.append(f"{path} imports {module}")
    assert bad == []


def test_the_checker_sees_an_operator_import() -> None:
    """The import check is not vacuous: operators/retention.py imports from hooks, and a
    made-up lower module importing an operator would be caught."""
    tree = ast.parse("from airflow_provider_skytap.operators.clone import LiveCloneOperator")
    assert "airflow_provider_skytap.operators.clone" in _imports(
        tree, "airflow_provider_skytap/x.py"
    )


def test_every_error_class_lives_in_exceptions_py() -> None:
    elsewhere = [
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in _package_classes()
        if issubclass(cls, BaseException) and cls.__module__ != "airflow_provider_skytap.exceptions"
    ]
    assert elsewhere == []


@pytest.mark.parametrize("name", ["SkytapError", "SkytapAPIError", "SkytapNotFoundError"])
def test_old_error_names_stay_importable(name: str) -> None:
    from airflow_provider_skytap import exceptions
    from airflow_provider_skytap.hooks import api, skytap

    assert getattr(api, name) is getattr(exceptions, name) is getattr(skytap, name)


def test_old_quiesce_error_names_stay_importable() -> None:
    from airflow_provider_skytap import checks, exceptions
    from airflow_provider_skytap.operators import quiesce as op
    from airflow_provider_skytap.quiesce import session

    assert session.QuiesceError is op.QuiesceError is exceptions.QuiesceError
    assert session.GuardianFiredError is exceptions.GuardianFiredError
    assert checks.InvalidValueError is exceptions.InvalidValueError

"""The README and docs/ as a newcomer reads them: the first screen holds the two commands and
the install line, every relative link and anchor leads somewhere, the [ASSUMED] list is one
click away, and the README's minimal DAG parses into the tasks it promises."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, ROOT / "tests" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FIRST_SCREEN = 40  # lines: what a terminal or GitHub shows before any scrolling
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans removed."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(re.sub(r"`[^`]*`", "", line))
    return lines


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings (lower case, punctuation dropped,
    spaces to hyphens, a repeat numbered)."""
    seen: dict[str, int] = {}
    out = set()
    text = path.read_text()
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced or not re.match(r"#{1,6} ", line):
            continue
        title = line.lstrip("#").strip().lower()
        slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(path: Path) -> list[str]:
    return [m.group(1) for line in prose(path.read_text()) for m in LINK.finditer(line)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_leads_somewhere(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, fragment = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"{target}: no {dest.relative_to(ROOT)}")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no heading with that anchor in {dest.name}")
    assert broken == [], f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_first_screen_holds_the_two_commands_the_install_line_and_the_airflow_versions() -> (
    None
):
    first = "\n".join(README.read_text().splitlines()[:FIRST_SCREEN])
    for needed in ("make demo", "make test", "pip install", "airflow-provider-skytap["):
        assert needed in first, f"README's first {FIRST_SCREEN} lines lack {needed!r}"
    # The versions named are the ones the constraints files pin.
    for constraints in ("constraints.txt", "constraints-floor.txt"):
        pins = (ROOT / constraints).read_text()
        version = re.search(r"^apache-airflow==(\S+)$", pins, re.M)
        assert version, f"{constraints} pins no apache-airflow"
        assert f"Airflow {version.group(1)}" in first, (constraints, version.group(1))


def test_every_docs_page_is_listed_in_the_readme() -> None:
    listed = {Path(t.partition("#")[0]).name for t in links(README) if t.startswith("docs/")}
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert pages - listed == set(), "docs pages the README does not lead to"


def test_the_assumed_behaviours_are_one_click_from_the_readme() -> None:
    targets = [t for t in links(README) if t.startswith("docs/") and "#" in t]
    assumed = [t for t in targets if "assumes" in t or "relies-on" in t]
    assert assumed, "the README links to no list of assumed Skytap behaviours"
    for target in assumed:
        file, _, fragment = target.partition("#")
        text = (ROOT / file).read_text()
        heading = next(
            i
            for i, line in enumerate(text.splitlines())
            if line.startswith("#")
            and re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            == fragment
        )
        section = "\n".join(text.splitlines()[heading + 1 :]).split("\n#", 1)[0]
        assert "ASSUMED" in section, f"{target}: the section names no ASSUMED behaviour"


def readme_dag() -> str:
    text = README.read_text()
    section = text.split("## A minimal DAG", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's minimal DAG section has no python block"
    return match.group(1)


def test_the_readme_minimal_dag_parses_into_the_backup_tasks(tmp_path: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    (tmp_path / "readme_dag.py").write_text(readme_dag())

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"the README's DAG opened a connection while parsing: {args}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        bag = DagBag(str(tmp_path))  # no examples: tests/conftest.py
    assert bag.import_errors == {}
    (dag,) = bag.dags.values()
    chain = {f"backup.{t}" for t in ("freeze", "copy", "wait", "thaw")}
    assert chain | {"copy_to_dr", "prune"} <= set(dag.task_ids)
    assert dag.get_task("backup.thaw").trigger_rule == "all_done"
    # No form default decides what a scheduled run freezes: the environment is the DAG's.
    assert "environment_id" not in dag.params
    assert dag.get_task("backup.freeze").quiesce.environment_id == "1001"
    assert dag.max_active_runs == 1

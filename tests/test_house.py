"""The house stays walkable: layers do not bend, the README's layout matches the tree, docs match the code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from shared.core.settings_doc import render

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_nothing_in_shared_imports_workers() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(name for name in _imports(path) if name.split(".")[0] == "workers")
        for path in (ROOT / "shared").rglob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_readme_layout_names_only_paths_that_exist_and_every_module_is_placed() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([\w./]+)`", layout))
    for entry in named:
        if entry.split("/")[0] in ("shared", "workers", "ops", "docs", "tests", "bench"):
            assert (ROOT / entry).exists(), f"README names {entry}, which is not in the tree"
    text = layout
    for package in ("shared", "workers", "shared/core", "shared/data", "shared/observability"):
        for child in sorted((ROOT / package).iterdir()):
            if child.name.startswith("__") or child.name == "__pycache__":
                continue
            assert child.name in text or child.stem in text, f"{package}/{child.name} is not in the README's layout"


def test_the_settings_page_is_generated_from_the_model() -> None:
    assert (ROOT / "docs" / "settings.md").read_text(encoding="utf-8") == render(), (
        "regenerate: .venv/bin/python -m shared.core.settings_doc > docs/settings.md"
    )


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in (ROOT / "docs").glob("*.md"):
        assert f"docs/{page.name}" in readme, page.name


SQL_START = re.compile(
    r"^\s*(SELECT\b|INSERT INTO|UPDATE \w+ SET|DELETE FROM|WITH \w+ AS|CREATE |DROP |ALTER |SET LOCAL|COPY \w)"
)
SQL_HOMES = ("shared/data/", "shared/core/")
CATALOGUE = "shared/backups/catalog.py"  # the server's own catalogue and databases, not a table of ours


def test_sql_lives_in_repositories() -> None:
    """A feature module or task that writes a statement itself bypasses the repositories' checks and the one
    place a table's queries can be read together."""
    offenders: dict[str, list[int]] = {}
    for path in [*(ROOT / "shared").rglob("*.py"), *(ROOT / "workers").rglob("*.py")]:
        relative = str(path.relative_to(ROOT))
        if relative.startswith(SQL_HOMES) or relative == CATALOGUE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_START.match(node.value):
                offenders.setdefault(relative, []).append(node.lineno)
    assert offenders == {}

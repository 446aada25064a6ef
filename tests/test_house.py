"""The house stays walkable: layers do not bend, the README's layout matches the tree, docs match the code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from shared.core.settings_doc import render

ROOT = Path(__file__).resolve().parents[1]


SKIPPED = {"__pycache__", "salon_fleet.egg-info"}

# The layers, bottom up, as the README's Layout section lists them. A module imports its own package and lower
# layers only: never a higher layer, nor another package of its own layer. A module belongs to the longest
# entry its path starts with, so settings and the registry sit below the rest of shared/core.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("shared/core/settings.py", "shared/core/resources.py"),
    ("shared/observability",),
    ("shared/core",),
    ("shared/data",),
    ("shared/alerts",),
    ("shared/assistant", "shared/backups", "shared/whatsapp"),
    ("shared/inbound",),
    ("shared/yclients",),
    ("shared/health",),
    ("beat_schedule.py",),
    ("workers",),
    ("ops",),
    ("bench",),
    ("tests",),
)
FLEET_ROOTS = {"shared"} | {entry.split("/")[0].removesuffix(".py") for layer in LAYERS for entry in layer}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module name the file imports; `from a import b` counts as `a.b` (b may be a module of its own,
    which decides the layer), and relative imports are resolved."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], *filter(None, [node.module])])
            found |= {base if alias.name == "*" else f"{base}.{alias.name}" for alias in node.names}
    return found


def _python_files() -> list[Path]:
    """The project's modules: the root's and its directories', not hidden ones (.venv) nor build output."""
    tops = [child for child in ROOT.iterdir() if not child.name.startswith(".") and child.name not in SKIPPED]
    nested = [path for top in tops if top.is_dir() for path in top.rglob("*.py") if "__pycache__" not in path.parts]
    return [*(top for top in tops if top.suffix == ".py"), *nested]


def _place(module: str) -> tuple[int, str] | None:
    """The layer and the entry a module belongs to (the longest entry it falls under), or None."""
    best: tuple[int, str] | None = None
    for index, layer in enumerate(LAYERS):
        for entry in layer:
            dotted = entry.removesuffix(".py").replace("/", ".")
            if (module == dotted or module.startswith(dotted + ".")) and (best is None or len(entry) > len(best[1])):
                best = (index, entry)
    return best


def test_nothing_in_shared_imports_workers() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(name for name in _imports(path) if name.split(".")[0] == "workers")
        for path in (ROOT / "shared").rglob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_no_import_climbs_a_layer_or_crosses_to_a_sibling() -> None:
    offenders = []
    for path in _python_files():
        place = _place(_module_name(path))
        for name in sorted(_imports(path)):
            if name.split(".")[0] not in FLEET_ROOTS:
                continue
            target = _place(name)
            if place is None or target is None:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}: a module outside LAYERS")
            elif target[0] > place[0]:
                offenders.append(f"{path.relative_to(ROOT)} ({place[1]}) imports {name} from higher {target[1]}")
            elif target[0] == place[0] and target[1] != place[1]:
                offenders.append(f"{path.relative_to(ROOT)} ({place[1]}) imports {name} from sibling {target[1]}")
    assert not offenders, "\n".join(offenders)


def _layout() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8").split("## Layout", 1)[1].split("\n## ", 1)[0]


def test_the_readme_lists_the_same_layers() -> None:
    listed = [
        tuple(path.rstrip("/") for path in re.findall(r"`([^`]+)`", line.split(": ", 1)[0]))
        for line in _layout().splitlines()
        if re.match(r"\d+\. `", line)
    ]
    assert tuple(listed) == LAYERS


def _path_tokens(text: str) -> set[str]:
    """Each backticked path, whole and by its parts (`shared/core/` gives `shared/core`, `shared` and `core`):
    a name is placed by a whole token only, never by a substring of another word."""
    tokens = set()
    for written in re.findall(r"`([\w./]+)`", text):
        path = written.strip("/")
        tokens |= {path, *path.split("/")}
    return tokens


def test_the_readme_layout_names_only_paths_that_exist_and_every_module_is_placed() -> None:
    layout = _layout()
    named = set(re.findall(r"`([\w./]+)`", layout))
    for entry in named:
        if entry.split("/")[0] in ("shared", "workers", "ops", "docs", "tests", "bench"):
            assert (ROOT / entry).exists(), f"README names {entry}, which is not in the tree"
    tokens = _path_tokens(layout)
    for package in ("shared", "workers", "shared/core", "shared/data", "shared/observability"):
        for child in sorted((ROOT / package).iterdir()):
            if child.name.startswith("__"):
                continue
            assert child.name in tokens, f"{package}/{child.name} is not in the README's layout"


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
# A piece of a statement handed to a repository to splice in (a WHERE condition, an ordering, a cast): the
# house writes SQL keywords in upper case, so upper-case clause words and SQL-only notation are the tell.
SQL_FRAGMENT = re.compile(
    r"\b(?:WHERE|AND|OR|BETWEEN|ILIKE|RETURNING|JOIN)\b"
    r"|\bIS (?:NOT )?NULL\b|\b(?:ORDER|GROUP) BY\b|\bON CONFLICT\b|\bSET \w+ = "
    r"|(?:=|<>|[<>]=?) ?(?:%s|%\(\w+\)s)"  # a comparison with a bound value
    r"|\b(?:ANY|ALL)\(|\binterval '|\bmake_interval\(|\bnow\(\)|\bcount\(\*\)"
    r"|\w::(?:text|int|integer|bigint|numeric|boolean|date|time|timestamptz|interval|json|jsonb)\b"
)
SQL_HOMES = ("shared/data/", "shared/core/")
CATALOGUE = "shared/backups/catalog.py"  # the server's own catalogue and databases, not a table of ours


def _sql_constants(source: str) -> list[int]:
    """Lines of the string constants (f-strings' literal parts too, docstrings not) that hold a statement or a
    fragment of one."""
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and (SQL_START.match(node.value) or SQL_FRAGMENT.search(node.value))
    ]


def test_sql_lives_in_repositories() -> None:
    """A feature module or task that writes a statement, or a piece of one for a repository to splice in,
    bypasses the repositories' checks and the one place a table's queries can be read together."""
    offenders: dict[str, list[int]] = {}
    for path in [*(ROOT / "shared").rglob("*.py"), *(ROOT / "workers").rglob("*.py"), ROOT / "beat_schedule.py"]:
        relative = str(path.relative_to(ROOT))
        if relative.startswith(SQL_HOMES) or relative == CATALOGUE:
            continue
        lines = _sql_constants(path.read_text(encoding="utf-8"))
        if lines:
            offenders[relative] = lines
    assert offenders == {}


@pytest.mark.parametrize(
    ("source", "caught"),
    [
        ('where = "company_id = %s AND deleted_at IS NULL"', True),
        ("gone = \"NOT (staff_id::text || ':' || date::text = ANY(%s))\"", True),
        ('extra = " AND starts_at >= %s AND starts_at < %s"', True),
        ('key = "id"\ncondition = f"{key} IS NOT NULL"', True),
        ('order = "ORDER BY starts_at"\nwindow = "now() - interval \'2 days\'"', True),
        ('log.info("pending records of company %s: %s saved, %s still waiting", 1, 2, 3)', False),
        ('text = "Записываю вас… Отменить запись? 1 — да, 2 — нет"', False),
        ('def f():\n    """Rows WHERE the answer IS NULL are described, not written."""', False),
        ('reason = f"refused to mark {gone} of {live} rows deleted ({share:.0%}, limit {limit:.0%})"', False),
    ],
)
def test_the_sql_check_catches_fragments_and_spares_prose(source: str, caught: bool) -> None:
    assert bool(_sql_constants(source)) is caught


def test_the_schema_section_names_every_table_the_migrations_create() -> None:
    migrations = "\n".join(
        path.read_text(encoding="utf-8") for path in (ROOT / "shared/core/migrations/versions").glob("*.py")
    )
    created = set(re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", migrations))
    schema = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8").split("## Schema", 1)[1]
    assert len(created) > 20
    assert sorted(table for table in created if f"`{table}`" not in schema) == []


def test_every_advisory_lock_is_taken_through_the_one_declaration() -> None:
    """Two lock numbers chosen in two places can collide; shared/core/locks.py holds every class the fleet takes."""
    home = ROOT / "shared/core/locks.py"
    offenders = [
        str(path.relative_to(ROOT))
        for path in [*(ROOT / "shared").rglob("*.py"), *(ROOT / "workers").rglob("*.py")]
        if path != home and "pg_advisory" in path.read_text(encoding="utf-8")
    ]
    assert offenders == []


def test_the_periodic_jobs_table_names_every_beat_entry() -> None:
    """docs/health.md's table is what operators read to know what runs when; a job missing there is unseen."""
    from beat_schedule import build_beat_schedule
    from shared.core.settings import load_settings

    table = (ROOT / "docs" / "health.md").read_text(encoding="utf-8").split("## Periodic jobs", 1)[1]
    named = re.findall(r"^\| `([^`]+)`(?:, `([^`]+)`)?", table, flags=re.MULTILINE)
    patterns = [
        re.compile(re.sub(r"\\\*|<[^>]+>", r"[\\w-]+", re.escape(name).replace(r"\<", "<").replace(r"\>", ">")) + "$")
        for pair in named
        for name in pair
        if name
    ]
    jobs = build_beat_schedule(load_settings())
    assert len(jobs) > 10
    assert sorted(job for job in jobs if not any(pattern.match(job) for pattern in patterns)) == []


def test_no_test_module_imports_another() -> None:
    """A test module is a list of checks, not a library: what two modules share lives in tests/support/ or
    tests/conftest.py, so running or deleting one module never changes another."""
    offenders = {
        str(path.relative_to(ROOT)): sorted(name for name in _imports(path) if name.startswith("tests.test_"))
        for path in [*(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").rglob("*.py"), *(ROOT / "ops").rglob("*.py")]
    }
    assert {path: names for path, names in offenders.items() if names} == {}

"""The import contract between the product's folders (docs/architecture.md §2), checked by an
AST pass over every product file.

import-linter/grimp cannot see `hybridgrid.flows` and its siblings (the folders are not under
hybridgrid/; pyproject's `package-dir` maps them), so this test applies that mapping itself.
Every import counts: module level, inside functions, and under `if TYPE_CHECKING:` too.

The rules: (a) a module imports only its own unit or a lower layer (`LAYERS`); (b) the core and
`hybridgrid.wireguard` import no Prefect, openstacksdk, keystoneauth1 or asyncssh; (c)
localcloud imports nothing of hybridgrid and hybridgrid nothing of localcloud; (d) no import
cycle between units (the folders, with hybridgrid/'s CLI modules apart from its core).
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Units from the top: each may import its own unit and those with a higher number. Units with
# the same number (cloudops, sshclient) may not import each other.
LAYERS = {
    "cli": 1,
    "deployments": 2,
    "flows": 3,
    "tasks": 4,
    "blocks": 5,
    "cloudops": 6,
    "sshclient": 6,
    "retry": 7,
    "wireguard": 8,
    "slurm": 8,
    "core": 9,
}
CLI = re.compile(r"^hybridgrid\.(cli|cli_\w+|prefect_client|demo_profile)$")
PURE = ("core", "wireguard", "slurm")
IMPURE = ("prefect", "openstack", "keystoneauth1", "asyncssh")


class Import(NamedTuple):
    path: Path
    line: int
    source: str  # the importing module
    target: str  # the imported module (or the package a name was imported from)

    def where(self, root: Path) -> str:
        return f"{self.path.relative_to(root)}:{self.line} → {self.target}"


def package_dirs(pyproject: Path) -> dict[str, Path]:
    """Package name → folder, from `[tool.setuptools.package-dir]` (localcloud included)."""
    table = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-dir"]
    return {package: pyproject.parent / folder for package, folder in table.items()}


def modules(dirs: dict[str, Path]) -> dict[str, Path]:
    """Every module of every mapped package, by its installed name."""
    out: dict[str, Path] = {}
    for package, folder in dirs.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join(parts)
            # a folder mapped on its own (hybridgrid.flows → flows/) wins over hybridgrid/flows
            out.setdefault(name, path)
    return out


def _resolve(node: ast.ImportFrom, source: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = source.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports(source: str, path: Path, known: dict[str, Path]) -> Iterator[Import]:
    """What `source` imports; `from pkg import name` counts as `pkg.name` when that is a module."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, source, alias.name)
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(node, source, path.name == "__init__.py")
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                yield Import(path, node.lineno, source, sub if sub in known else module)


def unit(module: str) -> str | None:
    """The unit a module of ours belongs to; None for anything else (stdlib, third party)."""
    if module == "localcloud" or module.startswith("localcloud."):
        return "localcloud"
    if CLI.match(module):
        return "cli"
    parts = module.split(".")
    if parts[0] != "hybridgrid":
        return None
    if len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    return "core"


def violations(pyproject: Path) -> list[str]:
    """Every broken rule as one line: the rule, then file:line → imported module."""
    known = modules(package_dirs(pyproject))
    root = pyproject.parent
    found: list[str] = []
    edges: dict[tuple[str, str], Import] = {}
    for source, path in known.items():
        src = unit(source)
        for imp in imports(source, path, known):
            dst = unit(imp.target)
            top = imp.target.split(".")[0]
            if src in PURE and top in IMPURE:
                found.append(f"(b) {src} imports {top}: {imp.where(root)}")
            if dst is None or dst == src:
                continue
            if "localcloud" in (src, dst):
                found.append(f"(c) {src} imports {dst}: {imp.where(root)}")
                continue
            edges.setdefault((src, dst), imp)
            if LAYERS[dst] <= LAYERS[src]:
                found.append(f"(a) {src} may not import {dst}: {imp.where(root)}")
    for cycle in cycles(edges):
        found.append(
            f"(d) import cycle {' → '.join(cycle)}: {edges[cycle[0], cycle[1]].where(root)}"
        )
    return found


def cycles(edges: dict[tuple[str, str], Import]) -> list[list[str]]:
    """One cycle per strongly connected group of units (depth-first search, bounded by the
    number of units)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    out: list[list[str]] = []
    seen: set[str] = set()
    for start in sorted(graph):
        stack = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in sorted(graph.get(node, ())):
                if nxt == start and start not in seen:
                    out.append([*trail, start])
                    seen.update(trail)
                elif nxt not in trail and len(trail) <= len(LAYERS):
                    stack.append((nxt, [*trail, nxt]))
    return out


def test_the_product_keeps_the_import_contract() -> None:
    broken = violations(ROOT / "pyproject.toml")
    assert not broken, "import contract broken:\n" + "\n".join(broken)


def test_every_product_folder_is_in_a_layer() -> None:
    """A new top-level package must be placed in `LAYERS` (else its imports go unchecked)."""
    for package in package_dirs(ROOT / "pyproject.toml"):
        assert unit(package) is not None, package


# ---- the checker itself, on small fake trees -------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    dirs = {
        "hybridgrid": "hybridgrid",
        "hybridgrid.tasks": "tasks",
        "hybridgrid.cloudops": "cloudops",
        "hybridgrid.sshclient": "sshclient",
        "hybridgrid.wireguard": "wireguard",
        "localcloud": "localcloud",
    }
    table = "\n".join(f'"{p}" = "{d}"' for p, d in dirs.items())
    (tmp_path / "pyproject.toml").write_text(f"[tool.setuptools.package-dir]\n{table}\n")
    for folder in dirs.values():
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path / "pyproject.toml"


def test_a_clean_fake_tree_passes(tmp_path: Path) -> None:
    pyproject = _tree(
        tmp_path,
        {
            "tasks/steps.py": "from hybridgrid.cloudops import finder\nimport prefect\n",
            "cloudops/finder.py": "from hybridgrid import model\nimport openstack\n",
            "wireguard/render.py": "from hybridgrid.model import Thing\n",
            "hybridgrid/model.py": "import pydantic\n",
            "hybridgrid/cli.py": "from hybridgrid.tasks import steps\n",
        },
    )
    assert violations(pyproject) == []


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (  # the core imports a task, inside a function
            {"hybridgrid/model.py": "def f():\n    from hybridgrid.tasks import steps\n"},
            "(a) core may not import tasks: hybridgrid/model.py:2 → hybridgrid.tasks.steps",
        ),
        (  # one library imports a sibling of the same layer
            {"cloudops/finder.py": "from hybridgrid.sshclient.client import connect\n"},
            "(a) cloudops may not import sshclient: cloudops/finder.py:1 → "
            "hybridgrid.sshclient.client",
        ),
        (  # a pure package imports Prefect, even only for type checkers
            {"wireguard/render.py": "if TYPE_CHECKING:\n    from prefect import task\n"},
            "(b) wireguard imports prefect: wireguard/render.py:2 → prefect",
        ),
        (  # the product imports the test cloud
            {"tasks/steps.py": "import localcloud.server\n"},
            "(c) tasks imports localcloud: tasks/steps.py:1 → localcloud.server",
        ),
        (  # and the test cloud the product
            {"localcloud/app.py": "from hybridgrid import naming\n"},
            "(c) localcloud imports core: localcloud/app.py:1 → hybridgrid.naming",
        ),
        (  # a relative import is resolved first
            {"hybridgrid/model.py": "from .tasks import steps\n"},
            "(a) core may not import tasks: hybridgrid/model.py:1 → hybridgrid.tasks.steps",
        ),
    ],
)
def test_a_broken_rule_names_the_import(tmp_path: Path, files: dict, expected: str) -> None:
    pyproject = _tree(tmp_path, {"tasks/steps.py": "", "hybridgrid/naming.py": "", **files})
    assert expected in violations(pyproject)


def test_a_cycle_between_folders_is_named(tmp_path: Path) -> None:
    pyproject = _tree(
        tmp_path,
        {
            "hybridgrid/model.py": "from hybridgrid.wireguard import render\n",
            "wireguard/render.py": "from hybridgrid import model\n",
        },
    )
    broken = violations(pyproject)
    upward = "hybridgrid/model.py:1 → hybridgrid.wireguard.render"
    assert f"(a) core may not import wireguard: {upward}" in broken
    assert any(b.startswith("(d) import cycle core → wireguard → core") for b in broken), broken

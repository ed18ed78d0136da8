"""The import rules of docs/architecture.md, read from the source, so the plan cannot drift.

Every import counts, including those inside functions: a circle hidden in a function is still a
circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import ml
import ml.data
import ml.metrics
import ml.models
import ml.train

ROOT = Path(__file__).resolve().parents[2]
# ml's packages along the data's path: a module may import its own package, the top-level
# modules and the packages before it, never one after it.
ML_ORDER = ("metrics", "data", "models", "explain", "infer", "evaluate", "train", "cli")
ML_TOP = ("ml", "ml.bundle", "ml.config", "ml.errors", "ml.hashing", "ml.lazy", "ml.runtime")
PUBLIC = {
    "ml": set(ml.__all__),
    "ml.data": set(ml.data.__all__),
    "ml.metrics": set(ml.metrics.__all__),
    "ml.models": set(ml.models.__all__),
    "ml.train": set(ml.train.__all__),
}
# Scripts that must patch ml's internals to do their job, and why.
PATCHES_INTERNALS = {
    "benchmarks/gpu_ddp_check.py": "shares one GPU between two ranks by patching the process "
    "group set-up of ml.train.distributed",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (ROOT / relative).with_suffix(".py").is_file() or (ROOT / relative).is_dir()


def is_package(name: str) -> bool:
    return (ROOT / Path(*name.split("."))).is_dir()


def imports(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """(line, module, imported name or None) of every import in the file, at any depth."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                yield node.lineno, node.module, alias.name


def targets(path: Path, prefix: str) -> Iterator[tuple[int, str, str | None]]:
    """Imports of `prefix` modules, resolved to the module imported: `from ml.data import cache`
    is ml.data.cache; `from ml.data import X` (a name) stays ml.data, with the name."""
    for line, module, name in imports(path):
        if module != prefix and not module.startswith(prefix + "."):
            continue
        if name is not None and is_module(f"{module}.{name}"):
            yield line, f"{module}.{name}", None
        else:
            yield line, module, name


def files(*folders: str) -> list[Path]:
    found = []
    for folder in folders:
        base = ROOT / folder
        found += [base] if base.is_file() else sorted(base.rglob("*.py"))
    return found


def ml_rank(module: str) -> int:
    if module in ML_TOP:
        return 0
    package = module.split(".")[1]
    return 1 + ML_ORDER.index(package) if package in ML_ORDER else len(ML_ORDER)


def graph(prefix: str) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in files(prefix):
        source = module_name(path)
        edges[source] = {target for _, target, _ in targets(path, prefix) if target != source}
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle, each found once (depth-first search)."""
    found, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append([*trail[trail.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def test_ml_packages_import_only_along_the_data_path() -> None:
    wrong = []
    for path in files("ml"):
        source = module_name(path)
        for line, target, name in targets(path, "ml"):
            where = f"{path.relative_to(ROOT)}:{line} imports {target}"
            if name is not None and is_package(target) and source not in ("ml", *PUBLIC):
                wrong.append(f"{where}.{name}: inside ml, import the module, not a public name")
            elif ml_rank(target) > ml_rank(source) and ml_rank(target) > 0:
                wrong.append(f"{where}: a later package than {source.split('.')[1]}")
            elif source in ML_TOP and target not in ML_TOP and source != "ml":
                wrong.append(f"{where}: top-level modules import only each other")
    assert wrong == []


def test_ml_has_no_import_circles() -> None:
    assert circles(graph("ml")) == []


def test_webapp_has_no_import_circles() -> None:
    assert circles(graph("webapp")) == []


def test_webapp_top_level_modules_never_import_an_area() -> None:
    """webapp/*.py are the base (database, storage, errors, formatting); the areas (bundles,
    predict, results, ...) build on them, never the other way round."""
    wrong = []
    for path in sorted((ROOT / "webapp").glob("*.py")):
        if path.name == "__init__.py":
            continue  # create_app registers the areas
        for line, target, _ in targets(path, "webapp"):
            if target.count(".") > 1 or (ROOT / "webapp" / target.split(".")[1]).is_dir():
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert wrong == []


def test_views_are_imported_only_by_their_own_package() -> None:
    wrong = []
    for path in files("webapp"):
        source = module_name(path)
        for line, target, _ in targets(path, "webapp"):
            if target.rsplit(".", 1)[-1].endswith("views"):
                own = target.rsplit(".", 1)[0]
                if not (source == own or source.startswith(own + ".")):
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert wrong == []


@pytest.mark.parametrize("folder", ["webapp", "benchmarks", "wsgi.py", "config.py"])
def test_outside_ml_only_the_public_api_is_used(folder: str) -> None:
    """The web app uses `ml`'s own names only; benchmarks may also use a package's names
    (ml.data, ml.models, ml.metrics, ml.train). Nothing reaches into a module."""
    allowed = {"ml"} if folder == "webapp" else set(PUBLIC)
    wrong = []
    for path in files(folder):
        if str(path.relative_to(ROOT)) in PATCHES_INTERNALS:
            continue
        for line, target, name in targets(path, "ml"):
            where = f"{path.relative_to(ROOT)}:{line}"
            if name is None and target not in allowed:
                wrong.append(f"{where} imports the module {target}")
            elif name is not None and (target not in allowed or name not in PUBLIC[target]):
                wrong.append(f"{where} imports {name} from {target}, not a public name")
    assert wrong == []


def test_every_public_name_resolves() -> None:
    for package, names in PUBLIC.items():
        module = __import__(package, fromlist=["_"])
        for name in sorted(names):
            assert getattr(module, name) is not None, f"{package}.{name}"
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        _ = ml.nothing_here

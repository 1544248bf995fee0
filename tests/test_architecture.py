"""The package's shape (docs/architecture.md): dependencies point only down the layers, no import cycles, and the
modules that remote code will flatten into one folder have unique names and import only what a Hub user has.

Imports are read from the source (module level and inside functions alike), not executed.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "ovmlc"

# Layers, bottom first: a module may import its own group and groups of a lower rank. `data` sits beside inference
# but may import only the base layer and core (it is used by evaluation and training, never the other way round).
LAYERS: list[tuple[str, int, tuple[str, ...]]] = [
    ("base", 0, ("ovmlc._version", "ovmlc.files", "ovmlc.resources", "ovmlc.yaml_schema")),
    ("core", 1, ("ovmlc.core",)),
    ("prompting", 2, ("ovmlc.prompting",)),
    ("methods", 3, ("ovmlc.methods",)),
    ("inference", 4, ("ovmlc.inference",)),
    ("data", 4, ("ovmlc.data",)),
    ("evaluation", 5, ("ovmlc.evaluation",)),
    ("training", 6, ("ovmlc.training",)),
    ("hub", 7, ("ovmlc.hub",)),
    (
        "apps",
        8,
        (
            "ovmlc.cli",
            "ovmlc.space",
            "ovmlc.__main__",
            "ovmlc.train",
            "ovmlc.predict",
            "ovmlc._registration",
            "ovmlc._compat",
        ),
    ),
]
ROOT_PACKAGE = "ovmlc"  # the public API: lazy re-exports of every layer (rank of the apps)
RESTRICTED_IMPORTS = {"data": {"base", "core"}}
# What remote code may import besides the standard library (docs/architecture.md); peft only for CLIP-FT.
REMOTE_CODE_PACKAGES = {"torch", "transformers", "safetensors", "numpy", "PIL", "huggingface_hub"}
REMOTE_CODE_EXTRA = {"ovmlc.methods.clipft": {"peft"}}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def imported_names(name: str) -> list[tuple[str, int]]:
    """(absolute module or package name, line) of every import statement in a module, function level included."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                # `from pkg import submodule` imports the submodule; `from module import name` the module
                found.append((f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base, node.lineno))
    return found


def ovmlc_imports(name: str) -> set[str]:
    """The ovmlc modules a module imports (the closest known module of each imported name)."""
    targets = set()
    for target, _ in imported_names(name):
        while target and target not in MODULES:
            target = target.rpartition(".")[0]
        if target and target != name:
            targets.add(target)
    return targets


def layer_of(name: str) -> tuple[str, int]:
    if name == ROOT_PACKAGE:
        return "apps", 8
    for group, rank, prefixes in LAYERS:
        if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes):
            return group, rank
    raise AssertionError(f"{MODULES[name]}: module {name} belongs to no layer; add it to LAYERS (and docs)")


def test_every_module_belongs_to_a_layer():
    for name in MODULES:
        layer_of(name)


def layer_violations(edges: dict[str, set[str]]) -> list[str]:
    violations = []
    for name, targets in edges.items():
        group, rank = layer_of(name)
        for target in sorted(targets):
            target_group, target_rank = layer_of(target)
            allowed = target_group == group or target_rank < rank
            if group in RESTRICTED_IMPORTS:
                allowed = target_group == group or target_group in RESTRICTED_IMPORTS[group]
            if target == ROOT_PACKAGE and name != ROOT_PACKAGE:
                allowed = False  # the lazy public API is for users; inside the package import the defining module
            if not allowed:
                violations.append(f"{name} ({group}) imports {target} ({target_group})")
    return violations


def test_imports_point_only_down_the_layers():
    violations = layer_violations({name: ovmlc_imports(name) for name in MODULES})
    assert not violations, "imports from a higher layer:\n" + "\n".join(violations)


def test_layer_check_catches_upward_imports():
    assert layer_violations({"ovmlc.core.modeling_base": {"ovmlc.hub.model_card", "ovmlc.core.images"}}) == [
        "ovmlc.core.modeling_base (core) imports ovmlc.hub.model_card (hub)"
    ]
    assert layer_violations({"ovmlc.data.storage": {"ovmlc.inference.factory"}})  # data: base and core only
    assert layer_violations({"ovmlc.training.trainer": {"ovmlc"}})  # not the lazy public API from inside
    assert not layer_violations({"ovmlc.training.trainer": {"ovmlc.evaluation.engine", "ovmlc.data"}})


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return result


def test_no_import_cycles():
    # A package's __init__ importing its own submodules is how packages work, not a cycle.
    graph = {
        name: {
            target
            for target in ovmlc_imports(name)
            if not (MODULES[name].name == "__init__.py" and target.startswith(name + "."))
        }
        for name in MODULES
    }
    assert find_cycles(graph) == []


def test_find_cycles_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def remote_code_modules() -> list[str]:
    """What remote-code export flattens: core, prompting, the method files, inference/pipeline.py, and every ovmlc
    module they import (transitively)."""
    roots = [
        name
        for name, path in MODULES.items()
        if path.name != "__init__.py"
        and (
            name.startswith(("ovmlc.core.", "ovmlc.prompting."))
            or (name.startswith("ovmlc.methods.") and path.stem.startswith(("configuration_", "modeling_")))
            or name == "ovmlc.inference.pipeline"
        )
    ]
    closure, pending = set(), list(roots)
    while pending:
        name = pending.pop()
        if name in closure:
            continue
        closure.add(name)
        pending += [target for target in ovmlc_imports(name) if MODULES[target].name != "__init__.py"]
    return sorted(closure)


def test_remote_code_module_basenames_are_unique():
    names = remote_code_modules()
    assert "ovmlc.core.modeling_base" in names and "ovmlc.inference.pipeline" in names
    assert any(name.startswith("ovmlc.methods.qks.modeling_") for name in names)
    by_basename: dict[str, list[str]] = {}
    for name in names:
        by_basename.setdefault(name.rpartition(".")[2], []).append(name)
    duplicates = {base: found for base, found in by_basename.items() if len(found) > 1}
    assert not duplicates, f"remote code is flattened into one folder; these basenames collide: {duplicates}"


@pytest.mark.parametrize(
    "name", [name for name in MODULES if name.startswith(("ovmlc.core", "ovmlc.prompting", "ovmlc.methods"))]
)
def test_core_and_method_modules_import_only_what_hub_users_have(name):
    allowed = REMOTE_CODE_PACKAGES | set(sys.stdlib_module_names)
    for prefix, extra in REMOTE_CODE_EXTRA.items():
        if name == prefix or name.startswith(prefix + "."):
            allowed |= extra
    for target, line in imported_names(name):
        top = target.partition(".")[0]
        if top == "ovmlc":
            assert layer_of_import(target) in ("base", "core", "prompting", "methods"), (
                f"{MODULES[name]}:{line}: imports {target}"
            )
        else:
            third_party = sorted(allowed - set(sys.stdlib_module_names))
            assert top in allowed, f"{MODULES[name]}:{line}: imports {target}; remote code may import {third_party}"


def layer_of_import(target: str) -> str:
    while target not in MODULES:
        target = target.rpartition(".")[0]
    return layer_of(target)[0]


@pytest.mark.parametrize("name", [name for name in MODULES if layer_of(name)[0] == "base"])
def test_base_layer_imports_only_the_standard_library(name):
    allowed = set(sys.stdlib_module_names) | {"ovmlc"} | ({"yaml"} if name == "ovmlc.yaml_schema" else set())
    for target, line in imported_names(name):
        assert target.partition(".")[0] in allowed, f"{MODULES[name]}:{line}: imports {target}"

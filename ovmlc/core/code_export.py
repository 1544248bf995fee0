"""Hub remote code: the flat, self-contained copy of a model's code that `save_pretrained` writes next to its weights.

`AutoModel.from_pretrained(folder, trust_remote_code=True)` imports the module named in `config.json`'s `auto_map`
and every file it reaches through `from .x import y` lines (transformers copies exactly those, from one folder, and
requires every absolute import to be installed). So the exporter

1. computes the closure of the model's modules (the modeling and configuration files of its classes, plus the
   pipeline file) from their import statements, module level and inside functions: every ovmlc module (or module of
   the method's own package) they import, transitively;
2. writes each one as `<basename>.py`, its internal imports rewritten to `from .<basename> import names`
   (`from ovmlc.core.backbones import x`, `from ..files import Y` and `from .prompt_encoder import z` alike; a name
   imported from a package is looked up in the package's `__init__.py`);
3. refuses, with a `CodeExportError` naming the file and line, what a Hub user could not run: an absolute import
   outside the standard library and `REMOTE_CODE_PACKAGES` (`OPTIONAL_REMOTE_CODE_PACKAGES`, i.e. peft, only inside
   a `try:` block: it is needed only by folders that hold a peft adapter), `import ovmlc.x` or `from pkg import
   module` (transformers copies no module objects), two modules with one basename, and any `from .x import` line
   (docstrings included) naming a file that is not exported.

It works from the installed package (module names `ovmlc.*`) and from an already flat copy (a model loaded with
`trust_remote_code=True` and saved again: module names `transformers_modules.<...>.<basename>`, relative imports
only, which the rewrite leaves as they are). Standard library only, so it is part of the flat copy itself.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .._version import __version__

# What remote code may import besides the standard library (docs/architecture.md, docs/hub.md).
REMOTE_CODE_PACKAGES = frozenset({"torch", "transformers", "safetensors", "numpy", "PIL", "huggingface_hub"})
# Allowed only inside a `try:` block (transformers' import check skips those): needed only for peft adapters.
OPTIONAL_REMOTE_CODE_PACKAGES = frozenset({"peft"})
# First line of every exported file; a file that already starts with it (an exported copy) keeps its own.
HEADER_MARKER = "# ovmlc remote code:"
# transformers' patterns for the files a module needs (`dynamic_module_utils.get_relative_imports`).
_TRANSFORMERS_RELATIVE_IMPORTS = (
    re.compile(r"^\s*import\s+\.(\S+)\s*$", flags=re.MULTILINE),
    re.compile(r"^\s*from\s+\.(\S+)\s+import", flags=re.MULTILINE),
)


class CodeExportError(ValueError):
    """The model's code cannot be exported as self-contained Hub remote code; the message names file and line."""


@dataclass(frozen=True)
class ModuleSource:
    """A Python module of the export: its absolute dotted name and its file."""

    name: str
    path: Path

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"

    @property
    def package(self) -> str:
        return self.name if self.is_package else self.name.rpartition(".")[0]

    @property
    def basename(self) -> str:
        return self.name.rpartition(".")[2]


@dataclass
class ExportedCode:
    """The flat code of one model: file name -> text, and the third-party packages it imports."""

    files: dict[str, str]
    requirements: set[str] = field(default_factory=set)
    optional_requirements: set[str] = field(default_factory=set)
    sources: dict[str, str] = field(default_factory=dict)  # file name -> module it was copied from

    def write(self, directory: str | Path) -> list[Path]:
        directory = Path(directory)
        written = []
        for name, text in sorted(self.files.items()):
            path = directory / name
            path.write_text(text, encoding="utf-8")
            written.append(path)
        return written


class _Resolver:
    """Finds module files by name without importing anything: through the directory of a loaded package (the longest
    loaded prefix of the name), or a folder given for a package (the flat folder of an exported copy)."""

    def __init__(self, package_dirs: dict[str, Path]):
        self.package_dirs = dict(package_dirs)

    def find(self, name: str) -> ModuleSource | None:
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):
            prefix, rest = ".".join(parts[:cut]), parts[cut:]
            directories = []
            if prefix in self.package_dirs:
                directories.append(self.package_dirs[prefix])
            module = sys.modules.get(prefix)
            directories += [Path(entry) for entry in getattr(module, "__path__", None) or []]
            if module is not None and not rest and not getattr(module, "__path__", None):
                file = getattr(module, "__file__", None)
                return ModuleSource(name, Path(file)) if file else None
            for directory in directories:
                candidate = directory.joinpath(*rest) if rest else directory
                if rest and candidate.with_suffix(".py").is_file():
                    return ModuleSource(name, candidate.with_suffix(".py"))
                if (candidate / "__init__.py").is_file():
                    return ModuleSource(name, candidate / "__init__.py")
            if directories or module is not None:
                return None
        return None


def _absolute(module: ModuleSource, level: int, base: str | None) -> str:
    """The absolute module name of `from <'.' * level><base> import ...` written in `module`."""
    if not level:
        return base or ""
    package = module.package.split(".")
    if level - 1 >= len(package):
        raise CodeExportError(f"{module.path}: relative import beyond the top-level package")
    anchor = package[: len(package) - (level - 1)]
    return ".".join([*anchor, *([base] if base else [])])


def _iter_imports(tree: ast.AST) -> Iterable[tuple[ast.stmt, bool]]:
    """Every import statement with whether it sits inside a `try:` block (transformers' import check skips those)."""

    def visit(node: ast.AST, optional: bool):
        for child in ast.iter_child_nodes(node):
            inside = optional or isinstance(node, ast.Try)
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, inside
            else:
                yield from visit(child, inside)

    yield from visit(tree, False)


def _char_column(line: str, byte_column: int) -> int:
    """ast columns count UTF-8 bytes."""
    return len(line.encode("utf-8")[:byte_column].decode("utf-8", errors="replace"))


@dataclass
class _Rewrite:
    start: tuple[int, int]  # (line index, char column)
    end: tuple[int, int]
    targets: list[tuple[str, list[str]]]  # (module name, ["name", "name as alias"])


class _Exporter:
    def __init__(self, roots: list[ModuleSource], resolver: _Resolver, internal_tops: set[str]):
        self.roots = roots
        self.resolver = resolver
        self.internal_tops = internal_tops
        self.modules: dict[str, ModuleSource] = {}
        self.rewrites: dict[str, list[_Rewrite]] = {}
        self.requirements: set[str] = set()
        self.optional_requirements: set[str] = set()

    # ------------------------------------------------------------------ closure
    def run(self) -> None:
        pending = list(self.roots)
        while pending:
            module = pending.pop()
            if module.name in self.modules:
                continue
            if module.is_package:
                raise CodeExportError(f"{module.path}: a package __init__ cannot be exported as a flat module")
            self.modules[module.name] = module
            pending += self._scan(module)

    def _scan(self, module: ModuleSource) -> list[ModuleSource]:
        source = module.path.read_text(encoding="utf-8")
        try:
            tree = ast.parse(source, str(module.path))
        except SyntaxError as error:
            raise CodeExportError(f"{module.path}: cannot parse ({error})") from error
        found, rewrites = [], []
        for node, optional in _iter_imports(tree):
            where = f"{module.path}:{node.lineno}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    top = alias.name.partition(".")[0]
                    if top in self.internal_tops:
                        raise CodeExportError(
                            f"{where}: `import {alias.name}` imports a module object, which Hub remote code cannot "
                            f"carry; import names from it instead (`from {alias.name} import ...`)"
                        )
                    self._check_external(top, optional, where)
                continue
            base = node.module or ""
            if not node.level and base.partition(".")[0] not in self.internal_tops:
                self._check_external(base.partition(".")[0], optional, where)
                continue
            absolute = _absolute(module, node.level, node.module)
            targets = self._targets(absolute, node, where)
            for target_name, _ in targets:
                target = self.resolver.find(target_name)
                if target is None:
                    raise CodeExportError(f"{where}: cannot find the file of module {target_name!r}")
                found.append(target)
            rewrites.append(
                _Rewrite((node.lineno - 1, node.col_offset), (node.end_lineno - 1, node.end_col_offset), targets)
            )
        self.rewrites[module.name] = rewrites
        return found

    def _check_external(self, top: str, optional: bool, where: str) -> None:
        if top == "__future__" or top in sys.stdlib_module_names:
            return
        if top in REMOTE_CODE_PACKAGES:
            self.requirements.add(top)
            return
        if top in OPTIONAL_REMOTE_CODE_PACKAGES:
            if not optional:
                raise CodeExportError(
                    f"{where}: imports {top} outside a `try:` block; Hub remote code may need {top} only for folders "
                    f"that hold an adapter: import it inside `try: ... except ImportError` with a clear message"
                )
            self.optional_requirements.add(top)
            return
        allowed = sorted(REMOTE_CODE_PACKAGES | OPTIONAL_REMOTE_CODE_PACKAGES)
        raise CodeExportError(
            f"{where}: imports {top!r}; Hub remote code may import only the standard library and {allowed} "
            "(a Hub user without ovmlc has nothing else)"
        )

    def _targets(self, absolute: str, node: ast.ImportFrom, where: str) -> list[tuple[str, list[str]]]:
        """Group the imported names by the module that defines them."""
        target = self.resolver.find(absolute)
        if target is None:
            raise CodeExportError(f"{where}: cannot find the file of module {absolute!r}")
        grouped: dict[str, list[str]] = {}
        for alias in node.names:
            if alias.name == "*":
                raise CodeExportError(f"{where}: `from {absolute} import *` cannot be exported; name what you import")
            if target.is_package:
                defining, original = self._defining_module(target, alias.name, where)
            else:
                defining, original = absolute, alias.name
            bound = alias.asname or alias.name
            grouped.setdefault(defining, []).append(original if bound == original else f"{original} as {bound}")
        return list(grouped.items())

    def _defining_module(self, package: ModuleSource, name: str, where: str, depth: int = 0) -> tuple[str, str]:
        """Which module of `package` defines `name` (re-exported by its `__init__.py`): (module, its name there)."""
        submodule = self.resolver.find(f"{package.name}.{name}")
        if submodule is not None:
            raise CodeExportError(
                f"{where}: `from {package.name} import {name}` imports a module object, which Hub remote code cannot "
                f"carry (transformers copies only files named in `from .x import y`); import names from it instead "
                f"(`from {package.name}.{name} import ...`)"
            )
        if depth > 8:
            raise CodeExportError(f"{where}: re-exports of {name!r} loop through {package.path}")
        tree = ast.parse(package.path.read_text(encoding="utf-8"), str(package.path))
        for node in tree.body:
            if not isinstance(node, ast.ImportFrom):
                continue
            for alias in node.names:
                if (alias.asname or alias.name) != name:
                    continue
                origin = _absolute(package, node.level, node.module)
                source = self.resolver.find(origin)
                if source is not None and source.is_package:
                    return self._defining_module(source, alias.name, where, depth + 1)
                return origin, alias.name
        raise CodeExportError(
            f"{where}: cannot tell which module of package {package.name} defines {name!r} (its __init__.py does not "
            f"import it from a submodule); import it from the defining module"
        )

    # ------------------------------------------------------------------ output
    def render(self) -> ExportedCode:
        by_basename: dict[str, ModuleSource] = {}
        for module in self.modules.values():
            other = by_basename.setdefault(module.basename, module)
            if other is not module:
                raise CodeExportError(
                    f"remote code is flattened into one folder, but {other.path} and {module.path} share the name "
                    f"{module.basename}.py; rename one"
                )
        files, sources = {}, {}
        for name, module in self.modules.items():
            text = self._rewritten(module, self.rewrites[name])
            files[f"{module.basename}.py"] = text
            sources[f"{module.basename}.py"] = name
        for file_name, text in files.items():
            _check_exported_file(file_name, text, set(files))
        return ExportedCode(files, set(self.requirements), set(self.optional_requirements), sources)

    def _rewritten(self, module: ModuleSource, rewrites: list[_Rewrite]) -> str:
        lines = module.path.read_text(encoding="utf-8").splitlines(keepends=True)
        for rewrite in sorted(rewrites, key=lambda item: item.start, reverse=True):
            (first, byte_start), (last, byte_end) = rewrite.start, rewrite.end
            start, end = _char_column(lines[first], byte_start), _char_column(lines[last], byte_end)
            indent = lines[first][:start]
            if indent.strip():
                raise CodeExportError(f"{module.path}:{first + 1}: put this import on a line of its own")
            statements = [
                f"from .{target.rpartition('.')[2]} import {', '.join(names)}" for target, names in rewrite.targets
            ]
            replacement = ("\n" + indent).join(statements)
            lines[first : last + 1] = [lines[first][:start] + replacement + lines[last][end:]]
        text = "".join(lines)
        if not text.startswith(HEADER_MARKER):
            origin = self._origin(module)
            text = (
                f"{HEADER_MARKER} flat copy of {origin} (ovmlc {__version__}) for `trust_remote_code=True`; "
                "imports rewritten to this folder.\n" + text
            )
        return text

    def _origin(self, module: ModuleSource) -> str:
        top = module.name.partition(".")[0]
        root = self.resolver.find(top)
        if root is not None and root.is_package:
            try:
                return module.path.relative_to(root.path.parent.parent).as_posix()
            except ValueError:
                pass
        return module.path.name


def _check_exported_file(file_name: str, text: str, exported: set[str]) -> None:
    """What transformers will do with the file: parse it and look for `<name>.py` of every `from .name import`."""
    try:
        compile(text, file_name, "exec", dont_inherit=True)
    except SyntaxError as error:
        raise CodeExportError(f"exported {file_name} does not compile: {error}") from error
    for pattern in _TRANSFORMERS_RELATIVE_IMPORTS:
        for match in pattern.finditer(text):
            needed = f"{match.group(1)}.py"
            if needed not in exported:
                line = text.count("\n", 0, match.start(1)) + 1
                raise CodeExportError(
                    f"{file_name}:{line} (of the exported copy): transformers reads `{match.group(0).strip()}` as a "
                    f"file this folder needs ({needed}), which the export does not hold (a docstring or comment line "
                    "that looks like a relative import? reword it)"
                )


def export_model_code(
    model_class: type,
    config_class: type,
    pipeline_module: str | None = None,
    fetch_pipeline: Callable[[], Path | None] | None = None,
    pipeline_file: str = "pipeline.py",
) -> ExportedCode:
    """The flat code of a model: the modules of `model_class` and `config_class` and the pipeline, with everything
    they import. From the installed package, the pipeline is module `pipeline_module`; from a flat copy, the
    `pipeline_file` next to the model's module, else the file `fetch_pipeline()` returns (the folder or Hub repo the
    model was loaded from)."""
    roots = []
    for cls in (model_class, config_class):
        module = sys.modules.get(cls.__module__)
        file = getattr(module, "__file__", None)
        if cls.__module__ == "__main__" or not file:
            raise CodeExportError(
                f"{cls.__name__} is defined in {cls.__module__!r}, which has no file to export; define it in a module"
            )
        roots.append(ModuleSource(cls.__module__, Path(file)))
    model_module = roots[0]
    resolver = _Resolver({model_module.package: model_module.path.parent})
    # A flat copy loaded by transformers lives in one folder per module closure (the config class in another than the
    # model class): take the config module that sits beside the model's module, as the model's own imports do.
    beside = resolver.find(f"{model_module.package}.{roots[1].basename}") if model_module.package else None
    if beside is not None and not beside.is_package:
        roots[1] = beside
    own_top = __name__.partition(".")[0]
    internal_tops = {own_top, *(root.name.partition(".")[0] for root in roots)}
    # This function runs from the model's own code: the installed package (its pipeline module is there), or a flat
    # copy (module names `transformers_modules...`), whose pipeline file sits beside it or where the model came from.
    if pipeline_module and own_top == pipeline_module.partition(".")[0]:
        pipeline = resolver.find(pipeline_module)
        if pipeline is None:
            raise CodeExportError(f"cannot find the pipeline module {pipeline_module!r}")
        roots.append(pipeline)
    else:  # a flat copy: the pipeline file beside it, or the one of the folder/repo the model came from
        local = model_module.path.parent / pipeline_file
        path = local if local.is_file() else (fetch_pipeline() if fetch_pipeline else None)
        if path is None:
            raise CodeExportError(
                f"{pipeline_file} of this model's code was not found next to {model_module.path} nor where the model "
                "was loaded from; save from the installed ovmlc package instead"
            )
        roots.append(ModuleSource(f"{model_module.package}.{Path(pipeline_file).stem}", Path(path)))
    return export_modules(roots, resolver.package_dirs, internal_tops)


def export_modules(
    roots: list[ModuleSource], package_dirs: dict[str, Path], internal_tops: Iterable[str]
) -> ExportedCode:
    """The flat code of `roots` and every module of the `internal_tops` packages they import (transitively).
    `package_dirs` locates packages that are not imported (else `sys.modules` does)."""
    exporter = _Exporter(list(roots), _Resolver(package_dirs), set(internal_tops))
    exporter.run()
    return exporter.render()


__all__ = [
    "HEADER_MARKER",
    "OPTIONAL_REMOTE_CODE_PACKAGES",
    "REMOTE_CODE_PACKAGES",
    "CodeExportError",
    "ExportedCode",
    "ModuleSource",
    "export_model_code",
    "export_modules",
]

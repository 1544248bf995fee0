"""The one YAML -> dataclass validator: recipes, protocols, transform presets and pretraining configs use it.

A schema is a dataclass; its fields' annotations are the types, defaults make keys optional, nested dataclasses are
sections. Supported annotations: `bool`, `int`, `float`, `str`, `None`, `Any`, `Literal[...]`, unions (`X | None`),
`list[X]`, `tuple[X, ...]`, `tuple[X, Y]`, `dict[str, X]`, nested dataclasses, and `Annotated[X, marker, ...]` with
the markers below, which put a field's constraints next to it:

    @dataclass
    class OptimizerSection:
        lr: PositiveFloat = 1e-4                                  # a finite number > 0
        betas: Annotated[list[Annotated[float, Bounds(ge=0, lt=1)]], Check(lambda v: len(v) == 2, "two numbers")]
        freeze: list[Annotated[str, Check(re.compile, "a regular expression")]] = field(default_factory=list)

Floats must be finite everywhere (NaN and inf are refused) unless a field says `Bounds(finite=False)`; an int is
accepted where a float is expected, a string spelling a number (YAML 1.1 reads `1e-4` as a string) too, never a
bool; `true`/`false` never count as 1/0. Cross-field rules go in the dataclass's `__post_init__`, raising
`SchemaError(problem, key="field")` (the key is relative to the section; the loader prefixes the section path and the
file). Fields with `metadata=INTERNAL` are not YAML keys.

Every problem is a `SchemaError` (a `ValueError`) with one message format:

    <file>: <dotted.key>: expected <type>, got <value>
    <file>: <section>: unknown key 'x' (did you mean 'y'? valid keys: ...)
    <file>: <section>: missing required key 'x'

Callers pass their own subclass (`error=RecipeError`) so that existing `except` clauses keep working. Entry points:
`load` (file + `key=value` overrides -> instance), `from_data` (mapping -> instance), `check_fields` (validate a
mapping against some fields of a class without building it), `apply_overrides`, `read_yaml`, `to_data`.

This module is in the base layer: standard library and PyYAML only.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml

T = TypeVar("T")

# `dataclasses.field(metadata=INTERNAL)`: a field the program fills (e.g. where a recipe came from), not a YAML key.
INTERNAL: Mapping[str, Any] = types.MappingProxyType({"internal": True})


class SchemaError(ValueError):
    """A YAML file or mapping does not match its schema; the message names the file, the dotted key and the problem.

    `SchemaError(problem, source=..., key=...)`; a plain `SchemaError("message")` is a message without location.
    """

    def __init__(self, problem: str, *, source: str | os.PathLike | None = None, key: str | None = None):
        self.problem = problem
        self.source = str(source) if source not in (None, "") else None
        self.key = key or None
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return ": ".join(part for part in (self.source, self.key, self.problem) if part)

    def __str__(self) -> str:
        return self.message

    def located(
        self, source: str | os.PathLike | None = None, prefix: str = "", error: type[SchemaError] | None = None
    ) -> SchemaError:
        """The same problem under `prefix` (a section path) in `source` (unless already set), as class `error`."""
        error_class = error or type(self)
        return error_class(
            self.problem, source=self.source or (str(source) if source else None), key=_join(prefix, self.key or "")
        )


# ----------------------------------------------------------------------------------------------------------------------
# Constraint markers (used inside `Annotated[...]`)
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bounds:
    """Numeric bounds of an `int` / `float` field; floats must also be finite unless `finite=False`."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    finite: bool = True

    def holds(self, value: float) -> bool:
        if isinstance(value, float) and self.finite and not math.isfinite(value):
            return False
        if math.isnan(value):
            return False
        return not (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
            or (self.lt is not None and value >= self.lt)
        )

    def describe(self) -> str:
        """ "> 0", ">= 1", "in [0, 1)", ... ("" without bounds)."""
        low = f"[{_number(self.ge)}" if self.ge is not None else f"({_number(self.gt)}" if self.gt is not None else None
        high = (
            f"{_number(self.le)}]" if self.le is not None else f"{_number(self.lt)})" if self.lt is not None else None
        )
        if low and high:
            return f"in {low}, {high}"
        if low:
            return f">= {low[1:]}" if low[0] == "[" else f"> {low[1:]}"
        if high:
            return f"<= {high[:-1]}" if high[-1] == "]" else f"< {high[:-1]}"
        return ""


@dataclass(frozen=True)
class Check:
    """A custom rule: `test(value)` is falsy or raises `ValueError`/`TypeError`/`re.error` -> "expected <expected>"."""

    test: Callable[[Any], object]
    expected: str


@dataclass(frozen=True)
class KeyedBy:
    """`Annotated[tuple[Section, ...], KeyedBy("name")]`: written in YAML as a mapping `{name: {section keys}}`;
    each mapping key fills the section's field `name` (so it is not a key inside the section)."""

    field: str


@dataclass(frozen=True)
class Tagged:
    """`Annotated[A | B | C, Tagged("op")]`: a mapping whose `op` value picks the section class (each class declares
    `op: Literal["a"]`), e.g. the steps of a transform preset."""

    field: str


PositiveInt = Annotated[int, Bounds(ge=1)]
NonNegativeInt = Annotated[int, Bounds(ge=0)]
PositiveFloat = Annotated[float, Bounds(gt=0)]
NonNegativeFloat = Annotated[float, Bounds(ge=0)]
UnitFloat = Annotated[float, Bounds(ge=0, le=1)]  # a fraction or a probability, in [0, 1]
# A seed numpy and torch both accept.
Seed = Annotated[int, Bounds(ge=0, lt=2**32)]


# ----------------------------------------------------------------------------------------------------------------------
# Reading files and overrides
# ----------------------------------------------------------------------------------------------------------------------


class _DuplicateKey(yaml.constructor.ConstructorError):
    """A key written twice in one mapping."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key written twice in one mapping is an error (PyYAML keeps the last)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, yaml.Mark] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: its keys may be overridden, as YAML allows
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key: let PyYAML report it
            break
        if duplicate:
            raise _DuplicateKey(
                None, None, f"duplicate key {key!r} (first at line {seen[key].line + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def parse_yaml(text: str, *, source: str | os.PathLike | None = None, error: type[SchemaError] = SchemaError) -> Any:
    """YAML text -> Python data (safe loader; a key written twice in a mapping is an error naming its line)."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as problem:
        raise error(f"line {problem.problem_mark.line + 1}: {problem.problem}", source=source) from None
    except yaml.YAMLError as problem:
        mark = getattr(problem, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        detail = getattr(problem, "problem", None) or " ".join(str(problem).split())
        raise error(f"not valid YAML{where} ({detail})", source=source) from None


def read_yaml(path: str | os.PathLike, *, error: type[SchemaError] = SchemaError) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (an empty file is `{}`); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise error("no such file", source=path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as problem:
        raise error(f"cannot be read ({problem})", source=path) from None
    data = parse_yaml(text, source=path, error=error)
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise error(f"expected a mapping of keys at the top level, got {_show(data)}", source=path)
    return dict(data)


def load(
    schema: type[T],
    path: str | os.PathLike,
    overrides: Sequence[str] = (),
    *,
    error: type[SchemaError] = SchemaError,
) -> T:
    """Read a YAML file, apply `key=value` overrides and validate it into an instance of `schema`."""
    data = apply_overrides(read_yaml(path, error=error), overrides, schema, source=path, error=error)
    return from_data(schema, data, source=path, error=error)


def apply_overrides(
    data: Mapping[str, Any],
    overrides: Sequence[str],
    schema: type,
    *,
    source: str | os.PathLike | None = None,
    error: type[SchemaError] = SchemaError,
) -> dict[str, Any]:
    """`data` with `a.b.c=value` overrides set; each value is parsed as YAML (`2`, `null`, `[0.9, 0.99]`, `.nan`).

    Paths must name keys of `schema` (a typo is an error here, not a silently ignored key); inside a free-form mapping
    (`dict[str, Any]`) any key may be set. Values are checked afterwards, by `from_data`.
    """
    data = dict(data)
    for override in overrides:
        if "=" not in override:
            raise error(f"override {override!r} must look like key=value (e.g. training.epochs=2)", source=source)
        dotted, raw_value = override.split("=", 1)
        keys = dotted.strip().split(".")
        if not all(keys):
            raise error(f"override {override!r}: empty key in {dotted.strip()!r}", source=source)
        try:
            value = parse_yaml(raw_value) if raw_value.strip() else None
        except SchemaError as problem:
            raise error(f"override {override!r}: the value is {problem.problem}", source=source) from None
        _check_override_path(schema, keys, override, source, error)
        target = data
        for depth, key in enumerate(keys[:-1]):
            child = target.get(key)
            if child is None:
                child = {}
            elif isinstance(child, Mapping):
                child = dict(child)
            else:
                raise error(
                    f"is a value ({_show(child)}), not a section; cannot set {'.'.join(keys[depth + 1 :])!r} "
                    f"(override {override!r})",
                    source=source,
                    key=".".join(keys[: depth + 1]),
                )
            target[key] = child
            target = child
        target[keys[-1]] = value
    return data


def _check_override_path(schema: Any, keys: list[str], override: str, source: Any, error: type[SchemaError]) -> None:
    current: Any = schema
    for depth, key in enumerate(keys):
        where = ".".join(keys[:depth])
        current = _section_type(current)
        if current is _FREE:
            return
        if dataclasses.is_dataclass(current):
            known = _schema_fields(current)
            if key not in known:
                raise error(_unknown_key_problem([key], known) + f" (override {override!r})", source=source, key=where)
            current = field_types(current)[key]
        elif isinstance(current, _MappingOf):
            current = current.value_type
        else:
            raise error(
                f"is a value, not a section; cannot set {'.'.join(keys[depth:])!r} (override {override!r})",
                source=source,
                key=where,
            )


class _MappingOf(typing.NamedTuple):
    value_type: Any


_FREE = object()  # a free-form mapping: overrides may set any key below it


def _section_type(annotation: Any) -> Any:
    """What an override path may step into: a dataclass, a mapping of values (`_MappingOf`), `_FREE`, or a value."""
    annotation, markers = unwrap(annotation)
    if dataclasses.is_dataclass(annotation):
        return annotation
    origin = typing.get_origin(annotation)
    if annotation is Any or annotation is dict or annotation is Mapping:
        return _FREE
    if origin in (dict, Mapping):
        value_type = typing.get_args(annotation)[1]
        return _FREE if unwrap(value_type)[0] is Any else _MappingOf(value_type)
    if origin in (tuple, list) and any(isinstance(marker, KeyedBy) for marker in markers):
        return _MappingOf(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        options = [_section_type(option) for option in typing.get_args(annotation) if option is not type(None)]
        steppable = [option for option in options if option is _FREE or dataclasses.is_dataclass(option)]
        steppable += [option for option in options if isinstance(option, _MappingOf)]
        if steppable:
            return steppable[0]
    return annotation


# ----------------------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------------------


class _Invalid(Exception):
    """Internal: a value does not match; `matched` when its kind was right and a constraint or nested key failed."""

    def __init__(self, key: str, problem: str, matched: bool = False):
        super().__init__(problem)
        self.key, self.problem, self.matched = key, problem, matched


def from_data(
    schema: type[T],
    data: Any,
    *,
    source: str | os.PathLike | None = None,
    key: str = "",
    error: type[SchemaError] = SchemaError,
) -> T:
    """Validate `data` (parsed YAML or any mapping) against the dataclass `schema` and build it.

    `source` (the file) and `key` (where `data` sits, for a part of a bigger document) prefix every error message.
    """
    try:
        return _build(schema, data, key)
    except _Invalid as invalid:
        raise error(invalid.problem, source=source, key=invalid.key) from None
    except SchemaError as problem:  # raised by a section's __post_init__, already located by `_build`
        raise problem.located(source, error=error) from None


def check_fields(
    schema: type,
    data: Any,
    *,
    fields: Iterable[str] | None = None,
    source: str | os.PathLike | None = None,
    key: str = "",
    error: type[SchemaError] = SchemaError,
    hints: Mapping[str, str] | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """Check a mapping against (a subset of) the fields of a dataclass without building it; returns the checked values.

    For classes whose constructor does more than store fields (e.g. a transformers config). `hints` explain why a
    key that exists on the class is not accepted here (`{"label_names": "set by the trainer"}`); `note` is added to
    every unknown-key message (`"method 'qks'"`). Annotations this module cannot check accept any value.
    """
    types_by_name = field_types(schema, lenient=True)
    allowed = sorted(types_by_name if fields is None else set(fields) & set(types_by_name))
    try:
        if not isinstance(data, Mapping):
            raise _Invalid(key, f"expected a mapping of keys (valid keys: {', '.join(allowed)}), got {_show(data)}")
        unknown = [name for name in data if name not in allowed]
        if unknown:
            hint = "; ".join(part for part in (note, (hints or {}).get(str(unknown[0]))) if part)
            raise _Invalid(key, _unknown_key_problem(unknown, allowed, hint))
        return {name: _convert_foreign(value, types_by_name[name], _join(key, name)) for name, value in data.items()}
    except _Invalid as invalid:
        raise error(invalid.problem, source=source, key=invalid.key) from None


def _convert_foreign(value: Any, annotation: Any, key: str) -> Any:
    """`_convert` for a field of another library's class: an annotation this module does not know accepts anything."""
    try:
        return _convert(value, annotation, key)
    except TypeError:
        return value


def _build(schema: type, data: Any, key: str, keyed_by: tuple[str, Any] | None = None) -> Any:
    fields = _schema_fields(schema)
    if keyed_by is not None:
        fields = {name: item for name, item in fields.items() if name != keyed_by[0]}
    if data is None:  # `section:` with nothing under it keeps the defaults
        data = {}
    if not isinstance(data, Mapping):
        raise _Invalid(key, f"expected a mapping of keys (valid keys: {', '.join(sorted(fields))}), got {_show(data)}")
    unknown = [name for name in data if name not in fields]
    if unknown:
        raise _Invalid(key, _unknown_key_problem(unknown, fields))
    types_by_name = field_types(schema)
    values = {} if keyed_by is None else {keyed_by[0]: keyed_by[1]}
    for name, schema_field in fields.items():
        if name not in data:
            if schema_field.default is dataclasses.MISSING and schema_field.default_factory is dataclasses.MISSING:
                raise _Invalid(key, f"missing required key {name!r}")
            continue
        values[name] = _convert(data[name], types_by_name[name], _join(key, name))
    try:
        return schema(**values)
    except SchemaError as problem:  # a cross-field rule of the section (__post_init__)
        raise problem.located(prefix=key) from None


def _convert(value: Any, annotation: Any, key: str) -> Any:
    """`value` checked against `annotation` (and converted: int -> float, list -> tuple); raises `_Invalid`."""
    annotation, markers = unwrap(annotation)
    origin = typing.get_origin(annotation)

    tagged = next((marker for marker in markers if isinstance(marker, Tagged)), None)
    if tagged is not None:
        result = _convert_tagged(value, annotation, tagged.field, key)
    elif origin in (typing.Union, types.UnionType):
        result = _convert_union(value, annotation, markers, key)
    elif dataclasses.is_dataclass(annotation):
        result = _build(annotation, value, key)
    elif annotation is Any or annotation is object:
        result = value
    elif annotation is None or annotation is type(None):
        if value is not None:
            raise _Invalid(key, f"expected null, got {_show(value)}")
        result = None
    elif origin is Literal:
        result = _convert_literal(value, typing.get_args(annotation), key)
    elif annotation is bool:
        if not isinstance(value, bool):
            raise _Invalid(key, f"expected true or false, got {_show(value)}")
        result = value
    elif annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(key, f"expected {describe(_with(annotation, markers))}, got {_show(value)}")
        result = value
    elif annotation is float:
        result = _convert_float(value, markers, key)
    elif annotation is str:
        if not isinstance(value, str):
            raise _Invalid(key, f"expected {describe(_with(annotation, markers))}, got {_show(value)}")
        result = value
    elif origin in (list, tuple) or annotation in (list, tuple):
        result = _convert_sequence(value, annotation, markers, key)
    elif origin in (dict, Mapping) or annotation in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _Invalid(key, f"expected a mapping, got {_show(value)}")
        key_type, value_type = typing.get_args(annotation) or (Any, Any)
        result = {
            _convert(item_key, key_type, key): _convert(item, value_type, _join(key, str(item_key)))
            for item_key, item in value.items()
        }
    else:
        raise TypeError(f"yaml_schema: unsupported annotation {annotation!r} (at {key or 'the top level'})")

    if result is not None:
        for marker in markers:
            _check_marker(marker, result, annotation, key, shown=value)
    return result


def _convert_union(value: Any, annotation: Any, markers: tuple, key: str) -> Any:
    options = typing.get_args(annotation)
    if value is None and type(None) in options:
        return None
    closest = None
    for option in options:
        if option is type(None):
            continue
        try:
            return _convert(value, option, key)
        except _Invalid as invalid:
            if invalid.matched and closest is None:  # right kind, wrong value: the most useful message
                closest = invalid
    if closest is not None and closest.key != key:  # a nested problem: its own message is the precise one
        raise closest
    if closest is not None:  # the right kind, out of range: say every form the value may take
        raise _Invalid(key, f"expected {describe(_with(annotation, markers))}, got {_show(value)}", matched=True)
    raise _Invalid(key, f"expected {describe(_with(annotation, markers))}, got {_show(value)}")


def _convert_tagged(value: Any, annotation: Any, tag: str, key: str) -> Any:
    options = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    by_tag = {}
    for option in options or (annotation,):
        for choice in typing.get_args(unwrap(field_types(option)[tag])[0]):
            by_tag[choice] = option
    if not isinstance(value, Mapping):
        raise _Invalid(
            key, f"expected a mapping with {tag!r} (one of {', '.join(map(repr, by_tag))}), got {_show(value)}"
        )
    if tag not in value:
        raise _Invalid(key, f"missing required key {tag!r} (one of {', '.join(map(repr, by_tag))})")
    _convert_literal(value[tag], tuple(by_tag), _join(key, tag))
    return _build(by_tag[value[tag]], value, key)


def _convert_literal(value: Any, choices: tuple, key: str) -> Any:
    for choice in choices:
        # `true`/`false` match booleans only (1 == True in Python).
        if value == choice and isinstance(value, bool) == isinstance(choice, bool):
            return choice
    suggestion = None
    if isinstance(value, str):
        suggestion = did_you_mean(value, [choice for choice in choices if isinstance(choice, str)])
    shown = describe(Literal[choices])
    raise _Invalid(
        key, f"expected {shown}, got {_show(value)}" + (f" (did you mean {suggestion!r}?)" if suggestion else "")
    )


_NUMBER = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


def _convert_float(value: Any, markers: tuple, key: str) -> float:
    expected = describe(_with(float, markers))
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 (PyYAML) reads `1e-4` as a string
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(key, f"expected {expected}, got {_show(value)}")
    value = float(value)
    bounds = next((marker for marker in markers if isinstance(marker, Bounds)), Bounds())
    if not math.isfinite(value) and bounds.finite:
        raise _Invalid(key, f"expected {expected}, got {_show(value)}", matched=True)
    return value


def _convert_sequence(value: Any, annotation: Any, markers: tuple, key: str) -> Any:
    origin = typing.get_origin(annotation) or annotation
    args = typing.get_args(annotation)
    keyed = next((marker for marker in markers if isinstance(marker, KeyedBy)), None)
    if keyed is not None:
        item_type = args[0]
        if not isinstance(value, Mapping):
            raise _Invalid(key, f"expected a mapping of {keyed.field} -> section, got {_show(value)}")
        items = [
            _build(item_type, item, _join(key, str(name)), (keyed.field, str(name))) for name, item in value.items()
        ]
        return tuple(items) if origin is tuple else items
    if not isinstance(value, (list, tuple)):
        raise _Invalid(key, f"expected {describe(_with(annotation, markers))}, got {_show(value)}")
    if origin is tuple and args and args[-1] is not Ellipsis:  # fixed length: tuple[float, float]
        if len(value) != len(args):
            raise _Invalid(key, f"expected a list of {len(args)} items, got {_show(value)}", matched=True)
        return tuple(
            _convert(item, item_type, f"{key}[{index}]") for index, (item, item_type) in enumerate(zip(value, args))
        )
    item_type = args[0] if args else Any
    items = [_convert(item, item_type, f"{key}[{index}]") for index, item in enumerate(value)]
    return tuple(items) if origin is tuple else items


def _check_marker(marker: Any, value: Any, annotation: Any, key: str, shown: Any) -> None:
    if isinstance(marker, Bounds):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not marker.holds(value):
            raise _Invalid(key, f"expected {describe(_with(annotation, (marker,)))}, got {_show(shown)}", matched=True)
    elif isinstance(marker, Check):
        try:
            passed, detail = bool(marker.test(value)), ""
        except (ValueError, TypeError, re.error) as problem:
            passed, detail = False, f" ({problem})"
        if not passed:
            raise _Invalid(key, f"expected {marker.expected}, got {_show(shown)}{detail}", matched=True)


# ----------------------------------------------------------------------------------------------------------------------
# Descriptions, suggestions and plain data
# ----------------------------------------------------------------------------------------------------------------------


def describe(annotation: Any) -> str:
    """What a value of `annotation` looks like, in words: "an integer >= 1", "one of 'a', 'b'", "a number or null"."""
    annotation, markers = unwrap(annotation)
    checks = [marker.expected for marker in markers if isinstance(marker, Check)]
    if checks:
        return checks[0]
    bounds = next((marker for marker in markers if isinstance(marker, Bounds)), None)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [describe(option) for option in typing.get_args(annotation) if option is not type(None)]
        if type(None) in typing.get_args(annotation):
            options.append("null")
        return ", ".join(options[:-1]) + " or " + options[-1] if len(options) > 1 else options[0]
    if origin is Literal:
        choices = typing.get_args(annotation)
        shown = [_show(choice) for choice in choices]
        return shown[0] if len(shown) == 1 else "one of " + ", ".join(shown)
    if annotation is int:
        return "an integer" + (f" {bounds.describe()}" if bounds and bounds.describe() else "")
    if annotation is float:
        limits = bounds.describe() if bounds else ""
        finite = bounds.finite if bounds else True
        return ("a finite number" if finite else "a number") + (f" {limits}" if limits else "")
    if annotation is bool:
        return "true or false"
    if annotation is str:
        return "a string"
    if annotation is None or annotation is type(None):
        return "null"
    if origin in (list, tuple) or annotation in (list, tuple):
        if any(isinstance(marker, KeyedBy) for marker in markers):
            return "a mapping of sections"
        return "a list"
    if origin in (dict, Mapping) or annotation in (dict, Mapping) or dataclasses.is_dataclass(annotation):
        return "a mapping"
    if annotation is Any:
        return "any value"
    return getattr(annotation, "__name__", str(annotation))


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to `word` (a likely typo), or None."""
    matches = difflib.get_close_matches(word, [str(candidate) for candidate in candidates], n=1, cutoff=0.6)
    return matches[0] if matches else None


def to_data(instance: Any) -> Any:
    """A schema instance as plain YAML-ready data (mappings, lists, scalars), internal fields left out."""
    if dataclasses.is_dataclass(instance) and not isinstance(instance, type):
        result = {}
        types_by_name = field_types(type(instance), lenient=True)
        for name in _schema_fields(type(instance)):
            value = getattr(instance, name)
            keyed = next((m for m in unwrap(types_by_name.get(name, Any))[1] if isinstance(m, KeyedBy)), None)
            if keyed is not None:
                result[name] = {
                    str(getattr(item, keyed.field)): {k: v for k, v in to_data(item).items() if k != keyed.field}
                    for item in value
                }
            else:
                result[name] = to_data(value)
        return result
    if isinstance(instance, Mapping):
        return {key: to_data(value) for key, value in instance.items()}
    if isinstance(instance, (list, tuple)):
        return [to_data(item) for item in instance]
    return instance


def schema_keys(schema: type) -> list[str]:
    """The YAML keys of a dataclass schema, in declaration order."""
    return list(_schema_fields(schema))


# ----------------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------------


def _schema_fields(schema: type) -> dict[str, dataclasses.Field]:
    return {item.name: item for item in dataclasses.fields(schema) if item.init and not item.metadata.get("internal")}


_TYPE_CACHE: dict[tuple[type, bool], dict[str, Any]] = {}


def field_types(schema: type, lenient: bool = False) -> dict[str, Any]:
    """Resolved annotations of a dataclass's fields (`Annotated` kept).

    `lenient`: for classes from other libraries (transformers configs), an annotation that cannot be resolved means
    `Any` instead of an error.
    """
    cache_key = (schema, lenient)
    if cache_key not in _TYPE_CACHE:
        try:
            hints = typing.get_type_hints(schema, include_extras=True)
            resolved = {item.name: hints.get(item.name, Any) for item in dataclasses.fields(schema)}
        except (NameError, TypeError, AttributeError):
            if not lenient:
                raise
            resolved = {item.name: _resolve_one(schema, item) for item in dataclasses.fields(schema)}
        _TYPE_CACHE[cache_key] = resolved
    return _TYPE_CACHE[cache_key]


def _resolve_one(schema: type, item: dataclasses.Field) -> Any:
    if not isinstance(item.type, str):
        return item.type
    owner = next((cls for cls in schema.__mro__ if item.name in getattr(cls, "__annotations__", {})), schema)
    namespace = dict(vars(sys.modules.get(owner.__module__, types.ModuleType("_")))) if owner else {}
    try:
        return eval(item.type, namespace, dict(vars(owner)))  # noqa: S307 - a type annotation of a loaded class
    except Exception:  # noqa: BLE001 - unresolvable annotation of a foreign class: accept any value
        return Any


def unwrap(annotation: Any) -> tuple[Any, tuple]:
    """`Annotated[X, m1, m2]` -> (X, (m1, m2)); nested `Annotated` flattened."""
    markers: tuple = ()
    while typing.get_origin(annotation) is Annotated:
        markers = tuple(annotation.__metadata__) + markers
        annotation = typing.get_args(annotation)[0]
    return annotation, markers


def _with(annotation: Any, markers: tuple) -> Any:
    return Annotated[(annotation, *markers)] if markers else annotation


def _join(prefix: str, key: str) -> str:
    if not prefix:
        return key
    if not key:
        return prefix
    return f"{prefix}{key}" if key.startswith("[") else f"{prefix}.{key}"


def _unknown_key_problem(unknown: Sequence[Any], valid: Iterable[str], hint: str | None = None) -> str:
    valid = list(valid)
    first = str(unknown[0])
    problem = f"unknown key {first!r}"
    if len(unknown) > 1:
        problem += " (also unknown: " + ", ".join(repr(str(name)) for name in unknown[1:]) + ")"
    suggestion = did_you_mean(first, valid)
    notes = (f"{hint}; " if hint else "") + (f"did you mean {suggestion!r}? " if suggestion else "")
    return f"{problem} ({notes}valid keys: {', '.join(sorted(valid))})"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(value)


def _show(value: Any) -> str:
    """A value as the user wrote it (YAML spelling for null, booleans and non-finite numbers), shortened."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


__all__ = [
    "INTERNAL",
    "Bounds",
    "Check",
    "KeyedBy",
    "NonNegativeFloat",
    "NonNegativeInt",
    "PositiveFloat",
    "PositiveInt",
    "SchemaError",
    "Seed",
    "Tagged",
    "UnitFloat",
    "apply_overrides",
    "check_fields",
    "describe",
    "did_you_mean",
    "field_types",
    "from_data",
    "load",
    "parse_yaml",
    "read_yaml",
    "schema_keys",
    "to_data",
    "unwrap",
]

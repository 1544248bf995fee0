"""The method registry (the peft pattern): each `ovmlc/methods/<m>/__init__.py` builds a `MethodSpec` and calls
`register_method(spec)` once; everything that needs to know the methods (the trainer, model cards, `ovmlc.METHODS`,
the common method test suite) reads the registry instead of a hand-kept list.

A spec holds the config and model classes, the card description (`MethodCard`: name, one-paragraph summary, papers
with BibTeX, implementation notes) and `example_config`: tiny/fast config kwargs the common test suite and the docs
use (`Model.from_clip(backbone, **example_config)`); `variant_configs` are further settings the suite also covers
(e.g. MKT stage 2, CLIP-FT LoRA), each applied on top of `example_config`.

Method *traits* (`trains_text_side`, `uses_frozen_image_features`, `scores_depend_on_label_set`, `augment_allowed`,
`image_side_modules()`) are not here: they are declared on the model class, next to the code they describe.

This module imports nothing heavy: `register_method` imports transformers' Auto classes only when it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Paper:
    """A paper a method implements or builds on. `authors` in BibTeX form ("First Last and First Last ...")."""

    title: str
    authors: str
    venue: str
    year: int
    url: str | None
    bibtex: str

    @property
    def short_authors(self) -> str:
        """"Radford et al." for more than two authors, else both names."""
        names = [name.strip() for name in self.authors.split(" and ") if name.strip()]
        if len(names) > 2:
            return f"{names[0].split()[-1]} et al."
        return " and ".join(names)

    @property
    def short_venue(self) -> str:
        """The abbreviation in parentheses ("ICML" of "International Conference on Machine Learning (ICML)")."""
        venue = self.venue
        if "(" in venue and ")" in venue:
            return venue[venue.index("(") + 1 : venue.index(")")]
        return venue


@dataclass(frozen=True)
class MethodCard:
    """What a model card says about a method: `summary` (how it scores labels, one paragraph), the papers (the first
    is the method's own) and `notes` (implementation choices: where ovmlc differs from the paper or official code)."""

    name: str
    summary: str
    papers: tuple[Paper, ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class MethodSpec:
    """One registered method. `name` is the recipe key (`method: qks`); `config_class.model_type` ("ovmlc_qks") is
    what config.json records."""

    name: str
    config_class: type
    model_class: type
    card: MethodCard
    example_config: Mapping[str, Any] = field(default_factory=dict)
    variant_configs: tuple[Mapping[str, Any], ...] = ()

    @property
    def model_type(self) -> str:
        return self.config_class.model_type

    def example_configs(self) -> list[dict[str, Any]]:
        """`example_config`, then each variant applied on top of it."""
        base = dict(self.example_config)
        return [base, *({**base, **variant} for variant in self.variant_configs)]


_METHODS: dict[str, MethodSpec] = {}


class UnknownMethodError(KeyError):
    """No method is registered under a name or model_type; the message lists the registered ones."""

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


def register_method(spec: MethodSpec) -> None:
    """Add a method to the registry and to transformers' `AutoConfig` / `AutoModel` (so a saved folder loads with
    `AutoModel.from_pretrained(dir)` after `import ovmlc`). Registering the same spec again is a no-op."""
    if not spec.name or not spec.name.isidentifier():
        raise ValueError(f"method name must be an identifier such as 'qks', got {spec.name!r}")
    if getattr(spec.model_class, "config_class", None) is not spec.config_class:
        raise ValueError(
            f"method {spec.name!r}: {spec.model_class.__name__}.config_class is not {spec.config_class.__name__}"
        )
    model_type = spec.config_class.model_type
    for other in _METHODS.values():
        if other.name != spec.name and other.model_type == model_type:
            raise ValueError(f"method {spec.name!r}: model_type {model_type!r} is already method {other.name!r}'s")
    previous = _METHODS.get(spec.name)
    if previous is not None and previous.model_class is not spec.model_class:
        raise ValueError(f"method {spec.name!r} is already registered with {previous.model_class.__name__}")
    _METHODS[spec.name] = spec

    from transformers import AutoConfig, AutoModel

    AutoConfig.register(model_type, spec.config_class, exist_ok=True)
    AutoModel.register(spec.config_class, spec.model_class, exist_ok=True)


def get_method(name_or_model_type: str) -> MethodSpec:
    """The spec of a method by recipe key ("qks") or config `model_type` ("ovmlc_qks")."""
    if name_or_model_type in _METHODS:
        return _METHODS[name_or_model_type]
    for spec in _METHODS.values():
        if spec.model_type == name_or_model_type:
            return spec
    raise UnknownMethodError(
        f"unknown method {name_or_model_type!r}; registered: {', '.join(_METHODS) or 'none'} "
        "(importing ovmlc.methods registers the built-in methods)"
    )


def list_methods() -> list[str]:
    """Registered method names, in registration order."""
    return list(_METHODS)


def method_specs() -> list[MethodSpec]:
    return list(_METHODS.values())


__all__ = [
    "MethodCard",
    "MethodSpec",
    "Paper",
    "UnknownMethodError",
    "get_method",
    "list_methods",
    "method_specs",
    "register_method",
]

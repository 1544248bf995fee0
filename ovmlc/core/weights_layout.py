"""Checkpoint layouts of a saved model folder: the whole model, or adapter-only (peft's convention).

- `whole_model`: `model.safetensors` holds every weight, the backbone included; the folder loads on its own.
- `adapter_only`: `model.safetensors` holds only the method's own weights, i.e. every module except those the method
  declares as taken unchanged from the checkpoint it was built from (`inherited_modules`, default `("clip",)`). The
  config names that checkpoint, the *base model*: `base_model_name_or_path` at the pinned commit
  `base_model_revision`, and which modules come from it (`base_model_modules`). The base is the CLIP backbone (then
  equal to `backbone_name_or_path` / `backbone_revision`) or an earlier ovmlc model the method was initialised from
  (MKT stage 2 from a stage-1 repo: the student comes from there too). Loading rebuilds the base, then loads the
  folder's own weights strictly (a missing or unexpected key is an error naming it).

What can be left out is decided from where the weights came from, recorded when the model was loaded
(`WeightsProvenance`): each checkpoint of the chain (the folder loaded, its base, ...), the keys each one stores and
the version counter of every tensor right after loading. An inherited module is left out only if a checkpoint of the
chain stores all of it and none of its tensors changed since (training steps, `load_state_dict` and in-place edits
bump a tensor's version; moving it to a device or dtype does not). The layout is adapter-only when that base is a Hub
id at a known commit, unless `save_backbone=True`; `save_backbone=False` forces it (a local base is then allowed,
but `ovmlc push` refuses such a folder).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

WHOLE_MODEL = "whole_model"
ADAPTER_ONLY = "adapter_only"
WEIGHTS_LAYOUTS = (WHOLE_MODEL, ADAPTER_ONLY)
# A Hub repo id ("name" or "org/name") as huggingface_hub validates them.
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


class WeightsLayoutError(ValueError):
    """A folder cannot be saved or loaded in the requested layout; the message says why and what to do."""


@dataclass(frozen=True)
class CheckpointRef:
    """One checkpoint weights were loaded from: a Hub id or a folder, its commit (Hub only) and its kind."""

    name_or_path: str
    revision: str | None
    kind: str  # "backbone" (a CLIP checkpoint) or "ovmlc" (an ovmlc model folder)

    @property
    def is_pinned_hub_id(self) -> bool:
        return is_hub_id(self.name_or_path) and bool(self.revision and _COMMIT.match(self.revision))

    def describe(self) -> str:
        return f"{self.name_or_path}@{self.revision}" if self.revision else self.name_or_path


def is_hub_id(name: str | os.PathLike | None, aliases: Iterable[str] = ()) -> bool:
    """A Hub repo id: not an alias, not an existing local path, shaped like "org/name"."""
    if not name:
        return False
    text = str(name)
    if text in set(aliases) or os.path.exists(text) or text.startswith((".", "/", "~")):
        return False
    return bool(_REPO_ID.match(text))


@dataclass
class WeightsProvenance:
    """Where a loaded model's weights came from (outermost checkpoint first) and their versions after loading."""

    chain: list[CheckpointRef]
    stored: list[set[str]]  # per checkpoint of the chain: the model keys its own files hold
    versions: dict[str, int] = field(default_factory=dict)

    def provided_by(self, index: int) -> set[str]:
        """Keys that loading `chain[index]` restores (its files and those of the checkpoints below it)."""
        return set().union(*self.stored[index:]) if self.stored[index:] else set()

    def nest(self, outer: CheckpointRef, outer_keys: set[str]) -> WeightsProvenance:
        """This provenance as the base of an adapter-only folder `outer` whose own file holds `outer_keys`."""
        return WeightsProvenance([outer, *self.chain], [set(outer_keys), *self.stored])


@dataclass(frozen=True)
class LayoutPlan:
    """How `save_pretrained` writes the weights."""

    layout: str
    base: CheckpointRef | None = None
    base_modules: tuple[str, ...] = ()
    reason: str = ""


def keys_under(keys: Iterable[str], module: str) -> set[str]:
    """State-dict keys of `module` (a dotted module path, or a parameter's own key)."""
    prefix = module + "."
    return {key for key in keys if key == module or key.startswith(prefix)}


def record_versions(state: Mapping[str, object]) -> dict[str, int]:
    return {name: int(getattr(tensor, "_version", 0)) for name, tensor in state.items()}


def plan_layout(
    state: Mapping[str, object],
    inherited_modules: Iterable[str],
    provenance: WeightsProvenance | None,
    save_backbone: bool | None,
) -> LayoutPlan:
    """Choose the layout: `state` is what `model.safetensors` would hold, as live tensors (their version counters
    tell whether they changed since loading)."""
    if save_backbone:
        return LayoutPlan(WHOLE_MODEL, reason="save_backbone=True")
    candidates: dict[str, int] = {}
    reasons = []
    for module in inherited_modules:
        keys = keys_under(state, module)
        if not keys:
            continue
        if provenance is None:
            reasons.append(f"{module}: the model was not loaded from a checkpoint (built from a config?)")
            continue
        changed = sorted(key for key in keys if provenance.versions.get(key) != int(state[key]._version))
        if changed:
            reasons.append(f"{module}: {changed[0]} changed since it was loaded (trained or edited)")
            continue
        depths = [index for index in range(len(provenance.chain)) if keys <= provenance.provided_by(index)]
        if not depths:
            reasons.append(f"{module}: no checkpoint it was loaded from holds all of it")
            continue
        candidates[module] = max(depths)
    if not candidates:
        reason = "; ".join(reasons) or "the method declares no inherited modules"
        if save_backbone is False:
            raise WeightsLayoutError(
                f"save_backbone=False: nothing of this model can be taken from the checkpoint it was built from "
                f"({reason}); save with save_backbone=True (the whole model)"
            )
        return LayoutPlan(WHOLE_MODEL, reason=reason)
    index = min(candidates.values())
    # A model saved as it was loaded would be an adapter of its own folder with nothing of its own: take the
    # checkpoint below it instead (re-saving an adapter-only folder keeps its base and layout).
    unchanged = {key for key in state if provenance.versions.get(key) == int(state[key]._version)}
    while index + 1 < len(provenance.chain) and set(state) <= unchanged & provenance.provided_by(index):
        index += 1
        candidates = {module: depth for module, depth in candidates.items() if depth >= index}
        if not candidates:
            return LayoutPlan(WHOLE_MODEL, reason="nothing of the model comes from below the folder it was loaded from")
    base = provenance.chain[index]
    if save_backbone is None and not base.is_pinned_hub_id:
        why = "not a Hub id" if not is_hub_id(base.name_or_path) else "its commit is unknown"
        return LayoutPlan(
            WHOLE_MODEL, reason=f"the base {base.name_or_path} is {why} (save_backbone=False forces adapter-only)"
        )
    return LayoutPlan(ADAPTER_ONLY, base=base, base_modules=tuple(sorted(candidates)))


def read_weight_keys(files: Iterable[str | os.PathLike]) -> set[str]:
    """Tensor names of safetensors files, from their headers only."""
    keys: set[str] = set()
    for path in files:
        with open(path, "rb") as handle:
            header_size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(header_size))
        keys |= {name for name in header if name != "__metadata__"}
    return keys


def shard_names(index_file: str | os.PathLike) -> list[str]:
    """The shard files listed by a `model.safetensors.index.json`."""
    weight_map = json.loads(Path(index_file).read_text(encoding="utf-8")).get("weight_map") or {}
    return sorted(set(weight_map.values()))


__all__ = [
    "ADAPTER_ONLY",
    "WEIGHTS_LAYOUTS",
    "WHOLE_MODEL",
    "CheckpointRef",
    "LayoutPlan",
    "WeightsLayoutError",
    "WeightsProvenance",
    "is_hub_id",
    "keys_under",
    "plan_layout",
    "read_weight_keys",
    "record_versions",
    "shard_names",
]

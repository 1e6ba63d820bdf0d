"""Reading local pretrained-weight files and loading them into a backbone with strict key matching."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from agekit.models.registry import PretrainedWeightsError

log = logging.getLogger("agekit.models")
# An agekit checkpoint's model.safetensors (agekit.checkpoint) with one shared backbone keeps the backbone's tensors
# under BACKBONE_PREFIX and the task heads under HEADS_PREFIX; a bundle of single-task nets uses BUNDLE_PREFIX.
BACKBONE_PREFIX, HEADS_PREFIX, BUNDLE_PREFIX = "backbone.", "heads.", "backbones."


class WeightsMismatchError(PretrainedWeightsError, ValueError):
    """A weights file whose tensors do not fit the backbone (no usable keys, missing, unexpected or mis-shaped
    ones); a ValueError too, since the file given is what is wrong."""


@dataclass
class WeightsReport:
    """Outcome of loading a weights file into a backbone (raised as an error instead if anything is off)."""

    source: str
    loaded: list[str]  # backbone keys filled from the file (all of them, or loading fails)
    ignored: list[str] = field(default_factory=list)  # file keys outside the backbone (classifier, detector heads)

    def summary(self) -> str:
        return f"{self.source}: {len(self.loaded)} backbone tensors loaded, {len(self.ignored)} file keys ignored"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file or a torch checkpoint (unpickled with weights_only=True, so no code runs).

    A checkpoint holding {"state_dict": ...} or {"model": ...} is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(f"pretrained weights file {path} not found; check the --pretrained-weights path")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, or a pickle needing arbitrary code
        raise PretrainedWeightsError(f"could not read weights file {path}: {err}") from err
    for wrapper_key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper_key), dict):
            state = state[wrapper_key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedWeightsError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return state


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove `prefix` from every key that has it (e.g. 'module.' left by DataParallel)."""
    return {(k.removeprefix(prefix)): v for k, v in state.items()}


def state_dict_mismatch(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> str:
    """'' when `state` has exactly the keys and shapes of `expected`, else e.g. 'missing 2: a, b; unexpected 1: c'."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                        for k in set(state) & set(expected) if state[k].shape != expected[k].shape)

    def head(keys: list[str]) -> str:
        return ", ".join(keys[:8]) + (f" … (+{len(keys) - 8} more)" if len(keys) > 8 else "")

    return "; ".join(f"{label} {len(keys)}: {head(keys)}" for label, keys in
                     (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)) if keys)


def checkpoint_backbone_state(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The backbone tensors of an agekit checkpoint's weights: the 'backbone.*' keys with the prefix removed, the
    task heads ('heads.*') left out. `state` comes back unchanged when it is not a checkpoint's (no key has one of
    the checkpoint prefixes), e.g. a plain backbone state dict. Raises WeightsMismatchError naming `source` when
    the checkpoint holds no shared backbone or keys outside backbone and heads."""
    if not any(key.startswith((BACKBONE_PREFIX, HEADS_PREFIX, BUNDLE_PREFIX)) for key in state):
        return state
    backbone = {k.removeprefix(BACKBONE_PREFIX): v for k, v in state.items() if k.startswith(BACKBONE_PREFIX)}
    if not backbone:
        kind = ("one backbone per task ('backbones.<task>.*')" if any(k.startswith(BUNDLE_PREFIX) for k in state)
                else "task heads only")
        raise WeightsMismatchError(f"{source} holds no usable backbone tensors (no '{BACKBONE_PREFIX}*' keys; it has "
                                   f"{kind}): start from a checkpoint with a shared backbone (shared_backbone: true)")
    others = sorted(k for k in state if not k.startswith((BACKBONE_PREFIX, HEADS_PREFIX)))
    if others:
        raise WeightsMismatchError(f"{source} is not a plain agekit checkpoint: {len(others)} keys outside "
                                   f"'{BACKBONE_PREFIX}*' and '{HEADS_PREFIX}*' ({', '.join(others[:8])})")
    return backbone


def load_backbone_weights(module: nn.Module, state: dict[str, torch.Tensor], source: str,
                          ignore_prefixes: Iterable[str] = ()) -> WeightsReport:
    """Load `state` into `module`, requiring every module key to be present with the same shape.

    Keys starting with one of `ignore_prefixes` (a classifier or detector head) are skipped and reported;
    any other missing, unexpected or mis-shaped key raises WeightsMismatchError naming the keys.
    """
    ignore_prefixes = tuple(ignore_prefixes)
    ignored = sorted(k for k in state if ignore_prefixes and k.startswith(ignore_prefixes))
    kept = {k: v for k, v in state.items() if k not in set(ignored)}
    problems = state_dict_mismatch(module.state_dict(), kept)
    if problems:
        raise WeightsMismatchError(
            f"weights in {source} do not fit the backbone ({problems}). "
            "Is this file for this architecture?"
        )
    module.load_state_dict(kept, strict=True)
    report = WeightsReport(source=source, loaded=sorted(kept), ignored=ignored)
    log.info(report.summary())
    return report

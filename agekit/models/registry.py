"""Architecture registry: a name maps to a backbone builder; `create_model` is the single way to build a model.

A builder is called as `builder(pretrained=bool, pretrained_weights=str|None, **kwargs)` and returns a
`Backbone`: a module mapping images (B,C,S,S) to a feature vector (B, feature_dim), its feature_dim and the
layer Grad-CAM should look at. `create_model` puts task heads on top (see `FaceModel`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass
class Backbone:
    """What a builder returns: the feature extractor and where its last conv feature map comes from."""

    module: nn.Module  # float (B,C,S,S) → (B, feature_dim)
    feature_dim: int
    gradcam_layer: nn.Module  # a submodule of `module` whose output is the last conv map (B,C',h,w)


class UnknownArchitecture(ValueError):
    """The architecture name is not in the registry."""


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights could not be obtained or do not fit the architecture."""


BackboneBuilder = Callable[..., Backbone]

_BUILDERS: dict[str, BackboneBuilder] = {}
# Families addressed as "<prefix><name>", e.g. "timm/resnet18": the builder receives name=<name>.
_PREFIX_BUILDERS: dict[str, BackboneBuilder] = {}


def register_backbone(name: str, prefix: bool = False) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Decorator: register a backbone builder under `name` (or every name starting with `name` if prefix)."""

    def decorator(builder: BackboneBuilder) -> BackboneBuilder:
        table = _PREFIX_BUILDERS if prefix else _BUILDERS
        if name in table:
            raise ValueError(f"architecture {name!r} is registered twice")
        table[name] = builder
        return builder

    return decorator


def list_architectures() -> list[str]:
    """Registered architecture names, plus one '<prefix><name>' pattern per family such as 'timm/<name>'."""
    return sorted(_BUILDERS) + [f"{prefix}<name>" for prefix in sorted(_PREFIX_BUILDERS)]


def resolved_kwargs(architecture: str, **kwargs: Any) -> dict[str, Any]:
    """The builder keyword arguments `kwargs` amount to once the builder's defaults are filled in (JSON-ready:
    tuples become lists). Stored in checkpoints so a later change of a default cannot change a saved model."""
    builder = _BUILDERS.get(architecture) or next(
        (b for p, b in _PREFIX_BUILDERS.items() if architecture.startswith(p)), None)
    if builder is None:
        raise UnknownArchitecture(f"unknown architecture {architecture!r}; choose one of {list_architectures()}")
    signature = inspect.signature(builder)
    bound = signature.bind_partial(**kwargs)
    bound.apply_defaults()
    resolved: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            resolved.update(value)
        elif name not in ("name", "pretrained", "pretrained_weights"):
            resolved[name] = value
    return {k: list(v) if isinstance(v, tuple) else v for k, v in resolved.items()}


def build_backbone(architecture: str, pretrained: bool = False, pretrained_weights: str | None = None,
                   **kwargs: Any) -> Backbone:
    """Build one backbone by registry name; raises UnknownArchitecture with the list of valid names."""
    if architecture in _BUILDERS:
        return _BUILDERS[architecture](pretrained=pretrained, pretrained_weights=pretrained_weights, **kwargs)
    for prefix, builder in _PREFIX_BUILDERS.items():
        if architecture.startswith(prefix) and len(architecture) > len(prefix):
            return builder(name=architecture[len(prefix):], pretrained=pretrained,
                           pretrained_weights=pretrained_weights, **kwargs)
    raise UnknownArchitecture(
        f"unknown architecture {architecture!r}; choose one of {list_architectures()}"
    )

"""Named initialisers (AlphaFold2 Supplement §1.11.4, as in openfold's ``Linear(init=...)``).

``"default"`` keeps torch's; ``"normal"`` is N(0, std) as in GPT-2/BERT; ``"lecun"`` and ``"relu"``
(He) are truncated normals with fan-in scaling; ``"glorot"`` is Xavier uniform; ``"gating"`` zeros the
weight and sets the bias to one (gates start open); ``"final"`` zeros weight and bias (residual
branches start as the identity).
"""

from __future__ import annotations

import math

import torch
from torch import nn

_TRUNC_STD = 0.87962566103423978  # std of a unit normal truncated to [-2, 2]


def _trunc_normal_fan_in(weight: torch.Tensor, scale: float) -> None:
    fan_in = weight.shape[1] if weight.dim() > 1 else weight.shape[0]
    std = math.sqrt(scale / max(1, fan_in)) / _TRUNC_STD
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


def initialise(module: nn.Module, name: str, *, std: float = 0.02) -> nn.Module:
    """Initialise a ``Linear``/``Embedding``/conv ``module`` in place by the initialiser's name."""
    weight = module.weight
    bias = getattr(module, "bias", None)
    with torch.no_grad():
        if name == "default":
            return module
        if name == "normal":
            nn.init.normal_(weight, std=std)
        elif name == "lecun":
            _trunc_normal_fan_in(weight, 1.0)
        elif name == "relu":
            _trunc_normal_fan_in(weight, 2.0)
        elif name == "glorot":
            nn.init.xavier_uniform_(weight)
        elif name == "gating":
            weight.zero_()
            if bias is not None:
                bias.fill_(1.0)
            return module
        elif name == "final":
            weight.zero_()
        else:
            raise ValueError(
                f"unknown initialiser {name!r}; expected one of "
                "['default', 'normal', 'lecun', 'relu', 'glorot', 'gating', 'final']"
            )
        if bias is not None:
            bias.zero_()
    return module


def init_normal_(model: nn.Module, *, std: float = 0.02) -> nn.Module:
    """GPT-2 style: every Linear/Embedding weight ~ N(0, std), biases zero; norms left as built."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            initialise(m, "normal", std=std)
    return model

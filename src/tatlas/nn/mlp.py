"""Position-wise feed-forward networks and their activations.

- ``MLP``: the two-layer network of Vaswani et al. 2017, §3.3.
- ``GatedMLP``: gated linear units, Shazeer 2020 "GLU Variants Improve Transformer"
  (``act="silu"`` is SwiGLU, ``act="gelu_tanh"``/``"gelu"`` is GeGLU).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn



def quick_gelu(x: Tensor) -> Tensor:
    """The sigmoid approximation of GELU used by OpenAI's CLIP and ImageGPT: ``x * sigmoid(1.702 x)``."""
    return x * torch.sigmoid(1.702 * x)


def gelu_tanh(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,
    "gelu_tanh": gelu_tanh,
    "quick_gelu": quick_gelu,
    "silu": F.silu,
    "relu": F.relu,
    "tanh": torch.tanh,
}


def activation(name: str) -> Callable[[Tensor], Tensor]:
    """Look an activation up by its exact name; an unknown name lists the valid ones."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}") from None


class MLP(nn.Module):
    """``fc2(act(fc1(x)))``. ``x: [*, C] -> [*, C_out]``."""

    def __init__(
        self, *, dim: int, hidden: int, out_dim: int | None = None, act: str = "gelu", bias: bool = True
    ) -> None:
        super().__init__()
        self.act_name = act
        self.act = activation(act)
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, out_dim or dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))

    def extra_repr(self) -> str:
        return f"act={self.act_name}"


class GatedMLP(nn.Module):
    """``down(act(gate(x)) * up(x))``. ``x: [*, C] -> [*, C_out]``."""

    def __init__(
        self, *, dim: int, hidden: int, out_dim: int | None = None, act: str = "silu", bias: bool = False
    ) -> None:
        super().__init__()
        self.act_name = act
        self.act = activation(act)
        self.gate = nn.Linear(dim, hidden, bias=bias)
        self.up = nn.Linear(dim, hidden, bias=bias)
        self.down = nn.Linear(hidden, out_dim or dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.act(self.gate(x)) * self.up(x))

    def extra_repr(self) -> str:
        return f"act={self.act_name}"

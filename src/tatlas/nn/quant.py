"""Int8 weight-only quantisation (per-output-channel symmetric scales, as in LLM.int8's weight
format without outliers, and gpt-fast's ``WeightOnlyInt8``): weights stored as int8 with one float
scale per output row, de-quantised inside the matmul. Halves (vs bf16) or quarters (vs fp32) the
bytes read per decoded token, which is what bounds batch-1 decoding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Int8Linear(nn.Module):
    """``y = x @ (w_int8 * scale).T + b``; ``x [*, in] -> [*, out]``."""

    def __init__(self, weight_int8: Tensor, scale: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        self.in_features, self.out_features = weight_int8.shape[1], weight_int8.shape[0]
        self.register_buffer("weight", weight_int8)
        self.register_buffer("scale", scale)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0  # [out]
        q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
        return cls(q, scale.to(linear.weight.dtype), linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16, torch.float16):
            flat = x.reshape(-1, x.shape[-1])
            y = torch._weight_int8pack_mm(flat, self.weight, self.scale.to(x.dtype)).reshape(*x.shape[:-1], -1)
        else:
            y = F.linear(x, self.weight.to(x.dtype)) * self.scale.to(x.dtype)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantize_int8_(model: nn.Module, *, skip: tuple[str, ...] = ()) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` in place by an :class:`Int8Linear`, except modules
    named in ``skip`` and layers whose weight is shared with another parameter (tied embeddings)."""
    shared = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        shared.setdefault(id(p), []).append(name)
    tied = {n.rsplit(".", 1)[0] for names in shared.values() if len(names) > 1 for n in names}
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and full not in skip and full not in tied:
                setattr(module, child_name, Int8Linear.from_linear(child))
    return model

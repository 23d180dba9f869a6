"""A linear map whose weight belongs to another module: the output projection tied to the token
embedding (Press & Wolf 2017, "Using the Output Embedding to Improve Language Models"; GPT-2,
Whisper). It holds no parameter, so the weight is stored once, under the embedding's name."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class TiedLinear(nn.Module):
    """``x [*, C] -> [*, V]`` as ``x @ weight^T`` with ``weight [V, C]`` passed in (the embedding's),
    cast to ``x``'s dtype."""

    def forward(self, x: Tensor, weight: Tensor) -> Tensor:
        return F.linear(x, weight.to(x.dtype))

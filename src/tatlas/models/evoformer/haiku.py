"""Haiku's parameter layouts: the nested dict ``hk.transform(...).init`` returns, and the flat
``<scope>//<name>`` keys of AlphaFold's published ``params_model_*.npz``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

Params = dict[str, np.ndarray]


def flatten_params(params: Mapping[str, Any]) -> Params:
    """Haiku's nested ``{scope: {name: array}}`` (or already flat ``scope//name`` keys) -> flat."""
    flat: Params = {}
    for k, v in params.items():
        if isinstance(v, Mapping):
            flat |= {f"{k}//{n}": np.asarray(a) for n, a in v.items()}
        else:
            flat[k] = np.asarray(v)
    return flat

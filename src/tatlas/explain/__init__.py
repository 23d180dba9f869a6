"""How each system works, drawn from the live modules: the data-flow diagram of a traced forward
pass, parameters and FLOPs per stage, the idea and the question, and pictures of what a model does.

The API the ``tatlas explain`` command and the documentation site use:

- :func:`explain` ``(system, preset) -> Explanation``: module tree, shape trace, :class:`~.flow.Flow`
  graph, :class:`Stage` costs (``.stages``, ``.flops``), and ``.system.idea/.paper/.question``;
- :func:`diagram` ``(system, preset, fmt="svg") -> str`` and :func:`write_diagram` ``-> list[Path]``;
- :mod:`.pictures`: ``pictures.available(system)``, ``pictures.render(system, what, out_dir) -> list[Path]``.
"""

from __future__ import annotations

from .draw import diagram, figure, write_diagram
from .trace import (
           CPU_LIMIT,
           Explanation,
           ModuleNode,
           Stage,
           TraceRow,
           build,
           count_parameters,
           explain,
)

__all__ = ["CPU_LIMIT", "Explanation", "ModuleNode", "Stage", "TraceRow", "build", "count_parameters", "diagram",
           "explain", "figure", "write_diagram"]

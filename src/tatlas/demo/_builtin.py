"""Imports every built-in demo so that it registers itself."""
from . import llm as _llm  # noqa: F401
from . import moe as _moe  # noqa: F401
from . import imagegpt as _imagegpt  # noqa: F401
from . import clip as _clip  # noqa: F401
from . import decision_transformer as _decision_transformer  # noqa: F401
from . import whisper as _whisper  # noqa: F401

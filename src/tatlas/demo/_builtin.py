"""The built-in demos: each module's ``DEMO`` record, in one tuple (run in name order)."""

from .clip import DEMO as CLIP
from .decision_transformer import DEMO as DECISION_TRANSFORMER
from .evoformer import DEMO as EVOFORMER
from .flamingo import DEMO as FLAMINGO
from .imagebind import DEMO as IMAGEBIND
from .imagegpt import DEMO as IMAGEGPT
from .internvl import DEMO as INTERNVL
from .llava import DEMO as LLAVA
from .llm import DEMO as LLM
from .moe import DEMO as MOE
from .whisper import DEMO as WHISPER

BUILTIN = (CLIP, DECISION_TRANSFORMER, EVOFORMER, FLAMINGO, IMAGEBIND, IMAGEGPT, INTERNVL, LLAVA, LLM, MOE, WHISPER)

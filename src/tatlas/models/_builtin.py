"""The built-in systems: each package's ``SYSTEM`` record, in one tuple."""

from .clip.system import SYSTEM as CLIP
from .decision_transformer.system import SYSTEM as DECISION_TRANSFORMER
from .evoformer.system import SYSTEM as EVOFORMER
from .flamingo.system import SYSTEM as FLAMINGO
from .imagebind.system import SYSTEM as IMAGEBIND
from .imagegpt.system import SYSTEM as IMAGEGPT
from .internvl.system import SYSTEM as INTERNVL
from .llava.system import SYSTEM as LLAVA
from .llm.system import SYSTEM as LLM
from .whisper.system import SYSTEM as WHISPER

BUILTIN = (LLM, IMAGEGPT, CLIP, WHISPER, DECISION_TRANSFORMER, EVOFORMER, LLAVA, INTERNVL, FLAMINGO, IMAGEBIND)

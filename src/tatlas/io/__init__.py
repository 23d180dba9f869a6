"""Checkpoint I/O: our safetensors checkpoints carrying their config, safe reading of foreign
checkpoints, strict loading, config (de)serialisation and declarative key-map conversion."""

from .checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    check_state_dict,
    load_state_strict,
    load_torch_file,
    read_checkpoint,
    read_json,
    read_safetensors,
    read_tensors,
    save_checkpoint,
    write_hf_folder,
)
from .config import ConfigValueError, check_config, check_fields, config_from_dict, config_to_dict
from .convert import IDENTITY, TRANSPOSE, Fuse, KeyMap, Rename, Split, Stack, Transform, Unstack, interleaved_to_half
from .ctranslate2 import Ct2Model, read_ct2, write_ct2
from .paths import OutputPathError, check_output_dir, check_output_file

__all__ = [
    "IDENTITY", "TRANSPOSE", "CheckpointError", "CheckpointMismatchError", "Fuse", "KeyMap", "Rename", "Split", "Stack", "Unstack",
    "Transform", "ConfigValueError", "check_config", "check_fields", "check_state_dict", "config_from_dict", "config_to_dict", "interleaved_to_half",
    "load_state_strict", "load_torch_file", "read_checkpoint", "read_json", "read_safetensors", "read_tensors",
    "save_checkpoint", "write_hf_folder", "Ct2Model", "read_ct2", "write_ct2", "OutputPathError", "check_output_dir", "check_output_file",
]

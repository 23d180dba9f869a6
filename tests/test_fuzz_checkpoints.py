"""Fuzzing the checkpoint readers (issue #22): our safetensors checkpoints through ``tatlas.load``,
safetensors headers that lie (huge shapes, bad offsets, unknown dtypes), ``.pt`` files through
``torch.load(weights_only=True)`` (openai-whisper's format), Hugging Face folders whose
``config.json`` holds values of the wrong type, and every system's config built from a fuzzed dict.
The property and the budgets: ``tests/_fuzz.py``."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from _fuzz import EXPECTED, JSON_VALUES, fuzz, mutated, refuses_cleanly, rss_budget
from hypothesis import given
from hypothesis import strategies as st

import tatlas
from tatlas.io import (
    CheckpointError,
    config_from_dict,
    load_torch_file,
    read_checkpoint,
    read_safetensors,
)
from tatlas.models import systems

pytestmark = pytest.mark.usefixtures("one_thread")
LOADING = (*EXPECTED, MemoryError)  # a config too large for the machine is refused as MemoryError (exit 2 in the CLI)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-ckpt")
    torch.manual_seed(0)
    ours = tatlas.save(tatlas.create("decision_transformer", "tiny"), folder / "dt.safetensors")
    whisper = tatlas.create("whisper", "tiny", audio_dim=16, text_dim=16, audio_heads=2, text_heads=2, audio_layers=1,
                            text_layers=1, audio_ctx=16, text_ctx=8, alignment_heads=None)
    from tatlas.models.decision_transformer.convert import to_hf as dt_to_hf
    from tatlas.models.llm.convert import to_hf as llm_to_hf
    from tatlas.models.whisper.convert import to_openai

    pt = to_openai(whisper, folder / "whisper.pt")
    llama = llm_to_hf(tatlas.create("llm", "tiny"), folder / "llama")
    dt = dt_to_hf(tatlas.create("decision_transformer", "tiny"), folder / "dt-hf")
    return {"ours": ours, "pt": pt, "llama": llama, "dt_hf": dt}


def _header_length(path) -> int:
    return 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]


@given(data=st.data())
@fuzz(60)
def test_our_checkpoint_mutated_loads_or_refuses_in_one_line(files, tmp_path_factory, data):
    raw = files["ours"].read_bytes()
    bad = tmp_path_factory.mktemp("case") / "dt.safetensors"
    bad.write_bytes(data.draw(mutated(raw, hot=_header_length(files["ours"]))))
    with rss_budget():
        refuses_cleanly(lambda: read_checkpoint(bad), names=bad)
        refuses_cleanly(lambda: tatlas.load(bad), expected=LOADING)


_DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "C64", "Q4", "", "f32"]
_DIMS = st.one_of(st.integers(0, 8), st.sampled_from([-1, 2**31, 2**32, 2**40, 2**63 - 1, 2**64 - 1]))


@st.composite
def lying_header(draw) -> bytes:
    """A safetensors file whose header states tensors with any dtype, shape and offsets, followed by
    fewer (or more) data bytes than it declares; sometimes a header length that lies too."""
    entries: dict = {}
    for i in range(draw(st.integers(1, 3))):
        shape = draw(st.one_of(st.lists(_DIMS, max_size=4), JSON_VALUES))
        start = draw(st.one_of(st.integers(0, 64), st.sampled_from([-8, 2**40, 2**64 - 1])))
        stop = draw(st.one_of(st.integers(0, 256), st.sampled_from([2**40, 2**64 - 1]), st.just(start)))
        entries[f"t{i}"] = {"dtype": draw(st.one_of(st.sampled_from(_DTYPES), JSON_VALUES)), "shape": shape,
                            "data_offsets": draw(st.one_of(st.just([start, stop]), JSON_VALUES))}
    if draw(st.booleans()):
        entries["__metadata__"] = draw(st.one_of(st.dictionaries(st.text(max_size=12), st.text(max_size=12),
                                                                 max_size=3), JSON_VALUES))
    header = json.dumps(entries).encode()
    length = draw(st.one_of(st.just(len(header)), st.sampled_from([0, 1, 2**40, 2**64 - 1])))
    return struct.pack("<Q", length) + header + draw(st.binary(max_size=300))


@given(raw=lying_header())
@fuzz(80)
def test_safetensors_header_that_lies_is_refused_without_allocating_what_it_declares(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("case") / "lying.safetensors"
    path.write_bytes(raw)
    with rss_budget():
        refuses_cleanly(lambda: read_safetensors(path), names=path)
        refuses_cleanly(lambda: tatlas.load(path), expected=LOADING)


@given(metadata=st.dictionaries(st.sampled_from(["tatlas.system", "tatlas.config", "tatlas.aliases", "tatlas.format"]),
                                st.one_of(st.text(max_size=20), JSON_VALUES.map(json.dumps)), min_size=1))
@fuzz(60)
def test_checkpoint_metadata_of_any_content_is_refused_in_one_line(files, tmp_path_factory, metadata):
    """A file with the right tensors whose tatlas metadata is anything: another system, config JSON of
    the wrong shape, aliases that are not a mapping of stored names."""
    from safetensors.torch import save_file

    state, _, _, meta = read_checkpoint(files["ours"])
    meta = {**meta, **metadata}
    path = tmp_path_factory.mktemp("case") / "meta.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=meta)
    refuses_cleanly(lambda: read_checkpoint(path), names=path)
    refuses_cleanly(lambda: tatlas.load(path), expected=LOADING)


@given(data=st.data())
@fuzz(40)
def test_openai_whisper_pt_mutated_loads_or_refuses(files, tmp_path_factory, data):
    raw = files["pt"].read_bytes()
    bad = tmp_path_factory.mktemp("case") / "whisper.pt"
    bad.write_bytes(data.draw(mutated(raw, hot=4096)))
    with rss_budget():
        refuses_cleanly(lambda: load_torch_file(bad), names=bad)
        refuses_cleanly(lambda: tatlas.load(bad, format="openai-whisper"), expected=LOADING)


@given(dims=st.dictionaries(st.sampled_from(["n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer",
                                             "n_vocab", "n_text_ctx", "n_text_state", "n_text_head", "n_text_layer"]),
                            st.one_of(st.integers(-5, 70), st.sampled_from([2**31, 2**40]), JSON_VALUES)),
       payload=st.sampled_from(["dims", "list", "tensor", "state-list"]))
@fuzz(50)
def test_openai_whisper_pt_with_wrong_dims_is_refused(files, tmp_path_factory, dims, payload):
    """``dims`` of any value (strings, huge or negative numbers, missing keys), or a file whose
    parts are of the wrong kind."""
    raw = torch.load(files["pt"], weights_only=True)
    if payload == "dims":
        raw["dims"] = {**raw["dims"], **dims}
    elif payload == "list":
        raw = [raw["dims"]]
    elif payload == "tensor":
        raw["dims"] = torch.zeros(3)
    else:
        raw["model_state_dict"] = list(raw["model_state_dict"].values())
    path = tmp_path_factory.mktemp("case") / "whisper.pt"
    torch.save(raw, path)
    with rss_budget():
        refuses_cleanly(lambda: tatlas.load(path, format="openai-whisper"), expected=LOADING)


def _json_mutation(config: dict, data) -> dict:
    config = dict(config)
    for _ in range(data.draw(st.integers(1, 3))):
        action = data.draw(st.sampled_from(["retype", "drop", "add", "number"]))
        key = data.draw(st.sampled_from(sorted(config))) if config else "x"
        if action == "retype":
            config[key] = data.draw(JSON_VALUES)
        elif action == "drop":
            config.pop(key, None)
        elif action == "add":
            config[data.draw(st.text(max_size=10))] = data.draw(JSON_VALUES)
        else:
            config[key] = data.draw(st.sampled_from([-1, 0, 2**31, 2**40, 1e308, float("nan"), "12", 3.5, True]))
    return config


@pytest.mark.parametrize("which", ["llama", "dt_hf"])
@given(data=st.data())
@fuzz(60)
def test_hf_folder_with_wrong_config_values_is_refused(files, tmp_path_factory, which, data):
    import shutil

    folder = tmp_path_factory.mktemp("case") / which
    shutil.copytree(files[which], folder)
    config = json.loads((folder / "config.json").read_text())
    if data.draw(st.booleans()):
        text = json.dumps(_json_mutation(config, data))
    else:
        text = data.draw(mutated(json.dumps(config).encode())).decode("utf-8", "replace")
    (folder / "config.json").write_text(text)
    with rss_budget():
        refuses_cleanly(lambda: tatlas.load(folder), expected=LOADING)


@pytest.mark.parametrize("system", sorted(systems()))
@given(data=st.data())
@fuzz(25)
def test_every_config_built_from_a_fuzzed_dict_is_refused_by_type_checks(system, data):
    """The dict a checkpoint carries, with values of the wrong type, absurd sizes or missing fields:
    ``config_from_dict`` builds it or raises a one-line ``ValueError`` (never a ``TypeError`` from
    the dataclass, never a hang)."""
    from tatlas.io import config_to_dict
    from tatlas.models import get_system

    owner = get_system(system)
    config = config_to_dict(owner.preset("tiny"))
    refuses_cleanly(lambda: config_from_dict(owner.config_cls, _json_mutation(config, data)))


def test_the_fuzz_property_fails_on_a_crash_and_on_a_multi_line_message():
    """The property itself: a reader raising a foreign type or a message over two lines fails it."""
    with pytest.raises(KeyError):
        refuses_cleanly(lambda: {}["x"])
    with pytest.raises(AssertionError, match="several lines"):
        refuses_cleanly(lambda: (_ for _ in ()).throw(CheckpointError("a\nb")))
    with pytest.raises(AssertionError, match="does not name"):
        refuses_cleanly(lambda: (_ for _ in ()).throw(CheckpointError("bad")), names="x.safetensors")

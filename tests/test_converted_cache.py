"""Foreign checkpoints kept converted (``tatlas.load(..., cache=True)``, io/converted.py): the first
load converts and writes one entry, later loads read it without converting and compute the same
model; a changed source or converter names a new entry and the old one goes; a damaged entry is
converted again; an unwritable cache only costs the speed."""

from __future__ import annotations

import os

import pytest
import torch

import tatlas
from tatlas.io import converted
from tatlas.models.whisper.convert import from_ct2, to_ct2
from tatlas.models.whisper.system import SYSTEM


@pytest.fixture
def ct2_folder(tmp_path, monkeypatch):
    """A tiny random Whisper as a CTranslate2 folder, and a cache of our own."""
    monkeypatch.setenv("TATLAS_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = tatlas.create("whisper", "tiny").eval()
    return to_ct2(model, tmp_path / "ct2"), model


def _conversions(monkeypatch) -> list:
    """Calls of the CTranslate2 Whisper converter from here on."""
    calls = []
    monkeypatch.setitem(SYSTEM.ct2_specs, "WhisperSpec", lambda path: calls.append(path) or from_ct2(path))
    return calls


def _same(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_the_first_load_converts_and_the_next_reads_the_entry(ct2_folder, monkeypatch):
    folder, _ = ct2_folder
    calls = _conversions(monkeypatch)
    first = tatlas.load(folder, system="whisper", cache=True)
    entries = list(converted.converted_dir().glob("*.safetensors"))
    assert len(calls) == 1 and len(entries) == 1 and entries[0].name.startswith("ct2-")
    second = tatlas.load(folder, system="whisper", cache=True, fast=True)
    assert len(calls) == 1  # read from the entry: no conversion
    direct = tatlas.load(folder, system="whisper")
    _same(first, direct)
    _same(second, direct)
    tokens, mel = torch.tensor([[1, 2, 3]]), torch.randn(1, 80, 3000)
    with torch.inference_mode():
        torch.testing.assert_close(second.eval()(tokens, mel), direct.eval()(tokens, mel), atol=2e-5, rtol=1e-5)
    # a system other than the one the entry holds is still refused
    with pytest.raises(tatlas.io.CheckpointError, match="whisper"):
        tatlas.load(folder, system="clip", cache=True)


def test_a_changed_source_is_converted_again_and_replaces_its_entry(ct2_folder, monkeypatch):
    folder, _ = ct2_folder
    calls = _conversions(monkeypatch)
    tatlas.load(folder, system="whisper", cache=True)
    old = list(converted.converted_dir().glob("*.safetensors"))
    config = folder / "config.json"
    st = config.stat()
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the source changed (a newer file)
    tatlas.load(folder, system="whisper", cache=True)
    new = list(converted.converted_dir().glob("*.safetensors"))
    assert len(calls) == 2 and len(new) == 1 and new != old


def test_a_damaged_entry_is_converted_again(ct2_folder, monkeypatch):
    folder, _ = ct2_folder
    calls = _conversions(monkeypatch)
    tatlas.load(folder, system="whisper", cache=True)
    (entry,) = converted.converted_dir().glob("*.safetensors")
    entry.write_bytes(entry.read_bytes()[:1000])  # torn
    again = tatlas.load(folder, system="whisper", cache=True)
    assert len(calls) == 2 and entry.stat().st_size > 1000
    _same(again, tatlas.load(folder, system="whisper"))


def test_an_unwritable_cache_costs_only_the_speed(ct2_folder, tmp_path, monkeypatch):
    folder, _ = ct2_folder
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("TATLAS_CACHE", str(blocked / "cache"))  # cannot be created
    model = tatlas.load(folder, system="whisper", cache=True)
    _same(model, tatlas.load(folder, system="whisper"))


def test_our_own_checkpoint_is_never_copied(ct2_folder, tmp_path):
    _, model = ct2_folder
    path = tatlas.save(model, tmp_path / "ours.safetensors")
    _same(tatlas.load(path, cache=True), model)
    assert not converted.converted_dir().exists()


def test_the_encoder_takes_windows_one_at_a_time_with_the_same_features():
    torch.manual_seed(0)
    model = tatlas.create("whisper", "tiny").eval()
    mel = torch.randn(3, 80, 3000)
    with torch.inference_mode():
        together = model.encoder(mel)
        torch.testing.assert_close(model.embed_audio(mel), together, atol=1e-5, rtol=1e-5)


def test_loads_racing_on_an_empty_cache_each_get_the_model(ct2_folder):
    """Two loads convert at once: each writes its own temporary file and renames a whole one into
    place; the entry left is readable, and a writer's abandoned temporary file goes later."""
    import threading

    folder, _ = ct2_folder
    direct = tatlas.load(folder, system="whisper")
    got, errors = [], []

    def load():
        try:
            got.append(tatlas.load(folder, system="whisper", cache=True))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    workers = [threading.Thread(target=load) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors and len(got) == 2
    for model in got:
        _same(model, direct)
    (entry,) = converted.converted_dir().glob("*.safetensors")
    _same(tatlas.load(folder, system="whisper", cache=True), direct)
    leftover = entry.with_name(entry.name + ".123.456.tmp")
    leftover.write_bytes(b"a killed writer's half file")
    os.utime(leftover, (0, 0))
    assert leftover in converted.stale_entries(folder, entry)
    os.utime(leftover)  # a writer still at work: left alone
    assert leftover not in converted.stale_entries(folder, entry)

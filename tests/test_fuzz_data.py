"""Fuzzing the dataset and alignment readers (issue #22): offline-RL datasets (the ``.npz`` tatlas
writes, a Minari ``main_data.hdf5``, D4RL's flat arrays) mutated byte by byte or holding fields of the
wrong dtype, shape or value, through ``load_dataset``; multiple sequence alignments (A3M, aligned
FASTA, Stockholm) of any text or bytes through ``read_msa`` and the parsers. The property and the
budgets: ``tests/_fuzz.py``."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from _fuzz import fuzz, mutated, refuses_cleanly, rss_budget
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tatlas.data.offline_rl import load_dataset, save_dataset
from tatlas.models.evoformer.msa_io import (
    parse_a3m,
    parse_fasta,
    parse_stockholm,
    read_msa,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    from tatlas.data.offline_rl.envs import collect

    folder = tmp_path_factory.mktemp("fuzz-data")
    data = collect("CartPole-v1", episodes=2, mix="random=1", seed=0)
    npz = save_dataset(data, folder / "cartpole.npz")
    minari = save_dataset(data, folder / "cartpole-random-v0")
    return {"npz": npz, "minari": minari}


@given(data=st.data())
@fuzz(60)
def test_npz_dataset_mutated_loads_or_refuses(datasets, tmp_path_factory, data):
    raw = datasets["npz"].read_bytes()
    path = tmp_path_factory.mktemp("case") / "cartpole.npz"
    path.write_bytes(data.draw(mutated(raw, hot=len(raw))))
    with rss_budget():
        refuses_cleanly(lambda: load_dataset(path), names=path)


@given(data=st.data())
@fuzz(40)
def test_minari_hdf5_mutated_loads_or_refuses(datasets, tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("case") / "cartpole-random-v0"
    shutil.copytree(datasets["minari"], folder)
    target = data.draw(st.sampled_from(["data/main_data.hdf5", "data/metadata.json"]))
    raw = (folder / target).read_bytes()
    (folder / target).write_bytes(data.draw(mutated(raw, hot=min(len(raw), 4096))))
    with rss_budget():
        refuses_cleanly(lambda: load_dataset(folder))


_ARRAYS = hnp.arrays(st.sampled_from([np.float32, np.float64, np.int64, np.int8, np.bool_, np.complex64, np.dtype("U2")]),
                     hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6))


@given(fields=st.dictionaries(st.sampled_from(["episode_0/observations", "episode_0/actions", "episode_0/rewards",
                                               "episode_0/terminations", "episode_0/truncations", "episode_3/rewards",
                                               "observations", "actions", "rewards", "terminals", "timeouts",
                                               "metadata"]), _ARRAYS, min_size=1),
       meta=st.one_of(st.none(), st.sampled_from(['{"action_space": {"type": "Box"}}', '[1]', '{', '{"env_id": 3}',
                                                  '{"action_space": {"type": "Discrete", "n": -4}}'])))
@fuzz(80)
def test_npz_of_fields_with_any_dtype_and_shape_is_refused_or_loaded(tmp_path_factory, fields, meta):
    path = tmp_path_factory.mktemp("case") / "fields.npz"
    if meta is not None:
        fields = {**fields, "metadata": np.array(meta)}
    buf = io.BytesIO()
    np.savez(buf, **fields)
    path.write_bytes(buf.getvalue())
    data = refuses_cleanly(lambda: load_dataset(path), names=path)
    if data is not None:
        assert all(np.isfinite(e.rewards).all() for e in data.episodes)


# --------------------------------------------------------------------------- alignments

_MSA_TEXT = st.text(alphabet=st.sampled_from(list(">#/ \n\t-.ACDEFGHIKLMNPQRSTVWYXBZacdeghklmnpqrsty*0123456789é")),
                    max_size=300)


@given(text=st.one_of(_MSA_TEXT, st.text(max_size=120)))
@fuzz(120)
def test_alignment_text_of_any_characters_parses_or_refuses(text):
    for parse in (parse_a3m, parse_fasta, parse_stockholm):
        msa = refuses_cleanly(lambda parse=parse: parse(text, source="x.msa"), names="x.msa")
        if msa is not None:
            assert msa.deletion_matrix.shape == (msa.depth, msa.length) and msa.to_array().shape == (msa.depth, msa.length)


@given(raw=st.one_of(st.binary(max_size=200), _MSA_TEXT.map(lambda t: t.encode("utf-8"))),
       suffix=st.sampled_from([".a3m", ".sto", ".fasta", ".a2m", ".txt", ""]))
@fuzz(80)
def test_alignment_file_of_any_bytes_reads_or_refuses(tmp_path_factory, raw, suffix):
    path = tmp_path_factory.mktemp("case") / f"family{suffix}"
    path.write_bytes(raw)
    refuses_cleanly(lambda: read_msa(path), names=path)

"""The Evoformer's data: embedded protein families (geometry, Potts sampling, the coevolution
signal), the MSA file formats (equal to AlphaFold's parsers), featurisation as AlphaFold's input
pipeline, the contact and structure metrics, and the Cα PDB writer.

Expected outputs of AlphaFold's ``parsers.parse_a3m`` / ``parse_stockholm`` and of
``model/lddt.py`` were computed once with DeepMind's code on the same inputs and are written here,
so the tests need no AlphaFold install."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from tatlas.data.proteins import (
    GAP, MASK_TOKEN, FamilyConfig, LazyFamilies, Potts, contact_count, contact_map, decode, distance_matrix, encode,
    gibbs_sample, make_potts, protein_families, protein_family, radius_of_gyration, random_chain,
)
from tatlas.data.proteins.potts import Q
from tatlas.data.proteins.residues import MAP_HHBLITS_AATYPE_TO_OUR_AATYPE
from tatlas.models.evoformer import metrics as M
from tatlas.models.evoformer.features import FeatureOptions, family_features, make_features, merge_msas, stack_features
from tatlas.models.evoformer.msa_io import (
    format_a3m, msa_from_arrays, parse_a3m, parse_fasta, parse_stockholm, read_msa, write_a3m,
)
from tatlas.models.evoformer.pdb import ca_pdb, write_ca_pdb


# ---------------------------------------------------------------------------------------------
# Residue alphabet (checked once against alphafold/common/residue_constants.py)
# ---------------------------------------------------------------------------------------------


def test_alphabet_is_alphafolds():
    assert decode(encode("ARNDCQEGHILKMFPSTWYVX-")) == "ARNDCQEGHILKMFPSTWYVX-"
    assert encode("ARNDCQEGHILKMFPSTWYVX-").tolist() == list(range(22))
    assert decode(encode("BZUJO")) == "DECXX"  # HHblits' folding of the rare letters
    assert MAP_HHBLITS_AATYPE_TO_OUR_AATYPE == (0, 4, 3, 6, 13, 7, 8, 9, 11, 10, 12, 2, 14, 5, 1, 15, 16, 19, 17, 18,
                                                20, 21)
    with pytest.raises(ValueError, match=r"residue '\*' at position 3"):
        encode("AC*")


# ---------------------------------------------------------------------------------------------
# Chains
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [24, 40, 64])
def test_chains_are_compact_self_avoiding_traces(length):
    rng = np.random.default_rng(length)
    for _ in range(3):
        x, ss = random_chain(length, rng)
        d = distance_matrix(x)
        assert x.shape == (length, 3) and len(ss) == length and set(ss) <= set("HEC")
        np.testing.assert_allclose(np.diag(d, 1), 3.8, atol=1e-6)
        assert d[np.triu_indices(length, 2)].min() >= 4.0 - 1e-9  # self-avoiding
        assert radius_of_gyration(x) < 1.4 * 2.2 * length**0.38  # globular, not extended
        assert contact_count(x, min_separation=12) >= 0.5 * (length - 24)
        helix = [i for i in range(3, length - 4) if ss[i - 3 : i + 5] == "H" * 8]
        for i in helix:  # ideal α-helix: i+3 at ~5.1 Å, i+4 at ~6.2 Å
            assert 4.3 < d[i, i + 3] < 5.8 and 4.9 < d[i, i + 4] < 7.0
    many = [contact_count(random_chain(48, rng)[0], min_separation=12) for _ in range(5)]
    assert np.mean(many) > 30  # plenty of medium- and long-range contacts


def test_contact_map_and_distances():
    x = np.array([[0.0, 0, 0], [3.8, 0, 0], [3.8, 5.0, 0], [20.0, 0, 0]])
    c = contact_map(x)
    assert c.dtype == bool and not c.diagonal().any() and (c == c.T).all()
    assert c[0, 1] and c[0, 2] and not c[0, 3]
    assert distance_matrix(x)[0, 2] == pytest.approx(math.hypot(3.8, 5.0))


# ---------------------------------------------------------------------------------------------
# Families and Potts models
# ---------------------------------------------------------------------------------------------


def test_families_are_pure_functions_of_seed_split_index():
    a = protein_families(3, seed=1, length=(20, 30), depth=16)
    b = protein_families(2, seed=1, length=(20, 30), depth=16)
    for fa, fb in zip(a, b):
        assert fa.name == fb.name and fa.sequence == fb.sequence
        assert np.array_equal(fa.msa, fb.msa) and np.array_equal(fa.coords, fb.coords)
    test = protein_families(3, seed=1, split="test", length=(20, 30), depth=16)
    other = protein_families(3, seed=2, length=(20, 30), depth=16)
    assert {f.sequence for f in a}.isdisjoint({f.sequence for f in test} | {f.sequence for f in other})
    assert [f.name for f in test] == ["test-1-0000", "test-1-0001", "test-1-0002"]
    with pytest.raises(ValueError, match="split"):
        protein_families(1, split="valid")
    lazy = LazyFamilies(3, seed=1, split="test", length=(20, 30), depth=16)
    assert len(lazy) == 3 and not lazy._made
    assert lazy[2].name == "test-1-0002" and set(lazy._made) == {2}  # made on first access only
    assert lazy[-1] is lazy[2] and np.array_equal(lazy[2].msa, test[2].msa)
    assert protein_family(1, seed=1, split="test", length=(20, 30), depth=16).sequence == test[1].sequence
    with pytest.raises(IndexError, match="family 3"):
        lazy[3]
    from tatlas.models.evoformer.features import FeatureOptions
    from tatlas.models.evoformer.task import FamilyDataset

    stream = LazyFamilies(3, seed=1, length=(20, 30), depth=16)  # the training stream draws lazily too
    assert FamilyDataset(stream, options=FeatureOptions(max_clusters=8, max_extra=0))[4]["aatype"].shape == (
        stream[1].length,) and set(stream._made) == {1}
    with pytest.raises(ValueError, match=r"FamilyConfig.shared: expected a fraction in \[0, 1\], got 1.5"):
        FamilyConfig(shared=1.5)


def test_family_record():
    fam = protein_families(1, seed=0, length=36, depth=64)[0]
    assert fam.length == 36 and fam.depth == 64
    assert fam.msa.shape == fam.deletion_matrix.shape == (64, 36) and fam.msa.dtype == np.int64
    assert decode(fam.msa[0]) == fam.sequence and np.array_equal(fam.aatype, fam.msa[0])
    assert set(np.unique(fam.msa)) <= set(range(20)) | {GAP} and GAP not in fam.msa[0]
    assert not fam.deletion_matrix[0].any() and (fam.deletion_matrix >= 0).all()
    assert np.array_equal(fam.contacts, contact_map(fam.coords)) and fam.contacts[tuple(fam.potts.pairs.T)].all()
    np.testing.assert_allclose(np.diag(fam.distances, 1), 3.8, atol=1e-4)
    assert not fam.msa.flags.writeable and not fam.coords.flags.writeable
    assert 0.05 < (fam.msa[1:] == fam.msa[0]).mean() < 0.6  # diverse, but a family
    assert (fam.msa == GAP).mean() < 0.15


def test_potts_couplings_sit_on_contacts_and_energy_is_consistent():
    rng = np.random.default_rng(0)
    x, _ = random_chain(30, rng)
    contacts = contact_map(x)
    native = rng.integers(0, 20, 30)
    potts = make_potts(native, contacts, rng)
    i, j = potts.pairs.T
    assert (i < j).all() and contacts[i, j].all() and (j - i >= 3).all()
    assert len(potts.pairs) == np.triu(contacts, 3).sum()
    dense = potts.couplings()
    assert np.allclose(dense, dense.transpose(1, 0, 3, 2))
    seqs = rng.integers(0, 21, (5, 30))
    pos = np.arange(30)
    manual = [potts.fields[pos, s].sum() + 0.5 * dense[pos[:, None], pos, s[:, None], s].sum() for s in seqs]
    np.testing.assert_allclose(potts.energy(seqs), manual)
    sampled = gibbs_sample(potts, 64, rng, start=native)
    assert potts.energy(sampled).mean() > potts.energy(rng.integers(0, 20, (64, 30))).mean() + 10


def test_gibbs_sampler_draws_the_exact_distribution():
    """Three sites coupled 0-1 and 1-2 with asymmetric blocks, three live states each: the joint
    of 20,000 draws matches exact enumeration (a transposed coupling or a simultaneous update of
    coupled sites would not)."""
    rng = np.random.default_rng(0)
    fields = np.full((3, Q), -30.0)
    fields[:, :3] = rng.normal(size=(3, 3))
    blocks = np.zeros((2, Q, Q))
    blocks[:, :3, :3] = 1.5 * rng.normal(size=(2, 3, 3))
    potts = Potts(fields=fields, pairs=np.array([[0, 1], [1, 2]]), blocks=blocks)
    states = np.array(list(itertools.product(range(3), repeat=3)))
    p = np.exp(potts.energy(states))
    p /= p.sum()
    draws = gibbs_sample(potts, 20000, rng, start=np.zeros(3, int), chains=20000, burn_in=10)
    codes = draws @ np.array([9, 3, 1])
    empirical = np.bincount(codes, minlength=27) / len(codes)
    assert 0.5 * np.abs(empirical - p).sum() < 0.03


def test_covariance_baselines_find_the_coupled_contacts():
    """The point of the data: the alignment's covariation points at the fold's contacts."""
    fams = protein_families(6, seed=0, split="test", length=40, depth=256)
    precision = {"covariance": [], "mfdca": []}
    chance = []
    for fam in fams:
        c = fam.contacts
        chance.append(np.triu(c, 12).sum() / len(np.triu_indices(40, 12)[0]))
        for method, values in precision.items():
            scores = M.covariance_contacts(fam.msa, method=method)
            values.append(M.contact_precision(scores, c, top=5, separation="medium+long"))
    assert np.mean(chance) < 0.15
    for method, values in precision.items():
        assert np.mean(values) > 0.5, (method, values)


# ---------------------------------------------------------------------------------------------
# MSA files (expected values from AlphaFold's parsers on the same text)
# ---------------------------------------------------------------------------------------------

A3M = ">query desc\nMKVLA\n>s1 hit\nMaKVggL-\n\n>s2\n--Vxy\nLAz\n"
STOCKHOLM = ("# STOCKHOLM 1.0\n#=GS q DE query\nq   MK-VL\ns1  MKAV-\ns2  -RGVL\n\n"
             "q   A-C\ns1  AYC\ns2  -Y-\n#=GC RF xxx\n//\n")


def test_a3m_equals_alphafold():
    msa = parse_a3m(A3M)
    assert msa.sequences == ("MKVLA", "MKVL-", "--VLA")  # parsers.parse_a3m
    assert msa.deletion_matrix.tolist() == [[0, 0, 0, 0, 0], [0, 1, 0, 2, 0], [0, 0, 0, 2, 0]]
    assert msa.descriptions == ("query desc", "s1 hit", "s2")
    assert parse_a3m(">q\nMKV\n>a2m-style\nMk.V.-\n").sequences == ("MKV", "MV-")  # "." dropped
    assert msa.to_array().tolist()[1] == [12, 11, 19, 10, 21]


def test_stockholm_and_aligned_fasta_equal_alphafold():
    msa = parse_stockholm(STOCKHOLM)
    assert msa.sequences == ("MKVLAC", "MKV-AC", "-RVL--")  # parsers.parse_stockholm
    assert msa.deletion_matrix.tolist() == [[0] * 6, [0, 0, 1, 0, 0, 1], [0, 0, 1, 0, 0, 1]]
    assert msa.descriptions == ("q", "s1", "s2")
    fasta = parse_fasta(">q\nMK-VLA-C\n>s1\nMKAV-AYC\n>s2\n-RGVL-Y-\n")
    assert fasta.sequences == msa.sequences and np.array_equal(fasta.deletion_matrix, msa.deletion_matrix)
    dotted = parse_stockholm("q MK..V\ns mkagv\n")  # "." is a gap; kept residues upper-cased
    assert dotted.sequences == ("MKV", "MKV") and dotted.deletion_matrix.tolist() == [[0, 0, 0], [0, 0, 2]]


def test_a3m_round_trip_and_files(tmp_path):
    msa = parse_stockholm(STOCKHOLM)
    text = format_a3m(msa)
    assert text.splitlines()[3] == "MKxV-AxC"
    back = parse_a3m(text)
    assert back.sequences == msa.sequences and np.array_equal(back.deletion_matrix, msa.deletion_matrix)
    write_a3m(msa, tmp_path / "x.a3m")
    (tmp_path / "x.sto").write_text(STOCKHOLM)
    (tmp_path / "x.afa").write_text(">q\nMKV\n>s\nM-V\n")
    assert read_msa(tmp_path / "x.a3m").sequences == msa.sequences
    assert read_msa(tmp_path / "x.sto").sequences == msa.sequences
    assert read_msa(tmp_path / "x.afa").sequences == ("MKV", "M-V")
    arrays = msa_from_arrays(msa.to_array(), msa.deletion_matrix)
    assert arrays.sequences == msa.sequences and arrays.descriptions[0] == "query"


@pytest.mark.parametrize(("parser", "text", "message"), [
    (parse_a3m, ">q\nMKV\n>s\nM*V\n", r"x\.a3m, line 4: unknown residue '\*'"),
    (parse_a3m, ">q\nMKV\n\n>s\nMaK\n", r"x\.a3m, line 4: sequence 's' has 2 aligned columns, expected 3"),
    (parse_a3m, "  \n\n", r"x\.a3m: empty file"),
    (parse_a3m, "MKV\n>q\nMKV\n", r"x\.a3m, line 1: sequence before the first '>' header"),
    (parse_a3m, ">q\n>s\nMKV\n", r"x\.a3m, line 1: sequence 'q' has no aligned columns"),
    (parse_stockholm, "# STOCKHOLM 1.0\n//\n", r"x\.a3m: no sequences"),
    (parse_stockholm, "q MKV\ns MK\n", r"x\.a3m, line 2: sequence 's' is 2 columns wide, expected 3"),
    (parse_stockholm, "q MKV extra\n", r"x\.a3m, line 1: expected '<name> <aligned sequence>', got 3 fields"),
    (parse_stockholm, "q MKV\ns M1V\n", r"x\.a3m, line 2: unknown residue '1'"),
    (parse_fasta, ">q\nMKV\n>s\nMKVL\n", r"x\.a3m, line 3: sequence 's' is 4 columns wide, expected 3"),
])
def test_bad_alignments_raise_one_line_naming_file_and_line(parser, text, message):
    with pytest.raises(ValueError, match=message) as err:
        parser(text, source="x.a3m")
    assert "\n" not in str(err.value)


def test_read_msa_names_unknown_formats(tmp_path):
    (tmp_path / "x.txt").write_text(">q\nMKV\n")
    with pytest.raises(ValueError, match=r"x\.txt: format"):
        read_msa(tmp_path / "x.txt")
    assert read_msa(tmp_path / "x.txt", format="a3m").sequences == ("MKV",)


# ---------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------


def _hand_msa() -> tuple[np.ndarray, np.ndarray]:
    rows = ["AAAA", "CCCC", "AAAC", "CCCA", "CC--"]  # centres: the first two; extras: 2 -> 0, 3 -> 1, 4 -> 1
    dels = np.zeros((5, 4), np.int64)
    dels[2, 1] = 3
    dels[1, 0] = 1
    return np.stack([encode(r) for r in rows]), dels


def test_features_on_a_hand_made_alignment():
    msa, dels = _hand_msa()
    opts = FeatureOptions(max_clusters=2, max_extra=8, masked_fraction=0.0, shuffle=False)
    f = make_features(msa, dels, options=opts, seed=0)
    a, c, gap = 0, 4, 21
    assert f["aatype"].tolist() == [a] * 4 and f["residue_index"].tolist() == [0, 1, 2, 3]
    target = f["target_feat"]
    assert target.shape == (4, 22) and (target[:, 0] == 0).all() and (target[:, 1 + a] == 1).all()
    feat = f["msa_feat"]
    assert feat.shape == (2, 4, 49)
    assert torch.equal(feat[:, :, :23].argmax(-1), torch.tensor([[a] * 4, [c] * 4]))
    assert feat[1, 0, 23] == 1 and feat[1, 0, 24] == pytest.approx(2 / math.pi * math.atan(1 / 3))
    profile = feat[..., 25:48]
    assert profile[0, :3, a].tolist() == pytest.approx([1.0] * 3, abs=1e-5)  # query + AAAC
    assert profile[0, 3, [a, c]].tolist() == pytest.approx([0.5, 0.5], abs=1e-5)
    assert profile[1, 2, [c, gap]].tolist() == pytest.approx([2 / 3, 1 / 3], abs=1e-5)  # CCCC + CCCA + CC--
    assert profile[1, 3, [a, c, gap]].tolist() == pytest.approx([1 / 3] * 3, abs=1e-5)
    assert feat[0, 1, 48] == pytest.approx(2 / math.pi * math.atan(1.5 / 3), abs=1e-5)  # mean deletion 3/2
    assert feat[1, 0, 48] == pytest.approx(2 / math.pi * math.atan((1 / 3) / 3), abs=1e-5)
    assert f["extra_msa"].tolist() == [msa[2].tolist(), msa[3].tolist(), msa[4].tolist()]
    assert f["extra_has_deletion"][0].tolist() == [0, 1, 0, 0]
    assert f["extra_deletion_value"][0, 1] == pytest.approx(2 / math.pi * math.atan(1.0))  # d = 3 -> 0.5
    assert torch.equal(f["true_msa"], torch.from_numpy(msa[:2])) and not f["bert_mask"].any()
    assert f["msa_mask"].shape == (2, 4) and f["extra_msa_mask"].shape == (3, 4) and f["seq_mask"].sum() == 4
    one_extra = FeatureOptions(max_clusters=2, max_extra=1, masked_fraction=0.0, shuffle=False)
    cropped = make_features(msa, dels, options=one_extra)
    assert torch.equal(cropped["msa_feat"], feat) and cropped["extra_msa"].shape == (1, 4)  # clusters use every row


def test_masked_msa_corruption_follows_alphafold():
    fam = protein_families(1, seed=0, length=40, depth=256)[0]
    f = family_features(fam, options=FeatureOptions(max_clusters=256, max_extra=0), seed=3)
    mask = f["bert_mask"].bool()
    centres = f["msa_feat"][..., :23].argmax(-1)
    assert abs(mask.float().mean().item() - 0.15) < 0.01
    assert torch.equal(centres[~mask], f["true_msa"][~mask])
    assert 0.66 < (centres[mask] == MASK_TOKEN).float().mean() < 0.74  # 70 % mask token
    assert torch.equal(f["aatype"], torch.tensor(fam.msa[0])) and f["extra_msa"].shape == (0, 40)
    again = family_features(fam, options=FeatureOptions(max_clusters=256, max_extra=0), seed=3)
    other = family_features(fam, options=FeatureOptions(max_clusters=256, max_extra=0), seed=4)
    assert all(torch.equal(f[k], again[k]) for k in f) and not torch.equal(f["msa_feat"], other["msa_feat"])
    assert f["pseudo_beta"].shape == (40, 3) and torch.allclose(f["pseudo_beta"], torch.tensor(fam.coords))


def test_sampled_clusters_keep_the_query_first_and_partition_the_rest():
    fam = protein_families(1, seed=0, length=20, depth=40)[0]
    f = family_features(fam, options=FeatureOptions(max_clusters=8, max_extra=100, masked_fraction=0.0), seed=1)
    assert torch.equal(f["true_msa"][0], torch.tensor(fam.msa[0]))
    rows = {tuple(r) for r in f["true_msa"].tolist()} | {tuple(r) for r in f["extra_msa"].tolist()}
    assert rows == {tuple(r) for r in fam.msa.tolist()} and f["extra_msa"].shape[0] == 32
    assert torch.allclose(f["msa_feat"][..., 25:48].sum(-1), torch.ones(8, 20), atol=1e-4)  # profiles are distributions


def test_stack_features_pads_with_masks():
    fams = protein_families(2, seed=0, length=(20, 30), depth=12)
    opts = FeatureOptions(max_clusters=4, max_extra=16)
    feats = [family_features(f, options=opts, seed=i) for i, f in enumerate(fams)]
    batch = stack_features(feats, num_extra=10)
    r = max(f.length for f in fams)
    assert batch["msa_feat"].shape == (2, 4, r, 49) and batch["extra_msa"].shape == (2, 10, r)
    assert batch["target_feat"].shape == (2, r, 22) and batch["pseudo_beta"].shape == (2, r, 3)
    for b, fam in enumerate(fams):
        assert batch["seq_mask"][b].sum() == fam.length and batch["msa_mask"][b].sum() == 4 * fam.length
        assert torch.equal(batch["aatype"][b, : fam.length], feats[b]["aatype"])
        assert batch["extra_msa_mask"][b].sum() == 8 * fam.length
    with pytest.raises(ValueError, match="more than the requested 5"):
        stack_features(feats, num_res=5)


def test_feature_errors_and_merge():
    msa, dels = _hand_msa()
    with pytest.raises(ValueError, match="query .* has a gap at position 2"):
        make_features(np.stack([encode("AA-A"), encode("AAAA")]))
    with pytest.raises(ValueError, match=r"expected the same \[N >= 1, L >= 1\]"):
        make_features(msa, dels[:, :3])
    with pytest.raises(ValueError, match="residue indices 0..21"):
        make_features(msa + 30)
    with pytest.raises(ValueError, match="FeatureOptions"):
        FeatureOptions(uniform_prob=0.6, profile_prob=0.6)
    merged, merged_dels = merge_msas([parse_a3m(">q\nMKV\n>s\nMkKV\n"), parse_a3m(">q\nMKV\n>t\nM-V\n")])
    assert [decode(r) for r in merged] == ["MKV", "M-V"] and merged_dels.tolist() == [[0, 0, 0], [0, 0, 0]]


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def test_contact_precision_by_hand():
    contacts = np.zeros((30, 30), bool)
    for i, j in [(0, 29), (1, 27), (2, 14)]:
        contacts[i, j] = contacts[j, i] = True
    probs = np.zeros((30, 30))
    probs[0, 29], probs[3, 28], probs[1, 27] = 0.9, 0.8, 0.7  # long: true, false, true
    probs[2, 14] = 0.95  # medium (|i - j| = 12), true
    probs[0, 5] = 1.0  # short range: never counted
    assert M.contact_precision(probs, contacts, top=10) == pytest.approx(2 / 3)  # top L/10 = 3 long
    assert M.contact_precision(probs, contacts, top=15) == 0.5  # top 2 long
    assert M.contact_precision(probs.T, contacts, top=15) == 0.5  # symmetrised
    assert M.contact_precision(probs, contacts, top=30, separation="medium") == 1.0
    assert M.contact_precision(probs, contacts, top=10, separation="medium+long") == pytest.approx(2 / 3)


def test_contact_probs_from_distogram_bins():
    logits = torch.full((2, 2, 64), -1e9)
    logits[0, 0, 18] = 0.0  # bin 18: [7.625, 7.9375) Å -> a contact
    logits[0, 1, 19] = 0.0  # bin 19: [7.9375, 8.25) Å -> not
    logits[1, 0, 0] = 0.0
    logits[1, 1, 63] = 0.0  # the open last bin
    probs = M.contact_probs_from_distogram(logits)
    assert probs.tolist() == [[1.0, 0.0], [1.0, 0.0]]
    assert M.distogram_breaks()[18].item() == pytest.approx(7.9375)
    uniform = M.contact_probs_from_distogram(torch.zeros(1, 1, 64))
    assert uniform.item() == pytest.approx(19 / 64)


def test_apc_weights_and_covariance_by_hand():
    assert np.allclose(M.apc(np.ones((4, 4)) - np.eye(4)), 0.0)
    msa = np.stack([encode(s) for s in ["AAAA", "AAAA", "AAAC", "CCCC"]])
    assert M.sequence_weights(msa).tolist() == pytest.approx([1 / 2, 1 / 2, 1.0, 1.0])  # AAAC is 75 % AAAA
    assert M.sequence_weights(msa, identity=0.75).tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0])
    rng = np.random.default_rng(0)
    msa = rng.integers(0, 20, (300, 12))
    msa[:, 9] = (msa[:, 2] + 1) % 20  # columns 2 and 9 covary perfectly
    for method in ("covariance", "mfdca"):
        scores = M.covariance_contacts(msa, method=method)
        assert np.allclose(scores, scores.T) and np.unravel_index(np.argmax(scores), scores.shape) in {(2, 9), (9, 2)}


def test_lddt_by_hand_and_alphafold():
    true = torch.tensor([[0.0, 0, 0], [3, 0, 0], [6, 0, 0]])
    pred = torch.tensor([[0.0, 0, 0], [3, 0, 0], [7.5, 0, 0]])
    assert M.lddt(pred, true).item() == pytest.approx(4 / 6, abs=1e-6)  # pairs: |Δd| 0, 1.5, 1.5
    assert M.lddt(pred, true, per_residue=True).tolist() == pytest.approx([0.75, 0.75, 0.5], abs=1e-6)
    assert M.lddt(true, true).item() == pytest.approx(1.0)
    far = torch.tensor([[0.0, 0, 0], [3, 0, 0], [30, 0, 0]])
    assert M.lddt(far, far * 1.05).item() == pytest.approx(1.0)  # the 27 and 30 Å pairs are beyond 15 Å
    mask = torch.tensor([1.0, 1.0, 0.0])
    assert M.lddt(pred, true, mask).item() == pytest.approx(1.0)
    batch = M.lddt(torch.stack([pred, true]), torch.stack([true, true]))
    assert batch.shape == (2,) and batch[1] == pytest.approx(1.0)


def test_kabsch_rmsd():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(10, 3)) * 5)
    q, _ = torch.linalg.qr(torch.from_numpy(rng.normal(size=(3, 3))))
    rot = q * torch.sign(torch.linalg.det(q))
    assert M.kabsch_rmsd(x @ rot.T + 7.0, x).item() == pytest.approx(0.0, abs=1e-5)
    mirror = x * torch.tensor([1.0, 1.0, -1.0])
    assert M.kabsch_rmsd(mirror, x).item() > 1.0
    assert M.kabsch_rmsd(mirror, x, allow_reflection=True).item() == pytest.approx(0.0, abs=1e-5)
    two = torch.tensor([[0.0, 0, 0], [2, 0, 0]])
    assert M.kabsch_rmsd(two * 2, two).item() == pytest.approx(1.0)  # centred: ±1 vs ±2


def test_structure_from_contacts_beats_an_extended_chain():
    fam = protein_families(1, seed=0, split="test", length=40, depth=1)[0]
    guess = M.structure_from_contacts(fam.contacts)
    extended = np.zeros((40, 3))
    extended[:, 0] = 3.8 * np.arange(40)
    assert M.lddt(guess, fam.coords).item() > 0.5 > M.lddt(extended, fam.coords).item() + 0.2
    line = M.structure_from_contacts(np.zeros((5, 5)))  # no contacts: a straight 3.8 Å chain
    np.testing.assert_allclose(np.diag(distance_matrix(line), 1), 3.8, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# PDB
# ---------------------------------------------------------------------------------------------


def test_ca_pdb_columns(tmp_path):
    coords = np.array([[1.0, -2.5, 3.25], [-123.456, 45.6789, 0.0], [9999.9, -999.0, 1.0]])
    text = ca_pdb(coords, "AXW", b_factors=[90.5, 12.0, 100.0], conect=True)
    lines = text.splitlines()
    assert all(len(line) == 80 for line in lines)
    atom = lines[1]
    assert atom[0:6] == "ATOM  " and atom[6:11] == "    2" and atom[12:16] == " CA " and atom[17:20] == "UNK"
    assert atom[21] == "A" and atom[22:26] == "   2" and atom[30:38] == "-123.456" and atom[38:46] == "  45.679"
    assert atom[46:54] == "   0.000" and atom[54:60] == "  1.00" and atom[60:66] == " 12.00" and atom[76:78] == " C"
    assert lines[0][17:20] == "ALA" and lines[2][17:20] == "TRP" and lines[2][30:38] == "9999.900"
    assert lines[2][60:66] == "100.00"
    assert lines[3].startswith("TER       4      TRP A   3")
    assert lines[4].rstrip() == "CONECT    1    2" and lines[5].rstrip() == "CONECT    2    1    3"
    assert lines[-1].rstrip() == "END"
    parsed = np.array([[float(line[k : k + 8]) for k in (30, 38, 46)] for line in lines if line.startswith("ATOM")])
    np.testing.assert_allclose(parsed, coords, atol=5e-4)
    fam = protein_families(1, seed=0, length=12, depth=1)[0]
    write_ca_pdb(tmp_path / "x.pdb", torch.tensor(fam.coords), torch.tensor(fam.aatype), chain="B")
    assert (tmp_path / "x.pdb").read_text().splitlines()[0][21] == "B"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"sequence": "AA"}, "expected 3 residues"),
    ({"coords": np.full((3, 3), 1e5)}, r"coords: expected finite values in \[-999.999, 9999.999\]"),
    ({"b_factors": [1000, 0, 0]}, "b_factors: expected finite values"),
    ({"chain": "AB"}, "chain: expected one letter"),
])
def test_ca_pdb_refuses_what_the_columns_cannot_hold(kwargs, message):
    args = {"coords": np.zeros((3, 3)), "sequence": "AAA"} | kwargs
    with pytest.raises(ValueError, match=message):
        ca_pdb(args.pop("coords"), args.pop("sequence"), **args)

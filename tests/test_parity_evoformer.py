"""The Evoformer trunk against DeepMind's JAX AlphaFold2 (``alphafold==2.0.0``), module by module and
as a whole, from the golden files of ``scripts/alphafold_goldens.py`` (``tests/goldens/evoformer``:
perturbed Haiku parameters, inputs with masked entries, outputs), loaded through our converter;
and the triangle modules against transformers' ESMFold implementation."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch

from tatlas.models.evoformer import convert as cv
from tatlas.models.evoformer import embed, heads, templates, trunk
from tatlas.models.evoformer.config import BlockConfig, TemplateConfig
from tatlas.nn import Attention, GlobalAttention

GOLDENS = pathlib.Path(__file__).parent / "goldens" / "evoformer"
BLOCK = BlockConfig(msa_heads=2, pair_heads=2, transition_factor=2, outer_channels=4, triangle_channels=8)
TEMPLATE = TemplateConfig(pair_dim=8, blocks=1, heads=2, triangle_channels=8, attention_heads=2, attention_dim=8,
                          use_unit_vector=True)


def golden(name: str):
    z = np.load(GOLDENS / f"{name}.npz")
    params = {k[len("param:"):]: z[k] for k in z.files if k.startswith("param:")}
    inputs = {k[len("input:"):]: torch.from_numpy(z[k]) for k in z.files if k.startswith("input:")}
    outputs = {k[len("output:"):]: torch.from_numpy(z[k]) for k in z.files if k.startswith("output:")}
    return params, inputs, outputs, json.loads(str(z["config"]))


def close(got: torch.Tensor, want: torch.Tensor, tol: float = 1e-4) -> None:
    """Within ``tol`` of the reference, relative to its scale where values are large (the outer product
    mean's bias over ~1e-3 on padded pairs reaches the hundreds in AlphaFold2 itself)."""
    scale = want.abs().clamp(min=1.0)
    err = ((got - want).abs() / scale).max().item()
    assert err <= tol, f"max scaled difference {err:.2e} > {tol:.0e}"


def loaded(module, params, scope):
    return cv.load_module(module, params, scope).eval()


@torch.no_grad()
def test_attention_and_global_attention():
    params, x, y, _ = golden("attention")
    attn = loaded(Attention(dim=16, heads=2, head_dim=4, kv_dim=8, qkv_bias=False, out_bias=True, gate=True),
                  params, "attention")
    close(attn(x["q_data"], x["m_data"], bias=x["bias"] + x["nonbatched_bias"]), y["out"])
    params, x, y, _ = golden("global_attention")
    g = loaded(GlobalAttention(dim=8, heads=2), params, "attention")
    close(g(x["q_data"], x["q_mask"][..., 0]), y["out"])


@torch.no_grad()
def test_msa_attentions_and_transitions(monkeypatch):
    params, x, y, _ = golden("msa_row_attention_with_pair_bias")
    m = loaded(trunk.MSARowAttentionWithPairBias(msa_dim=16, pair_dim=16, heads=2), params,
               "msa_row_attention_with_pair_bias")
    close(m(x["msa_act"], x["msa_mask"], x["pair_act"]), y["out"])
    close(m(x["msa_act"], x["msa_mask"], x["pair_act"], chunk_size=2), y["out"])
    params, x, y, _ = golden("msa_column_attention")
    m = loaded(trunk.MSAColumnAttention(msa_dim=16, heads=2), params, "msa_column_attention")
    close(m(x["msa_act"], x["msa_mask"]), y["out"])
    close(m(x["msa_act"], x["msa_mask"], chunk_size=5), y["out"])
    params, x, y, _ = golden("msa_column_global_attention")
    m = loaded(trunk.MSAColumnGlobalAttention(msa_dim=8, heads=2), params, "msa_column_global_attention")
    close(m(x["msa_act"], x["msa_mask"]), y["out"])
    close(m(x["msa_act"], x["msa_mask"], chunk_size=5), y["out"])
    for name in ("msa_transition", "pair_transition"):
        params, x, y, _ = golden(name)
        m = loaded(trunk.Transition(dim=16, factor=2), params, name)
        close(m(x["act"]), y["out"])
        close(m(x["act"], chunk_size=2), y["out"])
        with monkeypatch.context() as p:  # the inference path's cache-sized slices, made one index each
            p.setattr("tatlas.nn.chunk.CACHE_BYTES", 1)
            assert torch.equal(m(x["act"]), m(x["act"], chunk_size=1))
            close(m(x["act"]), y["out"])


def test_transition_runs_in_cache_sized_slices_with_the_same_result(monkeypatch, gen):
    t = trunk.Transition(dim=16, factor=4)
    z = torch.randn(1, 24, 24, 16, generator=gen)
    with torch.no_grad():
        want = t.fc2(torch.relu(t.fc1(t.norm(z))))  # the whole at once
    monkeypatch.setattr("tatlas.nn.chunk.CACHE_BYTES", 64 * 4 * 120)  # 120 of the 576 rows a slice
    seen = []
    monkeypatch.setattr(t.fc1, "forward", lambda x, f=t.fc1.forward: seen.append(x.shape[0]) or f(x))
    with torch.no_grad():
        got = t(z)
    assert seen == [120, 120, 120, 120, 96] and torch.equal(got, want)
    # with gradients the same slices (through the autograd function), the same forward result
    z.requires_grad_()
    got = t(z)
    assert got.grad_fn is not None and torch.equal(got.detach(), want)


@torch.no_grad()
def test_outer_product_mean_chunked_and_not(monkeypatch):
    for name in ("outer_product_mean", "outer_product_mean_chunked"):
        params, x, y, _ = golden(name)
        m = loaded(trunk.OuterProductMean(msa_dim=16, pair_dim=16, channels=4), params, "outer_product_mean")
        for chunk in (None, 3, 5):
            close(m(x["act"], x["mask"], chunk_size=chunk), y["out"])
        with monkeypatch.context() as p:  # the inference path's cache-sized slices, made one residue each
            p.setattr("tatlas.nn.chunk.CACHE_BYTES", 1)
            seen = []
            p.setattr(m.out, "forward", lambda x, f=m.out.forward: seen.append(x.shape[-3]) or f(x))
            got = m(x["act"], x["mask"])
            assert set(seen) == {1} and len(seen) == x["act"].shape[-2]
            p.setattr("tatlas.nn.chunk.CACHE_BYTES", 10**9)
            assert torch.equal(got, m(x["act"], x["mask"]))
            close(got, y["out"])


@torch.no_grad()
@pytest.mark.parametrize("name,cls", [
    ("triangle_multiplication_outgoing", trunk.TriangleMultiplicationOutgoing),
    ("triangle_multiplication_incoming", trunk.TriangleMultiplicationIncoming),
])
def test_triangle_multiplications(name, cls):
    params, x, y, _ = golden(name)
    m = loaded(cls(pair_dim=16, channels=8), params, name)
    for chunk in (None, 1, 3):  # chunked: one side whole, the other and the output a few rows at a time
        close(m(x["pair_act"], x["pair_mask"], chunk_size=chunk), y["out"])


@torch.no_grad()
@pytest.mark.parametrize("name,cls", [
    ("triangle_attention_starting_node", trunk.TriangleAttentionStartingNode),
    ("triangle_attention_ending_node", trunk.TriangleAttentionEndingNode),
])
def test_triangle_attentions(name, cls):
    params, x, y, _ = golden(name)
    m = loaded(cls(pair_dim=16, heads=2), params, name)
    close(m(x["pair_act"], x["pair_mask"]), y["out"])
    close(m(x["pair_act"], x["pair_mask"], chunk_size=5), y["out"])


@torch.no_grad()
@pytest.mark.parametrize("name,extra", [("evoformer_iteration", False), ("extra_msa_iteration", True)])
def test_evoformer_iterations(name, extra):
    params, x, y, _ = golden(name)
    scope = "extra_msa_stack" if extra else "evoformer_iteration"
    block = loaded(trunk.evoformer_block(8 if extra else 16, 16, BLOCK, extra=extra), params, scope)
    for chunk in (None, 4):
        msa, pair = block(x["msa"], x["pair"], x["msa_mask"], x["pair_mask"], chunk_size=chunk)
        close(msa, y["msa"])
        close(pair, y["pair"])
    # with a leading batch dimension: the same numbers
    msa, pair = block(*(t[None] for t in (x["msa"], x["pair"], x["msa_mask"], x["pair_mask"])))
    close(msa[0], y["msa"])
    close(pair[0], y["pair"])


def _template_features(x) -> templates.TemplateFeatures:
    return templates.TemplateFeatures(
        aatype=x["template_aatype"], atom_positions=x["template_all_atom_positions"],
        atom_mask=x["template_all_atom_masks"], pseudo_beta=x["template_pseudo_beta"],
        pseudo_beta_mask=x["template_pseudo_beta_mask"], mask=x["template_mask"])


@torch.no_grad()
def test_template_pair_stack_and_embedding():
    params, x, y, _ = golden("template_pair_stack")
    stack = torch.nn.ModuleList([trunk.TemplatePairBlock(pair_dim=8, heads=2, channels=8, factor=2, dropout=0.0)])
    stack = loaded(stack, params, "template_pair_stack/__layer_stack_no_state")
    out = x["pair_act"]
    for block in stack:
        out = block(out, x["pair_mask"])
    close(out, y["out"])
    params, x, y, _ = golden("template_embedding")
    m = loaded(templates.TemplateEmbedder(pair_dim=16, cfg=TEMPLATE, block=BLOCK), params, "template_embedding")
    close(m(x["query_embedding"], _template_features(x), x["mask_2d"]), y["out"])
    close(m(x["query_embedding"], _template_features(x), x["mask_2d"], chunk_size=5), y["out"])


@torch.no_grad()
def test_dgram_and_heads():
    _, x, y, _ = golden("dgram_from_positions")
    assert torch.equal(embed.dgram_from_positions(x["positions"], 15, 3.25, 20.75), y["dgram"])
    assert torch.equal(embed.dgram_from_positions(x["positions"], 39, 3.25, 50.75), y["dgram_template"])
    params, x, y, _ = golden("distogram_head")
    head = loaded(heads.DistogramHead(pair_dim=16, bins=64, first=2.3125, last=21.6875), params, "distogram_head")
    close(head(x["pair"]), y["logits"])
    close(head.edges, y["bin_edges"])
    params, x, y, _ = golden("masked_msa_head")
    close(loaded(heads.MaskedMsaHead(msa_dim=16), params, "masked_msa_head")(x["msa"]), y["logits"])


def tiny_af2_config(structure=None):
    from tatlas.models.evoformer.config import EvoformerConfig

    return EvoformerConfig(msa_dim=16, pair_dim=16, extra_msa_dim=8, single_dim=16, blocks=2, extra_blocks=1,
                           block=BLOCK, max_relative=8, recycles=0, template=TEMPLATE, structure=structure)


@torch.no_grad()
def test_whole_trunk_equals_embeddings_and_evoformer():
    """Input and recycling embedders, templates, the extra-MSA stack and the Evoformer stack, and the
    single representation: AlphaFold2's ``EmbeddingsAndEvoformer`` end to end."""
    from tatlas.models.evoformer.model import Evoformer, Recycled

    params, x, y, _ = golden("embeddings_and_evoformer")
    model = Evoformer(tiny_af2_config()).eval()
    params = dict(params)
    state = {}
    trunk_children = [c for c in cv.CHILDREN[type(model)] if c not in ("distogram", "masked_msa", "structure")]
    for child in trunk_children:
        sub = cv.CHILDREN[type(model)][child]
        state |= {f"{child}.{k}": v for k, v in cv.convert(getattr(model, child), params, sub).items()}
    assert not params, f"parameters no rule read: {sorted(params)[:5]}"
    missing = {k for k in model.state_dict() if k.split(".")[0] in trunk_children} - set(state)
    assert not missing
    model.load_state_dict(state, strict=False)
    recycled = Recycled(x["prev_msa_first_row"], x["prev_pair"], embed.pseudo_beta(x["aatype"], x["prev_pos"]))
    feats = {k: x[k] for k in ("target_feat", "msa_feat", "residue_index", "seq_mask", "msa_mask", "extra_msa",
                               "extra_has_deletion", "extra_deletion_value", "extra_msa_mask")}
    for chunk in (None, 4):
        out = model(**feats, templates=_template_features(x), recycled=recycled, chunk_size=chunk)
        close(out.msa, y["msa"])
        close(out.pair, y["pair"])
        close(out.single, y["single"])
        close(out.recycled.msa_first_row, y["msa_first_row"])


# ------------------------------------------------------------------------------ transformers' ESMFold


def _esm_copy(theirs: torch.nn.Module, ours: torch.nn.Module, names: dict[str, str], gen) -> None:
    """Perturb every parameter of ESMFold's module (its gates and final layers start at zero), then
    copy them into ours by ``names`` (theirs -> ours)."""
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_(0.0, 0.3, generator=gen)
    state = {names[k.rsplit(".", 1)[0]] + "." + k.rsplit(".", 1)[1]: v for k, v in theirs.state_dict().items()}
    ours.load_state_dict(state, strict=True)


@torch.no_grad()
@pytest.mark.parametrize("outgoing", [True, False])
def test_triangle_multiplication_equals_esmfold(outgoing, gen):
    from types import SimpleNamespace

    from transformers.models.esm.modeling_esmfold import EsmFoldTriangleMultiplicativeUpdate

    theirs = EsmFoldTriangleMultiplicativeUpdate(SimpleNamespace(pairwise_state_dim=16), _outgoing=outgoing).eval()
    cls = trunk.TriangleMultiplicationOutgoing if outgoing else trunk.TriangleMultiplicationIncoming
    ours = cls(pair_dim=16, channels=16).eval()
    # ESMFold's incoming update sums a[k, i] b[k, j]; AlphaFold2's (ours) left[k, j] right[k, i]: the same
    # module with its two projections' roles swapped
    left, right = ("left", "right") if outgoing else ("right", "left")
    _esm_copy(theirs, ours, {"linear_a_p": left, "linear_a_g": f"{left}_gate", "linear_b_p": right,
                             "linear_b_g": f"{right}_gate", "linear_g": "gate", "linear_z": "out",
                             "layer_norm_in": "norm_in", "layer_norm_out": "norm_out"}, gen)
    z = torch.randn(2, 9, 9, 16, generator=gen)
    mask = (torch.rand(2, 9, 9, generator=gen) > 0.2).float()
    torch.testing.assert_close(ours(z, mask), theirs(z, mask), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours(z, mask, chunk_size=4), theirs(z, mask), atol=1e-4, rtol=1e-4)


@torch.no_grad()
@pytest.mark.parametrize("starting", [True, False])
def test_triangle_attention_equals_esmfold(starting, gen):
    from transformers.models.esm.modeling_esmfold import EsmFoldTriangleAttention

    theirs = EsmFoldTriangleAttention(16, 8, 2, starting=starting).eval()
    cls = trunk.TriangleAttentionStartingNode if starting else trunk.TriangleAttentionEndingNode
    ours = cls(pair_dim=16, heads=2).eval()
    _esm_copy(theirs, ours, {"layer_norm": "norm", "linear": "pair_bias", "mha.linear_q": "attn.q",
                             "mha.linear_k": "attn.k", "mha.linear_v": "attn.v", "mha.linear_o": "attn.out",
                             "mha.linear_g": "attn.gate"}, gen)
    z = torch.randn(2, 9, 9, 16, generator=gen)
    mask = (torch.rand(2, 9, 9, generator=gen) > 0.2).float()
    torch.testing.assert_close(ours(z, mask), theirs(z, mask), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours(z, mask, chunk_size=4), theirs(z, mask, chunk_size=4), atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_published_parameter_file_loads_with_its_config_read_from_shapes(tmp_path):
    """A file in the layout of DeepMind's ``params_model_*.npz`` (here the goldens' JAX-made
    parameters under ``alphafold/alphafold_iteration/``, plus the confidence-head parameters this port
    does not build) loads through ``tatlas.load(..., format="alphafold2")``: the config is read from the
    shapes, and the trunk it builds equals AlphaFold2's."""
    import dataclasses

    import tatlas
    from tatlas.models.evoformer.config import StructureConfig
    from tatlas.models.evoformer.convert import PUBLISHED, from_alphafold_params
    from tatlas.models.evoformer.model import Evoformer, Recycled

    flat = {}
    for name in ("embeddings_and_evoformer", "distogram_head", "masked_msa_head", "structure_module"):
        flat |= {f"{PUBLISHED}/{k}": v for k, v in golden(name)[0].items()}
    flat[f"{PUBLISHED}/predicted_lddt_head/logits//weights"] = np.zeros((16, 50), np.float32)
    np.savez(tmp_path / "params_model_tiny.npz", **flat)
    config, state = from_alphafold_params(tmp_path / "params_model_tiny.npz")
    structure = StructureConfig(dim=16, layers=8, heads=2, scalar_qk=4, scalar_v=4, point_qk=2, point_v=2,
                                transition_layers=2, angle_dim=8, angle_blocks=1)
    want = tiny_af2_config(structure)
    # what the shapes cannot say keeps model_1's values: recycles, the unit-vector switch, the layer count
    assert config == dataclasses.replace(want, recycles=config.recycles,
                                         template=dataclasses.replace(TEMPLATE, use_unit_vector=False))
    model = tatlas.load(tmp_path / "params_model_tiny.npz", format="alphafold2").eval()
    assert isinstance(model, Evoformer)
    unit = Evoformer(dataclasses.replace(config, template=TEMPLATE)).eval()
    unit.load_state_dict(state)
    _, x, y, _ = golden("embeddings_and_evoformer")
    recycled = Recycled(x["prev_msa_first_row"], x["prev_pair"], embed.pseudo_beta(x["aatype"], x["prev_pos"]))
    feats = {k: x[k] for k in ("target_feat", "msa_feat", "residue_index", "seq_mask", "msa_mask", "extra_msa",
                               "extra_has_deletion", "extra_deletion_value", "extra_msa_mask")}
    out = unit(**feats, templates=_template_features(x), recycled=recycled)
    close(out.pair, y["pair"])
    close(out.single, y["single"])
    with pytest.raises(Exception, match="not a NumPy .npy or .npz file"):
        (tmp_path / "bad.npz").write_text("nope")
        tatlas.load(tmp_path / "bad.npz", format="alphafold2")

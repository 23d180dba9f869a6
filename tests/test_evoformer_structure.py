"""AlphaFold2's structure module: rigid frames, invariant point attention (its invariance), the fold
iteration, the whole trajectory and FAPE, against DeepMind's JAX code (golden files written by
``scripts/alphafold_goldens.py``, see ``tests/goldens/evoformer/README.md``) and against
transformers' ESMFold IPA."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from parity import assert_close, perturb_
from transformers.models.esm.configuration_esm import StructureModuleConfig
from transformers.models.esm.modeling_esmfold import EsmFoldInvariantPointAttention
from transformers.models.esm.openfold_utils.rigid_utils import Rigid as EsmRigid
from transformers.models.esm.openfold_utils.rigid_utils import Rotation

from tatlas.io import CheckpointError, KeyMap, Rename, load_state_strict
from tatlas.models.evoformer.config import PRESETS, StructureConfig
from tatlas.models.evoformer.convert_structure import convert_structure, load_structure
from tatlas.models.evoformer.structure import (
    FoldIteration,
    StructureModule,
    backbone_fape,
    angle_norm_loss,
    backbone_loss,
    fape_loss,
)
from tatlas.nn.frames import Rigid, quat_multiply, quat_to_rot, rot_to_quat
from tatlas.nn.ipa import InvariantPointAttention

pytestmark = pytest.mark.usefixtures("one_thread")

GOLDENS = Path(__file__).parent / "goldens" / "evoformer"
CFG: StructureConfig = PRESETS["tiny"].structure  # the goldens' sizes: c_s = c_z = 16
ATOL = 1e-4


def golden(name: str) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Parameters, inputs and outputs of a golden file (missing file: the test fails)."""
    data = np.load(GOLDENS / f"{name}.npz")
    params = {k.removeprefix("param:"): data[k] for k in data.files if k.startswith("param:")}
    inputs = {k.removeprefix("input:"): torch.from_numpy(data[k]) for k in data.files if k.startswith("input:")}
    outputs = {k.removeprefix("output:"): torch.from_numpy(data[k]) for k in data.files if k.startswith("output:")}
    return params, inputs, outputs


def ipa(**overrides) -> InvariantPointAttention:
    sizes = {"dim": 16, "pair_dim": 16, "heads": CFG.heads, "scalar_qk": CFG.scalar_qk, "scalar_v": CFG.scalar_v,
             "point_qk": CFG.point_qk, "point_v": CFG.point_v} | overrides
    return InvariantPointAttention(**sizes)


def random_frames(shape, gen) -> Rigid:
    return Rigid.from_quaternion(torch.randn(*shape, 4, generator=gen), 3 * torch.randn(*shape, 3, generator=gen))


# --- frames -----------------------------------------------------------------------------------

def test_quaternion_to_rotation_known_values():
    s = math.sqrt(0.5)
    cases = {
        (1.0, 0.0, 0.0, 0.0): torch.eye(3),
        (s, 0.0, 0.0, s): torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]),  # +90 deg about z
        (s, s, 0.0, 0.0): torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]),  # +90 deg about x
        (0.0, 0.0, 1.0, 0.0): torch.diag(torch.tensor([-1.0, 1, -1])),  # 180 deg about y
        (2.0, 0.0, 0.0, 0.0): torch.eye(3),  # normalised first, as QuatAffine(normalize=True)
    }
    for quat, rot in cases.items():
        frame = Rigid.from_quaternion(torch.tensor(quat), torch.zeros(3))
        torch.testing.assert_close(frame.rot, rot, atol=1e-6, rtol=0)
    # unnormalised, as QuatAffine.from_tensor: the quaternion's squared norm scales the matrix
    torch.testing.assert_close(quat_to_rot(torch.tensor([2.0, 0, 0, 0])), 4 * torch.eye(3))


def test_quaternion_convention_against_alphafold_affines():
    """The rotations DeepMind's QuatAffine made from the golden file's quaternions."""
    _, inputs, _ = golden("backbone_fape")
    for side in ("pred", "target"):
        frames = Rigid.from_tensor_7(inputs[f"{side}_affine"])
        torch.testing.assert_close(frames.rot, inputs[f"{side}_frames_rot"], atol=1e-6, rtol=0)
        torch.testing.assert_close(frames.trans, inputs[f"{side}_frames_trans"])


def test_quaternions_multiply_as_rotations_and_round_trip(gen):
    q1, q2 = torch.randn(2, 50, 4, generator=gen).unbind(0)
    q1, q2 = q1 / q1.norm(dim=-1, keepdim=True), q2 / q2.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(quat_to_rot(quat_multiply(q1, q2)), quat_to_rot(q1) @ quat_to_rot(q2), atol=1e-5, rtol=0)
    back = rot_to_quat(quat_to_rot(q1))
    back = back * torch.sign((back * q1).sum(-1, keepdim=True))  # q and -q: one rotation
    torch.testing.assert_close(back, q1, atol=1e-5, rtol=0)
    frames = random_frames((50,), gen)
    torch.testing.assert_close(Rigid.from_tensor_7(frames.to_tensor_7()).rot, frames.rot)
    no_quat = Rigid(frames.rot, frames.trans)
    torch.testing.assert_close(Rigid.from_tensor_7(no_quat.to_tensor_7()).rot, frames.rot, atol=1e-5, rtol=0)


def test_compose_invert_apply_round_trips(gen):
    a, b = random_frames((4, 6), gen), random_frames((4, 6), gen)
    x = torch.randn(4, 6, 3, generator=gen)
    torch.testing.assert_close(a.invert_apply(a.apply(x)), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.invert().apply(x), a.invert_apply(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(a.compose(b).apply(x), a.apply(b.apply(x)), atol=1e-5, rtol=0)
    ident = a.compose(a.invert())
    torch.testing.assert_close(ident.rot, torch.eye(3).expand(4, 6, 3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(ident.trans, torch.zeros(4, 6, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(quat_to_rot(a.compose(b).quat), a.rot @ b.rot, atol=1e-5, rtol=0)
    # broadcasting points over a new axis, as IPA and FAPE do
    pts = torch.randn(4, 6, 5, 3, generator=gen)
    torch.testing.assert_close(a.unsqueeze(-1).apply(pts)[:, :, 2], a.apply(pts[:, :, 2]))
    assert Rigid.stack([a, b], dim=-1).shape == (4, 6, 2) and Rigid.stack([a, b]).shape == (2, 4, 6)
    torch.testing.assert_close(Rigid.stack([a, b])[1].rot, b.rot)
    torch.testing.assert_close(a[..., 3].trans, a.trans[:, 3])


def test_pre_compose_is_alg23(gen):
    frames = random_frames((8,), gen)
    update = torch.randn(8, 6, generator=gen)
    new = frames.pre_compose(update)
    step = Rigid.from_quaternion(torch.cat([torch.ones(8, 1), update[:, :3]], dim=-1), update[:, 3:])
    expected = frames.compose(step)
    torch.testing.assert_close(new.rot, expected.rot, atol=1e-5, rtol=0)
    torch.testing.assert_close(new.trans, expected.trans, atol=1e-5, rtol=0)
    torch.testing.assert_close(new.quat.norm(dim=-1), torch.ones(8))
    same = frames.pre_compose(torch.zeros(8, 6))
    torch.testing.assert_close(same.to_tensor_7(), frames.to_tensor_7())
    matrices = Rigid(frames.rot, frames.trans).pre_compose(update)  # no quaternion: composed as matrices
    torch.testing.assert_close(matrices.rot, new.rot, atol=1e-5, rtol=0)


# ideal backbone of a residue in its frame (AlphaFold's rigid_group_atom_positions, alanine)
IDEAL_N, IDEAL_CA, IDEAL_C = torch.tensor([-0.525, 1.363, 0.0]), torch.zeros(3), torch.tensor([1.526, 0.0, 0.0])


def test_from_3_points_recovers_the_frame(gen):
    frames = random_frames((3, 7), gen)
    n, ca, c = (frames.apply(p.expand(3, 7, 3)) for p in (IDEAL_N, IDEAL_CA, IDEAL_C))
    built = Rigid.from_3_points(n, ca, c)
    torch.testing.assert_close(built.rot, frames.rot, atol=1e-5, rtol=0)
    torch.testing.assert_close(built.trans, frames.trans)
    rot = built.rot
    torch.testing.assert_close(rot @ rot.transpose(-1, -2), torch.eye(3).expand_as(rot), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(3, 7), atol=1e-5, rtol=0)


def test_from_3_points_orientation_and_gram_schmidt(gen):
    n, ca, c = torch.randn(3, 20, 3, generator=gen).unbind(0)
    frames = Rigid.from_3_points(n, ca, c)
    local_c, local_n = frames.invert_apply(c), frames.invert_apply(n)
    assert (local_c[:, 0] > 0).all() and (local_n[:, 1] > 0).all()  # C on +x, N on the +y side
    torch.testing.assert_close(local_c[:, 1:], torch.zeros(20, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(local_n[:, 2], torch.zeros(20), atol=1e-5, rtol=0)
    e1 = (c - ca) / (c - ca).norm(dim=-1, keepdim=True)  # Alg. 21 by Gram-Schmidt
    u2 = (n - ca) - e1 * ((n - ca) * e1).sum(-1, keepdim=True)
    e2 = u2 / u2.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(frames.rot, torch.stack([e1, e2, torch.cross(e1, e2, dim=-1)], dim=-1),
                               atol=1e-5, rtol=0)
    assert torch.isfinite(Rigid.from_3_points(*torch.zeros(3, 4, 3)).rot).all()  # missing atoms


def test_rigid_refuses_bad_shapes():
    with pytest.raises(ValueError, match=r"expected rot \[\*, 3, 3\]"):
        Rigid(torch.zeros(4, 3, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"expected an update \[\*, 6\]"):
        Rigid.identity((4,)).pre_compose(torch.zeros(4, 7))


# --- invariant point attention -----------------------------------------------------------------

def test_ipa_is_invariant_to_a_global_rigid_motion(gen):
    torch.manual_seed(0)
    module = perturb_(ipa(point_qk=3, point_v=4), std=0.3).eval()
    s, z = torch.randn(2, 9, 16, generator=gen), torch.randn(2, 9, 9, 16, generator=gen)
    mask = (torch.rand(2, 9, generator=gen) > 0.2).float()
    frames, motion = random_frames((2, 9), gen), random_frames((), gen)
    moved = motion.unsqueeze(0).unsqueeze(0).compose(frames)
    out = module(s, z, frames, mask)
    torch.testing.assert_close(module(s, z, moved, mask), out, atol=1e-4, rtol=1e-4)
    assert (module(s, z, Rigid.identity((2, 9)), mask) - out).abs().max() > 1e-2  # the frames matter
    torch.testing.assert_close(module(s[1], z[1], frames[1], mask[1]), out[1], atol=1e-5, rtol=0)


def test_ipa_matches_alphafold():
    params, inputs, outputs = golden("invariant_point_attention")
    module = load_structure(ipa(), params, "invariant_point_attention")
    with torch.no_grad():
        out = module(inputs["inputs_1d"], inputs["inputs_2d"], Rigid.from_tensor_7(inputs["affine"]),
                     inputs["mask"][..., 0])
    assert_close(out, outputs["out"], atol=ATOL, what="IPA")


def test_ipa_matches_esmfold(gen):
    cfg = StructureModuleConfig(sequence_dim=16, pairwise_dim=8, ipa_dim=4, num_heads_ipa=3, num_qk_points=2,
                                num_v_points=3)
    ref = perturb_(EsmFoldInvariantPointAttention(cfg), std=0.3).eval()
    names = {"linear_q": "q", "linear_kv": "kv", "linear_q_points": "q_points", "linear_kv_points": "kv_points",
             "linear_b": "pair_bias", "linear_out": "out"}
    key_map = KeyMap((*(Rename(f"{a}.{w}", f"{b}.{w}") for a, b in names.items() for w in ("weight", "bias")),
                      Rename("head_weights", "point_weights")))
    ours = load_state_strict(ipa(pair_dim=8, heads=3, scalar_qk=4, scalar_v=4, point_qk=2, point_v=3),
                             key_map.convert(ref.state_dict())).eval()
    s, z = torch.randn(2, 7, 16, generator=gen), torch.randn(2, 7, 7, 8, generator=gen)
    mask = torch.ones(2, 7)
    mask[0, -2:] = 0
    frames = random_frames((2, 7), gen)
    with torch.no_grad():
        expected = ref(s, z, EsmRigid(Rotation(rot_mats=frames.rot), frames.trans), mask)
        assert_close(ours(s, z, frames, mask), expected, atol=ATOL, what="IPA vs ESMFold")


# --- fold iteration, structure module ----------------------------------------------------------

def test_fold_iteration_matches_alphafold():
    params, inputs, outputs = golden("fold_iteration")
    module = load_structure(FoldIteration(single_dim=16, pair_dim=16, config=CFG), params, "fold_iteration").eval()
    with torch.no_grad():
        act, frames, raw, angles = module(inputs["act"], inputs["initial_act"], inputs["static_feat_2d"],
                                          inputs["sequence_mask"][..., 0], Rigid.from_tensor_7(inputs["affine"]))
    assert_close(act, outputs["act"], atol=ATOL, what="act")
    assert_close(frames.to_tensor_7(), outputs["affine"], atol=ATOL, what="affine")
    assert_close(angles, outputs["sc/angles_sin_cos"], atol=ATOL, what="angles")
    assert_close(raw, outputs["sc/unnormalized_angles_sin_cos"], atol=ATOL, what="unnormalised angles")


def structure_module() -> StructureModule:
    return StructureModule(single_dim=16, pair_dim=16, config=CFG)


def test_structure_module_matches_alphafold():
    params, inputs, outputs = golden("structure_module")
    module = load_structure(structure_module(), params, "structure_module").eval()
    with torch.no_grad():
        out = module(inputs["single"], inputs["pair"], inputs["seq_mask"])
    assert_close(out.single, outputs["act"], atol=ATOL, what="act")
    assert_close(out.traj, outputs["traj"], atol=ATOL, what="traj (Å)")
    assert_close(out.frames.scale_translation(1 / CFG.position_scale).to_tensor_7(), outputs["affine"], atol=ATOL,
                 what="affine")
    assert_close(out.positions, outputs["traj"][..., 4:], atol=ATOL, what="Cα positions")
    assert_close(out.angles, outputs["sc/angles_sin_cos"], atol=ATOL, what="angles")
    assert_close(out.unnormalized_angles, outputs["sc/unnormalized_angles_sin_cos"], atol=ATOL, what="raw angles")


def test_published_scope_and_strict_conversion():
    params, _, _ = golden("structure_module")
    published = {f"alphafold/alphafold_iteration/{k}": v for k, v in params.items()}
    published["alphafold/alphafold_iteration/predicted_lddt_head/logits//bias"] = np.zeros(50, np.float32)
    scope = "alphafold/alphafold_iteration/structure_module"
    ours = convert_structure(structure_module(), published, scope)
    torch.testing.assert_close(ours, convert_structure(structure_module(), params, "structure_module"))
    extra = dict(params) | {"structure_module/fold_iteration/extra//weights": np.zeros(2, np.float32)}
    with pytest.raises(CheckpointError, match="extra//weights"):
        convert_structure(structure_module(), extra, "structure_module")
    deeper = StructureModule(single_dim=16, pair_dim=16, config=replace(CFG, transition_layers=3))
    with pytest.raises(CheckpointError, match="transition.2"):
        convert_structure(deeper, params, "structure_module")
    with pytest.raises(CheckpointError, match="nothing under"):
        convert_structure(structure_module(), params, "alphafold/structure_module")


def test_structure_module_batch_gradient_and_dropout(gen):
    torch.manual_seed(0)
    module = perturb_(structure_module(), std=0.2)
    single, pair = torch.randn(2, 6, 16, generator=gen), torch.randn(2, 6, 6, 16, generator=gen)
    mask = torch.ones(2, 6)
    mask[1, -1] = 0
    module.eval()
    out = module(single, pair, mask)
    assert out.frames.shape == (CFG.layers, 2, 6) and out.angles.shape == (CFG.layers, 2, 6, 7, 2)
    alone = module(single[1], pair[1], mask[1])
    torch.testing.assert_close(alone.traj, out.traj[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(module(single, pair, mask).traj, out.traj)  # eval: deterministic
    (out.positions.square().sum() + out.angles.sum() + out.single.sum()).backward()
    missing = [n for n, p in module.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"
    module.train()
    assert not torch.allclose(module(single, pair, mask).traj, out.traj)  # dropout only in training
    with pytest.raises(ValueError, match=r"expected pair \[\*, N_res, N_res, c_z\]"):
        module(single, pair[:, :5])
    with torch.device("meta"):
        assert structure_module()(torch.empty(6, 16), torch.empty(6, 6, 16)).positions.shape == (CFG.layers, 6, 3)


def test_rotations_carry_no_gradient_between_iterations(gen):
    """Alg. 20 line 21: the next iteration sees the frames' rotations as constants (translations not)."""
    module = perturb_(structure_module(), std=0.2).eval()
    single, pair = torch.randn(5, 16, generator=gen), torch.randn(5, 5, 16, generator=gen)
    weight = module.iteration.backbone_update.weight

    def last_positions_grad(detach: bool) -> torch.Tensor:
        initial = module.single_norm(single)
        act, z, frames = module.initial_projection(initial), module.pair_norm(pair), Rigid.identity((5,))
        for _ in range(CFG.layers):
            act, frames, _, _ = module.iteration(act, initial, z, torch.ones(5), frames)
            last, frames = frames, (frames.detach_rotation() if detach else frames)
        return torch.autograd.grad(last.trans.square().sum(), weight)[0]

    grad = torch.autograd.grad(module(single, pair).positions[-1].square().sum(), weight)[0]
    torch.testing.assert_close(grad / CFG.position_scale**2, last_positions_grad(True))
    assert (last_positions_grad(False) - last_positions_grad(True)).abs().max() > 1e-4


# --- FAPE --------------------------------------------------------------------------------------

def test_fape_matches_alphafold():
    _, inputs, outputs = golden("backbone_fape")
    for source in ("frames", "affine"):
        if source == "frames":
            pred = Rigid(inputs["pred_frames_rot"], inputs["pred_frames_trans"])
            target = Rigid(inputs["target_frames_rot"], inputs["target_frames_trans"])
        else:
            pred, target = Rigid.from_tensor_7(inputs["pred_affine"]), Rigid.from_tensor_7(inputs["target_affine"])
        for clamp, key in ((10.0, "fape"), (None, "fape_unclamped")):
            fape = fape_loss(pred, target, inputs["frames_mask"], inputs["pred_positions"], inputs["target_positions"],
                             inputs["positions_mask"], length_scale=10.0, clamp=clamp)
            assert_close(fape, outputs[key], atol=ATOL, what=f"{key} from {source}")


def test_backbone_loss_averages_the_trajectory(gen):
    module = perturb_(structure_module(), std=0.2).eval()
    out = module(torch.randn(2, 6, 16, generator=gen), torch.randn(2, 6, 6, 16, generator=gen))
    target, mask = random_frames((2, 6), gen), torch.ones(2, 6)
    mask[0, 0] = 0
    per_layer = torch.stack([fape_loss(out.frames[i], target, mask, out.positions[i], target.trans, mask,
                                       length_scale=CFG.fape_scale, clamp=CFG.fape_clamp) for i in range(CFG.layers)])
    torch.testing.assert_close(backbone_fape(out.frames, target, mask, clamp=CFG.fape_clamp,
                                             length_scale=CFG.fape_scale), per_layer)
    torch.testing.assert_close(backbone_loss(out, target, mask, CFG), per_layer.mean(0))
    unclamped = backbone_fape(out.frames, target, mask, clamp=None, length_scale=CFG.fape_scale)
    half = backbone_loss(out, target, mask, CFG, use_clamped=0.5)
    torch.testing.assert_close(half, 0.5 * (per_layer + unclamped).mean(0))
    itself = backbone_fape(target.unsqueeze(0), target, mask, clamp=10.0, length_scale=10.0)
    assert itself.max() < 2e-3  # sqrt(eps) / length_scale: a perfect prediction


def test_angle_norm_loss_is_zero_on_unit_vectors_and_masked(gen):
    module = perturb_(structure_module(), std=0.2).eval()
    out = module(torch.randn(2, 6, 16, generator=gen), torch.randn(2, 6, 6, 16, generator=gen))
    mask = torch.ones(2, 6)
    mask[1, 3:] = 0
    raw = out.unnormalized_angles  # [L, B, N, 7, 2]
    expected = ((raw.norm(dim=-1) - 1).abs().mean((0, -1)) * mask).sum(-1) / mask.sum(-1)
    torch.testing.assert_close(angle_norm_loss(out, mask), expected, atol=1e-5, rtol=1e-5)
    unit = replace(out, unnormalized_angles=out.angles)
    assert angle_norm_loss(unit, mask).abs().max() < 1e-5
    bad = raw.clone()
    bad[:, 1, 3:] = 100.0  # masked residues do not count
    assert torch.allclose(angle_norm_loss(replace(out, unnormalized_angles=bad), mask)[1], expected[1])

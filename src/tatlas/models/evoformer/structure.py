"""The structure module (Jumper et al. 2021, AlphaFold2 Supplement Alg. 20) and FAPE (Alg. 28), as
DeepMind's ``folding.generate_affines``, ``FoldIteration``, ``MultiRigidSidechain`` (its torsion-angle
head) and ``all_atom.frame_aligned_point_error`` / ``folding.backbone_loss`` compute them.

Every residue starts at the identity frame (Alg. 20 line 4, "black-hole initialisation"); ``layers``
iterations of one shared :class:`FoldIteration` then refine the single representation with
invariant point attention over the frames and update each frame (Alg. 23). Inside the module the
translations are in units of ``position_scale`` Å (nm for AlphaFold's 10); the outputs are in Å.
Between iterations the rotations carry no gradient (Alg. 20 line 21). Each iteration also predicts
seven torsion angles per residue as ``(sin, cos)`` pairs (Alg. 20 lines 11-14); building atom
positions from them (Alg. 24) is not part of this port.

Shapes: single ``[*, N_res, c_s]``, pair ``[*, N_res, N_res, c_z]``, mask ``[*, N_res]``; ``*`` is an
optional batch dimension; ``L`` is the number of iterations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...nn.frames import Rigid
from ...nn.init import initialise
from ...nn.ipa import InvariantPointAttention
from ...nn.mlp import MLP
from ...nn.norms import LayerNorm
from .config import StructureConfig

ANGLES = 7  # omega, phi, psi, chi1-4


@dataclass(frozen=True)
class StructureOutput:
    """The trajectory: per iteration the backbone frames (translations in Å) and the torsion angles;
    and the single representation after the last iteration."""

    frames: Rigid  # [L, *, N_res]
    angles: Tensor  # [L, *, N_res, 7, 2] (sin, cos), unit norm
    unnormalized_angles: Tensor  # [L, *, N_res, 7, 2]
    single: Tensor  # [*, N_res, C]

    @property
    def positions(self) -> Tensor:
        """Cα positions ``[L, *, N_res, 3]`` (Å): the frames' translations."""
        return self.frames.trans

    @property
    def traj(self) -> Tensor:
        """AlphaFold's ``traj``: the frames as QuatAffine tensors ``[L, *, N_res, 7]`` (Å)."""
        return self.frames.to_tensor_7()


class AngleResnet(nn.Module):
    """Alg. 20 lines 11-14 (the first half of ``MultiRigidSidechain``): ``relu`` then a linear map of
    the current and the initial single representations, summed; ``blocks`` residual blocks
    ``a + W2 relu(W1 relu(a))``; ``relu`` and a linear map to seven ``(sin, cos)`` pairs, returned raw
    and L2-normalised. ``act [*, N_res, C]``, ``initial [*, N_res, c_s]`` -> two ``[*, N_res, 7, 2]``."""

    def __init__(self, *, dim: int, initial_dim: int, hidden: int, blocks: int) -> None:
        super().__init__()
        self.input = initialise(nn.Linear(dim, hidden), "lecun")
        self.input_initial = initialise(nn.Linear(initial_dim, hidden), "lecun")
        self.blocks = nn.ModuleList(MLP(dim=hidden, hidden=hidden, act="relu") for _ in range(blocks))
        for block in self.blocks:
            initialise(block.fc1, "relu")
            initialise(block.fc2, "final")
        self.out = initialise(nn.Linear(hidden, 2 * ANGLES), "lecun")

    def forward(self, act: Tensor, initial: Tensor) -> tuple[Tensor, Tensor]:
        """``act [*, N_res, C]``, ``initial [*, N_res, c_s]`` -> raw and unit ``(sin, cos)`` ``[*, N_res, 7, 2]``."""
        a = self.input(F.relu(act)) + self.input_initial(F.relu(initial))  # [*, N_res, hidden]
        for block in self.blocks:
            a = a + block(F.relu(a))
        raw = self.out(F.relu(a)).unflatten(-1, (ANGLES, 2))  # [*, N_res, 7, 2]
        norm = torch.sqrt(torch.clamp(raw.square().sum(-1, keepdim=True), min=1e-12))
        return raw, raw / norm


class FoldIteration(nn.Module):
    """Alg. 20 lines 6-14 and Alg. 23: ``act = LN(dropout(act + IPA(act, z, T)))``; a transition of
    ``transition_layers`` linear maps (ReLU between) added back, then dropout and LN; the backbone
    update ``T <- T ∘ (1 + b i + c j + d k, t)`` from a linear map of ``act``; the torsion angles.

    ``act [*, N_res, C]``, ``initial [*, N_res, c_s]`` (the normalised single representation before
    the initial projection), ``pair [*, N_res, N_res, c_z]`` (normalised), ``mask [*, N_res]``,
    ``frames [*, N_res]`` (translations in units of ``position_scale``) -> the new ``act``, the new
    frames, and the raw and normalised angles ``[*, N_res, 7, 2]``.
    """

    def __init__(self, *, single_dim: int, pair_dim: int, config: StructureConfig) -> None:
        super().__init__()
        c = config
        self.ipa = InvariantPointAttention(dim=c.dim, pair_dim=pair_dim, heads=c.heads, scalar_qk=c.scalar_qk,
                                           scalar_v=c.scalar_v, point_qk=c.point_qk, point_v=c.point_v)
        self.dropout = nn.Dropout(c.dropout)
        self.ipa_norm = LayerNorm(c.dim)
        self.transition = nn.ModuleList(
            initialise(nn.Linear(c.dim, c.dim), "relu" if i < c.transition_layers - 1 else "final")
            for i in range(c.transition_layers))
        self.transition_norm = LayerNorm(c.dim)
        self.backbone_update = initialise(nn.Linear(c.dim, 6), "final")
        self.angles = AngleResnet(dim=c.dim, initial_dim=single_dim, hidden=c.angle_dim, blocks=c.angle_blocks)

    def forward(self, act: Tensor, initial: Tensor, pair: Tensor, mask: Tensor,
                frames: Rigid) -> tuple[Tensor, Rigid, Tensor, Tensor]:
        """Shapes in the class docstring; returns ``(act, frames, raw angles, angles)``."""
        act = self.ipa_norm(self.dropout(act + self.ipa(act, pair, frames, mask)))
        x = act
        for i, linear in enumerate(self.transition):
            x = linear(x) if i == len(self.transition) - 1 else F.relu(linear(x))
        act = self.transition_norm(self.dropout(act + x))
        frames = frames.pre_compose(self.backbone_update(act))
        raw, angles = self.angles(act, initial)
        return act, frames, raw, angles


class StructureModule(nn.Module):
    """Alg. 20: ``single [*, N_res, c_s]``, ``pair [*, N_res, N_res, c_z]``, ``mask [*, N_res]`` ->
    :class:`StructureOutput`. Parameters: ``single_norm``, ``initial_projection``, ``pair_norm`` and
    the one ``iteration`` (:class:`FoldIteration`) every layer shares."""

    def __init__(self, *, single_dim: int, pair_dim: int, config: StructureConfig) -> None:
        super().__init__()
        self.config = config
        self.single_norm = LayerNorm(single_dim)
        self.initial_projection = initialise(nn.Linear(single_dim, config.dim), "lecun")
        self.pair_norm = LayerNorm(pair_dim)
        self.iteration = FoldIteration(single_dim=single_dim, pair_dim=pair_dim, config=config)

    def forward(self, single: Tensor, pair: Tensor, mask: Tensor | None = None) -> StructureOutput:
        """See the class docstring; ``mask`` defaults to every residue present."""
        if pair.shape[:-1] != (*single.shape[:-1], single.shape[-2]):
            raise ValueError(f"StructureModule: expected pair [*, N_res, N_res, c_z] with single's [*, N_res] = "
                             f"{list(single.shape[:-1])}, got {list(pair.shape)}")
        mask = torch.ones_like(single[..., 0]) if mask is None else mask.to(single.dtype)
        initial = self.single_norm(single)
        act = self.initial_projection(initial)
        pair = self.pair_norm(pair)
        frames = Rigid.identity(act.shape[:-1], dtype=act.dtype, device=act.device)
        trajectory, raws, angles = [], [], []
        for _ in range(self.config.layers):
            act, frames, raw, angle = self.iteration(act, initial, pair, mask, frames)
            trajectory.append(frames.scale_translation(self.config.position_scale))
            raws.append(raw)
            angles.append(angle)
            frames = frames.detach_rotation()
        return StructureOutput(frames=Rigid.stack(trajectory), angles=torch.stack(angles),
                               unnormalized_angles=torch.stack(raws), single=act)


def fape_loss(pred_frames: Rigid, target_frames: Rigid, frames_mask: Tensor, pred_positions: Tensor,
              target_positions: Tensor, positions_mask: Tensor, *, length_scale: float,
              clamp: float | None = None, eps: float = 1e-4) -> Tensor:
    """Alg. 28 "computeFAPE" (``all_atom.frame_aligned_point_error``): every position seen from every
    frame, predicted against target, ``sqrt(|d|^2 + eps)`` clamped at ``clamp`` Å (none when
    ``None`` or 0), divided by ``length_scale``, averaged over the masked pairs (``eps`` in the
    denominator). Frames ``[*, F]`` with ``frames_mask [*, F]``, positions ``[*, P, 3]`` with
    ``positions_mask [*, P]`` -> ``[*]``."""
    local_pred = pred_frames.unsqueeze(-1).invert_apply(pred_positions[..., None, :, :])  # [*, F, P, 3]
    local_target = target_frames.unsqueeze(-1).invert_apply(target_positions[..., None, :, :])
    error = torch.sqrt((local_pred - local_target).square().sum(-1) + eps)  # [*, F, P]
    if clamp:
        error = torch.clamp(error, 0.0, clamp)
    error = error / length_scale * frames_mask[..., :, None] * positions_mask[..., None, :]
    norm = frames_mask.sum(-1) * positions_mask.sum(-1)
    return error.sum((-2, -1)) / (eps + norm)


def backbone_fape(trajectory: Rigid, target: Rigid, mask: Tensor, *, clamp: float | None,
                  length_scale: float, use_clamped: Tensor | float | None = None) -> Tensor:
    """Backbone FAPE of each iteration (Alg. 20 line 17, ``folding.backbone_loss``): the frames and
    their Cα (translations) against the target's, ``trajectory [L, *, N_res]``, ``target [*, N_res]``
    (Å), ``mask [*, N_res]`` -> ``[L, *]``. ``use_clamped`` (``[*]`` or a number) mixes the clamped
    and unclamped losses as AlphaFold does for a fraction of training examples (§1.11.5)."""
    fape = fape_loss(trajectory, target, mask, trajectory.trans, target.trans, mask, length_scale=length_scale,
                     clamp=clamp)
    if use_clamped is None:
        return fape
    unclamped = fape_loss(trajectory, target, mask, trajectory.trans, target.trans, mask,
                          length_scale=length_scale, clamp=None)
    use_clamped = torch.as_tensor(use_clamped, dtype=fape.dtype, device=fape.device)
    return fape * use_clamped + unclamped * (1.0 - use_clamped)


def backbone_loss(output: StructureOutput, target: Rigid, mask: Tensor, config: StructureConfig, *,
                  use_clamped: Tensor | float | None = None) -> Tensor:
    """``folding.backbone_loss``'s loss: the backbone FAPE averaged over the trajectory, with the
    config's clamp and length scale. ``target [*, N_res]`` (Å), ``mask [*, N_res]`` -> ``[*]``."""
    fape = backbone_fape(output.frames, target, mask, clamp=config.fape_clamp, length_scale=config.fape_scale,
                         use_clamped=use_clamped)
    return fape.mean(0)


def angle_norm_loss(output: StructureOutput, mask: Tensor, eps: float = 1e-6) -> Tensor:
    """The torsion head's norm penalty (Supplement §1.9.1 eq. 29, ``folding.supervised_chi_loss``'s
    ``angle_norm_loss``): ``| |(sin, cos)| - 1 |`` of the raw angles, averaged over the trajectory, the
    seven angles and the residues of ``mask [*, N_res]`` -> ``[*]``. It needs no labels, so a model
    trained without side chains still trains its torsion head."""
    norm = torch.sqrt(output.unnormalized_angles.square().sum(-1) + eps)  # [L, *, N_res, 7]
    error = (norm - 1.0).abs().mean((0, -1))  # [*, N_res]
    return (error * mask).sum(-1) / mask.sum(-1).clamp_min(1e-10)

"""Rigid transforms of 3-D space, the residue frames of AlphaFold2 (Jumper et al. 2021, Supplement
§1.8.1): ``T = (R, t)`` maps local coordinates to global ones, ``x_global = R @ x_local + t``.

:class:`Rigid` computes what DeepMind's ``quat_affine.QuatAffine`` and ``r3.Rigids`` compute:

- from a quaternion, AlphaFold's convention: ``(w, x, y, z)``, real part first, normalised unless
  asked otherwise (``QuatAffine(normalize=...)``), and to and from its 7-vector tensor
  ``[*, 7]`` = quaternion then translation (``QuatAffine.to_tensor`` / ``from_tensor``);
- Alg. 23 "Backbone update" (``QuatAffine.pre_compose``): the update ``(b, c, d, t)`` is applied
  first, its rotation as the quaternion ``(1, b, c, d)`` (normalised after the product);
- Alg. 21 "rigidFrom3Points" from N, Cα, C, as ``quat_affine.make_transform_from_reference``
  computes it (C on the +x axis, N in the xy plane with y > 0, Cα at the origin), rotation
  by rotation with its ``1e-20`` guards, so coincident atoms give a finite (degenerate) frame;
- compose, apply, inverse apply (with ``R^T``, as AlphaFold inverts), scaling translations, and
  AlphaFold's stop-gradient on the rotation between structure-module iterations.

A frame made from a quaternion keeps it (``quat``), so that Alg. 23 updates it as AlphaFold does and
the 7-vector comes back unchanged; a frame without one gets it from :func:`rot_to_quat` when asked.
Shapes: ``rot [*, 3, 3]``, ``trans [*, 3]``, ``quat [*, 4]``; the frame's shape is ``*``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


def quat_to_rot(quat: Tensor) -> Tensor:
    """``[*, 4]`` quaternion ``(w, x, y, z)`` -> ``[*, 3, 3]`` rotation (AlphaFold's ``QUAT_TO_ROT``;
    a quaternion of norm ``s`` gives ``s**2`` times a rotation, as there)."""
    w, x, y, z = quat.unbind(-1)
    rows = (
        (w * w + x * x - y * y - z * z, 2 * (x * y - w * z), 2 * (x * z + w * y)),
        (2 * (x * y + w * z), w * w - x * x + y * y - z * z, 2 * (y * z - w * x)),
        (2 * (x * z - w * y), 2 * (y * z + w * x), w * w - x * x - y * y + z * z),
    )
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def quat_multiply(q1: Tensor, q2: Tensor) -> Tensor:
    """Hamilton product ``q1 q2`` of ``[*, 4]`` quaternions (AlphaFold's ``QUAT_MULTIPLY``)."""
    w1, x1, y1, z1 = q1.unbind(-1)
    w2, x2, y2, z2 = q2.unbind(-1)
    return torch.stack([
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ], dim=-1)


def rot_to_quat(rot: Tensor) -> Tensor:
    """``[*, 3, 3]`` rotation -> ``[*, 4]`` unit quaternion, as AlphaFold's ``rot_to_quat``: the
    eigenvector of the largest eigenvalue of the symmetric 4x4 matrix built from ``rot``. Its sign
    is that of the eigensolver (``q`` and ``-q`` are the same rotation)."""
    (xx, xy, xz), (yx, yy, yz), (zx, zy, zz) = (r.unbind(-1) for r in rot.unbind(-2))
    k = [
        [xx + yy + zz, zy - yz, xz - zx, yx - xy],
        [zy - yz, xx - yy - zz, xy + yx, xz + zx],
        [xz - zx, xy + yx, yy - xx - zz, yz + zy],
        [yx - xy, xz + zx, yz + zy, zz - xx - yy],
    ]
    k = torch.stack([torch.stack(row, dim=-1) for row in k], dim=-2) / 3.0  # [*, 4, 4]
    return torch.linalg.eigh(k)[1][..., -1]


def _axis(dim: int, trailing: int) -> int:
    """Axis ``dim`` of the frame shape as an axis of a tensor with ``trailing`` more dimensions."""
    return dim if dim >= 0 else dim - trailing


def _rotation(rows: Sequence[Sequence[Tensor]]) -> Tensor:
    return torch.stack([torch.stack(list(r), dim=-1) for r in rows], dim=-2)


@dataclass(frozen=True)
class Rigid:
    """A batch of rigid transforms: ``rot [*, 3, 3]`` then ``trans [*, 3]``; ``quat [*, 4]`` is the
    quaternion the rotation came from, when it came from one (see the module docstring)."""

    rot: Tensor
    trans: Tensor
    quat: Tensor | None = None

    def __post_init__(self) -> None:
        if self.rot.shape[-2:] != (3, 3) or self.trans.shape[-1] != 3 or self.rot.shape[:-2] != self.trans.shape[:-1]:
            raise ValueError(f"Rigid: expected rot [*, 3, 3] and trans [*, 3], got {list(self.rot.shape)} "
                             f"and {list(self.trans.shape)}")
        if self.quat is not None and self.quat.shape != (*self.trans.shape[:-1], 4):
            raise ValueError(f"Rigid: expected quat {[*self.trans.shape[:-1], 4]}, got {list(self.quat.shape)}")

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def identity(cls, shape: Sequence[int], *, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> Rigid:
        """Identity frames of ``shape`` (quaternion ``(1, 0, 0, 0)``, zero translation)."""
        quat = torch.zeros(*shape, 4, dtype=dtype, device=device)
        quat[..., 0] = 1.0
        return cls.from_quaternion(quat, torch.zeros(*shape, 3, dtype=dtype, device=device))

    @classmethod
    def from_quaternion(cls, quat: Tensor, trans: Tensor, *, normalize: bool = True) -> Rigid:
        """``quat [*, 4]`` ``(w, x, y, z)``, normalised first unless ``normalize=False``, and ``trans [*, 3]``."""
        if normalize:
            quat = quat / torch.linalg.norm(quat, dim=-1, keepdim=True)
        return cls(quat_to_rot(quat), trans, quat)

    @classmethod
    def from_tensor_7(cls, tensor: Tensor, *, normalize: bool = False) -> Rigid:
        """AlphaFold's QuatAffine tensor ``[*, 7]`` (quaternion, translation); like
        ``QuatAffine.from_tensor`` the quaternion is taken as given unless ``normalize=True``."""
        if tensor.shape[-1] != 7:
            raise ValueError(f"Rigid.from_tensor_7: expected [*, 7], got {list(tensor.shape)}")
        return cls.from_quaternion(tensor[..., :4], tensor[..., 4:], normalize=normalize)

    @classmethod
    def from_3_points(cls, n: Tensor, ca: Tensor, c: Tensor) -> Rigid:
        """Alg. 21 "rigidFrom3Points": the backbone frame of atoms N, Cα, C (each ``[*, 3]``), as
        ``quat_affine.make_transform_from_reference``: origin at Cα, x along Cα->C, N in the xy plane
        on the +y side. Built, as there, from three plane rotations that take the residue to that
        canonical pose; the frame is the inverse of their product."""
        n, c = n - ca, c - ca
        cx, cy, cz = c.unbind(-1)
        zero, one = torch.zeros_like(cx), torch.ones_like(cx)
        # rotate about z so that C has y = 0
        norm_xy = torch.sqrt(1e-20 + cx**2 + cy**2)
        sin1, cos1 = -cy / norm_xy, cx / norm_xy
        rot1 = _rotation([[cos1, -sin1, zero], [sin1, cos1, zero], [zero, zero, one]])
        # rotate about y so that C lies on the x axis
        norm_xyz = torch.sqrt(1e-20 + cx**2 + cy**2 + cz**2)
        sin2, cos2 = cz / norm_xyz, torch.sqrt(cx**2 + cy**2) / norm_xyz
        rot2 = _rotation([[cos2, zero, sin2], [zero, one, zero], [-sin2, zero, cos2]])
        to_c = rot2 @ rot1  # [*, 3, 3]
        # rotate about x so that N lies in the xy plane with y > 0
        _, ny, nz = (to_c @ n[..., None])[..., 0].unbind(-1)
        norm_yz = torch.sqrt(1e-20 + ny**2 + nz**2)
        sin3, cos3 = -nz / norm_yz, ny / norm_yz
        rot3 = _rotation([[one, zero, zero], [zero, cos3, -sin3], [zero, sin3, cos3]])
        canonical = rot3 @ to_c  # global -> local
        return cls(canonical.transpose(-1, -2), ca)

    @classmethod
    def stack(cls, frames: Sequence[Rigid], dim: int = 0) -> Rigid:
        """Frames of one shape stacked along a new axis ``dim`` of the frame shape."""
        quats = [f.quat for f in frames]
        return cls(torch.stack([f.rot for f in frames], _axis(dim, 2)),
                   torch.stack([f.trans for f in frames], _axis(dim, 1)),
                   None if any(q is None for q in quats) else torch.stack(quats, _axis(dim, 1)))

    # --- conversion ---------------------------------------------------------------------------

    def to_tensor_7(self) -> Tensor:
        """``[*, 7]``: the quaternion (kept, or from :func:`rot_to_quat`) then the translation."""
        quat = self.quat if self.quat is not None else rot_to_quat(self.rot)
        return torch.cat([quat, self.trans], dim=-1)

    @property
    def shape(self) -> torch.Size:
        """The frame shape ``*``."""
        return self.trans.shape[:-1]

    def unsqueeze(self, dim: int) -> Rigid:
        """A new axis of size one at ``dim`` of the frame shape (e.g. ``-1`` to broadcast over points)."""
        quat = None if self.quat is None else self.quat.unsqueeze(_axis(dim, 1))
        return Rigid(self.rot.unsqueeze(_axis(dim, 2)), self.trans.unsqueeze(_axis(dim, 1)), quat)

    def __getitem__(self, index) -> Rigid:
        """Index the frame shape (``frames[-1]``: the last iteration of a trajectory)."""
        index = index if isinstance(index, tuple) else (index,)
        every = slice(None)
        quat = None if self.quat is None else self.quat[(*index, every)]
        return Rigid(self.rot[(*index, every, every)], self.trans[(*index, every)], quat)

    def to(self, *args, **kwargs) -> Rigid:
        """``Tensor.to`` on every tensor (device, dtype)."""
        quat = None if self.quat is None else self.quat.to(*args, **kwargs)
        return Rigid(self.rot.to(*args, **kwargs), self.trans.to(*args, **kwargs), quat)

    # --- algebra ------------------------------------------------------------------------------

    def apply(self, points: Tensor) -> Tensor:
        """Local -> global: ``R @ x + t``. ``points [*, 3]`` broadcasting with the frame shape."""
        return (self.rot @ points[..., None])[..., 0] + self.trans

    def invert_apply(self, points: Tensor) -> Tensor:
        """Global -> local: ``R^T @ (x - t)`` (AlphaFold's ``invert_point``). ``points [*, 3]``."""
        return (self.rot.transpose(-1, -2) @ (points - self.trans)[..., None])[..., 0]

    def compose(self, other: Rigid) -> Rigid:
        """``self ∘ other``: apply ``other`` first. ``R1 R2``, ``R1 t2 + t1``."""
        quat = None if self.quat is None or other.quat is None else quat_multiply(self.quat, other.quat)
        return Rigid(self.rot @ other.rot, self.apply(other.trans), quat)

    def invert(self) -> Rigid:
        """The inverse transform ``(R^T, -R^T t)`` (AlphaFold's ``r3.invert_rigids``); the quaternion
        becomes its conjugate (the inverse of a unit quaternion)."""
        rot = self.rot.transpose(-1, -2)
        quat = None if self.quat is None else self.quat * self.quat.new_tensor([1.0, -1.0, -1.0, -1.0])
        return Rigid(rot, -(rot @ self.trans[..., None])[..., 0], quat)

    def pre_compose(self, update: Tensor) -> Rigid:
        """Alg. 23 "Backbone update" (``QuatAffine.pre_compose``): ``update [*, 6]`` = ``(b, c, d)``
        then a translation; the new quaternion is ``q (1, b, c, d)`` normalised, the new translation
        ``t + R @ t_update``. A frame without a quaternion composes rotation matrices instead."""
        if update.shape[-1] != 6:
            raise ValueError(f"Rigid.pre_compose: expected an update [*, 6], got {list(update.shape)}")
        vec, trans = update[..., :3], update[..., 3:]
        trans = self.apply(trans)
        if self.quat is None:
            quat = torch.cat([torch.ones_like(vec[..., :1]), vec], dim=-1)
            quat = quat / torch.linalg.norm(quat, dim=-1, keepdim=True)
            return Rigid(self.rot @ quat_to_rot(quat), trans)
        pure = torch.cat([torch.zeros_like(vec[..., :1]), vec], dim=-1)
        return Rigid.from_quaternion(self.quat + quat_multiply(self.quat, pure), trans)

    def scale_translation(self, factor: float) -> Rigid:
        """The same rotations, translations times ``factor`` (AlphaFold's ``position_scale``)."""
        return Rigid(self.rot, self.trans * factor, self.quat)

    def detach_rotation(self) -> Rigid:
        """Rotation (and quaternion) without gradient, translation kept (Alg. 20 line 21; AlphaFold's
        ``apply_rotation_tensor_fn(stop_gradient)`` between iterations)."""
        return Rigid(self.rot.detach(), self.trans, None if self.quat is None else self.quat.detach())

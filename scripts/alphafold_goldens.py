"""Golden reference outputs of DeepMind's AlphaFold2 JAX code for tatlas's PyTorch port.

Runs small AlphaFold2 modules (Evoformer parts, template embedding, heads, structure module, FAPE)
from the published ``alphafold==2.0.0`` code with perturbed random parameters on random inputs and
writes one ``.npz`` per case to ``tests/goldens/evoformer/`` (and that folder's README.md), so that
the PyTorch tests can compare against DeepMind's own code without installing JAX.

This script does NOT run in tatlas's environment. It needs its own virtualenv:

    python -m venv /work/afvenv
    . /work/afvenv/bin/activate
    pip install "jax[cpu]==0.4.30" "dm-haiku==0.0.12" "numpy<2" dm-tree ml-collections
    pip install --no-deps alphafold==2.0.0

and is run from the repository root with

    /work/afvenv/bin/python scripts/alphafold_goldens.py

(``--out DIR`` writes elsewhere, ``--only NAME [NAME ...]`` runs some cases). The alphafold 2.0.0
wheel predates this JAX/Haiku/Python and omits ``alphafold/model/tf``; the script applies the shims
it needs before importing it (see ``apply_shims``): ``np.int``, ``jax.tree_multimap``, a stub
``alphafold.model.tf.shape_placeholders``, ``collections.Iterable`` (used by ``utils.mask_mean``),
``jax.ops.index_add`` (used for the recycled first MSA row) and ``hk.vmap``'s now-mandatory
``split_rng`` (False: the template map draws no random numbers when deterministic). None of them
changes a computed value.

File format (every array float32, integer inputs int32; see the generated README.md):
  ``param:<scope>//<name>``  Haiku parameters, flat keys as in the published params_model_*.npz
                             (layer_stack parameters keep the leading stack axis), perturbed by
                             ``+ 0.1 * N(0, 1)`` (fixed seed) after init with zero_init=False;
  ``input:<name>``           inputs;
  ``output:<name>``          outputs, nested dicts flattened with ``/``;
  ``config``                 JSON string: the module config, the global config, other arguments;
  ``module``                 the AlphaFold class (or function) that was run.
Files are written with fixed zip timestamps, so a rerun reproduces them byte for byte.
"""

from __future__ import annotations

import argparse
import collections
import collections.abc
import copy
import io
import json
import sys
import types
import zipfile
import zlib
from pathlib import Path

import numpy as np

# Sizes of every case (the tatlas "tiny" preset).
N_RES, N_SEQ, N_EXTRA, N_TEMPL = 12, 5, 7, 2
C_M, C_Z, C_E, C_S, C_T = 16, 16, 8, 16, 8
SUBBATCH = 1024  # larger than any sub-batched dimension (N_res * N_res = 144): nothing is chunked
NOISE = 0.1  # parameter perturbation: p + NOISE * N(0, 1)
OUT_DIR = Path(__file__).resolve().parent.parent / "tests" / "goldens" / "evoformer"
REGEN_COMMAND = "/work/afvenv/bin/python scripts/alphafold_goldens.py"


def apply_shims() -> None:
    """Make the alphafold 2.0.0 wheel importable and runnable with jax 0.4.30 / haiku 0.0.12 /
    Python 3.11. Pure compatibility: no shim changes a computed value."""
    import haiku as hk
    import jax

    np.int = int  # removed in numpy 1.24; used by alphafold.common.residue_constants
    jax.tree_multimap = jax.tree_util.tree_map  # removed in jax 0.3.16; used by mapping.py
    if not hasattr(jax.ops, "index_add"):  # removed in jax 0.3.2; EmbeddingsAndEvoformer uses it
        jax.ops.index_add = lambda x, idx, y: x.at[idx].add(y)
    if not hasattr(collections, "Iterable"):  # removed in Python 3.10; utils.mask_mean asserts with it
        collections.Iterable = collections.abc.Iterable
    if not getattr(hk.vmap, "_af_shim", False):  # haiku >= 0.0.10 requires split_rng
        orig_vmap = hk.vmap

        def vmap(fun, in_axes=0, out_axes=0, axis_name=None, axis_size=None, *, split_rng=False):
            return orig_vmap(fun, in_axes, out_axes, axis_name, axis_size, split_rng=split_rng)

        vmap._af_shim = True
        hk.vmap = vmap
    # The wheel omits alphafold/model/tf; config.py only needs these four placeholder names.
    placeholders = types.ModuleType("alphafold.model.tf.shape_placeholders")
    placeholders.NUM_RES = "num residues placeholder"
    placeholders.NUM_MSA_SEQ = "msa placeholder"
    placeholders.NUM_EXTRA_SEQ = "extra msa placeholder"
    placeholders.NUM_TEMPLATES = "num templates placeholder"
    tf_pkg = types.ModuleType("alphafold.model.tf")
    tf_pkg.__path__ = []
    tf_pkg.shape_placeholders = placeholders
    sys.modules.setdefault("alphafold.model.tf", tf_pkg)
    sys.modules.setdefault("alphafold.model.tf.shape_placeholders", placeholders)


apply_shims()

import warnings  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)  # jax.tree_map & co. in the wheel

import haiku as hk  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402

from alphafold.common import residue_constants as rc  # noqa: E402
from alphafold.model import all_atom, folding, modules, prng, quat_affine, r3  # noqa: E402
from alphafold.model import config as af_config  # noqa: E402


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


def small_config():
    """DeepMind's model config (CONFIG.model) resized to the small test sizes."""
    cfg = copy.deepcopy(af_config.CONFIG.model)
    gc = cfg.global_config
    gc.deterministic = True
    gc.zero_init = False
    gc.subbatch_size = SUBBATCH
    gc.use_remat = False

    e = cfg.embeddings_and_evoformer
    e.msa_channel, e.pair_channel, e.extra_msa_channel, e.seq_channel = C_M, C_Z, C_E, C_S
    e.evoformer_num_block, e.extra_msa_stack_num_block = 2, 1
    e.max_relative_feature = 8
    e.prev_pos.num_bins, e.prev_pos.min_bin, e.prev_pos.max_bin = 15, 3.25, 20.75
    e.recycle_features = e.recycle_pos = True
    ev = e.evoformer
    for name in ("msa_row_attention_with_pair_bias", "msa_column_attention"):
        ev[name].num_head = 2
    for name in ("triangle_attention_starting_node", "triangle_attention_ending_node"):
        ev[name].num_head = 2
    ev.msa_transition.num_intermediate_factor = 2
    ev.pair_transition.num_intermediate_factor = 2
    ev.outer_product_mean.num_outer_channel = 4
    ev.outer_product_mean.chunk_size = SUBBATCH
    ev.triangle_multiplication_outgoing.num_intermediate_channel = 8
    ev.triangle_multiplication_incoming.num_intermediate_channel = 8

    t = e.template
    t.enabled = True
    t.embed_torsion_angles = False
    t.use_template_unit_vector = True
    t.max_templates = N_TEMPL
    t.subbatch_size = SUBBATCH
    t.attention.num_head, t.attention.key_dim, t.attention.value_dim = 2, 8, 8
    t.dgram_features.num_bins, t.dgram_features.min_bin, t.dgram_features.max_bin = 39, 3.25, 50.75
    tps = t.template_pair_stack
    tps.num_block = 1
    for name in ("triangle_attention_starting_node", "triangle_attention_ending_node"):
        tps[name].num_head, tps[name].key_dim, tps[name].value_dim = 2, C_T, C_T
    tps.triangle_multiplication_outgoing.num_intermediate_channel = 8
    tps.triangle_multiplication_incoming.num_intermediate_channel = 8
    tps.pair_transition.num_intermediate_factor = 2

    h = cfg.heads
    h.distogram.num_bins, h.distogram.first_break, h.distogram.last_break = 64, 2.3125, 21.6875
    h.masked_msa.num_output = 23
    sm = h.structure_module
    sm.num_channel, sm.num_head = C_S, 2
    sm.num_scalar_qk = sm.num_scalar_v = 4
    sm.num_point_qk = sm.num_point_v = 2
    sm.num_layer, sm.num_layer_in_transition = 2, 2
    sm.position_scale = 10.0
    sm.sidechain.num_channel, sm.sidechain.num_residual_block = 8, 1
    sm.fape.clamp_distance, sm.fape.loss_unit_distance = 10.0, 10.0
    return cfg


CFG = small_config()
GC = CFG.global_config
EMB = CFG.embeddings_and_evoformer
EVO = EMB.evoformer


def cfg_dict(c) -> dict:
    return json.loads(c.to_json()) if hasattr(c, "to_json") else c


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def seed_of(name: str, salt: str) -> int:
    return zlib.crc32(f"{name}:{salt}".encode())


def f32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def normal(rng, *shape, scale=1.0) -> np.ndarray:
    return f32(scale * rng.standard_normal(shape))


def seq_mask_1d(n: int = N_RES) -> np.ndarray:
    """Residue mask with the last residue padded."""
    m = np.ones(n, np.float32)
    m[-1] = 0.0
    return m


def msa_mask_2d(rng, rows: int, n: int = N_RES) -> np.ndarray:
    """MSA mask: the padded residue, the last row wholly padded, ~15% random holes."""
    m = f32(rng.random((rows, n)) > 0.15)
    m[:, -1] = 0.0
    m[-1, :] = 0.0
    m[0, :-1] = 1.0  # the query row is complete
    return m


def pair_mask_2d(rng, n: int = N_RES, holes: bool = True) -> np.ndarray:
    """Pair mask: outer product of the residue mask, plus (if ``holes``) ~10% asymmetric holes so
    that a missing transpose of the mask shows."""
    s = seq_mask_1d(n)
    m = s[:, None] * s[None, :]
    if holes:
        m = m * f32(rng.random((n, n)) > 0.1)
    return f32(m)


def random_quaternions(rng, n: int) -> np.ndarray:
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    q[q[:, 0] < 0] *= -1.0  # w >= 0
    return f32(q)


def quat_to_rot_np(q: np.ndarray) -> np.ndarray:
    """Rotation matrices [..., 3, 3] (row-major: x' = R @ x) of unit quaternions (w, x, y, z)."""
    w, x, y, z = (q[..., i].astype(np.float64) for i in range(4))
    r = np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], axis=-1)
    return f32(r.reshape(q.shape[:-1] + (3, 3)))


def random_affines(rng, n: int, trans_scale: float) -> np.ndarray:
    """QuatAffine tensors [n, 7] = (unit quaternion w, x, y, z; translation)."""
    return f32(np.concatenate([random_quaternions(rng, n), normal(rng, n, 3, scale=trans_scale)], -1))


def _place(a, b, c, bond, angle, torsion):
    """NeRF: the atom d with |cd| = bond, angle(b, c, d) = angle, dihedral(a, b, c, d) = torsion."""
    bc = c - b
    bc /= np.linalg.norm(bc)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    d = np.array([-bond * np.cos(angle), bond * np.sin(angle) * np.cos(torsion),
                  bond * np.sin(angle) * np.sin(torsion)])
    return c + d[0] * bc + d[1] * m + d[2] * n


def backbone_atom37(rng, aatype: np.ndarray) -> np.ndarray:
    """A plausible chain in atom37 layout [n, 37, 3] (Å): ideal N-CA-C-O backbone geometry
    (bond lengths and angles of Engh & Huber) built by NeRF from random helix/strand (phi, psi),
    CB placed at its ideal position in the N, CA, C frame (AlphaFold's residue_constants), then a
    random rigid motion. Other atoms are left at 0."""
    n = len(aatype)
    deg = np.pi / 180.0
    region = rng.random(n) < 0.5
    phi = np.where(region, -63.0, -120.0) * deg + rng.normal(0, 15 * deg, n)
    psi = np.where(region, -42.0, 130.0) * deg + rng.normal(0, 15 * deg, n)
    N = [np.zeros(3)]
    CA = [np.array([1.458, 0.0, 0.0])]
    ang = 111.2 * deg
    C = [CA[0] + 1.525 * np.array([-np.cos(ang), np.sin(ang), 0.0])]
    for i in range(1, n):
        N.append(_place(N[i - 1], CA[i - 1], C[i - 1], 1.329, 116.2 * deg, psi[i - 1]))
        CA.append(_place(CA[i - 1], C[i - 1], N[i], 1.458, 121.7 * deg, np.pi))
        C.append(_place(C[i - 1], N[i], CA[i], 1.525, 111.2 * deg, phi[i]))
    pos = np.zeros((n, 37, 3))
    cb_local = np.array(rc.rigid_group_atom_positions["ALA"][3][2])
    for i in range(n):
        ex = (C[i] - CA[i]) / np.linalg.norm(C[i] - CA[i])
        ey = (N[i] - CA[i]) - np.dot(N[i] - CA[i], ex) * ex
        ey /= np.linalg.norm(ey)
        ez = np.cross(ex, ey)
        pos[i, rc.atom_order["N"]] = N[i]
        pos[i, rc.atom_order["CA"]] = CA[i]
        pos[i, rc.atom_order["C"]] = C[i]
        pos[i, rc.atom_order["CB"]] = CA[i] + np.stack([ex, ey, ez], -1) @ cb_local
        # O in the peptide plane, anti to the next N: dihedral N-CA-C-O = psi + 180.
        pos[i, rc.atom_order["O"]] = _place(N[i], CA[i], C[i], 1.231, 120.5 * deg, psi[i] + np.pi)
    rot = quat_to_rot_np(random_quaternions(rng, 1))[0].astype(np.float64)
    shift = rng.normal(0, 5.0, 3)
    return pos @ rot.T + shift


def atom37_mask(aatype: np.ndarray) -> np.ndarray:
    """N, CA, C, O present; CB for all but glycine (and gap/unknown residues have none)."""
    m = np.zeros((len(aatype), 37), np.float32)
    for i, a in enumerate(aatype):
        if a > 20:  # gap: no atoms
            continue
        for atom in ("N", "CA", "C", "O"):
            m[i, rc.atom_order[atom]] = 1.0
        if a != rc.restype_order["G"]:
            m[i, rc.atom_order["CB"]] = 1.0
    return m


def pseudo_beta_np(aatype, pos, mask):
    """AlphaFold's pseudo_beta_fn: CA for glycine, CB otherwise."""
    is_gly = aatype == rc.restype_order["G"]
    ca, cb = rc.atom_order["CA"], rc.atom_order["CB"]
    pb = np.where(is_gly[..., None], pos[..., ca, :], pos[..., cb, :])
    pbm = np.where(is_gly, mask[..., ca], mask[..., cb])
    return f32(pb), f32(pbm)


def query_aatype(rng) -> np.ndarray:
    a = rng.integers(0, 20, N_RES)
    a[2] = rc.restype_order["G"]  # a glycine: pseudo-beta is CA
    a[-1] = 0  # padding
    return a.astype(np.int32)


def template_features(rng) -> dict[str, np.ndarray]:
    """Two templates with realistic features; the second is masked out (template_mask 0)."""
    aatype = np.zeros((N_TEMPL, N_RES), np.int32)
    pos = np.zeros((N_TEMPL, N_RES, 37, 3), np.float32)
    mask = np.zeros((N_TEMPL, N_RES, 37), np.float32)
    for t in range(N_TEMPL):
        a = rng.integers(0, 20, N_RES)
        a[3] = rc.restype_order["G"]
        if a[8] == rc.restype_order["G"]:
            a[8] = rc.restype_order["A"]  # residue 8 loses its CB below: keep it a non-glycine
        a[6] = 21  # unaligned residue: gap, no atoms
        a[-1] = 21  # padded residue
        m = atom37_mask(a)
        if t == 0:
            m[8, rc.atom_order["CB"]] = 0.0  # CB unresolved: no pseudo-beta, backbone still there
            m[9, rc.atom_order["N"]] = 0.0  # N unresolved: pseudo-beta there, no backbone frame
        aatype[t] = a
        mask[t] = m
        pos[t] = f32(backbone_atom37(rng, a)) * m[..., None]
    pb, pbm = pseudo_beta_np(aatype, pos, mask)
    return {
        "template_aatype": aatype,
        "template_all_atom_positions": pos,
        "template_all_atom_masks": mask,
        "template_pseudo_beta": pb,
        "template_pseudo_beta_mask": pbm,
        "template_mask": f32([1.0, 0.0]),
    }


# --------------------------------------------------------------------------------------------
# Running a case
# --------------------------------------------------------------------------------------------


def perturb(params, seed: int):
    """p + NOISE * N(0, 1) for every parameter, keys visited in sorted order."""
    rng = np.random.default_rng(seed)
    out = {}
    for scope in sorted(params):
        out[scope] = {}
        for name in sorted(params[scope]):
            p = np.asarray(params[scope][name], np.float32)
            out[scope][name] = f32(p + NOISE * rng.standard_normal(p.shape))
    return out


def flatten(tree, prefix: str) -> dict[str, np.ndarray]:
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}/{k}" if prefix else str(k)))
    else:
        out[prefix] = np.asarray(tree)
    return out


def as_array(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32)
    if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        return x.astype(np.int32)
    return x


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed, but with fixed zip timestamps and sorted keys (byte-reproducible)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(arrays[key]), allow_pickle=False)
            zf.writestr(info, buf.getvalue())


def run_case(name: str, module: str, fn, inputs: dict, config: dict, param_free: bool = False,
             seed_name: str | None = None) -> dict:
    """Transform ``fn(inputs) -> outputs`` with Haiku, init, perturb, apply; returns the arrays.
    Seeds derive from ``seed_name`` (default: the case name)."""
    seed_name = seed_name or name
    inputs = {k: as_array(v) for k, v in inputs.items()}
    jin = {k: jnp.asarray(v) for k, v in inputs.items()}
    f = hk.transform(fn)
    init_key = jax.random.PRNGKey(seed_of(seed_name, "init") % (2**31))
    apply_key = jax.random.PRNGKey(seed_of(seed_name, "apply") % (2**31))
    params = f.init(init_key, jin)
    params = perturb(params, seed_of(seed_name, "noise"))
    if param_free:
        assert not params, f"{name}: expected no parameters, got {list(params)}"
    out = f.apply(jax.tree_util.tree_map(jnp.asarray, params), apply_key, jin)
    arrays = {}
    for scope, d in params.items():
        for pname, p in d.items():
            arrays[f"param:{scope}//{pname}"] = f32(p)
    for k, v in inputs.items():
        arrays[f"input:{k}"] = v
    for k, v in flatten(out, "").items():
        v = as_array(v)
        assert np.all(np.isfinite(v)), f"{name}: output {k} is not finite"
        arrays[f"output:{k}"] = v
    full_config = {"global_config": cfg_dict(GC), **config}
    arrays["config"] = np.array(json.dumps(full_config, sort_keys=True))
    arrays["module"] = np.array(module)
    return arrays


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------

CASES = {}


def case(fn):
    CASES[fn.__name__.removeprefix("case_")] = fn
    return fn


@case
def case_attention(name):
    """modules.Attention as a cross-attention (as in template pointwise attention), with gating,
    a key-mask bias and a per-head non-batched bias."""
    rng = np.random.default_rng(seed_of(name, "inputs"))
    B, Q, K, CQ, CKV, OUT = 3, 5, 6, C_Z, C_T, C_Z
    cfg = {"num_head": 2, "key_dim": 8, "value_dim": 8, "gating": True}
    key_mask = f32(rng.random((B, K)) > 0.2)
    key_mask[:, 0] = 1.0
    key_mask[-1, :] = 0.0  # a batch element with every key masked: uniform attention
    inputs = {
        "q_data": normal(rng, B, Q, CQ), "m_data": normal(rng, B, K, CKV),
        "key_mask": key_mask, "bias": f32(1e9 * (key_mask - 1.0))[:, None, None, :],
        "nonbatched_bias": normal(rng, 2, Q, K),
    }

    def fn(x):
        mod = modules.Attention(ml_collections.ConfigDict(cfg), GC, OUT)
        return {"out": mod(x["q_data"], x["m_data"], x["bias"], nonbatched_bias=x["nonbatched_bias"])}

    return run_case(name, "Attention", fn, inputs,
                    {"config": cfg, "output_dim": OUT,
                     "note": "bias = 1e9 * (key_mask - 1) [B, 1, 1, K]; nonbatched_bias [H, Q, K]"})


@case
def case_global_attention(name):
    """modules.GlobalAttention with gating, called as MSAColumnGlobalAttention calls it: q_data and
    m_data the same tensor, q_mask [B, N, 1] (the ``bias`` argument is ignored by the module)."""
    rng = np.random.default_rng(seed_of(name, "inputs"))
    B, N, C = 4, N_EXTRA, C_E
    cfg = cfg_dict(EVO.msa_column_attention)
    mask = f32(rng.random((B, N)) > 0.2)
    mask[:, 0] = 1.0
    mask[-1, :] = 0.0  # a wholly padded batch element
    x = normal(rng, B, N, C)
    inputs = {"q_data": x, "m_data": x, "q_mask": mask[..., None]}

    def fn(x):
        mod = modules.GlobalAttention(EVO.msa_column_attention, GC, C)
        bias = 1e9 * (x["q_mask"][..., 0] - 1.0)[:, None, None, :]
        return {"out": mod(x["q_data"], x["m_data"], x["q_mask"], bias)}

    return run_case(name, "GlobalAttention", fn, inputs, {"config": cfg, "output_dim": C})


@case
def case_msa_row_attention_with_pair_bias(name):
    rng = np.random.default_rng(seed_of(name, "inputs"))
    inputs = {"msa_act": normal(rng, N_SEQ, N_RES, C_M), "msa_mask": msa_mask_2d(rng, N_SEQ),
              "pair_act": normal(rng, N_RES, N_RES, C_Z)}

    def fn(x):
        mod = modules.MSARowAttentionWithPairBias(EVO.msa_row_attention_with_pair_bias, GC,
                                                  name="msa_row_attention_with_pair_bias")
        return {"out": mod(x["msa_act"], x["msa_mask"], x["pair_act"], is_training=False)}

    return run_case(name, "MSARowAttentionWithPairBias", fn, inputs,
                    {"config": cfg_dict(EVO.msa_row_attention_with_pair_bias), "is_training": False,
                     "note": "output:out is the update (no residual)"})


@case
def case_msa_column_attention(name):
    rng = np.random.default_rng(seed_of(name, "inputs"))
    inputs = {"msa_act": normal(rng, N_SEQ, N_RES, C_M), "msa_mask": msa_mask_2d(rng, N_SEQ)}

    def fn(x):
        mod = modules.MSAColumnAttention(EVO.msa_column_attention, GC, name="msa_column_attention")
        return {"out": mod(x["msa_act"], x["msa_mask"], is_training=False)}

    return run_case(name, "MSAColumnAttention", fn, inputs,
                    {"config": cfg_dict(EVO.msa_column_attention), "is_training": False,
                     "note": "output:out is the update (no residual)"})


@case
def case_msa_column_global_attention(name):
    rng = np.random.default_rng(seed_of(name, "inputs"))
    inputs = {"msa_act": normal(rng, N_EXTRA, N_RES, C_E), "msa_mask": msa_mask_2d(rng, N_EXTRA)}

    def fn(x):
        mod = modules.MSAColumnGlobalAttention(EVO.msa_column_attention, GC,
                                               name="msa_column_global_attention")
        return {"out": mod(x["msa_act"], x["msa_mask"], is_training=False)}

    return run_case(name, "MSAColumnGlobalAttention", fn, inputs,
                    {"config": cfg_dict(EVO.msa_column_attention), "is_training": False,
                     "note": "extra-MSA width c_e; output:out is the update (no residual)"})


def _transition_case(name, scope, shape, mask):
    rng = np.random.default_rng(seed_of(name, "inputs"))
    c = EVO[scope]
    inputs = {"act": normal(rng, *shape), "mask": mask(rng)}

    def fn(x):
        mod = modules.Transition(c, GC, name=scope)
        return {"out": mod(x["act"], x["mask"], is_training=False)}

    return run_case(name, "Transition", fn, inputs,
                    {"config": cfg_dict(c), "is_training": False,
                     "note": "the mask is not used by Transition; output:out is the update"})


@case
def case_msa_transition(name):
    return _transition_case(name, "msa_transition", (N_SEQ, N_RES, C_M), lambda r: msa_mask_2d(r, N_SEQ))


@case
def case_pair_transition(name):
    return _transition_case(name, "pair_transition", (N_RES, N_RES, C_Z), lambda r: pair_mask_2d(r))


def _outer_product_mean_case(name, chunk_size):
    # Both files share inputs and parameters (seeds of "outer_product_mean"): same output expected.
    rng = np.random.default_rng(seed_of("outer_product_mean", "inputs"))
    c = copy.deepcopy(EVO.outer_product_mean)
    c.chunk_size = chunk_size
    inputs = {"act": normal(rng, N_SEQ, N_RES, C_M), "mask": msa_mask_2d(rng, N_SEQ)}

    def fn(x):
        mod = modules.OuterProductMean(c, GC, num_output_channel=C_Z, name="outer_product_mean")
        return {"out": mod(x["act"], x["mask"], is_training=False)}

    arrays = run_case(name, "OuterProductMean", fn, inputs,
                      {"config": cfg_dict(c), "num_output_channel": C_Z, "is_training": False,
                       "note": "output:out is the pair update [N_res, N_res, c_z]"},
                      seed_name="outer_product_mean")
    return arrays


@case
def case_outer_product_mean(name):
    return _outer_product_mean_case(name, SUBBATCH)


@case
def case_outer_product_mean_chunked(name):
    """Chunk size 3 over residues; same inputs and parameters as outer_product_mean."""
    arrays = _outer_product_mean_case(name, 3)
    ref = _outer_product_mean_case("outer_product_mean", SUBBATCH)
    for k, v in ref.items():
        if k.startswith(("param:", "input:")):
            assert np.array_equal(arrays[k], v), k
    np.testing.assert_allclose(arrays["output:out"], ref["output:out"], rtol=1e-5, atol=1e-6)
    return arrays


def _pair_case(name, cls, scope, c, module):
    rng = np.random.default_rng(seed_of(name, "inputs"))
    inputs = {"pair_act": normal(rng, N_RES, N_RES, C_Z), "pair_mask": pair_mask_2d(rng)}

    def fn(x):
        mod = cls(c, GC, name=scope)
        return {"out": mod(x["pair_act"], x["pair_mask"], is_training=False)}

    return run_case(name, module, fn, inputs,
                    {"config": cfg_dict(c), "is_training": False,
                     "note": "output:out is the update (no residual)"})


@case
def case_triangle_multiplication_outgoing(name):
    return _pair_case(name, modules.TriangleMultiplication, "triangle_multiplication_outgoing",
                      EVO.triangle_multiplication_outgoing, "TriangleMultiplication")


@case
def case_triangle_multiplication_incoming(name):
    return _pair_case(name, modules.TriangleMultiplication, "triangle_multiplication_incoming",
                      EVO.triangle_multiplication_incoming, "TriangleMultiplication")


@case
def case_triangle_attention_starting_node(name):
    return _pair_case(name, modules.TriangleAttention, "triangle_attention_starting_node",
                      EVO.triangle_attention_starting_node, "TriangleAttention")


@case
def case_triangle_attention_ending_node(name):
    return _pair_case(name, modules.TriangleAttention, "triangle_attention_ending_node",
                      EVO.triangle_attention_ending_node, "TriangleAttention")


def _iteration_case(name, is_extra_msa):
    rng = np.random.default_rng(seed_of(name, "inputs"))
    rows, width = (N_EXTRA, C_E) if is_extra_msa else (N_SEQ, C_M)
    scope = "extra_msa_stack" if is_extra_msa else "evoformer_iteration"
    inputs = {"msa": normal(rng, rows, N_RES, width), "pair": normal(rng, N_RES, N_RES, C_Z),
              "msa_mask": msa_mask_2d(rng, rows), "pair_mask": pair_mask_2d(rng)}

    def fn(x):
        mod = modules.EvoformerIteration(EVO, GC, is_extra_msa=is_extra_msa, name=scope)
        return mod({"msa": x["msa"], "pair": x["pair"]},
                   {"msa": x["msa_mask"], "pair": x["pair_mask"]}, is_training=False)

    return run_case(name, "EvoformerIteration", fn, inputs,
                    {"config": cfg_dict(EVO), "is_extra_msa": is_extra_msa, "is_training": False,
                     "note": "outputs are the new activations (residuals included)"})


@case
def case_evoformer_iteration(name):
    return _iteration_case(name, False)


@case
def case_extra_msa_iteration(name):
    return _iteration_case(name, True)


@case
def case_template_pair_stack(name):
    rng = np.random.default_rng(seed_of(name, "inputs"))
    c = EMB.template.template_pair_stack
    inputs = {"pair_act": normal(rng, N_RES, N_RES, C_T), "pair_mask": pair_mask_2d(rng)}

    def fn(x):
        mod = modules.TemplatePairStack(c, GC)
        return {"out": mod(x["pair_act"], x["pair_mask"], is_training=False)}

    return run_case(name, "TemplatePairStack", fn, inputs,
                    {"config": cfg_dict(c), "is_training": False,
                     "note": "output:out is the new pair activation (residuals included)"})


@case
def case_template_embedding(name):
    rng = np.random.default_rng(seed_of(name, "inputs"))
    c = EMB.template
    feats = template_features(rng)
    s = seq_mask_1d()
    inputs = {"query_embedding": normal(rng, N_RES, N_RES, C_Z), "mask_2d": f32(s[:, None] * s[None, :]),
              **feats}

    def fn(x):
        mod = modules.TemplateEmbedding(c, GC)
        batch = {k: v for k, v in x.items() if k.startswith("template_")}
        return {"out": mod(x["query_embedding"], batch, x["mask_2d"], is_training=False)}

    return run_case(name, "TemplateEmbedding", fn, inputs,
                    {"config": cfg_dict(c), "is_training": False,
                     "note": "output:out is the pair update; template 1 is masked out "
                             "(template_mask 0), residue 6 and the last are gaps (aatype 21, no "
                             "atoms); template 0 lacks CB at residue 8 and N at residue 9"})


@case
def case_dgram_from_positions(name):
    rng = np.random.default_rng(seed_of(name, "inputs"))
    pos = f32(rng.uniform(0.0, 25.0, (N_RES, 3)))
    pp, td = cfg_dict(EMB.prev_pos), cfg_dict(EMB.template.dgram_features)
    inputs = {"positions": pos}

    def fn(x):
        return {"dgram": modules.dgram_from_positions(x["positions"], **pp),
                "dgram_template": modules.dgram_from_positions(x["positions"], **td)}

    return run_case(name, "dgram_from_positions", fn, inputs,
                    {"config": pp, "template_dgram_features": td,
                     "note": "output:dgram uses config (recycling prev_pos bins), "
                             "output:dgram_template the template dgram_features"},
                    param_free=True)


def evoformer_batch(rng) -> dict[str, np.ndarray]:
    """Realistic inputs of EmbeddingsAndEvoformer (one ensemble member, after the data pipeline)."""
    aatype = query_aatype(rng)
    s = seq_mask_1d()
    # target_feat: between_segment_residues flag, then one-hot of aatype over 21 classes.
    target_feat = np.zeros((N_RES, 22), np.float32)
    target_feat[np.arange(N_RES), 1 + aatype] = 1.0
    target_feat *= s[:, None]
    residue_index = np.concatenate([np.arange(0, 5), np.arange(15, 15 + N_RES - 5)]).astype(np.int32)
    residue_index[-1] = 0  # padding
    # Clustered MSA: row 0 is the query; gaps (21) and the BERT mask token (22) appear.
    msa = rng.integers(0, 21, (N_SEQ, N_RES))
    msa[0] = aatype
    msa[1:][rng.random((N_SEQ - 1, N_RES)) < 0.15] = 21
    msa[1:][rng.random((N_SEQ - 1, N_RES)) < 0.1] = 22
    msa_mask = msa_mask_2d(rng, N_SEQ)
    deletions = rng.poisson(0.4, (N_SEQ, N_RES)).astype(np.float64)
    profile = rng.dirichlet(np.full(23, 0.3), (N_SEQ, N_RES))
    msa_feat = np.concatenate([
        np.eye(23)[msa],
        (deletions > 0)[..., None],
        (2 / np.pi * np.arctan(deletions / 3.0))[..., None],
        profile,
        (2 / np.pi * np.arctan(rng.gamma(0.5, 1.0, (N_SEQ, N_RES)) / 3.0))[..., None],
    ], -1)
    msa_feat = f32(msa_feat * msa_mask[..., None])
    extra_msa = rng.integers(0, 23, (N_EXTRA, N_RES)).astype(np.int32)
    extra_mask = msa_mask_2d(rng, N_EXTRA)
    extra_del = rng.poisson(0.5, (N_EXTRA, N_RES)).astype(np.float64)
    prev_pos = f32(backbone_atom37(rng, aatype) * atom37_mask(aatype)[..., None] * s[:, None, None])
    batch = {
        "aatype": aatype, "target_feat": target_feat, "residue_index": residue_index,
        "seq_mask": s, "msa_feat": msa_feat, "msa_mask": msa_mask,
        "extra_msa": extra_msa * extra_mask.astype(np.int32),
        "extra_has_deletion": f32((extra_del > 0) * extra_mask),
        "extra_deletion_value": f32(2 / np.pi * np.arctan(extra_del / 3.0) * extra_mask),
        "extra_msa_mask": extra_mask,
        "prev_pos": prev_pos,
        "prev_msa_first_row": normal(rng, N_RES, C_M, scale=3.0),
        "prev_pair": normal(rng, N_RES, N_RES, C_Z, scale=3.0),
    }
    batch.update(template_features(rng))
    return batch


@case
def case_embeddings_and_evoformer(name):
    rng = np.random.default_rng(seed_of(name, "inputs"))
    inputs = evoformer_batch(rng)

    def fn(x):
        return modules.EmbeddingsAndEvoformer(EMB, GC)(dict(x), is_training=False)

    return run_case(name, "EmbeddingsAndEvoformer", fn, inputs,
                    {"config": cfg_dict(EMB), "is_training": False,
                     "note": "one recycling iteration fed prev_pos/prev_msa_first_row/prev_pair; "
                             "target_feat = [between_segment_residues, one_hot(aatype, 21)]; "
                             "msa_feat = [one_hot(msa, 23), has_deletion, deletion_value, "
                             "cluster_profile(23), deletion_mean]"})


@case
def case_distogram_head(name):
    rng = np.random.default_rng(seed_of(name, "inputs"))
    c = CFG.heads.distogram
    inputs = {"pair": normal(rng, N_RES, N_RES, C_Z)}

    def fn(x):
        return modules.DistogramHead(c, GC)({"pair": x["pair"]}, None, is_training=False)

    return run_case(name, "DistogramHead", fn, inputs, {"config": cfg_dict(c)})


@case
def case_masked_msa_head(name):
    rng = np.random.default_rng(seed_of(name, "inputs"))
    c = CFG.heads.masked_msa
    inputs = {"msa": normal(rng, N_SEQ, N_RES, C_M)}

    def fn(x):
        return modules.MaskedMsaHead(c, GC)({"msa": x["msa"]}, None, is_training=False)

    return run_case(name, "MaskedMsaHead", fn, inputs, {"config": cfg_dict(c)})


SM = CFG.heads.structure_module


def _rigids_dict(rig: r3.Rigids) -> dict:
    rot = jnp.stack([jnp.stack(row, -1) for row in
                     ((rig.rot.xx, rig.rot.xy, rig.rot.xz), (rig.rot.yx, rig.rot.yy, rig.rot.yz),
                      (rig.rot.zx, rig.rot.zy, rig.rot.zz))], -2)
    return {"rot": rot, "trans": r3.vecs_to_tensor(rig.trans)}


def _sc_dict(sc: dict) -> dict:
    return {"angles_sin_cos": sc["angles_sin_cos"],
            "unnormalized_angles_sin_cos": sc["unnormalized_angles_sin_cos"],
            "atom_pos": r3.vecs_to_tensor(sc["atom_pos"]),
            "frames": _rigids_dict(sc["frames"])}


def _sequence_mask() -> np.ndarray:
    return seq_mask_1d()[:, None]


@case
def case_invariant_point_attention(name):
    rng = np.random.default_rng(seed_of(name, "inputs"))
    inputs = {"inputs_1d": normal(rng, N_RES, C_S), "inputs_2d": normal(rng, N_RES, N_RES, C_Z),
              "mask": _sequence_mask(), "affine": random_affines(rng, N_RES, 3.0)}

    def fn(x):
        mod = folding.InvariantPointAttention(SM, GC)
        affine = quat_affine.QuatAffine.from_tensor(x["affine"])
        return {"out": mod(x["inputs_1d"], x["inputs_2d"], x["mask"], affine)}

    return run_case(name, "InvariantPointAttention", fn, inputs,
                    {"config": cfg_dict(SM),
                     "note": "affine: QuatAffine tensor [N, 7] = unit quaternion (w, x, y, z), "
                             "translation; mask [N, 1]; output:out is the update"})


@case
def case_fold_iteration(name):
    rng = np.random.default_rng(seed_of(name, "inputs"))
    aatype = query_aatype(rng)
    inputs = {"act": normal(rng, N_RES, C_S), "affine": random_affines(rng, N_RES, 1.0),
              "sequence_mask": _sequence_mask(), "initial_act": normal(rng, N_RES, C_S),
              "static_feat_2d": normal(rng, N_RES, N_RES, C_Z), "aatype": aatype}

    def fn(x):
        mod = folding.FoldIteration(SM, GC, name="fold_iteration")
        new_act, out = mod({"act": x["act"], "affine": x["affine"]}, sequence_mask=x["sequence_mask"],
                           update_affine=True, is_training=False, initial_act=x["initial_act"],
                           static_feat_2d=x["static_feat_2d"], aatype=x["aatype"])
        return {"act": new_act["act"], "affine": out["affine"], "sc": _sc_dict(out["sc"])}

    return run_case(name, "FoldIteration", fn, inputs,
                    {"config": cfg_dict(SM), "update_affine": True, "is_training": False,
                     "note": "affine in/out: QuatAffine tensor [N, 7], translation in units of "
                             "position_scale (nm); sc/* in Å (translation scaled by position_scale); "
                             "sc/frames/rot [N, 8, 3, 3] row-major (x' = rot @ x + trans), "
                             "sc/atom_pos [N, 14, 3] atom14"})


class _StructureModuleAffines(hk.Module):
    """folding.generate_affines inside the 'structure_module' scope, as folding.StructureModule
    calls it, without the atom14 -> atom37 conversion (which needs atom37 features)."""

    def __init__(self, config, global_config, name="structure_module"):
        super().__init__(name=name)
        self.config, self.global_config = config, global_config

    def __call__(self, single, pair, seq_mask, aatype):
        out = folding.generate_affines(
            representations={"single": single, "pair": pair},
            batch={"seq_mask": seq_mask, "aatype": aatype},
            config=self.config, global_config=self.global_config, is_training=False,
            safe_key=prng.SafeKey(hk.next_rng_key()))
        traj = out["affine"] * jnp.array([1.0] * 4 + [self.config.position_scale] * 3)
        return {"affine": out["affine"], "traj": traj, "act": out["act"], "sc": _sc_dict(out["sc"])}


@case
def case_structure_module(name):
    rng = np.random.default_rng(seed_of(name, "inputs"))
    inputs = {"single": normal(rng, N_RES, C_S), "pair": normal(rng, N_RES, N_RES, C_Z),
              "seq_mask": seq_mask_1d(), "aatype": query_aatype(rng)}

    def fn(x):
        return _StructureModuleAffines(SM, GC)(x["single"], x["pair"], x["seq_mask"], x["aatype"])

    return run_case(name, "generate_affines", fn, inputs,
                    {"config": cfg_dict(SM), "is_training": False,
                     "note": "folding.generate_affines run in hk scope 'structure_module' (as "
                             "StructureModule does); output:affine [L, N, 7] raw (nm), "
                             "output:traj = affine * [1,1,1,1,10,10,10] (Å), output:act final "
                             "single act, output:sc/* per layer [L, N, ...] in Å"})


@case
def case_backbone_fape(name):
    rng = np.random.default_rng(seed_of(name, "inputs"))
    F, P = N_RES, 16
    target_affine = random_affines(rng, F, 8.0)
    # Predicted frames: the target ones rotated a little and moved by a few Å.
    pred_q = f32(target_affine[:, :4] + rng.normal(0, 0.3, (F, 4)))
    pred_q /= np.linalg.norm(pred_q, axis=-1, keepdims=True)
    pred_affine = f32(np.concatenate([pred_q, target_affine[:, 4:] + rng.normal(0, 3.0, (F, 3))], -1))
    target_pos = normal(rng, P, 3, scale=8.0)
    pred_pos = f32(target_pos + rng.normal(0, 4.0, (P, 3)))
    frames_mask = f32(rng.random(F) > 0.2)
    frames_mask[-1] = 0.0
    positions_mask = f32(rng.random(P) > 0.2)
    positions_mask[-1] = 0.0
    inputs = {
        "pred_affine": pred_affine, "target_affine": target_affine,
        "pred_frames_rot": quat_to_rot_np(pred_affine[:, :4]), "pred_frames_trans": pred_affine[:, 4:],
        "target_frames_rot": quat_to_rot_np(target_affine[:, :4]),
        "target_frames_trans": target_affine[:, 4:],
        "frames_mask": frames_mask, "pred_positions": pred_pos, "target_positions": target_pos,
        "positions_mask": positions_mask,
    }
    clamp, scale = SM.fape.clamp_distance, SM.fape.loss_unit_distance

    def rigids(rot, trans):
        return r3.Rigids(r3.Rots(*[rot[:, i, j] for i in range(3) for j in range(3)]),
                         r3.vecs_from_tensor(trans))

    def fn(x):
        args = dict(pred_frames=rigids(x["pred_frames_rot"], x["pred_frames_trans"]),
                    target_frames=rigids(x["target_frames_rot"], x["target_frames_trans"]),
                    frames_mask=x["frames_mask"],
                    pred_positions=r3.vecs_from_tensor(x["pred_positions"]),
                    target_positions=r3.vecs_from_tensor(x["target_positions"]),
                    positions_mask=x["positions_mask"], length_scale=scale)
        return {"fape": all_atom.frame_aligned_point_error(**args, l1_clamp_distance=clamp),
                "fape_unclamped": all_atom.frame_aligned_point_error(**args, l1_clamp_distance=None)}

    arrays = run_case(name, "frame_aligned_point_error", fn, inputs,
                      {"config": cfg_dict(SM.fape), "l1_clamp_distance": clamp, "length_scale": scale,
                       "epsilon": 1e-4,
                       "note": "frames given as rot [F, 3, 3] row-major (x' = rot @ x + trans) and "
                               "trans [F, 3]; *_affine are the quaternion affines they came from"},
                      param_free=True)
    assert arrays["output:fape"] < arrays["output:fape_unclamped"], "clamping must matter"
    return arrays


# --------------------------------------------------------------------------------------------
# README and main
# --------------------------------------------------------------------------------------------


def _scopes(arrays) -> list[str]:
    return sorted({k[len("param:"):].split("//")[0] for k in arrays if k.startswith("param:")})


def write_readme(out_dir: Path, summary: list[tuple[str, int, str, list[str], list[str], list[str]]]) -> None:
    lines = [
        "# AlphaFold2 golden files",
        "",
        "Reference inputs, parameters and outputs of DeepMind's own JAX AlphaFold2 code",
        "(`alphafold==2.0.0`, `jax[cpu]==0.4.30`, `dm-haiku==0.0.12`) for the PyTorch port in",
        "`tatlas.models.evoformer`, so its tests compare against the original without JAX.",
        "Generated by `scripts/alphafold_goldens.py`; do not edit by hand (this README is generated too).",
        "",
        "## Regenerating",
        "",
        "Create the reference virtualenv (once):",
        "",
        "```",
        "python -m venv /work/afvenv",
        ". /work/afvenv/bin/activate",
        'pip install "jax[cpu]==0.4.30" "dm-haiku==0.0.12" "numpy<2" dm-tree ml-collections',
        "pip install --no-deps alphafold==2.0.0",
        "```",
        "",
        "then, from the repository root:",
        "",
        "```",
        REGEN_COMMAND,
        "```",
        "",
        "The script applies the compatibility shims the old wheel needs (none changes a value), uses",
        "fixed seeds and writes the zip files with fixed timestamps: a rerun reproduces the files",
        "byte for byte (on the same JAX/XLA CPU build).",
        "",
        "## Format",
        "",
        "Each `<case>.npz` (load with `numpy.load(path)`, no pickle needed) holds:",
        "",
        "- `param:<scope>//<name>`: every parameter Haiku created, keyed exactly as in the published",
        "  `params_model_*.npz` (module path, `//`, parameter name), relative to the module run at top",
        "  level. Parameters of a `layer_stack` keep its leading stack axis (scope",
        "  `.../__layer_stack_no_state/...` where the stacked modules are built inside the stack, as in",
        "  the published files). Initialised with `global_config.zero_init=False`, then perturbed:",
        "  `p + 0.1 * N(0, 1)` with a fixed seed, so no gate, bias or output projection sits at its",
        "  initial value. In a full-model file the same keys appear under",
        "  `alphafold/alphafold_iteration/` (e.g. `alphafold/alphafold_iteration/evoformer/...`).",
        "- `input:<name>`: the inputs (float32; integer inputs int32; masks float32 with zeros).",
        "- `output:<name>`: the outputs (float32), nested dicts flattened with `/`",
        "  (e.g. `output:sc/angles_sin_cos`). Modules that return an update return it without the",
        "  residual (`output:out`), as in AlphaFold; iterations/stacks return new activations.",
        "- `config`: a JSON string: `config` (the module's config as used), `global_config`, and any",
        "  other arguments (`output_dim`, `is_extra_msa`, `is_training`, ...) plus a `note`.",
        "- `module`: the AlphaFold class or function that was run.",
        "",
        "Every module runs with `global_config.deterministic=True`, `is_training=False` (no dropout)",
        f"and `subbatch_size`/`chunk_size` {SUBBATCH} (nothing chunked), except",
        "`outer_product_mean_chunked.npz` (chunk size 3). Each module is called through",
        "`hk.transform` at top level under the name AlphaFold gives that module instance (e.g.",
        "`msa_transition`, `triangle_multiplication_outgoing`, `extra_msa_stack`, `evoformer` for",
        "EmbeddingsAndEvoformer), so scopes inside match AlphaFold's naming.",
        "",
        f"Sizes: N_res={N_RES} (last residue padded), N_seq={N_SEQ} (last row padded), "
        f"N_extra={N_EXTRA}, N_templates={N_TEMPL} (second masked out);",
        f"c_m={C_M}, c_z={C_Z}, c_e={C_E}, c_s={C_S}, c_t={C_T}.",
        "",
        "Notes on particular cases:",
        "",
        "- `attention.npz`: cross-attention (queries c_z=16, keys/values c_t=8, key_dim=value_dim=8 in",
        "  2 heads, gated), bias from a key mask (one batch element wholly masked), per-head",
        "  `nonbatched_bias`.",
        "- `global_attention.npz`: `q_data` and `m_data` are the same tensor, as MSAColumnGlobalAttention",
        "  passes them; `q_mask` is `[B, N, 1]`.",
        "- `outer_product_mean_chunked.npz`: the inputs and parameters of `outer_product_mean.npz`,",
        "  run with chunk size 3; the output equals the unchunked one (to float32 rounding).",
        "- `structure_module.npz`: `folding.generate_affines` run inside a Haiku module named",
        "  `structure_module` (what `folding.StructureModule` does before converting atom14 to atom37,",
        "  which needs atom37 features); `output:traj = output:affine * [1,1,1,1,10,10,10]`.",
        "- `fold_iteration.npz`: `output:act` is the new activation; `output:affine` is AlphaFold's",
        "  `outputs['affine']` (the new activations' affine holds the same values).",
        "- `template_embedding.npz` / `embeddings_and_evoformer.npz`: template 1 is masked out",
        "  (`template_mask` 0); residue 6 and the padded last residue are gaps (aatype 21, no atoms);",
        "  template 0 lacks CB at residue 8 (no pseudo-beta, backbone frame present) and N at",
        "  residue 9 (pseudo-beta present, no backbone frame). Backbones have ideal bond geometry.",
        "  The template pointwise attention has no gate (AlphaFold's `template.attention.gating` False).",
        "- OuterProductMean adds `output_b` before dividing by `1e-3 + norm`, so pair entries whose",
        "  mask overlap is empty (the padded residue) come out as ~1000 * bias: `output:pair` of the",
        "  iterations and of `embeddings_and_evoformer.npz` reaches a few hundred there (a few units",
        "  elsewhere). That is AlphaFold's behaviour; compare with a relative tolerance.",
        "- EmbeddingsAndEvoformer's relative-position Linear is named `pair_activiations` (sic) in",
        "  AlphaFold, and its template features go through `template_embedding/single_template_embedding`.",
        "- Rigid frames (`sc/frames/rot`, `*_frames_rot`) are row-major 3x3: `x' = rot @ x + trans`.",
        "- Affines (`input:affine`, `output:affine`) are QuatAffine tensors `[..., 7]`: unit quaternion",
        "  (w, x, y, z) then translation (in units of `position_scale` = 10 Å inside the structure module).",
        "",
        "## Config (DeepMind's CONFIG.model, resized)",
        "",
        "```json",
        json.dumps(json.loads(CFG.to_json()), indent=1, sort_keys=True),
        "```",
        "",
        "## Files",
        "",
        "| file | bytes | module | inputs | outputs |",
        "|---|---|---|---|---|",
    ]
    for fname, size, module, scopes, ins, outs in summary:
        lines.append(f"| `{fname}` | {size} | {module} | {', '.join(ins)} | {', '.join(outs)} |")
    lines += ["", "## Parameter scopes per file", ""]
    for fname, size, module, scopes, ins, outs in summary:
        lines.append(f"- `{fname}`" + ("" if scopes else ": (no parameters)"))
        for s in scopes:
            lines.append(f"  - `{s}`")
    (out_dir / "README.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--only", nargs="*", default=None, help="case names to run (default: all)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    names = list(CASES) if not args.only else args.only
    summary, total = [], 0
    for name in names:
        arrays = CASES[name](name)
        path = args.out / f"{name}.npz"
        write_npz(path, arrays)
        size = path.stat().st_size
        total += size
        ins = [k[len("input:"):] for k in sorted(arrays) if k.startswith("input:")]
        outs = [k[len("output:"):] for k in sorted(arrays) if k.startswith("output:")]
        summary.append((path.name, size, str(arrays["module"]), _scopes(arrays), ins, outs))
        n_params = sum(v.size for k, v in arrays.items() if k.startswith("param:"))
        print(f"{path.name:45s} {size:8d} bytes  {n_params:6d} params  {arrays['module']}", flush=True)
    print(f"{'total':45s} {total:8d} bytes")
    if not args.only:
        write_readme(args.out, summary)


if __name__ == "__main__":
    main()

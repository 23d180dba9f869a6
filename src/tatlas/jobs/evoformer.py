"""The Evoformer's job, behind ``tatlas fold``: from an alignment file (A3M, aligned FASTA or
Stockholm) to the predicted distogram and contact map (PNG + ``.npz``) and, with a structure module,
a Cα trace (PDB), through AlphaFold2's recycling passes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..models.evoformer.features import FeatureOptions, make_features
from ..models.evoformer.metrics import contact_probs_from_distogram
from ..models.evoformer.msa_io import read_msa
from ..models.evoformer.pdb import write_ca_pdb


@dataclass(frozen=True)
class FoldResult:
    """What :func:`fold` wrote, and the query's length and alignment depth."""

    length: int
    depth: int
    npz: Path
    contacts_png: Path
    distogram_png: Path
    pdb: Path | None


def load_model(path: str | Path, *, format: str | None = None) -> nn.Module:
    """A tatlas ``evoformer`` checkpoint, or a published parameter file with ``format="alphafold2"``."""
    import tatlas

    return tatlas.load(path, format=format, system="evoformer", fast=True).eval()


def _image(path: Path, matrix: np.ndarray, title: str, *, cmap: str = "viridis", label: str = "") -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    im = ax.imshow(matrix, cmap=cmap, origin="upper")
    fig.colorbar(im, ax=ax, label=label)
    ax.set(title=title, xlabel="residue j", ylabel="residue i")
    fig.savefig(path, dpi=100)
    return path


@torch.no_grad()
def fold(msa_path: str | Path, model: nn.Module, out_dir: str | Path, *, format: str | None = None,
         recycles: int | None = None, chunk_size: int | None = None, max_clusters: int = 128,
         max_extra: int = 1024, seed: int = 0) -> FoldResult:
    """Predict from the alignment at ``msa_path`` and write ``prediction.npz`` (``contact_probs
    [L, L]``, ``distogram_probs [L, L, B]``, ``bin_edges [B - 1]``, ``sequence``, and ``ca [L, 3]`` Å
    with a structure module), ``contacts.png``, ``distogram.png`` (expected distance) and ``ca.pdb``
    into ``out_dir``."""
    msa = read_msa(msa_path, format=format)
    options = FeatureOptions(max_clusters=max_clusters, max_extra=max_extra, masked_fraction=0.0, shuffle=False)
    features = make_features(msa.to_array(), msa.deletion_matrix, options=options, seed=seed)
    device = next(model.parameters()).device
    features = {k: v.to(device) for k, v in features.items()}
    out = model.predict(features, recycles=recycles, chunk_size=chunk_size)
    c = model.config
    logits = out.distogram_logits.float()
    probs = torch.softmax(logits, -1).cpu().numpy()
    contacts = contact_probs_from_distogram(logits, first_break=c.distogram_first, last_break=c.distogram_last)
    contacts = contacts.cpu().numpy()
    edges = model.distogram.edges.cpu().numpy()
    centres = np.concatenate([[edges[0] - (edges[1] - edges[0]) / 2], (edges[:-1] + edges[1:]) / 2, [edges[-1]]])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays = {"contact_probs": contacts, "distogram_probs": probs, "bin_edges": edges,
              "sequence": np.array(msa.sequences[0])}
    pdb = None
    if out.positions is not None:
        ca = out.positions.float().cpu().numpy()
        arrays["ca"] = ca
        pdb = out_dir / "ca.pdb"
        write_ca_pdb(pdb, ca, msa.sequences[0])
    npz = out_dir / "prediction.npz"
    np.savez_compressed(npz, **arrays)
    contacts_png = _image(out_dir / "contacts.png", contacts, f"{Path(msa_path).name}: contact probability",
                          cmap="Greys", label="P(Cβ-Cβ < 8 Å)")
    distogram_png = _image(out_dir / "distogram.png", probs @ centres, "expected distance", cmap="viridis_r",
                           label="Å")
    return FoldResult(length=msa.length, depth=msa.depth, npz=npz, contacts_png=contacts_png,
                      distogram_png=distogram_png, pdb=pdb)

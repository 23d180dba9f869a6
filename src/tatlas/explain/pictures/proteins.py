"""The Evoformer's predicted contacts against the truth, on a Potts-model protein family it was
not trained on. Model: the tiny-families preset trained for a few seconds on its own task."""

from __future__ import annotations

from pathlib import Path

import torch

from ._common import heatmap, pyplot, save, trained

EVO_STEPS = 40


@torch.no_grad()
def evoformer_contacts(out_dir: Path) -> list[Path]:
    from ...data.proteins.families import protein_families
    from ...models.evoformer.metrics import contact_precision
    from ...models.evoformer.task import DEPTH, LENGTH, contact_scores, train_options

    model = trained("evoformer", "tiny-families", EVO_STEPS, 8)
    family = protein_families(1, seed=0, split="test", length=LENGTH, depth=DEPTH)[0]
    probs = contact_scores(model, [family], options=train_options(model.config))[0]
    truth = family.contacts.astype(float)
    precision = contact_precision(probs, truth)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2))
    heatmap(axes[0], probs, title="predicted P(contact) from the distogram", xlabel="residue j", ylabel="residue i",
            cmap="Blues", colorbar="probability", vmin=0, vmax=1)
    heatmap(axes[1], truth, title="true contacts (C\u03b1 < 8 \u00c5)", xlabel="residue j", ylabel="residue i",
            cmap="Greys", colorbar="contact", vmin=0, vmax=1)
    fig.suptitle(f"Evoformer (tiny-families): a held-out family of {len(truth)} residues; long-range top-L/5 "
                 f"precision {precision:.2f}", fontsize=11)
    fig.subplots_adjust(bottom=0.17, top=0.86, wspace=0.3)
    caption = (f"Weights: tiny-families trained {EVO_STEPS} steps (batch 8) on Potts-model families; the test family "
               "is from the held-out split. A few seconds of training: expect a rough map.")
    return save(fig, out_dir, "evoformer-contacts", caption, {"probs": probs, "truth": truth,
                                                              "precision": precision})

"""Sequence models: ImageGPT's completions of half-hidden digits, the Decision Transformer's
attention over (return, state, action) tokens, and the load of each MoE layer's experts. Models:
tiny presets trained for a few seconds on their systems' own tasks."""

from __future__ import annotations

from pathlib import Path

import torch

from ._common import heatmap, pyplot, save, trained

IGPT_STEPS, DT_STEPS, MOE_STEPS = 60, 60, 40


@torch.no_grad()
def imagegpt_completions(out_dir: Path) -> list[Path]:
    from ...models.imagegpt.task import digit_tokens

    model = trained("imagegpt", "tiny", IGPT_STEPS, 32)
    c = model.config
    _, _, test = digit_tokens(c, 0)
    pixels = torch.stack([test[i]["pixels"] for i in range(4)])  # [4, N] colour tokens
    n, kept, samples = pixels.shape[1], pixels.shape[1] // 2, 3
    gen = torch.Generator().manual_seed(0)
    seq = torch.cat([torch.full((4, 1), c.sos_token), pixels[:, :kept]], 1).repeat_interleave(samples, 0)
    for _ in range(n - kept):
        probs = model(tokens=seq)[:, -1, : c.clusters].float().softmax(-1)
        seq = torch.cat([seq, torch.multinomial(probs, 1, generator=gen)], 1)
    completed = seq[:, 1:].reshape(4, samples, n)
    match = float((completed[:, :, kept:] == pixels[:, None, kept:]).float().mean())
    images = model.decode_images(pixels)
    shown = model.decode_images(completed.reshape(-1, n)).reshape(4, samples, 3, c.image_size, c.image_size)
    masked = images.clone().reshape(4, 3, -1)
    masked[:, :, kept:] = 0.5
    masked = masked.reshape(images.shape)
    plt = pyplot()
    fig, axes = plt.subplots(4, 2 + samples, figsize=(1.8 * (2 + samples), 8))
    for i in range(4):
        row = [images[i], masked[i], *shown[i]]
        for j, im in enumerate(row):
            axes[i, j].imshow(im.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(["original", "top half given", *(f"sample {k + 1}" for k in range(samples))][j],
                                     fontsize=9)
    fig.suptitle("ImageGPT (tiny): the bottom half of unseen digits, sampled pixel by pixel", fontsize=11)
    fig.subplots_adjust(bottom=0.09, top=0.92)
    caption = (f"Weights: tiny preset trained {IGPT_STEPS} steps (batch 32) on the digits' colour tokens "
               f"({c.clusters} colours). {match:.0%} of sampled pixels equal the original's.")
    return save(fig, out_dir, "imagegpt-completions", caption, {"pixel_match": match, "kept": kept,
                                                                 "completed": completed, "original": pixels})


@torch.no_grad()
def decision_transformer_attention(out_dir: Path) -> list[Path]:
    from ..capture import attention_weights

    model = trained("decision_transformer", "tiny", DT_STEPS, 32)
    from ...models.registry import get_system

    task = get_system("decision_transformer").train_task(model.config, 0)
    item = task.train_data[0]  # one window of a real trajectory
    keys = ("states", "actions", "returns_to_go", "timesteps")
    sample = {k: torch.as_tensor(item[k])[None] for k in keys}
    t = min(sample["states"].shape[1], 6)
    sample = {k: v[:, -t:] for k, v in sample.items()}
    last = len(model.layers) - 1
    with attention_weights(model, where=lambda n: n == f"layers.{last}.attn") as rec:
        model(**sample)
    w = rec[f"layers.{last}.attn"][0][0].mean(0).numpy()  # [3T, 3T]
    labels = [f"{kind}{i + 1}" for i in range(t) for kind in ("R", "s", "a")]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 7.4))
    heatmap(ax, w, title="last block (mean over heads): query token -> key token", xlabel="key (attended to)",
            ylabel="query", cmap="viridis", colorbar="attention weight", xticks=labels, yticks=labels)
    fig.suptitle("Decision Transformer (tiny): attention over returns-to-go R, states s, actions a", fontsize=11)
    on_return = float(w[1::3, 0::3].sum(1).mean())
    fig.subplots_adjust(bottom=0.17, top=0.9)
    caption = (f"Weights: tiny preset trained {DT_STEPS} steps (batch 32) on its offline-RL task; one real trajectory "
               f"window. The state tokens (which predict actions) put {on_return:.0%} of their attention on "
               "return tokens.")
    return save(fig, out_dir, "decision_transformer-attention", caption,
                {"attention": w, "tokens": labels, "state_to_return": on_return})


@torch.no_grad()
def llm_expert_load(out_dir: Path) -> list[Path]:
    from ...models.registry import get_system

    model = trained("llm", "tiny-moe", MOE_STEPS, 16)
    task = get_system("llm").train_task(model.config, 0)
    items = [task.train_data[i] for i in range(8)]
    tokens = torch.stack([torch.as_tensor(it["tokens"] if isinstance(it, dict) else it) for it in items])
    routings: list = []
    model(tokens, routings=routings)
    load = torch.stack([r.load.float() for r in routings])  # [layers, E]
    share = (load / load.sum(1, keepdim=True)).numpy()
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 1.6 + 0.7 * len(share)))
    heatmap(ax, share, title="share of (token, expert) assignments per layer", xlabel="expert", ylabel="MoE layer",
            cmap="Blues", colorbar="share of assignments", annotate=True,
            xticks=[str(e) for e in range(share.shape[1])], yticks=[str(i) for i in range(len(share))], vmin=0)
    k = model.config.moe.k
    fig.suptitle(f"MoE (llm tiny-moe, top-{k} of {share.shape[1]}): how the router spreads {tokens.numel()} tokens",
                 fontsize=10)
    fig.subplots_adjust(bottom=0.25, top=0.82)
    caption = (f"Weights: tiny-moe trained {MOE_STEPS} steps (batch 16) on the text corpus with its balance loss. "
               f"Even load would be {1 / share.shape[1]:.3f} per expert.")
    return save(fig, out_dir, "llm-expert-load", caption, {"share": share, "tokens": int(tokens.numel()), "k": k})

"""Action-selection latency of the Decision Transformer per environment step: tatlas' cached agent
(three new tokens per step into a KV cache, refilled from the last K/2 steps when the window is
full), tatlas recomputing the K-step context every step, and transformers'
``DecisionTransformerModel`` recomputing it as its documented ``get_action`` does (the last K steps,
left-padded to K with an attention mask), on the same weights (random, float32, CPU), in one run.

    python benchmarks/bench_decision_transformer.py [--shapes tiny,gym-hopper] [--batches 1,16] [--steps 200]

An episode of ``--steps`` steps (states and rewards drawn at random) is acted through by each
implementation; the figure is the mean time per step of the fastest of ``--repeats`` episodes.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from _timing import add_contend, best_time, contended

SHAPES = {
    "tiny": ("tiny", {}),  # width 64, 2 layers, 4 heads, K = 20, Pendulum-sized
    "gym-hopper": ("gym-hopper", {}),  # the paper's Gym model: width 128, 3 layers, 1 head, K = 20
}


def hf_episode(model, states, rewards, target, k):
    """transformers: the get_action of its documentation, once per step."""
    b, n, s = states.shape
    a_dim = model.config.act_dim
    actions = torch.zeros(b, 0, a_dim)
    rtg = torch.full((b, 1, 1), target)
    for t in range(n):
        lo = max(0, t - k + 1)
        st = states[:, lo : t + 1]
        ac = torch.cat([actions[:, lo:], torch.zeros(b, 1, a_dim)], dim=1)
        rt = rtg[:, lo : t + 1]
        ts = torch.arange(lo, t + 1).expand(b, -1)
        pad = k - st.shape[1]
        mask = torch.cat([torch.zeros(b, pad, dtype=torch.long), torch.ones(b, st.shape[1], dtype=torch.long)], 1)
        out = model(states=torch.cat([torch.zeros(b, pad, s), st], 1),
                    actions=torch.cat([torch.zeros(b, pad, a_dim), ac], 1),
                    returns_to_go=torch.cat([torch.zeros(b, pad, 1), rt], 1),
                    timesteps=torch.cat([torch.zeros(b, pad, dtype=torch.long), ts], 1), attention_mask=mask)
        action = out.action_preds[:, -1]
        actions = torch.cat([actions, action[:, None]], dim=1)
        rtg = torch.cat([rtg, rtg[:, -1:] - rewards[:, t, None, None]], dim=1)
    return actions


def ours_episode(model, states, rewards, target, options):
    from tatlas.models.decision_transformer import ReturnConditionedPolicy

    agent = ReturnConditionedPolicy(model, target, batch=states.shape[0], options=options)
    out = []
    for t in range(states.shape[1]):
        out.append(agent.act(states[:, t]))
        agent.observe(rewards[:, t])
    return torch.stack(out, dim=1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="tiny,gym-hopper")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    add_contend(ap)
    args = ap.parse_args()
    with contended(args.contend):
        _run(args)


def _run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)

    from transformers import DecisionTransformerModel

    import tatlas
    from tatlas.models.decision_transformer import ActOptions
    from tatlas.models.decision_transformer.convert import to_hf

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, episode of {args.steps} steps, float32")
    for shape in args.shapes.split(","):
        preset, overrides = SHAPES[shape]
        torch.manual_seed(0)
        ours = tatlas.create("decision_transformer", preset, **overrides).eval()
        with tempfile.TemporaryDirectory() as d:
            ref = DecisionTransformerModel.from_pretrained(to_hf(ours, d)).eval()
        c = ours.config
        for batch in (int(b) for b in args.batches.split(",")):
            gen = torch.Generator().manual_seed(0)
            states = torch.randn(batch, args.steps, c.state_dim, generator=gen)
            rewards = torch.rand(batch, args.steps, generator=gen)
            cached, recompute = ActOptions(cached=True), ActOptions(cached=False)
            with torch.inference_mode():
                # the same actions while the context is the same (the first K steps)
                a = ours_episode(ours, states[:, : c.context], rewards, 100.0, cached)
                h = hf_episode(ref, states[:, : c.context], rewards, 100.0, c.context)
                diff = (a - h).abs().max().item()
                runs = {
                    "tatlas cached": lambda: ours_episode(ours, states, rewards, 100.0, cached),
                    "tatlas recompute": lambda: ours_episode(ours, states, rewards, 100.0, recompute),
                    "transformers": lambda: hf_episode(ref, states, rewards, 100.0, c.context),
                }
                ms = {k: best_time(fn, args.repeats) / args.steps * 1e3 for k, fn in runs.items()}
            line = ", ".join(f"{k} {v:.3f} ms/step" for k, v in ms.items())
            print(f"{shape} (width {c.dim}, {c.layers} layers, {c.heads} heads, K {c.context}) batch {batch}: {line}; "
                  f"cached/recompute {ms['tatlas recompute'] / ms['tatlas cached']:.2f}x, "
                  f"cached/transformers {ms['transformers'] / ms['tatlas cached']:.2f}x, "
                  f"recompute/transformers {ms['transformers'] / ms['tatlas recompute']:.2f}x "
                  f"(first-K actions max diff {diff:.1e})", flush=True)


if __name__ == "__main__":
    main()

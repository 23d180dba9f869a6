"""Parity of the ``decision_transformer`` row with transformers' ``DecisionTransformerModel`` (tiny
random: state 11, act 3, hidden 32, 2 layers, 4 heads, 30 positions; every parameter re-randomised,
the GPT-2 position table included, so its constant row 0 matters), loaded through tatlas' own
converter from a ``save_pretrained`` folder; and the export back to a folder transformers loads."""

import pytest
import torch
from transformers import DecisionTransformerConfig, DecisionTransformerModel

import tatlas
from parity import assert_close, perturb_, save_hf
from tatlas.models.decision_transformer import ActOptions, ReturnConditionedPolicy
from tatlas.models.decision_transformer.convert import to_hf

STATE, ACT, T = 11, 3, 10


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    config = DecisionTransformerConfig(state_dim=STATE, act_dim=ACT, hidden_size=32, n_layer=2, n_head=4,
                                       n_positions=30, max_ep_len=64, resid_pdrop=0.0, embd_pdrop=0.0,
                                       attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)
    return perturb_(DecisionTransformerModel(config), seed=1).eval()


def _inputs(gen, batch=2, t=T, max_ep_len=64):
    return {
        "states": torch.randn(batch, t, STATE, generator=gen),
        "actions": torch.rand(batch, t, ACT, generator=gen) * 2 - 1,
        "returns_to_go": torch.randn(batch, t, 1, generator=gen) * 3,
        "timesteps": torch.randint(0, max_ep_len - t, (batch, 1), generator=gen) + torch.arange(t),
    }


def _compare(ours, ref, x, *, mask=None, what="decision transformer"):
    with torch.no_grad():
        mine = ours(**x, attention_mask=mask)
        theirs = ref(**x, attention_mask=None if mask is None else mask.long())
    keep = slice(None) if mask is None else mask.bool()
    diffs = {}
    for name in ("action_preds", "state_preds", "return_preds"):
        a, b = getattr(mine, name), getattr(theirs, name)
        diffs[name] = assert_close(a[keep], b[keep], atol=1e-4, what=f"{what} {name}")
    return diffs


def test_predictions_equal_reference(reference, tmp_path, gen):
    ours = tatlas.load(save_hf(reference, tmp_path / "hf"), system="decision_transformer").eval()
    c = ours.config
    assert (c.state_dim, c.act_dim, c.dim, c.layers, c.heads, c.context, c.max_ep_len) == (STATE, ACT, 32, 2, 4, 10, 64)
    assert reference.encoder.wpe.weight[0].abs().max() > 0.05, "position row 0 is ~0: its folding is not tested"
    diffs = _compare(ours, reference, _inputs(gen))
    print("decision transformer max abs diffs:", {k: f"{v:.1e}" for k, v in diffs.items()})


def test_left_padded_batch_equals_reference(reference, tmp_path, gen):
    """The padded windows of its get_action: padding on the left, masked; compared on real steps."""
    ours = tatlas.load(save_hf(reference, tmp_path / "hf"), system="decision_transformer").eval()
    mask = torch.ones(2, T, dtype=torch.bool)
    mask[0, :4] = False
    _compare(ours, reference, _inputs(gen), mask=mask, what="left-padded")


def test_cached_agent_matches_reference_get_action(reference, tmp_path, gen):
    """Our cached agent's actions step by step equal the reference re-encoding the whole history."""
    ours = tatlas.load(save_hf(reference, tmp_path / "hf"), system="decision_transformer").eval()
    agent = ReturnConditionedPolicy(ours, 20.0, batch=2, options=ActOptions(cached=True))
    x = _inputs(gen, t=8)
    x["timesteps"] = torch.arange(8).expand(2, -1)
    rtg = torch.full((2,), 20.0)
    for t in range(8):
        mine = agent.act(x["states"][:, t])
        x["returns_to_go"][:, t, 0] = rtg
        x["actions"][:, t] = mine
        with torch.no_grad():
            theirs = reference(**{k: v[:, : t + 1] for k, v in x.items()}).action_preds[:, -1]
        assert_close(mine, theirs, atol=1e-4, what=f"action at step {t}")
        reward = torch.rand(2, generator=gen)
        agent.observe(reward)
        rtg = rtg - reward


def test_export_to_hf_round_trip(tmp_path, gen):
    """Ours (with non-trivial input normalisation) -> a folder transformers loads -> the same outputs,
    and back through our converter."""
    ours = perturb_(tatlas.create("decision_transformer", "tiny", state_dim=STATE, act_dim=ACT, dim=32, layers=2,
                                  heads=4, context=T, max_ep_len=64), seed=2).eval()
    ours.set_normalisation(torch.randn(STATE, generator=gen), torch.rand(STATE, generator=gen) + 0.5, 7.0)
    folder = to_hf(ours, tmp_path / "out")
    ref = DecisionTransformerModel.from_pretrained(folder).eval()
    x = _inputs(gen)
    _compare(ours, ref, x, what="exported")
    back = tatlas.load(folder)
    with torch.no_grad():
        torch.testing.assert_close(back(**x), ours(**x), atol=1e-5, rtol=1e-5)


def test_discrete_model_cannot_be_exported():
    with pytest.raises(ValueError, match="continuous actions only"):
        to_hf(tatlas.create("decision_transformer", "tiny-discrete"), "unused")

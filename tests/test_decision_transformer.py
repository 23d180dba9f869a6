"""The ``decision_transformer`` row: model shapes and bad input, cached acting == recomputing the
context, returns-to-go and training windows, offline datasets (save, load, the D4RL and folder
layouts, errors that name the field), rollouts, the training task, and the demo in quick mode."""

import dataclasses
import json

import numpy as np
import pytest
import torch

import tatlas
from tatlas.data.offline_rl import (
    ActionSpace, DatasetError, Episode, OfflineDataset, TrajectoryWindows, collect, load_dataset, parse_mix,
    returns_to_go, save_dataset,
)
from tatlas.models.decision_transformer import ActOptions, ReturnConditionedPolicy
from tatlas.models.decision_transformer.rollout import rollout
from tatlas.models.decision_transformer.task import action_loss, dataset_task, train_task


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


def _model(preset="tiny", **overrides):
    torch.manual_seed(0)
    return tatlas.create("decision_transformer", preset, **overrides).eval()


def _window(model, gen, b=2, t=6):
    c = model.config
    actions = (torch.randint(0, c.act_dim, (b, t), generator=gen) if c.discrete
               else torch.rand(b, t, c.act_dim, generator=gen) * 2 - 1)
    return {"states": torch.randn(b, t, c.state_dim, generator=gen), "actions": actions,
            "returns_to_go": torch.randn(b, t, 1, generator=gen), "timesteps": torch.arange(t).expand(b, -1) + 3}


# ---------------------------------------------------------------------- model


@pytest.mark.parametrize("preset", ["tiny", "tiny-discrete"])
def test_output_shapes_and_action_range(preset, gen):
    model = _model(preset)
    c = model.config
    out = model(**_window(model, gen))
    assert out.action_preds.shape == (2, 6, c.act_dim)
    assert out.state_preds.shape == (2, 6, c.state_dim) and out.return_preds.shape == (2, 6, 1)
    if not c.discrete:
        assert out.action_preds.abs().max() <= 1.0  # tanh


def test_action_at_t_does_not_see_a_t_or_later(gen):
    """§3: a_t is predicted from the tokens up to s_t: changing a_t or anything later leaves it."""
    model = _model()
    x = _window(model, gen)
    y = {k: v.clone() for k, v in x.items()}
    y["actions"][:, 3:] = torch.rand_like(y["actions"][:, 3:])
    y["states"][:, 4:] += 1.0
    with torch.no_grad():
        a, b = model(**x).action_preds, model(**y).action_preds
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert (a[:, 4:] - b[:, 4:]).abs().max() > 1e-4


def test_discrete_actions_as_indices_equal_one_hot(gen):
    model = _model("tiny-discrete")
    x = _window(model, gen)
    one_hot = dict(x, actions=torch.nn.functional.one_hot(x["actions"], 2).float())
    with torch.no_grad():
        torch.testing.assert_close(model(**x).action_preds, model(**one_hot).action_preds)


def test_normalisation_buffers_act_on_inputs(gen):
    """With mean m, std σ and return scale k installed, inputs m + σ s and k R act as s and R did."""
    model = _model()
    x = _window(model, gen)
    with torch.no_grad():
        before = model(**x).action_preds
        model.set_normalisation(torch.full((3,), 0.5), torch.full((3,), 2.0), 10.0)
        scaled = model(**dict(x, states=0.5 + 2.0 * x["states"], returns_to_go=10.0 * x["returns_to_go"]))
        assert (model(**x).action_preds - before).abs().max() > 1e-4
    torch.testing.assert_close(scaled.action_preds, before, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="state_std and return_scale must be positive"):
        model.set_normalisation(torch.zeros(3), torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match=r"expected state_mean and state_std of shape \[3\]"):
        model.set_normalisation(torch.zeros(4), torch.ones(4), 1.0)


@pytest.mark.parametrize("field,value,message", [
    ("states", torch.zeros(2, 6, 4), r"states: expected a float tensor \[B, T, 3\] \(state_dim 3\), got torch.float32 \[2, 6, 4\]"),
    ("actions", torch.zeros(2, 6, 2), r"actions: expected \[B, T, 1\] \(act_dim 1\) for T = 6, got torch.float32 \[2, 6, 2\]"),
    ("returns_to_go", torch.zeros(2, 5, 1), r"returns_to_go: expected a float tensor \[B, T, 1\] or \[B, T\]"),
    ("timesteps", torch.full((2, 6), 1000), r"timesteps: expected values in \[0, 999\] \(max_ep_len 1000\)"),
    ("timesteps", torch.zeros(2, 6), r"timesteps: expected integers of shape \[2, 6\]"),
])
def test_bad_input_is_named(field, value, message, gen):
    model = _model()
    x = _window(model, gen)
    x[field] = value
    with pytest.raises(ValueError, match=message):
        model(**x)


def test_bad_discrete_actions_are_named(gen):
    model = _model("tiny-discrete")
    x = _window(model, gen)
    with pytest.raises(ValueError, match=r"actions: expected indices in \[0, 1\] \(2 discrete actions\), got values in \[5, 5\]"):
        model(**dict(x, actions=torch.full((2, 6), 5)))
    with pytest.raises(ValueError, match=r"one-hot \[B, T, 2\] or indices \[B, T\]"):
        model(**dict(x, actions=torch.zeros(2, 6, 3)))


def test_config_validation():
    with pytest.raises(ValueError, match="action_head: expected one of"):
        tatlas.create("decision_transformer", "tiny", action_head="softmax")
    with pytest.raises(ValueError, match="discrete action space needs >= 2 actions"):
        tatlas.create("decision_transformer", "tiny-discrete", act_dim=1)


def test_attention_mask_hides_padding(gen):
    """Left padding that is masked changes nothing on the real steps."""
    model = _model()
    x = _window(model, gen, b=1, t=6)
    padded = {k: torch.cat([torch.randn_like(v.float()).to(v.dtype).abs() % 3, v], dim=1) for k, v in x.items()}
    mask = torch.tensor([[False] * 6 + [True] * 6])
    with torch.no_grad():
        torch.testing.assert_close(model(**padded, attention_mask=mask).action_preds[:, 6:],
                                   model(**x).action_preds, atol=1e-5, rtol=1e-5)
        assert (model(**padded).action_preds[:, 6:] - model(**x).action_preds).abs().max() > 1e-4


# ---------------------------------------------------------------------- acting: cached == recompute


def _forward_action(model, agent, lo, t):
    """The action the training-time forward predicts from the context lo..t of the agent's history."""
    time = torch.arange(lo, t + 1).expand(agent.batch, -1)
    with torch.no_grad():
        out = model(agent.states[:, lo : t + 1], agent.actions[:, lo : t + 1], agent.returns[:, lo : t + 1], time)
    return out.action_preds[:, -1]


@pytest.mark.parametrize("preset", ["tiny", "tiny-discrete"])
def test_cached_equals_recompute_within_the_window(preset, gen):
    model = _model(preset, context=8)
    c = model.config
    b = 3
    cached = ReturnConditionedPolicy(model, torch.tensor([5.0, 50.0, 500.0]), batch=b, options=ActOptions(sample=False))
    recompute = ReturnConditionedPolicy(model, torch.tensor([5.0, 50.0, 500.0]), batch=b,
                                        options=ActOptions(cached=False, sample=False))
    for t in range(c.context):
        s = torch.randn(b, c.state_dim, generator=gen)
        assert cached.context_start == recompute.context_start == 0
        a, r = cached.act(s), recompute.act(s)
        if c.discrete:
            assert a.tolist() == r.tolist()
            torch.testing.assert_close(cached.actions[:, t], recompute.actions[:, t])
        else:
            torch.testing.assert_close(a, r, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(a, _forward_action(model, recompute, 0, t), atol=1e-5, rtol=1e-5)
        reward = torch.rand(b, generator=gen)
        cached.observe(reward)
        recompute.observe(reward)
    torch.testing.assert_close(cached.returns, recompute.returns)


def test_beyond_the_window_each_mode_equals_forward_on_its_context(gen):
    """Past K steps, recompute acts from the last K timesteps and the cache from its refilled
    context (keep..K timesteps); both equal the training-time forward over that context."""
    model = _model(context=6)
    for options in (ActOptions(cached=False), ActOptions(keep=3), ActOptions(keep=6), ActOptions(context=4, keep=2)):
        agent = ReturnConditionedPolicy(model, 10.0, batch=2, options=options)
        starts = []
        for t in range(20):
            lo = agent.context_start
            starts.append(lo)
            a = agent.act(torch.randn(2, 3, generator=gen))
            torch.testing.assert_close(a, _forward_action(model, agent, lo, t), atol=1e-5, rtol=1e-5)
            agent.observe(torch.rand(2, generator=gen))
        spans = [t - lo + 1 for t, lo in enumerate(starts)]
        if options.context == 4:  # acting from a shorter context than the model's K = 6
            assert max(spans) == 4 and min(spans[4:]) == 2 and agent.cache.max_len == 12
        elif options.cached and options.keep == 3:
            assert min(spans[6:]) == 3 and max(spans) == 6 and starts[6] == 4  # refilled from the last 3
        else:
            assert spans[6:] == [6] * 14  # a sliding window of exactly K


def test_agent_rejects_wrong_state_size_and_too_long_episodes():
    model = _model(max_ep_len=3)
    agent = ReturnConditionedPolicy(model, 1.0, batch=2)
    with pytest.raises(ValueError, match=r"states: expected \[2, 3\] \(batch, state_dim\), got \[2, 4\]"):
        agent.act(torch.zeros(2, 4))
    for _ in range(3):
        agent.act(torch.zeros(2, 3))
        agent.observe(torch.zeros(2))
    with pytest.raises(ValueError, match="step 3 is beyond the model's timestep embedding"):
        agent.act(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="keep: expected at most the context"):
        ReturnConditionedPolicy(model, 1.0, options=ActOptions(keep=50))


# ---------------------------------------------------------------------- data


def test_returns_to_go():
    np.testing.assert_allclose(returns_to_go(np.array([1.0, 2.0, 3.0, -1.0])), [5.0, 4.0, 2.0, -1.0])
    np.testing.assert_allclose(returns_to_go(np.array([-1.0] * 5)), [-5, -4, -3, -2, -1])


def _episode(t, s=3, a=1, discrete=False, policy="x"):
    rng = np.random.default_rng(t)
    actions = rng.integers(0, 2, t) if discrete else rng.uniform(-2, 2, (t, a)).astype(np.float32)
    term = np.zeros(t, bool)
    term[-1] = True
    return Episode(rng.normal(size=(t + 1, s)).astype(np.float32), actions, np.arange(t, dtype=np.float32),
                   term, np.zeros(t, bool), policy)


def _box():
    return ActionSpace(discrete=False, low=(-2.0,), high=(2.0,))


def test_windows_are_right_padded_with_returns_to_go():
    data = OfflineDataset([_episode(5), _episode(3)], _box(), "Pendulum-v1")
    w = TrajectoryWindows(data, context=4)
    assert len(w) == 8
    item = w[3]  # episode 0, steps 3..4, then padding
    assert item["mask"].tolist() == [True, True, False, False]
    assert item["timesteps"][:2].tolist() == [3, 4]
    np.testing.assert_allclose(item["returns_to_go"][:2, 0], [3 + 4, 4])
    np.testing.assert_allclose(item["actions"][:2], data.action_space.to_unit(data.episodes[0].actions[3:5]))
    item = w[5]  # episode 1 from its start
    assert item["mask"].tolist() == [True, True, True, False] and item["timesteps"][:3].tolist() == [0, 1, 2]
    d = OfflineDataset([_episode(4, discrete=True)], ActionSpace(discrete=True, n=2))
    item = TrajectoryWindows(d, context=4)[0]
    assert item["target"].tolist() == d.episodes[0].actions.tolist()
    assert item["actions"].argmax(-1).tolist() == d.episodes[0].actions.tolist()


def test_loss_ignores_padding(gen):
    model = _model()
    data = OfflineDataset([_episode(3), _episode(9)], _box())
    w = TrajectoryWindows(data, context=6)
    batch = torch.utils.data.default_collate([w[0], w[4]])
    loss = action_loss(model, batch)
    batch["states"][~batch["mask"]] = 100.0
    batch["target"][~batch["mask"]] = 5.0
    torch.testing.assert_close(action_loss(model, batch), loss)


def test_save_load_round_trip(tmp_path):
    data = collect("CartPole-v1", episodes=6, mix="random=1,expert=1,noisy=1", seed=3)
    assert sorted(e.policy.split("(")[0] for e in data.episodes) == ["expert"] * 2 + ["noisy"] * 2 + ["random"] * 2
    path = save_dataset(data, tmp_path / "d.npz")
    back = load_dataset(path)
    assert back.env_id == "CartPole-v1" and back.action_space == data.action_space
    assert [e.policy for e in back.episodes] == [e.policy for e in data.episodes]
    for a, b in zip(data.episodes, back.episodes, strict=True):
        for f in ("observations", "actions", "rewards", "terminations", "truncations"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    np.testing.assert_allclose(back.returns(), data.returns())
    with np.load(path) as z:  # Minari's per-episode fields
        assert {"episode_0/observations", "episode_0/actions", "episode_0/rewards", "episode_0/terminations",
                "episode_0/truncations", "metadata"} <= set(z.files)
        assert json.loads(str(z["metadata"]))["action_space"] == {"type": "discrete", "n": 2}


def test_collect_mixes_quality_in_every_environment():
    for env, lo, hi in (("CartPole-v1", 0, 500), ("Pendulum-v1", -2000, 0), ("MountainCar-v0", -200, -50)):
        data = collect(env, episodes=3, mix="random=1,expert=2", seed=0)
        r = data.returns_by_policy()
        assert lo <= r["random"].min() and r["expert"].max() <= hi
        assert r["expert"].mean() > r["random"].mean() + 50, (env, r)
        e = data.episodes[0]
        assert e.observations.shape == (len(e) + 1, data.state_dim)
        assert e.terminations[-1] or e.truncations[-1]


def test_parse_mix_errors():
    assert parse_mix("random=1, noisy=3") == {"random": 1.0, "noisy": 3.0}
    with pytest.raises(ValueError, match=r"unknown policies \['greedy'\]"):
        parse_mix("greedy=1")
    with pytest.raises(ValueError, match="NAME=WEIGHT"):
        parse_mix("random=lots")
    with pytest.raises(ValueError, match="positive sum"):
        parse_mix("random=0")


def _write(path, arrays):
    np.savez(path, **arrays)
    return path


def _fields(t=4, s=3):
    e = _episode(t, s)
    return {f"episode_0/{k}": getattr(e, k) for k in ("observations", "actions", "rewards", "terminations", "truncations")}


@pytest.mark.parametrize("mutate,message", [
    (lambda a: a.pop("episode_0/rewards"), r"episode_0: missing field 'rewards'"),
    (lambda a: a.update({"episode_0/observations": np.zeros((4, 3), np.float32)}),
     r"episode_0: field 'observations' must be numeric \[T \+ 1, S\] = \[5, S\]"),
    (lambda a: a.update({"episode_0/terminations": np.zeros(2, bool)}), r"field 'terminations' must be \[T\] = \[4\]"),
    (lambda a: a.update({"episode_0/rewards": np.array([1.0, np.nan, 0.0, 1.0])}), r"field 'rewards' holds NaN"),
    (lambda a: a.update({"episode_0/rewards": np.zeros(0), "episode_0/observations": np.zeros((1, 3))}),
     r"field 'rewards' is empty"),
    (lambda a: a.update({"metadata": np.array("{not json")}), r"field 'metadata' is not JSON"),
    (lambda a: a.update({"metadata": np.array(json.dumps({"action_space": {"type": "cube"}}))}),
     r"field 'metadata.action_space' is malformed"),
    (lambda a: a.update({"metadata": np.array(json.dumps({"action_space": {"type": "box", "low": [-1, -1], "high": [1, 1]}}))}),
     r"field 'actions' must be float \[T, A\] = \[4, 2\]"),
    (lambda a: a.update({"episode_2/rewards": np.zeros(3)}), r"'episode_1' is missing"),
])
def test_malformed_dataset_errors_name_the_field(tmp_path, mutate, message):
    arrays = _fields()
    mutate(arrays)
    path = _write(tmp_path / "bad.npz", arrays)
    with pytest.raises(DatasetError, match=message):
        load_dataset(path)


def test_empty_and_unreadable_files(tmp_path):
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(DatasetError, match="the file is empty"):
        load_dataset(empty)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(DatasetError, match="not a NumPy .npy or .npz file"):
        load_dataset(junk)
    with pytest.raises(DatasetError, match="no episodes: expected fields"):
        load_dataset(_write(tmp_path / "other.npz", {"weights": np.zeros(3)}))
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(tmp_path / "missing.npz")
    with pytest.raises(DatasetError, match="dataset has no episodes"):
        OfflineDataset([], _box())


def test_d4rl_flat_arrays_split_into_episodes(tmp_path):
    obs = np.arange(7 * 2, dtype=np.float32).reshape(7, 2)
    arrays = {"observations": obs, "actions": np.linspace(-0.5, 0.5, 7, dtype=np.float32)[:, None],
              "rewards": np.ones(7, np.float32), "terminals": np.array([0, 0, 1, 0, 0, 0, 0], bool),
              "timeouts": np.array([0, 0, 0, 0, 0, 1, 0], bool), "next_observations": obs + 100}
    data = load_dataset(_write(tmp_path / "d4rl.npz", arrays))
    assert [len(e) for e in data.episodes] == [3, 3, 1]
    assert data.action_space == ActionSpace(discrete=False, low=(-1.0,), high=(1.0,))
    e0, e1, e2 = data.episodes
    assert e0.terminations.tolist() == [False, False, True] and e1.truncations.tolist() == [False, False, True]
    assert e2.truncations.tolist() == [True]  # cut off by the end of the arrays
    np.testing.assert_array_equal(e0.observations[-1], obs[2] + 100)
    arrays.pop("terminals")
    with pytest.raises(DatasetError, match="missing field 'terminals'"):
        load_dataset(_write(tmp_path / "bad.npz", arrays))


def test_folder_of_npy_files_without_metadata(tmp_path):
    arrays = _fields(t=5)
    arrays["episode_0/actions"] = np.array([0, 1, 1, 0, 2])
    for name, value in arrays.items():
        (tmp_path / "ds" / name).parent.mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / "ds" / f"{name}.npy", value)
    data = load_dataset(tmp_path / "ds")
    assert data.action_space == ActionSpace(discrete=True, n=3) and len(data.episodes[0]) == 5
    np.save(tmp_path / "ds" / "episode_0" / "actions.npy", np.linspace(-3, 3, 5))  # a 1-D box without its axis
    data = load_dataset(tmp_path / "ds")
    assert data.action_space == ActionSpace(discrete=False, low=(-3.0,), high=(3.0,))
    assert data.episodes[0].actions.shape == (5, 1)


# ---------------------------------------------------------------------- training and rollouts


def test_task_trains_and_installs_normalisation():
    model = _model("tiny-discrete")
    task = train_task(model.config, seed=0)
    batch = torch.utils.data.default_collate([task.train_data[i] for i in range(0, 400, 50)])
    model.train()
    loss = task.loss_fn(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and model.embed_return.weight.grad is not None
    assert model.return_scale.item() == 500.0 and (model.state_std != 1).all()


def test_dataset_that_does_not_fit_the_model_is_an_error():
    data = collect("CartPole-v1", episodes=2, seed=0)
    with pytest.raises(ValueError, match="states have 4 dims, the model's state_dim is 3; actions are discrete"):
        dataset_task(data, _model().config)
    with pytest.raises(ValueError, match="no embedded environment has state_dim 11"):
        train_task(tatlas.create("decision_transformer", "gym-hopper", device="meta").config)


def test_rollout_runs_episodes_and_checks_the_model():
    model = _model("tiny-discrete")
    r = rollout(model, "CartPole-v1", 100.0, episodes=3, seed=0)
    assert r.returns.shape == (3,) and (r.lengths >= 8).all() and np.allclose(r.returns, r.lengths)
    again = rollout(model, "CartPole-v1", 100.0, episodes=3, seed=0, options=ActOptions(cached=False))
    np.testing.assert_array_equal(again.returns, r.returns)  # the same actions, cached or not
    with pytest.raises(ValueError, match="does not fit Pendulum-v1: observations have 3 dims, the model's state_dim is 4"):
        rollout(model, "Pendulum-v1", 0.0, episodes=1)
    short = dataclasses.replace(model.config, max_ep_len=100)
    with pytest.raises(ValueError, match="episodes last up to 500 steps, the model's max_ep_len is 100"):
        rollout(tatlas.create("decision_transformer", "tiny-discrete", max_ep_len=short.max_ep_len), "CartPole-v1", 1.0)


def test_demo_quick(tmp_path):
    from tatlas.demo import DemoOptions
    from tatlas.demo.decision_transformer import run

    result = run(DemoOptions(out_dir=tmp_path, quick=True, progress=False))
    assert result.system == "decision_transformer" and np.isfinite(result.value)
    assert 0 < result.baseline_value < result.details["data_best"] <= 500
    assert (tmp_path / "target_vs_achieved.png").stat().st_size > 0
    assert load_dataset(tmp_path / "cartpole-mixed-v0").env_id == "CartPole-v1"
    assert tatlas.load(tmp_path / "run" / "model.safetensors").return_scale.item() == result.details["data_best"]

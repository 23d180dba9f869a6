"""Offline-RL data in Minari's own layout and the sparse-reward environment: datasets written by
tatlas open in ``minari.load_dataset`` with the same episodes, datasets written by Minari's own
writers load in tatlas with identical arrays (D4RL's flat HDF5 files too), malformed Minari files
name the episode and the field, and ``MountainCarSparse-v0`` pays 1 only on the step that reaches
the flag."""

import json
import warnings

import gymnasium as gym
import h5py
import numpy as np
import pytest
import torch

import tatlas
from tatlas.data.offline_rl import (
    FIELDS, ActionSpace, DatasetError, Episode, OfflineDataset, TrajectoryWindows, collect, dataset_layout,
    load_dataset, make_env, returns_to_go, save_dataset,
)

import minari  # the test extra pins minari[create]==0.5.4

# Minari asks for author, description etc. when creating a dataset; these tests give them all
_MINARI_INFO = {"algorithm_name": "random", "author": "tatlas tests", "author_email": "tests@example.invalid",
                "code_permalink": "https://example.invalid/tatlas", "description": "a test dataset"}


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    """Minari's local datasets folder in tmp_path (``MINARI_DATASETS_PATH``)."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    return tmp_path


def _assert_same_episodes(ours, theirs, *, same_dtype=True):
    """Every field equal; with ``same_dtype=False`` after casting theirs to tatlas's dtypes (float32
    observations and rewards, int64 or float32 actions, bool flags), e.g. the float64 rewards gymnasium returns."""
    theirs = list(theirs)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        for f in FIELDS:
            x, y = getattr(a, f), np.asarray(getattr(b, f))
            assert y.shape == x.shape, f
            if same_dtype:
                assert y.dtype == x.dtype, f
            np.testing.assert_array_equal(x, y.astype(x.dtype), err_msg=f, strict=True)


# ---------------------------------------------------------------------- tatlas -> Minari


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1", "MountainCarSparse-v0"])
def test_minari_opens_a_dataset_tatlas_wrote(minari_root, env_id):
    data = collect(env_id, episodes=3, mix="random=1,scripted=1,noisy=1", seed=1)
    dataset_id = f"tatlas/{env_id.lower()}-mixed-v0"
    assert dataset_layout(minari_root / dataset_id, dataset_id) == "minari"
    path = save_dataset(data, minari_root / dataset_id, dataset_id=dataset_id)
    assert sorted(p.name for p in (path / "data").iterdir()) == ["main_data.hdf5", "metadata.json"]

    theirs = minari.load_dataset(dataset_id)
    assert theirs.id == dataset_id and theirs.spec.version == 0
    assert theirs.total_episodes == 3 and theirs.total_steps == data.total_steps
    assert theirs.env_spec.id == env_id
    env = theirs.recover_environment()  # from the EnvSpec tatlas saved: MountainCarSparse-v0 too, unregistered
    assert env.spec.id == env_id
    assert theirs.observation_space == env.observation_space and theirs.action_space == env.action_space
    ours = make_env(env_id)  # the environment the spec makes again is the one the data came from
    for e in (env, ours):
        e.reset(seed=0)
    for action in (ours.action_space.sample() for _ in range(3)):
        (o1, r1, *_), (o2, r2, *_) = env.step(action), ours.step(action)
        np.testing.assert_array_equal(o1, o2)
        assert r1 == r2
    _assert_same_episodes(data.episodes, theirs.iterate_episodes())
    assert [m["policy"] for m in theirs.storage.get_episode_metadata(range(3))] == [e.policy for e in data.episodes]

    for where in (path, path / "data", path / "data" / "main_data.hdf5"):  # and tatlas reads it back
        back = load_dataset(where)
        assert back.env_id == env_id and back.action_space == data.action_space and back.info == data.info
        assert [e.policy for e in back.episodes] == [e.policy for e in data.episodes]
        _assert_same_episodes(data.episodes, back.episodes)


def test_save_layout_by_name(tmp_path):
    data = OfflineDataset([_episode(4)], ActionSpace(discrete=True, n=3))
    assert save_dataset(data, tmp_path / "d.npz").is_file()
    folder = save_dataset(data, tmp_path / "plain-v2")  # the folder's name is the dataset id
    assert json.loads((folder / "data" / "metadata.json").read_text())["dataset_id"] == "plain-v2"
    _assert_same_episodes(data.episodes, load_dataset(folder).episodes)
    save_dataset(data, folder)  # saving again replaces the files
    assert sorted(p.name for p in (folder / "data").iterdir()) == ["main_data.hdf5", "metadata.json"]
    with pytest.raises(ValueError, match=r"expected a file name ending in .npz or a Minari dataset folder named NAME-v<VERSION>"):
        save_dataset(data, tmp_path / "no-version")
    with pytest.raises(ValueError, match=r"dataset_id: expected Minari's \(NAMESPACE/\)NAME-v<VERSION>"):
        save_dataset(data, tmp_path / "x", dataset_id="tatlas/no version")
    with pytest.raises(ValueError, match="dataset_id: only a Minari dataset folder has one"):
        save_dataset(data, tmp_path / "d.npz", dataset_id="d-v0")


# ---------------------------------------------------------------------- Minari -> tatlas


def _rollouts(env_id, episodes, seed=0):
    """Real episodes of ``env_id`` under a seeded random policy, as Minari's episode buffers."""
    from minari.data_collector import EpisodeBuffer

    env = gym.make(env_id)
    env.action_space.seed(seed)
    buffers = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        observations, actions, rewards, terms, truncs = [obs], [], [], [], []
        done = False
        while not done:
            a = env.action_space.sample()
            obs, r, term, trunc, _ = env.step(a)
            observations.append(obs)
            actions.append(a)
            rewards.append(r)
            terms.append(term)
            truncs.append(trunc)
            done = term or trunc
        buffers.append(EpisodeBuffer(id=i, seed=seed + i, observations=observations, actions=actions, rewards=rewards,
                                     terminations=terms, truncations=truncs))
    env.close()
    return buffers


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_loads_a_dataset_minari_wrote(minari_root, env_id):
    dataset_id = f"minari/{env_id.lower()}-random-v1"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every piece of metadata Minari asks for is given
        theirs = minari.create_dataset_from_buffers(dataset_id, _rollouts(env_id, 3), env=env_id, eval_env=env_id,
                                                    **_MINARI_INFO)
    data = load_dataset(minari_root / dataset_id)
    assert data.env_id == env_id and data.action_space == ActionSpace.of_env(gym.make(env_id))
    assert data.total_steps == theirs.total_steps and [e.policy for e in data.episodes] == ["", "", ""]
    _assert_same_episodes(data.episodes, theirs.iterate_episodes(), same_dtype=False)


@pytest.mark.filterwarnings("ignore:.*(eval_env|env_spec).*:UserWarning")  # no environment: the point
def test_loads_minari_dict_observations_flattened_in_key_order(minari_root):
    """A Dict observation space (a goal-conditioned environment's) is stored by Minari as a group;
    tatlas concatenates its parts in key order: ``desired_goal`` [T + 1, 2], then ``observation`` [T + 1, 3]."""
    from minari.data_collector import EpisodeBuffer

    space = gym.spaces.Dict({"observation": gym.spaces.Box(-1, 1, (3,)), "desired_goal": gym.spaces.Box(-1, 1, (2,))})
    rng = np.random.default_rng(0)
    goal, obs = rng.uniform(-1, 1, (6, 2)).astype(np.float32), rng.uniform(-1, 1, (6, 3)).astype(np.float32)
    buffer = EpisodeBuffer(observations={"observation": obs, "desired_goal": goal}, actions=rng.integers(0, 4, 5),
                           rewards=[0.0, 0.0, 0.0, 0.0, 1.0], terminations=[False] * 4 + [True], truncations=[False] * 5)
    minari.create_dataset_from_buffers("dict-obs-v0", [buffer], observation_space=space,
                                       action_space=gym.spaces.Discrete(4), **_MINARI_INFO)
    data = load_dataset(minari_root / "dict-obs-v0")
    assert data.env_id is None and data.state_dim == 5 and data.action_space == ActionSpace(discrete=True, n=4)
    np.testing.assert_array_equal(data.episodes[0].observations, np.concatenate([goal, obs], axis=1))
    np.testing.assert_array_equal(data.episodes[0].actions, buffer.actions, strict=True)


def test_loads_a_dataset_from_minaris_data_collector(minari_root):
    """Minari's own collection path (the ``DataCollector`` wrapper, which needs jax: ``minari[create]``)."""
    env = minari.DataCollector(gym.make("CartPole-v1"))
    env.action_space.seed(0)
    for i in range(3):
        env.reset(seed=i)
        done = False
        while not done:
            _, _, term, trunc, _ = env.step(env.action_space.sample())
            done = term or trunc
    theirs = env.create_dataset("collector/cartpole-random-v0", eval_env="CartPole-v1", **_MINARI_INFO)
    data = load_dataset(minari_root / "collector" / "cartpole-random-v0" / "data")
    assert data.env_id == "CartPole-v1" and len(data.episodes) == 3
    _assert_same_episodes(data.episodes, theirs.iterate_episodes(), same_dtype=False)
    env.close()


def test_loads_d4rl_flat_arrays_from_hdf5(tmp_path):
    """D4RL's own files: one HDF5 of flat arrays (and groups such as ``infos/`` that are not read)."""
    with h5py.File(tmp_path / "hopper-medium.hdf5", "w") as f:
        f["observations"] = np.arange(12, dtype=np.float32).reshape(6, 2)
        f["actions"] = np.linspace(-0.5, 0.5, 6, dtype=np.float32)[:, None]
        f["rewards"] = np.arange(6, dtype=np.float32)
        f["terminals"] = np.array([0, 1, 0, 0, 0, 0], bool)
        f["timeouts"] = np.array([0, 0, 0, 0, 1, 0], bool)
        f["infos/qpos"] = np.zeros((6, 3))
    data = load_dataset(tmp_path / "hopper-medium.hdf5")
    assert [len(e) for e in data.episodes] == [2, 3, 1] and data.returns().tolist() == [1.0, 9.0, 5.0]
    assert data.episodes[0].terminations.tolist() == [False, True] and data.episodes[1].truncations[-1]
    with h5py.File(tmp_path / "hopper-medium.hdf5", "a") as f:
        del f["terminals"]
    with pytest.raises(DatasetError, match=r"hopper-medium.hdf5: missing field 'terminals'"):
        load_dataset(tmp_path / "hopper-medium.hdf5")


# ---------------------------------------------------------------------- malformed Minari files


def _episode(t, s=2, n=3, seed=0):
    rng = np.random.default_rng(seed + t)
    term = np.zeros(t, bool)
    term[-1] = True
    return Episode(rng.normal(size=(t + 1, s)).astype(np.float32), rng.integers(0, n, t), np.ones(t, np.float32),
                   term, np.zeros(t, bool), "random")


def _set(group, name, value):
    del group[name]
    group.create_dataset(name, data=value)


def _meta(key, value):
    return lambda f, meta: meta.update({key: value})


def _minari_start_one(f, meta):
    meta.pop("tatlas")  # as Minari writes it: only its serialised spaces
    meta["action_space"] = json.dumps({"type": "Discrete", "dtype": "int64", "start": 1, "n": 3})


def _dict_observations_of_unequal_rows(f, meta):
    del f["episode_0/observations"]
    f.create_dataset("episode_0/observations/achieved_goal", data=np.zeros((6, 2)))
    f.create_dataset("episode_0/observations/observation", data=np.zeros((5, 2)))


@pytest.mark.parametrize("mutate,message", [
    (lambda f, meta: f["episode_1"].pop("rewards"), r"main_data.hdf5: episode_1: missing field 'rewards'"),
    (lambda f, meta: _set(f["episode_0"], "observations", np.zeros((5, 2), np.float32)),
     r"episode_0: field 'observations' must be numeric \[T \+ 1, S\] = \[6, S\]"),
    (lambda f, meta: _set(f["episode_1"], "terminations", np.zeros(2, bool)), r"episode_1: field 'terminations' must be \[T\] = \[6\]"),
    (lambda f, meta: _set(f["episode_2"], "rewards", np.full(7, np.nan, np.float32)), r"episode_2: field 'rewards' holds NaN"),
    (lambda f, meta: _set(f["episode_0"], "actions", np.full(5, 7)), r"episode_0: field 'actions' holds indices in \[7, 7\]"),
    (lambda f, meta: (f["episode_0"].pop("actions"), f.create_dataset("episode_0/actions/left", data=np.zeros(5))),
     r"episode_0: field 'actions' is a group \(left\) of a Dict or Tuple space"),
    (_dict_observations_of_unequal_rows, r"episode_0: field 'observations/observation' has 5 rows, 'observations/achieved_goal' 6"),
    (lambda f, meta: f["episode_1"].attrs.__setitem__("total_steps", 9), r"episode_1: attribute 'total_steps' is 9, field 'rewards' has 6"),
    (lambda f, meta: f.pop("episode_1"), r"main_data.hdf5: episodes are not numbered 0..1: 'episode_1' is missing"),
    (lambda f, meta: f.create_group("statistics"), r"unexpected entry 'statistics'"),
    (_meta("total_episodes", 9), r"metadata.json: field 'total_episodes' is 9, main_data.hdf5 holds 3 episodes"),
    (_meta("data_format", "arrow"), r"metadata.json: field 'data_format' is 'arrow'; tatlas reads Minari's 'hdf5'"),
    (_meta("env_spec", "{not json"), r"metadata.json: field 'env_spec' is malformed"),
    (_minari_start_one, r"metadata.json: field 'action_space' is Discrete\(n=3, start=1\)"),
])
def test_malformed_minari_dataset_errors_name_episode_and_field(tmp_path, mutate, message):
    path = save_dataset(OfflineDataset([_episode(5), _episode(6), _episode(7)], ActionSpace(discrete=True, n=3)), tmp_path / "d-v0")
    meta_path = path / "data" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    with h5py.File(path / "data" / "main_data.hdf5", "a") as f:
        mutate(f, meta)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=message):
        load_dataset(path)


def test_unreadable_minari_files(tmp_path):
    folder = save_dataset(OfflineDataset([_episode(3)], ActionSpace(discrete=True, n=3)), tmp_path / "d-v0") / "data"
    (folder / "main_data.hdf5").write_bytes(b"not an hdf5 file")
    with pytest.raises(DatasetError, match=r"main_data.hdf5: not a readable HDF5 file"):
        load_dataset(folder)
    (folder / "main_data.hdf5").unlink()  # metadata.json alone: a Minari folder without its data
    with pytest.raises(DatasetError, match=r"data: no main_data.hdf5 \(Minari's HDF5 storage\)"):
        load_dataset(folder.parent)
    (folder / "metadata.json").write_text("{broken")  # not recognisable as Minari's any more
    with pytest.raises(DatasetError, match=r"metadata.json: not JSON"):
        load_dataset(folder)


# ---------------------------------------------------------------------- the sparse-reward environment


def test_sparse_mountain_car_pays_one_only_on_reaching_the_flag():
    kw = {"episodes": 5, "mix": "random=1,scripted=1,expert=2,noisy=1", "seed": 0}
    sparse, dense = collect("MountainCarSparse-v0", **kw), collect("MountainCar-v0", **kw)
    for s, d in zip(sparse.episodes, dense.episodes, strict=True):
        # the same car, seeds and policies: the same states and actions; only the reward differs
        np.testing.assert_array_equal(s.observations, d.observations)
        np.testing.assert_array_equal(s.actions, d.actions)
        assert (d.rewards == -1).all()
        np.testing.assert_array_equal(s.rewards, s.terminations.astype(np.float32))  # 1 exactly at the goal step
        assert s.terminations[-1] != s.truncations[-1] and s.terminations.sum() <= 1
        reached = bool(s.terminations[-1])
        assert reached == (s.observations[-1, 0] >= 0.5)  # the flag is at position 0.5
        rtg = returns_to_go(s.rewards)  # 1 all along an episode that reaches the flag, 0 along one that does not
        np.testing.assert_array_equal(rtg, np.full(len(s), 1.0 if reached else 0.0, np.float32))
    r = sparse.returns_by_policy()
    assert r["expert"].tolist() == [1.0, 1.0] and r["random"].tolist() == [0.0]
    assert set(sparse.returns().tolist()) == {0.0, 1.0}
    windows = TrajectoryWindows(sparse, context=4)
    success = next(i for i, e in enumerate(sparse.episodes) if e.total_return == 1.0)
    last = int(windows.starts[success + 1]) - 2  # two steps before the end of a successful episode
    item = windows[last]
    assert item["mask"].tolist() == [True, True, False, False]
    assert item["returns_to_go"][:, 0].tolist() == [1.0, 1.0, 0.0, 0.0]


def test_rollout_and_normalisation_on_the_sparse_environment():
    from tatlas.models.decision_transformer.rollout import rollout
    from tatlas.models.decision_transformer.task import Normalisation

    data = collect("MountainCarSparse-v0", episodes=2, mix="random=1,expert=1", seed=0)
    assert Normalisation.of(data).return_scale == 1.0
    torch.manual_seed(0)
    model = tatlas.create("decision_transformer", "tiny-discrete", state_dim=2, act_dim=3).eval()
    result = rollout(model, "MountainCarSparse-v0", 1.0, episodes=2, seed=0)
    assert set(result.returns.tolist()) <= {0.0, 1.0}
    np.testing.assert_array_equal(result.returns, (result.lengths < 200).astype(float))  # 1 exactly when it got there

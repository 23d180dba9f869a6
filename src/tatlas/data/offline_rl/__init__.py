"""Offline reinforcement-learning data from real gymnasium environments (the data of Decision
Transformer, Chen et al. 2021, §4-5, made here instead of downloaded from D4RL).

- :mod:`.dataset`: the records (:class:`ActionSpace`, :class:`Episode`, :class:`OfflineDataset`,
  :class:`DatasetError`) in Minari's per-episode fields, ``observations [T + 1, S]``,
  ``actions [T]`` (discrete) or ``[T, A]``, ``rewards [T]``, ``terminations [T]``,
  ``truncations [T]``; :func:`save_dataset` writes one ``.npz`` whose members are
  ``episode_<i>/<field>`` plus a ``metadata`` JSON string (the environment, the action space, and
  each episode's policy), or a Minari dataset folder (:func:`dataset_layout` decides).
- :mod:`.minari`: Minari 0.5's HDF5 storage (``<dataset>/data/main_data.hdf5`` with a group
  ``episode_<i>`` of those fields per episode, and ``<dataset>/data/metadata.json``), written by
  :func:`save_minari` so that ``minari.load_dataset`` opens it, and read back, also when Minari
  wrote it (a ``Dict`` or ``Tuple`` observation is flattened, its parts concatenated in key order).
- :mod:`.d4rl`: D4RL's flat arrays (``observations``, ``actions``, ``rewards``,
  ``terminals``/``terminations``, ``timeouts``/``truncations``, optionally ``next_observations``;
  in an ``.npz`` or D4RL's ``.hdf5``), our ``.npz`` and a folder of ``episode_<i>/<field>.npy`` files.
- :mod:`.load`: :func:`load_dataset` reads all of these and names the episode and field of any
  malformed one.
- :mod:`.envs`: ``CartPole-v1``, ``Pendulum-v1``, ``MountainCar-v0`` and our sparse-reward
  ``MountainCarSparse-v0`` (:func:`make_env`), policies of mixed quality (:data:`POLICIES`:
  ``random``, ``scripted``, ``expert``, ``noisy``), and :func:`collect`, which rolls them out.
- :mod:`.windows`: training windows (:class:`TrajectoryWindows`) of ``K`` consecutive steps with
  the undiscounted returns-to-go ``R̂_t = Σ_{t'≥t} r_t'`` (:func:`returns_to_go`), right-padded and
  masked.
"""

from .dataset import FIELDS, ActionSpace, DatasetError, Episode, OfflineDataset, dataset_layout, describe
from .dataset import FORMAT as FORMAT  # "as": importable here as before the split, not in __all__ (as before)
from .dataset import FORMAT_VERSION as FORMAT_VERSION
from .envs import ENVIRONMENTS, POLICIES, collect, make_env, max_episode_steps, parse_mix, sparse_mountain_car
from .envs import Policy as Policy
from .load import load_dataset, save_dataset
from .minari import MINARI_FILE as MINARI_FILE
from .minari import MINARI_VERSION, save_minari
from .windows import TrajectoryWindows, returns_to_go

__all__ = [
    "ENVIRONMENTS", "FIELDS", "MINARI_VERSION", "POLICIES", "ActionSpace", "DatasetError", "Episode", "OfflineDataset",
    "TrajectoryWindows", "collect", "dataset_layout", "describe", "load_dataset", "make_env", "max_episode_steps",
    "parse_mix", "returns_to_go", "save_dataset", "save_minari", "sparse_mountain_car",
]

""":func:`load_dataset` and :func:`save_dataset`: one entry point each way for every stored layout,
dispatched on what ``path`` is: a Minari dataset (its folder, the folder's ``data/``, or an
``.hdf5`` file; :mod:`.minari`), else an ``.npz`` or a folder of ``.npy`` files (:mod:`.d4rl`)."""

from __future__ import annotations

from pathlib import Path

from .d4rl import _load_arrays, _save_npz
from .dataset import DatasetError, OfflineDataset, dataset_layout
from .minari import _load_minari, _minari_location, save_minari


def load_dataset(path: str | Path) -> OfflineDataset:
    """Read a dataset saved by :func:`save_dataset`: an ``.npz``, or a Minari dataset (its
    folder, the folder's ``data/``, or ``main_data.hdf5``; written by tatlas or by Minari); a folder
    of ``episode_<i>/<field>.npy`` (with an optional ``metadata.json``), or D4RL's flat arrays in an
    ``.npz`` or an ``.hdf5`` file. Errors name the file, the episode and the field."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_file() and path.stat().st_size == 0:
        raise DatasetError(f"{path}: the file is empty")
    minari = _minari_location(path)
    if minari is not None:
        try:
            return _load_minari(*minari)
        except (RuntimeError, KeyError) as e:  # h5py on objects whose headers are corrupt inside a readable file
            raise DatasetError(f"{minari[1]}: a corrupt HDF5 file ({type(e).__name__}: "
                               f"{' '.join(str(e).strip(chr(39)).split())})") from None
    return _load_arrays(path)


def save_dataset(data: OfflineDataset, path: str | Path, *, dataset_id: str | None = None) -> Path:
    """Write ``data`` where :func:`~.dataset.dataset_layout` says: one ``.npz`` (``episode_<i>/<field>``
    members and a ``metadata`` JSON string), or a Minari dataset folder ``path/data/`` holding
    ``main_data.hdf5`` and ``metadata.json`` (:func:`~.minari.save_minari`; ``dataset_id`` defaults
    to the folder's name). Returns the file or folder written."""
    path = Path(path)
    if dataset_layout(path, dataset_id) == "minari":
        return save_minari(data, path, dataset_id or path.name)
    return _save_npz(data, path)

"""Keystone datasets: the zarr episode store, demo collection, rosbag2 ingestion, LeRobot export, loaders.

Importing this package is cheap (no torch, no simulator); the torch dataset lives in
`keystone_vla.datasets.torch_dataset` and collection in `keystone_vla.datasets.collect`.
"""

from keystone_vla.datasets.store import Episode, EpisodeStore
from keystone_vla.datasets.writer import EpisodeData, EpisodeWriter

__all__ = ["Episode", "EpisodeData", "EpisodeStore", "EpisodeWriter"]

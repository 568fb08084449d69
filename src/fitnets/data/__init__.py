"""Datasets as in-memory uint8 tensors, preprocessing, augmentation, batches for the loop.

Nothing here knows about models: everything works on ``Split`` tensors.
"""

from fitnets.data.augment import augment
from fitnets.data.dataset import Dataset, Split
from fitnets.data.download import download_file
from fitnets.data.load import DATASETS, data_root, load_dataset
from fitnets.data.memory import Arrays, Batch, Data, batches
from fitnets.data.prepare import Prepared, prepare
from fitnets.data.preprocess import PREPROCESS, Preprocess, fit_preprocess

__all__ = [
    "DATASETS", "PREPROCESS", "Arrays", "Batch", "Data", "Dataset", "Prepared", "Preprocess",
    "Split", "augment", "batches", "data_root", "download_file", "fit_preprocess",
    "load_dataset", "prepare",
]

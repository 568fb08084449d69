"""Datasets from their sources to the batches the loop trains on:

    source (one per format: mnist, digits, cifar, svhn, folder, text; load.open_source)
      -> splits (the validation hold-out and limits planned once: splits.plan)
      -> memory (memory.Data) or stream (stream.StreamData): training.TrainingData
      -> batches (memory.Batch)

Nothing here knows about models: everything works on uint8 images and ``Split`` tensors.
"""

from fitnets.data.download import download_file
from fitnets.data.load import data_root, load_dataset, open_source
from fitnets.data.memory import Arrays, Batch, Data
from fitnets.data.prepare import Prepared, prepare
from fitnets.data.preprocess import PREPROCESS, Preprocess, fit_preprocess
from fitnets.data.source import Source
from fitnets.data.splits import Dataset, Split
from fitnets.data.training import TrainingData
from fitnets.names import DATASETS

__all__ = [
    "DATASETS", "PREPROCESS", "Arrays", "Batch", "Data", "Dataset", "Prepared", "Preprocess",
    "Source", "Split", "TrainingData", "data_root", "download_file", "fit_preprocess",
    "load_dataset", "open_source", "prepare",
]

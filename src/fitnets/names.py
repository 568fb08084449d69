"""The names of the things a config chooses among by registry, in one place each.

The config's choices (``Literal`` fields, ``fitnets config --doc``, the errors that list
them) and the registries that build the things (fitnets.distill.methods,
fitnets.distill.regressor) both read these tuples; neither keeps a copy. This module imports
nothing, so the config can read it without importing torch's side of the project.
"""

METHODS = ("fitnet", "kd", "backprop", "joint")
"""distill methods, one module each in fitnets.distill.methods."""

PROJECTION_KINDS = ("conv1x1", "strided", "transposed", "interp")
"""hint regressors that project (modern nets), beside the paper's."""

REGRESSOR_KINDS = ("auto", "conv", "fc", "none", "token", *PROJECTION_KINDS)
"""hints.regressor: auto, the paper's conv/fc/none, token (transformers), projections."""

DATASETS = ("mnist", "digits", "cifar10", "cifar100", "svhn", "folder", "text")
"""data.name: one source class each, registered in fitnets.data.load."""

PREPROCESS = ("scale", "standardize", "gcn_zca", "lcn", "gcn_zca_pylearn2")
"""data.preprocess: the input transforms of fitnets.data.preprocess."""

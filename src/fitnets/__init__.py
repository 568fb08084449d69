"""fitnets: thin and deep student networks trained from a teacher with hints + KD.

Python entry points: ``fitnets.train(...)`` and ``fitnets.distill(...)`` (see fitnets.api)
run what the command line runs and return a ``fitnets.Result``.
"""

from fitnets.errors import FitnetsError

__version__ = "0.1.0"

# Bound last: importing the api loads the subpackage fitnets.distill, and the function takes
# its name in this namespace (``from fitnets.distill.losses import ...`` is unaffected).
from fitnets.api import Result, distill, train  # noqa: E402

__all__ = ["FitnetsError", "Result", "__version__", "distill", "train"]

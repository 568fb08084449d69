"""fitnets: thin and deep student networks trained from a teacher with hints + KD."""

from fitnets.errors import FitnetsError

__version__ = "0.1.0"
__all__ = ["FitnetsError", "__version__"]

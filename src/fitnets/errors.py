"""The one exception type a user is meant to read.

Anything raised as ``FitnetsError`` is printed by the CLI as a one-paragraph message with
exit code 2 and no traceback; every other exception is a bug and keeps its traceback.
"""


class FitnetsError(Exception):
    """A problem with the user's input (config, data, model, files) that they can act on."""

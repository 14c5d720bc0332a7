"""Errors that mean "the input is wrong": the CLI prints the message (no traceback) and exits with code 2.

Each message names the file, line or key, what is wrong, and the fix.
"""


class UserError(Exception):
    exit_code = 2


class ConfigError(UserError):
    """A config that cannot be used."""


class DataError(UserError):
    """Bad input data, found before training starts."""


class WeightsError(UserError):
    """A weights file that cannot be used (missing, pickled, corrupt, or not matching the model)."""

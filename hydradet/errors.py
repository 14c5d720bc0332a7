"""Errors that mean "the input is wrong": the CLI prints the message (no traceback) and exits with code 2.

Each message names the file, line or key, what is wrong, and the fix.
"""

from pathlib import Path
from typing import Any

import yaml


class UserError(Exception):
    exit_code = 2


class ConfigError(UserError):
    """A config that cannot be used."""


class DataError(UserError):
    """Bad input data, found before training starts."""


class WeightsError(UserError):
    """A weights file that cannot be used (missing, pickled, corrupt, or not matching the model)."""


def read_yaml(path: Path, error: type[UserError]) -> Any:
    """A YAML file's content ({} when empty), or `error` naming the file, line and column of the mistake."""
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise error(f"{path}{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None

"""Errors that mean "the input is wrong": the CLI prints the message (no traceback) and exits with code 2.

Each message names the file, line or key, what is wrong, and the fix.
"""

import codecs
from pathlib import Path
from typing import Any

import yaml


class UserError(Exception):
    exit_code = 2


class ConfigError(UserError):
    """A config that cannot be used."""


class DataError(UserError):
    """Bad input data, found before training starts."""


class TrainingStopped(UserError):
    """A run that cannot go on (its loss diverged); the message says where to resume from and with what."""


class Interrupted(UserError):
    """Training stopped by SIGINT (Ctrl-C) or SIGTERM after writing its checkpoint; the message says how to resume.
    Exit code 128 + the signal's number, as a shell reports a process the signal ended: 130 / 143."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class WeightsError(UserError):
    """A weights file that cannot be used (missing, pickled, corrupt, or not matching the model)."""


class MissingDependency(UserError, ImportError):
    """An optional package that this feature needs: the message says which and how to install it (exit 2)."""


def read_text(path: Path, error: type[UserError]) -> str:
    """A text file's content, decoded as UTF-8 with or without a byte-order mark (Excel and Notepad write one).

    Every text input (configs, data YAML, COCO JSON, VOC XML, YOLO labels, CSV, image lists) is read here, so
    that none depends on the machine's locale. A file that is not UTF-8 is `error`, naming the file, the byte
    offset and line of the first bad byte, rather than guessing an encoding and reading wrong class names.
    """
    return decode_text(path.read_bytes(), path, error)


def decode_text(data: bytes, path: Path, error: type[UserError]) -> str:
    """`data` (the bytes of `path`) as text: UTF-8, a leading byte-order mark dropped; else `error`."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise error(f"{path}: UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8")
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = bom + e.start  # in the file, counting the byte-order mark
        line = data[:offset].count(b"\n") + 1
        raise error(
            f"{path}: not UTF-8 text: the byte at offset {offset} (line {line}) is 0x{data[offset]:02x} ({e.reason}); "
            "save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`), or is it not a text file?"
        ) from None


def read_yaml(path: Path, error: type[UserError]) -> Any:
    """A YAML file's content ({} when empty), or `error` naming the file, line and column of the mistake."""
    text = read_text(path, error)
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise error(f"{path}{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None

"""The command line (`hydradet ...`); `main` runs one."""

from hydradet.cli.main import main

__all__ = ["main"]

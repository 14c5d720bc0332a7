"""`hydradet train|val|predict|track|export|synth|data check|split`: thin wrappers; the work is in the stage
packages. parser.py: the commands' arguments; train_commands.py / infer_commands.py: what each does."""

from __future__ import annotations

import os
import signal
import sys

from hydradet.cli.infer_commands import export_command, predict_command, track_command
from hydradet.cli.parser import build_parser
from hydradet.cli.train_commands import (
    data_command,
    split_command,
    synth_command,
    train_command,
    val_command,
)
from hydradet.errors import Interrupted, UserError

# Errors that mean "your input is wrong": reported as one clear message and exit code 2, never a traceback.
_USER_ERRORS = (UserError, FileNotFoundError)
COMMANDS = {
    "train": train_command,
    "val": val_command,
    "predict": predict_command,
    "track": track_command,
    "export": export_command,
    "synth": synth_command,
    "data": data_command,
    "split": split_command,
}


def main(argv: list[str] | None = None) -> int:
    """Run one command line (default: sys.argv[1:]); returns the exit code (0, 2 for bad input, 130 / 143 when
    training was interrupted)."""
    args = build_parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # train.devices relaunches the same command
    try:
        return COMMANDS[args.command](args)
    except Interrupted as e:  # SIGINT / SIGTERM in training: its checkpoint is written (train/interrupt.py)
        if os.environ.get("RANK", "0") == "0":  # several processes: rank 0 speaks for all
            print(str(e), file=sys.stderr)
        return e.exit_code
    except _USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # a second Ctrl-C, a signal outside the training loop: stopped at once
        signum = getattr(e, "signum", signal.SIGINT)
        name = signal.Signals(signum).name
        print(f"\n{args.command}: stopped at once by {name}; nothing more was written", file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":
    sys.exit(main())

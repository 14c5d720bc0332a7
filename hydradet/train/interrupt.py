"""Ctrl-C and SIGTERM during training: stop at a step boundary with a checkpoint, so that the run can resume.

A terminal's Ctrl-C sends SIGINT to the whole process group: the trainer and its loader workers. Without this
module Python raises KeyboardInterrupt wherever the trainer is (a traceback, nothing saved since the last periodic
checkpoint) and the workers die, so the loader fails too. Instead:
- the loader workers ignore SIGINT and SIGTERM (`ignore_in_worker`, their `worker_init_fn`); the trainer ends them;
- the trainer's first signal only sets `GracefulStop.signum`: the step in progress finishes, the loop writes the
  checkpoint at that step and raises `Interrupted` (exit 130 for SIGINT, 143 for SIGTERM) naming the resume command;
- a second signal raises KeyboardInterrupt at once (no checkpoint beyond the last one written);
- before the loop is armed (reading data, building the model) a signal raises KeyboardInterrupt at once: there is
  nothing to save yet.
Under several processes the ranks agree (a sum over ranks each step), so that they stop at the same step.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from hydradet.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulStop:
    """A context manager installing the handlers above for SIGINT and SIGTERM (main thread only; elsewhere, e.g.
    training from a notebook's worker thread, it does nothing and signals keep their usual effect)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.armed = False  # True once the training loop runs: a signal then waits for the step's end
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.armed or self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        name = signal.Signals(signum).name
        print(
            f"\n{name}: stopping after this step, with a checkpoint (again to stop at once, without one)",
            file=sys.stderr,
            flush=True,
        )

    def requested(self, dist: Any = None) -> bool:
        """Whether to stop now. dist (train/distributed.py Dist): with several processes, True on every rank when
        any rank was signalled (a collective call: every rank must make it at the same step)."""
        if dist is not None and dist.enabled:
            return dist.sum([float(self.signum is not None)])[0] > 0
        return self.signum is not None

    def interrupted(self, run_dir: Path, where: str) -> Interrupted:
        """The error to raise once the checkpoint is written; `where` e.g. "epoch 2, step 3/5"."""
        signum = self.signum if self.signum is not None else signal.SIGTERM  # another rank's signal: SIGTERM's
        name = signal.Signals(signum).name
        return Interrupted(f"{name}: interrupted at {where}; resume: hydradet train --resume {run_dir}", signum)


def ignore_in_worker(worker_id: int) -> None:
    """A loader worker's `worker_init_fn`: SIGINT and SIGTERM are the trainer's to handle (see the module doc)."""
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)

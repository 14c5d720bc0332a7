"""Ctrl-C and SIGTERM during training: stop at a step boundary with a checkpoint, so that the run can resume.

A terminal's Ctrl-C sends SIGINT to the whole process group: the trainer and its loader workers. Without this
module Python raises KeyboardInterrupt wherever the trainer is (a traceback, nothing saved since the last periodic
checkpoint) and the workers die, so the loader fails too. Instead:
- the loader workers ignore SIGINT (data/workers.py, their `worker_init_fn`); the trainer ends them. A SIGTERM
  to the whole group (a scheduler's) ends the workers; the loop then stops at the batch it could not get, with
  the checkpoint of the steps done (`batches`);
- the trainer's first signal only sets `GracefulStop.signum`: the step in progress finishes, the loop writes the
  checkpoint at that step and raises `Interrupted` (exit 130 for SIGINT, 143 for SIGTERM) naming the resume command;
- a second signal raises StoppedAtOnce (a KeyboardInterrupt) at once (no checkpoint beyond the last one written);
- before the loop is armed (reading data, building the model) and after it (the run's last files) a signal raises
  StoppedAtOnce at once: there is nothing to save, or the run is done. The CLI exits 128 + its signal number.
Under several processes the ranks agree (a sum over ranks each step), so that they stop at the same step.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, TypeVar

from hydradet.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)
T = TypeVar("T")


class StoppedAtOnce(KeyboardInterrupt):
    """A signal that stops the run where it is (see the module doc); `signum` gives the exit code 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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
            raise StoppedAtOnce(signum)
        self.signum = signum
        if os.environ.get("RANK", "0") == "0":  # several processes: rank 0 speaks for all
            name = signal.Signals(signum).name
            print(f"\n{name}: stopping at the next step's end, with a checkpoint (again: at once)", file=sys.stderr)

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
        resume = f"hydradet train --resume {shlex.quote(str(run_dir))}"  # pasted into a shell as printed
        return Interrupted(f"{name}: interrupted at {where}; resume: {resume}", signum)


def batches(loader: Iterable[T], stop: GracefulStop) -> Iterator[T]:
    """The loader's batches; if they end because a signal also stopped the loader's workers (a SIGTERM to the
    process group), they end quietly when a stop was requested: the steps done are whole, and the loop stops."""
    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except RuntimeError:  # torch: "DataLoader worker (pid N) exited unexpectedly"
            if stop.signum is None:
                raise
            return
        yield batch

"""Loader workers leave Ctrl-C to the main process.

A terminal's Ctrl-C sends SIGINT to the whole process group, loader workers included. A worker that took it would
die (torch's worker loop ends on KeyboardInterrupt), and the main process, which may want to finish its step and
write a checkpoint (train/interrupt.py), would then fail on its next batch. SIGTERM keeps its default: at exit,
multiprocessing ends its children with SIGTERM and waits for them, so a worker ignoring it would hang the exit.
"""

from __future__ import annotations

import signal


def ignore_sigint(worker_id: int) -> None:
    """A DataLoader `worker_init_fn`: this worker ignores SIGINT (the main process handles it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

"""What fit() and evaluate() raise when a signal stopped them (docs/python.md, "Ctrl-C and SIGTERM")."""

from __future__ import annotations

import signal as _signal
import sys
from typing import Optional


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped ``fit()`` or ``evaluate()`` at a batch boundary.

    ``fit()`` wrote a checkpoint first when it has a checkpoint folder: ``checkpoint`` is its path (else None);
    a new Trainer with ``autoresume`` continues from it exactly. A KeyboardInterrupt, so code that handles
    Ctrl-C already handles it.
    """

    def __init__(self, message: str, signal: int = int(_signal.SIGINT), checkpoint: Optional[str] = None) -> None:
        super().__init__(message)
        self.signal = signal
        self.checkpoint = checkpoint


class Terminated(SystemExit):
    """SIGTERM (a scheduler's preemption, ``kill``) stopped ``fit()`` or ``evaluate()`` at a batch boundary.

    As for :class:`Interrupted`, ``fit()`` wrote a checkpoint first when it has a folder. A SystemExit whose code
    is 143 (128 + 15): left uncaught, the program ends with the status ``tessera-run`` gives, without a traceback;
    the message is printed to stderr when it is raised.
    """

    def __init__(self, message: str, signal: int = int(_signal.SIGTERM), checkpoint: Optional[str] = None) -> None:
        super().__init__(128 + signal)
        self.message = message
        self.signal = signal
        self.checkpoint = checkpoint

    def __str__(self) -> str:
        return self.message


def stop_exception(signal: int, message: str, checkpoint: str) -> BaseException:
    """The exception for a stop by `signal` (called by the native module)."""
    if signal == _signal.SIGTERM:
        print(f"tessera: {message}", file=sys.stderr, flush=True)
        return Terminated(message, signal, checkpoint or None)
    return Interrupted(message, signal, checkpoint or None)

"""Plumbing of the local clusters: commands (as another user), open ports, polling."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence

__all__ = ["port_open", "run", "wait_for"]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def run(command: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 120,
        check: bool = True, user: str | None = None) -> str:
    """Run ``command`` and return its stdout; ``user``: as that user when we are root.

    Raises:
        RuntimeError: the command failed, with its output (the servers say why there).
    """
    argv = list(command)
    if user is not None and os.geteuid() == 0:
        argv = ["runuser", "-u", user, "--", *argv]
    completed = subprocess.run(argv, env=dict(env) if env is not None else None, text=True,
                               capture_output=True, timeout=timeout, check=False)
    if check and completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {completed.returncode}:\n"
                           f"{completed.stdout[-2000:]}{completed.stderr[-2000:]}")
    return completed.stdout


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)

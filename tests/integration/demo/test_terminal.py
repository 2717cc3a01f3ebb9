"""The live terminal view, seen through a real terminal (tmux), stopped with Ctrl-C.

Set ``IC_UPDATE_DEMO_CAPTURE=1`` to write the capture to ``docs/img/demo-terminal.txt``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from instrumented_clients.testing import wait_until
from tests.integration.demo.helpers import REPO, demo_env, unique_prefix

pytestmark = pytest.mark.integration


class Tmux:
    """A tmux server of our own (``-L``), so that no other session is touched."""

    def __init__(self) -> None:
        self.socket = f"ic-test-{uuid.uuid4().hex[:8]}"

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True,
                              text=True, timeout=30, check=True).stdout

    def capture(self) -> str:
        return self.run("capture-pane", "-p", "-t", "demo")

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=30, check=False)


def test_terminal_view_shows_every_client_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    env = demo_env(tmp_path, REDIS_URL="redis://127.0.0.1:6379/0",
                   RABBITMQ_URL="amqp://guest:guest@127.0.0.1:5672/", TERM="xterm-256color")
    # No COLUMNS/LINES: the view must follow the pane's real size (rich re-reads it each frame).
    settings = [shlex.quote(f"{key}={value}") for key, value in env.items()
                if key.endswith("_URL") or key in ("TERM", "PYTHONUNBUFFERED")]
    command = " ".join([
        "env", "-u", "COLUMNS", "-u", "LINES", *settings,
        shlex.quote(sys.executable), "-m", "instrumented_clients", "demo", "--port", "0",
        "--prefix", unique_prefix(), "--duration", "90",
    ])
    # Keep the pane after the demo exits, so the summary can be read.
    shell = (f"cd {shlex.quote(str(tmp_path))} && {command}; "
             "echo demo-exit=$?; sleep 60")
    tmux = Tmux()
    try:
        tmux.run("new-session", "-d", "-x", "160", "-y", "50", "-s", "demo", shell)

        def view_is_live() -> bool:
            screen = tmux.capture()
            return ("HEALTHY" in screen and screen.count("connected") >= 4
                    and "consumed" in screen and " 0 " not in _orders_line(screen))

        wait_until(view_is_live, timeout=60, interval=0.5,
                   message=lambda: tmux.run("display", "-p", "-t", "demo",
                                            "#{window_width}x#{window_height}") + tmux.capture())
        screen = tmux.capture()
        for expected in ("instrumented-clients demo", "orders-db", "orders-cache",
                         "order-events (optional)", "order-consumer (optional)", "ops/s",
                         "retries", "breaker", "buffer", "drops", "/metrics", "/health"):
            assert expected in screen, screen
        if os.environ.get("IC_UPDATE_DEMO_CAPTURE"):
            target = REPO / "docs" / "img" / "demo-terminal.txt"
            target.write_text("\n".join(line.rstrip() for line in screen.splitlines()).strip()
                              + "\n")
        tmux.run("send-keys", "-t", "demo", "C-c")
        wait_until(lambda: "demo-exit=" in tmux.capture(), timeout=60, message=tmux.capture)
        final = tmux.capture()
        assert "demo-exit=0" in final, final
        assert "stopped after" in final
        assert "(SIGINT)" in final
        assert "no event lost" in final, final
    finally:
        tmux.kill()


def _orders_line(screen: str) -> str:
    """The ``orders`` line, padded so that ' 0 ' finds a zero count at either end."""
    for line in screen.splitlines():
        if line.startswith("orders "):
            consumed = line.split("consumed", 1)[-1].split()
            return f" {consumed[0]} " if consumed else " 0 "
    return " 0 "

"""An argparse parser whose errors are one line and exit 2, for the generate/snapshot commands."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """Reports a usage error as ``prog: error: message`` (no usage block) and exits 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)

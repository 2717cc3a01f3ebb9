"""The ``instrumented-clients`` command (also ``python -m instrumented_clients``).

Subcommands: ``demo`` (the order-flow workload with live metrics and health), ``check`` (try each
dependency once), ``settings`` (the environment variables, their defaults and values),
``generate`` and ``snapshot`` (dashboards and alerts, from the observability module). A bad flag
or environment variable is one line on stderr naming it, and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from typing import IO, Any, NoReturn

from instrumented_clients.config import ConfigError

__all__ = ["EXIT_DEPENDENCY_DOWN", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser",
           "main"]

PROG = "instrumented-clients"
EXIT_OK = 0
EXIT_DEPENDENCY_DOWN = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
_DELEGATED = {"generate": "generate", "snapshot": "snapshot"}
_DELEGATED_HELP = {
    "generate": "write dashboards/ and alerts/ from the metric catalog",
    "snapshot": "render a snapshot of the dashboards",
}
_DEPENDENCIES = ("database", "redis", "rabbitmq")  # as instrumented_clients.dependencies names them


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``instrumented-clients demo: error: ... (see --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _positive(kind: type[float] | type[int], minimum: float = 0.0,
              inclusive: bool = False, maximum: float | None = None) -> Any:
    """An argparse type: a number above (or from) ``minimum``; argparse names the flag."""

    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            expected = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is invalid: expected {expected}") from None
        if value != value or value < minimum or (value == minimum and not inclusive):
            bound = ">=" if inclusive else ">"
            raise argparse.ArgumentTypeError(f"{text!r} is invalid: expected {bound} {minimum:g}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{text!r} is invalid: expected <= {maximum:g}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = _Parser(prog=PROG, description="Resilient, observable clients for RabbitMQ, Redis "
                     "and SQL: demo, dependency check, dashboards.")
    from instrumented_clients import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo", help="run the order-flow workload with /metrics, /health and a live view",
        description="Write an order to the database, cache it in Redis, publish order.created to "
        "RabbitMQ and consume it, in a loop. Uses DATABASE_URL, REDIS_URL and RABBITMQ_URL. "
        "Stops cleanly on Ctrl-C, SIGTERM or --duration.")
    demo.add_argument("--port", type=_positive(int, 0, inclusive=True, maximum=65535),
                      default=None,
                      help="HTTP port for /metrics, /health and /ready (0: any free port; "
                      "default: METRICS_PORT, else 8000)")
    demo.add_argument("--host", default="0.0.0.0", help="interface to bind (default 0.0.0.0)")
    demo.add_argument("--duration", type=_positive(float), default=None,
                      help="stop after this many seconds (default: run until stopped)")
    demo.add_argument("--rate", type=_positive(float), default=5.0,
                      help="orders per second (default 5)")
    demo.add_argument("--chaos", action="store_true",
                      help="route each client through a fault proxy and inject cuts, "
                      "blackholes and latency on a schedule")
    demo.add_argument("--chaos-interval", type=_positive(float),
                      default=15.0, help="seconds between chaos faults (default 15)")
    demo.add_argument("--no-tui", action="store_true",
                      help="plain log lines instead of the live terminal view")
    demo.add_argument("--flush-timeout", type=_positive(float, 0,
                                                        inclusive=True),
                      default=15.0, help="seconds to deliver buffered events at shutdown "
                      "(default 15)")
    demo.add_argument("--prefix", default="instrumented_clients_demo",
                      help="name prefix of the table, Redis keys, exchange and queue")
    demo.add_argument("--breaker-cooldown", type=_positive(float),
                      default=5.0, help="circuit breaker recovery timeout in the demo "
                      "(default 5 s, shorter than the library's 30 s so recovery is visible)")

    check = commands.add_parser(
        "check", help="try each dependency once and print a table",
        description="Try DATABASE_URL, REDIS_URL and RABBITMQ_URL once each. Exit 1 when a "
        "required one is down (the database always; RabbitMQ when RABBITMQ_REQUIRED=true; "
        "anything named with --require).")
    check.add_argument("--timeout", type=_positive(float), default=5.0,
                       help="seconds per attempt (default 5)")
    check.add_argument("--only", action="append", choices=_DEPENDENCIES, metavar="NAME",
                       help="check only this dependency (repeatable): database, redis, rabbitmq")
    check.add_argument("--require", action="append", choices=_DEPENDENCIES, default=[],
                       metavar="NAME", help="treat this dependency as required (repeatable)")
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")

    shown = commands.add_parser(
        "settings", help="list the environment variables, their defaults and current values",
        description="Print every environment variable the package reads, as a Markdown table "
        "(the README's). With --values, each variable's value now (passwords hidden); a value "
        "that does not parse is a configuration error.")
    shown.add_argument("--values", action="store_true",
                       help="show the value each variable has now instead of the table")

    for name, text in _DELEGATED_HELP.items():
        commands.add_parser(name, add_help=False, help=f"{text} (see {name} --help)")
    return parser


# -- check -----------------------------------------------------------------------------------------

def _format_table(rows: list[list[str]], out: IO[str]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths[:-1], strict=True)]
        out.write("  ".join([*cells, row[-1]]).rstrip() + "\n")


def run_check(args: argparse.Namespace, out: IO[str]) -> int:
    """Try each dependency once (in parallel) through its client, print the table and the health
    registry's verdict, return the exit status."""
    from instrumented_clients.dependencies import check_dependencies

    report = check_dependencies(args.only or _DEPENDENCIES, require=args.require,
                                timeout=args.timeout)
    results = report.results
    if args.json:
        json.dump({"status": report.status, "dependencies": {
            r.name: {"system": r.system, "address": r.address, "required": r.required,
                     "state": r.state, "latency_seconds": round(r.latency, 6),
                     "error_category": r.category, "error": r.error} for r in results}},
            out, indent=2)
        out.write("\n")
    else:
        rows = [["DEPENDENCY", "SYSTEM", "ADDRESS", "REQUIRED", "STATE", "LATENCY", "ERROR"]]
        for r in results:
            rows.append([r.name, r.system, r.address, "yes" if r.required else "no", r.state,
                         f"{r.latency * 1000:.1f} ms",
                         f"{r.category}: {r.error}" if r.error else "-"])
        _format_table(rows, out)
        detail = ""
        if report.down_required:
            detail = f" (required down: {', '.join(report.down_required)})"
        elif report.down_optional:
            detail = f" (optional down: {', '.join(report.down_optional)})"
        out.write(f"\nstatus: {report.status}{detail}\n")
    return EXIT_DEPENDENCY_DOWN if report.status == "unhealthy" else EXIT_OK


def run_settings(args: argparse.Namespace, out: IO[str]) -> int:
    """Print the settings table, or each variable's current (parsed, redacted) value."""
    from instrumented_clients.redaction import redact_text
    from instrumented_clients.settings import SETTINGS, markdown_table

    if not args.values:
        out.write(markdown_table())
        return EXIT_OK
    rows = [["VARIABLE", "VALUE", "DEFAULT"]]
    for entry in SETTINGS:
        value = entry.read()
        if isinstance(value, bool):
            shown = str(value).lower()
        elif isinstance(value, (int, float)):
            shown = f"{value:g}" + (f" {entry.unit}" if entry.unit else "")
        else:
            shown = redact_text(value) or "-"
        rows.append([entry.env, shown, entry.default_text.replace("`", "")])
    _format_table(rows, out)
    return EXIT_OK


# -- generate / snapshot ---------------------------------------------------------------------------

def _delegate(command: str, argv: Sequence[str]) -> int:
    """Hand over to ``instrumented_clients.observability.<command>:main``, imported lazily."""
    module_name = f"instrumented_clients.observability.{_DELEGATED[command]}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = f" ({error.name} is not installed)" if error.name and not \
            error.name.startswith("instrumented_clients") else ""
        sys.stderr.write(f"{PROG}: {command} needs the dashboards extra/module{missing}\n")
        return EXIT_USAGE
    return int(module.main(list(argv)))


# -- entry point -----------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 dependency down, 2 usage,
    130 interrupted outside the demo — the demo itself exits 0 on Ctrl-C after a clean stop)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        if arguments and arguments[0] in _DELEGATED:
            return _delegate(arguments[0], arguments[1:])
        args = build_parser().parse_args(arguments)
        if args.command == "check":
            return run_check(args, sys.stdout)
        if args.command == "settings":
            return run_settings(args, sys.stdout)
        from instrumented_clients.demo.app import run_demo

        return run_demo(args)
    except ConfigError as error:
        sys.stderr.write(f"{PROG}: configuration error: {error}\n")
        return EXIT_USAGE
    except SystemExit as exit_:  # argparse: --help, --version, usage errors
        code = exit_.code
        return code if isinstance(code, int) else EXIT_USAGE if code else EXIT_OK
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return EXIT_INTERRUPTED

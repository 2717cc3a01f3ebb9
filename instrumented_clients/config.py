"""Reading settings from the environment, with errors that name the variable and the value."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

from instrumented_clients.redaction import redact_text

__all__ = ["ConfigError", "env_bool", "env_float", "env_int", "env_str"]

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


class ConfigError(ValueError):
    """A setting did not parse. The message names the variable, its value and what was expected."""

    def __init__(self, variable: str, value: str, expected: str) -> None:
        self.variable = variable
        self.value = value
        self.expected = expected
        # The message is what ends up in logs and tracebacks: a bad URL must not leak its password.
        super().__init__(f"{variable}={redact_text(value)!r} is invalid: expected {expected}")


def _raw(name: str, environ: Mapping[str, str] | None) -> str | None:
    value = (os.environ if environ is None else environ).get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def env_str(name: str, default: str, environ: Mapping[str, str] | None = None) -> str:
    value = _raw(name, environ)
    return default if value is None else value


def env_int(
    name: str, default: int, *, minimum: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    value = _raw(name, environ)
    if value is None:
        return default
    expected = "an integer" + (f" >= {minimum}" if minimum is not None else "")
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(name, value, expected) from None
    if minimum is not None and number < minimum:
        raise ConfigError(name, value, expected)
    return number


def env_float(
    name: str, default: float, *, minimum: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> float:
    value = _raw(name, environ)
    if value is None:
        return default
    expected = "a number of seconds" + (f" >= {minimum}" if minimum is not None else "")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(name, value, expected) from None
    if number != number or (minimum is not None and number < minimum):
        raise ConfigError(name, value, expected)
    return number


def env_bool(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    value = _raw(name, environ)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(name, value, "one of true/false, 1/0, yes/no, on/off")

"""Each object keeps its state to itself: no module reads another object's underscore attribute,
and no class re-declares another's attributes for the type checker.

A part that needs something from another part asks through a method or a public attribute, so
each can change inside without breaking the other. ``self._x``, ``cls._x`` and ``super()._x``
(a driver subclass calling the method it overrides) are an object's own. Where a driver keeps
something it offers no public way to reach, the exception is listed below with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

import instrumented_clients

PACKAGE = Path(instrumented_clients.__file__).parent

# (module relative to the package, the expression as written) -> why it is allowed
_TRACER_SLOT = ("opentelemetry-api keeps the global provider in a module attribute; reading it "
                "answers 'is tracing configured yet?' in a few ns on every call, where the "
                "public call costs an environment look-up; a fallback covers its absence")
ALLOWED: dict[tuple[str, str], str] = {
    ("db/result.py", "row._mapping"): "SQLAlchemy's documented public Row API",
    ("db/_pool_metrics.py", "pool._max_overflow"):
        "QueuePool has no public accessor for its overflow limit",
    ("rabbitmq/blocking.py", "connection._impl"):
        "pika's BlockingConnection exposes its parameters only on the wrapped connection",
    ("rabbitmq/connection.py", "connection._transport"):
        "pika has no public write buffer; joining frames saves a GIL hand-off per frame",
    ("rabbitmq/connection.py", "getattr(connection, '_transport', None)._tx_buffers"):
        "the same write buffer, read defensively (nothing happens if pika changes)",
    ("redis/tracking.py", "connection._close"):
        "redis.asyncio has no synchronous close; redis-py calls this itself for the same job",
    ("redis/tracking.py", "pool._available_connections"):
        "redis.asyncio's pool has no public list of its idle connections",
    ("telemetry/core.py", "trace._TRACER_PROVIDER"): _TRACER_SLOT,
    ("telemetry/otel.py", "trace._TRACER_PROVIDER"): _TRACER_SLOT,
}


def _is_own(node: ast.expr) -> bool:
    if isinstance(node, ast.Name) and node.id in ("self", "cls"):
        return True
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "super")


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _private_reads(tree: ast.AST) -> list[tuple[int, str]]:
    """``obj._x`` and ``getattr(obj, "_x", ...)`` where ``obj`` is not the object itself."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr) \
                and not _is_own(node.value):
            found.append((node.lineno, ast.unparse(node)))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "hasattr", "setattr") and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and _is_private(node.args[1].value) and not _is_own(node.args[0])):
            found.append((node.lineno, f"{ast.unparse(node.args[0])}.{node.args[1].value}"))
    return found


def foreign_private_reads() -> list[tuple[str, int, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found.extend((module, line, expression) for line, expression in _private_reads(tree))
    return found


def test_the_check_finds_what_it_looks_for() -> None:
    tree = ast.parse("def f(self, other):\n"
                     "    return (self._a, other._b, other.__class__, super()._c,\n"
                     "            getattr(other, '_d', None), getattr(self, '_e'))\n")
    assert _private_reads(tree) == [(2, "other._b"), (3, "other._d")]


def test_no_module_reads_another_objects_private_attribute() -> None:
    offending = [f"{module}:{line}: {expression}"
                 for module, line, expression in foreign_private_reads()
                 if (module, expression) not in ALLOWED]
    assert offending == [], "\n".join(offending)


def test_every_allowed_exception_is_still_needed() -> None:
    present = {(module, expression) for module, _, expression in foreign_private_reads()}
    assert set(ALLOWED) <= present, sorted(set(ALLOWED) - present)


def type_checking_blocks(tree: ast.AST) -> list[str]:
    """``if TYPE_CHECKING:`` inside a class body: attributes declared for a checker only."""
    return [f"class {cls.name}, line {node.lineno}"
            for cls in ast.walk(tree) if isinstance(cls, ast.ClassDef)
            for node in cls.body
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)]


def test_the_type_checking_check_finds_what_it_looks_for() -> None:
    tree = ast.parse("class A:\n    if TYPE_CHECKING:\n        x: int\n")
    assert type_checking_blocks(tree) == ["class A, line 2"]


def test_no_class_declares_attributes_for_the_type_checker_only() -> None:
    offences = {path.relative_to(PACKAGE).as_posix(): found
                for path in sorted(PACKAGE.rglob("*.py"))
                if (found := type_checking_blocks(ast.parse(path.read_text(encoding="utf-8"))))}
    assert offences == {}

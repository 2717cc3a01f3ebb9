"""The RabbitMQ package's objects talk through methods: no module reads another object's
underscore attribute, and no class re-declares attributes for the type checker."""

from __future__ import annotations

import ast
from pathlib import Path

import instrumented_clients.rabbitmq as package

SOURCES = sorted(Path(package.__file__).parent.glob("*.py"))


def foreign_private_reads(tree: ast.AST) -> list[str]:
    """``obj._x`` where ``obj`` is not ``self``/``cls`` (dunders are fine)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                and not node.attr.startswith("__"):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def type_checking_blocks(tree: ast.AST) -> list[str]:
    """Annotations or stubs inside ``if TYPE_CHECKING:`` in a class body."""
    found = []
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        for node in cls.body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                found.append(f"class {cls.name}, line {node.lineno}")
    return found


def test_the_check_finds_what_it_looks_for() -> None:
    tree = ast.parse("class A:\n    if TYPE_CHECKING:\n        x: int\n"
                     "def f(self, other):\n    return self._a, other._b, other.__class__\n")
    assert foreign_private_reads(tree) == ["line 5: other._b"]
    assert type_checking_blocks(tree) == ["class A, line 2"]


def test_no_module_reads_another_objects_private_attribute() -> None:
    assert len(SOURCES) > 10
    offences = {path.name: found for path in SOURCES
                if (found := foreign_private_reads(ast.parse(path.read_text())))}
    assert offences == {}


def test_no_class_redeclares_attributes_for_the_type_checker() -> None:
    offences = {path.name: found for path in SOURCES
                if (found := type_checking_blocks(ast.parse(path.read_text())))}
    assert offences == {}

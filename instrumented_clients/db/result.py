"""``ExecuteResult``: the rows and row count of one statement, read before the connection went back.

:meth:`ResilientDatabase.execute` returns the connection to the pool before it returns, so the
rows are fetched first. The object answers the questions a SQLAlchemy ``Result`` answers
(``all``, ``first``, ``one``, ``scalar``, ``scalars``, ``mappings``, ``rowcount``), raising
SQLAlchemy's own ``NoResultFound`` / ``MultipleResultsFound``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy.engine import Row, RowMapping
from sqlalchemy.exc import MultipleResultsFound, NoResultFound

__all__ = ["ExecuteResult"]


class ExecuteResult:
    """The outcome of one statement.

    Attributes:
        rows: every row the statement returned (empty for statements that return none).
        rowcount: rows matched/affected as the driver reports it (``-1`` when it does not know).
        returns_rows: whether the statement produced a result set (``SELECT``, ``... RETURNING``).
        columns: the result's column names.
        inserted_primary_key: for a Core ``insert()`` of one row, its primary key, else None.
    """

    __slots__ = ("columns", "inserted_primary_key", "returns_rows", "rowcount", "rows")

    def __init__(
        self,
        rows: Sequence[Row[Any]],
        rowcount: int,
        returns_rows: bool,
        columns: Sequence[str] = (),
        inserted_primary_key: Row[Any] | None = None,
    ) -> None:
        self.rows = list(rows)
        self.rowcount = rowcount
        self.returns_rows = returns_rows
        self.columns = tuple(columns)
        self.inserted_primary_key = inserted_primary_key

    @classmethod
    def of(cls, result: Any) -> ExecuteResult:
        """Read a SQLAlchemy ``CursorResult`` (the sync or the asyncio one) to the end."""
        returns_rows = result.returns_rows
        rows = result.all() if returns_rows else []
        primary_key = None
        if result.context.isinsert and not result.context.executemany:
            primary_key = result.inserted_primary_key
        return cls(rows, result.rowcount, returns_rows,
                   tuple(result.keys()) if returns_rows else (), primary_key)

    def all(self) -> list[Row[Any]]:
        """Every row."""
        return list(self.rows)

    def first(self) -> Row[Any] | None:
        """The first row, or None."""
        return self.rows[0] if self.rows else None

    def one(self) -> Row[Any]:
        """Exactly one row, else ``NoResultFound`` / ``MultipleResultsFound``."""
        if not self.rows:
            raise NoResultFound("No row was found when one was required")
        if len(self.rows) > 1:
            raise MultipleResultsFound("Multiple rows were found when exactly one was required")
        return self.rows[0]

    def one_or_none(self) -> Row[Any] | None:
        """One row or None; ``MultipleResultsFound`` for more."""
        if len(self.rows) > 1:
            raise MultipleResultsFound("Multiple rows were found when one or none was required")
        return self.rows[0] if self.rows else None

    def scalar(self) -> Any:
        """The first column of the first row, or None."""
        return self.rows[0][0] if self.rows else None

    def scalar_one(self) -> Any:
        """The first column of exactly one row."""
        return self.one()[0]

    def scalars(self) -> list[Any]:
        """The first column of every row."""
        return [row[0] for row in self.rows]

    def mappings(self) -> list[RowMapping]:
        """Every row as a read-only mapping of column name to value."""
        return [row._mapping for row in self.rows]

    def __iter__(self) -> Iterator[Row[Any]]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"ExecuteResult(rows={len(self.rows)}, rowcount={self.rowcount})"

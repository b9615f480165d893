"""Statements for the request hot path, built from the SQLModel tables and compiled once.

The tables in ``models.py`` are the only definition of the schema. A hot-path statement is a
SQLAlchemy Core construct built from those tables (so a column that does not exist fails when the
module is imported), compiled the first time it runs on a dialect, and cached: its SQL text, its
parameters in the driver's order with each type's bind processor, and, for a query, its result
columns by name with each type's result processor. ``db.Connection`` sends that text to the driver
itself, skipping SQLAlchemy's per-execution work (about half the CPU of a short statement), while
values go in and come out exactly as the ORM would convert them.

Rows map **by column name** into records: slotted dataclasses that declare a table's columns
(``@record(Model)``), checked against the table when the class is made, so a record cannot drift
from its model (``tests/unit/test_statements.py`` also holds their types to the columns').

Parameters are named with ``bindparam("name")``; a list for ``IN`` is ``bindparam(..., expanding=True)``
and is spread when run. Constants written into a statement keep their values.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any, ClassVar, Generic, TypeVar, dataclass_transform

import sqlalchemy as sa
from sqlalchemy.sql.elements import ClauseElement

T = TypeVar("T")
Processor = Callable[[Any], Any] | None
_EXPANDING = "__[POSTCOMPILE_{}]"

#: Every statement made, so a test can compile each on every dialect and hold it to the models.
REGISTRY: list[Statement] = []

_STATEMENT = re.compile(
    r"^\s*(?:(select)\b.*?\bfrom\s+`?(\w+)|(update)\s+`?(\w+)|(insert)\s+into\s+`?(\w+)|(delete)\s+from\s+`?(\w+)|(\w+))",
    re.IGNORECASE | re.DOTALL,
)


@lru_cache(maxsize=1024)
def statement_kind(sql: str) -> str:
    """``select uploads``, ``update files``, ``begin`` ... for a statement (its metrics label)."""
    match = _STATEMENT.match(sql)
    if match is None:
        return "other"
    words = [g for g in match.groups() if g]
    return " ".join(w.lower() for w in words[:2])


@dataclasses.dataclass(frozen=True, slots=True)
class Compiled:
    """A statement as one dialect runs it."""

    sql: str
    #: ``(name, default, bind processor, expanding)`` per placeholder, in the driver's order.
    params: tuple[tuple[str, Any, Processor, bool], ...]
    #: ``(name, result processor)`` per result column, in the row's order.
    columns: tuple[tuple[str, Processor], ...]
    placeholder: str  # "%s" (asyncmy) or "?" (aiosqlite)
    #: The value of a ``value`` call is the driver's ``lastrowid`` (MySQL's LAST_INSERT_ID trick).
    insert_id: bool
    kind: str = ""  # its metrics label (``statement_kind``)
    expanding: bool = False  # an ``IN`` list is spread when run
    names: tuple[str, ...] = ()  # the result columns' names, in the row's order
    #: ``(index, name, result processor)`` of the result columns that have one.
    processed: tuple[tuple[int, str, Callable[[Any], Any]], ...] = ()

    def args(self, given: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """The SQL text (expanded lists spread) and the processed positional arguments."""
        if not self.expanding:
            get = given.get
            return self.sql, [
                process(get(name, default)) if process else get(name, default)
                for name, default, process, _ in self.params
            ]
        sql, args = self.sql, list[Any]()
        for name, default, process, expanding in self.params:
            value = given.get(name, default)
            if expanding:
                values = list(value)
                if not values:
                    raise ValueError(f"{name}: an empty list cannot be expanded")
                marks = ", ".join([self.placeholder] * len(values))
                sql = sql.replace(_EXPANDING.format(name), marks, 1)
                args.extend(process(v) if process else v for v in values)
            else:
                args.append(process(value) if process else value)
        return sql, args

    def row(self, values: Sequence[Any]) -> dict[str, Any]:
        row = dict(zip(self.names, values, strict=True))
        for index, name, process in self.processed:
            row[name] = process(values[index])
        return row


class Statement:
    """A Core statement (or, where dialects need different SQL, one per dialect name), compiled
    on first use per dialect and cached."""

    def __init__(
        self,
        build: sa.Executable | Callable[[str], sa.Executable],
        *,
        insert_id_on: Iterable[str] = (),
        only_on: Iterable[str] = (),
    ) -> None:
        self._build = build
        self._insert_id_on = frozenset(insert_id_on)
        self._only_on = frozenset(only_on)  # a fast path some dialects have (none given: every one)
        self._compiled: dict[str, Compiled] = {}
        REGISTRY.append(self)

    def runs_on(self, dialect_name: str) -> bool:
        return not self._only_on or dialect_name in self._only_on

    def construct(self, dialect_name: str = "") -> sa.Executable:
        """The Core statement for a dialect (an ORM session can run it too)."""
        return self._build(dialect_name) if callable(self._build) else self._build

    def compiled(self, dialect: sa.Dialect) -> Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            if not self.runs_on(dialect.name):
                raise ValueError(f"this statement is for {sorted(self._only_on)} only, not {dialect.name}")
            found = self._compiled[dialect.name] = self._compile(dialect)
        return found

    def _compile(self, dialect: sa.Dialect) -> Compiled:
        stmt = self.construct(dialect.name)
        assert isinstance(stmt, ClauseElement)
        compiled: Any = stmt.compile(dialect=dialect)  # a SQLCompiler: positiontup, binds
        params = []
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            impl = bind.type.dialect_impl(dialect)
            default = None if bind.required else bind.effective_value
            params.append((name, default, impl.bind_processor(dialect), bool(bind.expanding)))
        columns: list[tuple[str, Processor]] = []
        selected = getattr(stmt, "selected_columns", None)
        if selected:  # a SELECT, or a statement with RETURNING
            for key, column in selected.items():
                impl = column.type.dialect_impl(dialect)
                columns.append((key, impl.result_processor(dialect, None)))
        placeholder = "%s" if dialect.paramstyle == "format" else "?"
        return Compiled(
            compiled.string,
            tuple(params),
            tuple(columns),
            placeholder,
            dialect.name in self._insert_id_on,
            kind=statement_kind(compiled.string),
            expanding=any(expanding for *_, expanding in params),
            names=tuple(name for name, _ in columns),
            processed=tuple((i, name, p) for i, (name, p) in enumerate(columns) if p is not None),
        )


class Query(Statement, Generic[T]):
    """A statement whose rows become ``T`` (from a dict of the row's values by column name)."""

    def __init__(
        self, build: sa.Executable | Callable[[str], sa.Executable], into: Callable[[dict[str, Any]], T]
    ) -> None:
        super().__init__(build)
        self.into = into


# -- records ------------------------------------------------------------------------------------


class Record:
    """Base of the hot path's row records (see ``record``)."""

    __slots__ = ()
    __table__: ClassVar[sa.Table]
    __columns__: ClassVar[tuple[str, ...]]

    @classmethod
    def of(cls: type[R], row: Mapping[str, Any]) -> R:
        """The record from a row that holds (at least) its table's columns, by name."""
        if len(row) == len(cls.__columns__):  # exactly its columns (else the call fails)
            return cls(**row)
        return cls(**{name: row[name] for name in cls.__columns__})

    def values(self) -> dict[str, Any]:
        """Column name -> value, for an INSERT."""
        return {name: getattr(self, name) for name in self.__columns__}


R = TypeVar("R", bound=Record)


class RecordDrift(TypeError):
    """A record's fields are not its table's columns."""


@dataclass_transform()
def record(model: Any) -> Callable[[type[R]], type[R]]:
    """Make a slotted dataclass of a ``Record`` subclass whose fields are exactly the columns of
    ``model``'s table (any order). Checked now: a record that does not match its table is an error
    at import, not a wrong value at run time."""
    table: sa.Table = model.__table__

    def make(cls: type[R]) -> type[R]:
        made: Any = dataclasses.dataclass(slots=True)(cls)
        fields = {f.name for f in dataclasses.fields(made)}
        columns = {c.name for c in table.columns}
        if fields != columns:
            raise RecordDrift(
                f"{cls.__name__} is not {table.name}: missing {sorted(columns - fields)}, "
                f"extra {sorted(fields - columns)}"
            )
        made.__table__ = table
        made.__columns__ = tuple(f.name for f in dataclasses.fields(made))
        return made  # type: ignore[no-any-return]

    return make


def insert_of(model: Any) -> sa.Insert:
    """``INSERT`` of every column of ``model``'s table, each a parameter of its own name."""
    table: sa.Table = model.__table__
    return sa.insert(table).values({c.name: sa.bindparam(c.name, type_=c.type) for c in table.columns})


def param(name: str, column: Any = None, *, expanding: bool = False) -> Any:
    """A named parameter, typed like ``column`` when given (so datetimes and booleans convert)."""
    type_ = column.type if column is not None else None
    return sa.bindparam(name, type_=type_, expanding=expanding)

"""The hot path's SQL is held to the models: every statement compiles on both databases and names
only columns of the SQLModel tables, with their types; every record is exactly its table, field by
field and type by type; and no module spells a table in a SQL string of its own."""

from __future__ import annotations

import ast
import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.mysql import asyncmy
from sqlalchemy.dialects.sqlite import aiosqlite
from sqlalchemy.sql import visitors
from sqlmodel import SQLModel

import upload_plane.app
from upload_plane.statements import REGISTRY, Query, Record, RecordDrift, record

SRC = Path(upload_plane.app.__file__).parent
DIALECTS = [asyncmy.dialect(), aiosqlite.dialect()]
TABLES = SQLModel.metadata.tables


def _built() -> list[tuple[str, sa.Executable]]:
    return [
        (f"{i}:{d.name}", s.construct(d.name))
        for i, s in enumerate(REGISTRY)
        for d in DIALECTS
        if s.runs_on(d.name)
    ]


def test_every_statement_compiles_on_both_databases() -> None:
    assert len(REGISTRY) > 40  # the hot path's statements, all registered
    for statement in REGISTRY:
        for dialect in (d for d in DIALECTS if statement.runs_on(d.name)):
            compiled = statement.compiled(dialect)
            assert compiled.sql and compiled.placeholder in ("%s", "?")
            placeholders = compiled.sql.count(compiled.placeholder) + compiled.sql.count("__[POSTCOMPILE_")
            assert placeholders == len(compiled.params), compiled.sql


@pytest.mark.parametrize(("name", "built"), _built(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_column_a_statement_names_is_a_models_column(name: str, built: sa.Executable) -> None:
    assert isinstance(built, sa.ClauseElement)
    for element in visitors.iterate(built):
        if isinstance(element, sa.Column) and isinstance(element.table, sa.Table):
            table = TABLES.get(element.table.name)
            assert table is not None, f"{name}: {element.table.name} is not a model's table"
            assert table.c[element.name] is element, f"{name}: {element} is not the model's column"
        if isinstance(element, sa.BindParameter) and element.type._type_affinity is not sa.types.NullType:
            compared = getattr(element, "_compared_to_type", None)
            if compared is not None and compared._type_affinity is not sa.types.NullType:
                assert element.type._type_affinity is compared._type_affinity, (name, element.key)


def _python_type(hint: Any) -> tuple[type, bool]:
    """``int | None`` -> ``(int, True)``."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        kinds = [a for a in args if a is not type(None)]
        assert len(kinds) == 1, hint
        return kinds[0], type(None) in args
    return hint, False


def _records() -> list[type[Record]]:
    return [cls for cls in Record.__subclasses__() if cls.__module__.startswith("upload_plane")]


@pytest.mark.parametrize("made", _records(), ids=lambda c: c.__name__)
def test_a_record_is_its_table_field_by_field(made: type[Record]) -> None:
    hints = typing.get_type_hints(made)
    fields = {f.name for f in dataclasses.fields(made)}  # type: ignore[arg-type]
    assert fields == set(made.__table__.columns.keys())
    for column in made.__table__.columns:
        kind, optional = _python_type(hints[column.name])
        expected = getattr(column.type, "impl_instance", column.type).python_type  # a decorator's stored type
        assert kind is expected, (column.name, kind, expected)
        assert optional == bool(column.nullable), (column.name, "nullable" if column.nullable else "not null")


def test_a_query_maps_rows_by_name_into_its_record() -> None:
    for statement in REGISTRY:
        if not isinstance(statement, Query) or not isinstance(statement.into, types.MethodType):
            continue
        made = statement.into.__self__
        if not (isinstance(made, type) and issubclass(made, Record)):
            continue
        for dialect in (d for d in DIALECTS if statement.runs_on(d.name)):
            names = {name for name, _ in statement.compiled(dialect).columns}
            assert set(made.__columns__) <= names, (made.__name__, set(made.__columns__) - names)


def test_a_record_that_drifts_from_its_table_is_refused_when_it_is_made() -> None:
    from upload_plane.models import RateCounter

    class Short(Record):
        key: str
        count: int

    with pytest.raises(RecordDrift, match=r"missing \['expires_at'\]"):
        record(RateCounter)(Short)


def _names_table(text: str, table: str) -> bool:
    """``text`` uses ``table`` the way SQL does: FROM, INTO, UPDATE or JOIN it."""
    return re.search(rf"\b(from|into|update|join)\s+[`\"]?{table}\b", text, re.IGNORECASE) is not None


def sql_strings(source: str) -> list[tuple[int, str]]:
    """The string constants of ``source`` (docstrings and other bare strings aside) that read as SQL
    naming one of our tables."""
    tree = ast.parse(source)
    prose = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    names = sorted(TABLES, key=len, reverse=True)
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in prose
        and any(_names_table(node.value, n) for n in names)
    ]


def test_no_module_spells_a_table_in_a_sql_string() -> None:
    """Statements are built from the tables (``statements.py``); a table named in a string of SQL
    would be a second, unchecked copy of the schema."""
    found = [
        f"{path.relative_to(SRC)}:{line}: {text[:80]!r}"
        for path in sorted(SRC.rglob("*.py"))
        for line, text in sql_strings(path.read_text())
    ]
    assert not found, "\n".join(found)


def test_the_check_finds_a_sql_string_when_there_is_one() -> None:
    source = 'QUERY = "SELECT status FROM uploads WHERE id = %s"\n"""Docs may say: SELECT FROM uploads."""\n'
    assert sql_strings(source) == [(1, "SELECT status FROM uploads WHERE id = %s")]

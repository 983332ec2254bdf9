"""What a statement reads of the protected tables, and whether it keeps to one customer.

Pure functions over SQLAlchemy statement objects and SQL text: no events, no I/O. Tables
are matched by name, case-insensitively and whatever the schema (``Table``, lower-case
``table()``, SQL text): a namesake in another schema errs towards refusing, never towards
letting a read through.

A protected table can be reached in three ways (``Reach``). Each place it stands in the
top-level FROM (the table itself, or an alias of it) is an *occurrence*; an occurrence that
is not a checked ORM entity must be kept to the gated customer by the statement's WHERE.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Delete, Insert, Select, TextClause, Update, inspect
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, BooleanClauseList, ColumnClause
from sqlalchemy.sql.selectable import (
    Alias,
    CompoundSelect,
    Exists,
    ScalarSelect,
    TableClause,
    TextualSelect,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Set

    from sqlalchemy import ColumnElement


class Reach(Enum):
    """How a statement reaches a protected table."""

    ENTITY = "entity"
    """Only as whole ORM entities of a watched class: each row is checked as it loads."""
    TOP = "top"
    """In the top-level FROM as more than entities: each such occurrence must be kept to
    the gated customer by a WHERE term (``kept_to_customer``)."""
    HIDDEN = "hidden"
    """Inside a subquery, CTE, UNION, EXISTS or SQL text: its rows cannot be checked."""


@dataclass(frozen=True, slots=True)
class ProtectedTable:
    """A protected table: its key (the table's name, lower case), resource, customer column."""

    key: str
    resource: str
    customer_column: str
    data_categories: tuple[str, ...]


@dataclass(slots=True)
class Reading:
    """How one statement reads one protected table."""

    reach: Reach
    unchecked: set[str] = field(default_factory=set)
    """Top-level occurrences (``"table"`` or an alias's name) that are not checked entities."""


def table_key(name: str) -> str:
    """The key a table is protected under: its name, lower case (schema left out)."""
    return name.lower()


#: What makes SQL text hand out rows: a query anywhere in it, RETURNING, a cursor FETCH,
#: COPY, or PostgreSQL's ``TABLE name``. INSERT ... VALUES, UPDATE, DELETE and DDL without
#: any of these only write.
_READS_ROWS: Final = re.compile(
    r"\b(select|returning|fetch|copy)\b|(?:^|[;(/\r])\s*table\b", re.IGNORECASE | re.MULTILINE
)
#: PostgreSQL's Unicode-escaped identifiers (U&"\0063ontacts") hide a name from any match.
_ESCAPED_NAME: Final = re.compile(r'u&"', re.IGNORECASE)


def text_reads(sql: str) -> bool:
    """Whether SQL text may hand out rows (see ``_READS_ROWS``).

    Deliberately broad: text is matched, not parsed, so a leading ``;`` or parenthesis,
    ``PREPARE`` or ``DECLARE`` of a query and comments in any style are all still reads.
    """
    return _READS_ROWS.search(sql) is not None


def named_in_text(sql: str, protected: Mapping[str, ProtectedTable]) -> list[ProtectedTable]:
    """Protected tables SQL text names (as a word, any case or quoting), or may name.

    A heuristic: it cannot see a name built at run time, a view or a function over the
    table (the README lists these limits); a name in a comment or string errs towards
    refusing, and Unicode-escaped identifiers count as naming every protected table.
    """
    if _ESCAPED_NAME.search(sql):
        return list(protected.values())
    words = {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_$]*", sql)}
    return [t for key, t in protected.items() if key in words]


def is_read(statement: object) -> bool:
    """Whether a statement object can hand out rows of the tables it touches."""
    if isinstance(statement, TextClause):
        return text_reads(statement.text)
    if isinstance(statement, Select | CompoundSelect | TextualSelect | Exists):
        return True
    # DML reads through RETURNING (UPDATE, DELETE) or a SELECT it embeds (any of them).
    return isinstance(statement, Insert | Update | Delete)


def reached(
    statement: Any, protected: Mapping[str, ProtectedTable], watched: Set[type[Any]]
) -> dict[str, Reading]:
    """Each protected table ``statement`` reads, by key, and how.

    ``watched``: the mapped classes whose loaded rows are checked one by one; an entity of
    another class mapped to a protected table is read like a column.
    """
    if isinstance(statement, TextClause):
        return {t.key: Reading(Reach.HIDDEN) for t in named_in_text(statement.text, protected)}
    walk = _Walk(protected)
    walk.top(statement)
    found: dict[str, Reading] = {key: Reading(Reach.HIDDEN) for key in walk.nested}
    entities = _entity_occurrences(statement, watched) if isinstance(statement, Select) else {}
    for key, occurrences in walk.occurrences.items():
        if key in found:
            continue
        unchecked = occurrences - entities.get(key, set())
        found[key] = Reading(Reach.TOP if unchecked else Reach.ENTITY, unchecked)
    return found


class _Walk:
    """One pass over a statement's tree, telling top-level FROM occurrences from nested ones."""

    def __init__(self, protected: Mapping[str, ProtectedTable]) -> None:
        self.protected = protected
        self.occurrences: dict[str, set[str]] = {}
        self.nested: set[str] = set()

    def top(self, statement: Any) -> None:
        if isinstance(statement, Insert):
            # The inserted table is written, not read; an INSERT ... SELECT reads its SELECT.
            for child in statement.get_children():
                if not isinstance(child, TableClause):
                    self._visit(child, nested=True)
            return
        if isinstance(statement, Update | Delete) and not getattr(statement, "_returning", ()):
            # Without RETURNING only what it embeds can leave (SET x = (SELECT ...)).
            for child in statement.get_children():
                if not isinstance(child, TableClause):
                    self._visit(child, nested=True)
            return
        for child in statement.get_children():
            self._visit(child, nested=isinstance(statement, CompoundSelect | TextualSelect))

    def _visit(self, element: Any, *, nested: bool) -> None:
        if isinstance(element, TextClause):
            for table in named_in_text(element.text, self.protected):
                self.nested.add(table.key)
            return
        if isinstance(element, TableClause):
            self._table(element, "table", nested=nested)
            return
        if isinstance(element, Alias) and isinstance(element.element, TableClause):
            self._table(element.element, f"alias {element.name}", nested=nested)
            return
        inner = nested or isinstance(
            element, Select | CompoundSelect | ScalarSelect | Exists | TextualSelect | Alias
        )
        for child in element.get_children():
            self._visit(child, nested=inner)

    def _table(self, table: TableClause, occurrence: str, *, nested: bool) -> None:
        key = table_key(table.name)
        if key not in self.protected:
            return
        if nested:
            self.nested.add(key)
        else:
            self.occurrences.setdefault(key, set()).add(occurrence)


def _entity_occurrences(select: Select[Any], watched: Set[type[Any]]) -> dict[str, set[str]]:
    """Occurrences of tables whose rows ``select`` loads as whole watched ORM entities."""
    found: dict[str, set[str]] = {}
    for description in select.column_descriptions:
        expression = description.get("expr")
        info = inspect(expression, raiseerr=False) if expression is not None else None
        mapper = getattr(info, "mapper", None)
        if mapper is None or not any(m.class_ in watched for m in mapper.iterate_to_root()):
            continue
        if getattr(info, "is_mapper", False):
            for table in mapper.tables:
                found.setdefault(table_key(table.name), set()).add("table")
        elif getattr(info, "is_aliased_class", False):
            selectable = info.selectable  # type: ignore[union-attr]
            if isinstance(selectable, Alias) and isinstance(selectable.element, TableClause):
                key = table_key(selectable.element.name)
                found.setdefault(key, set()).add(f"alias {selectable.name}")
    return found


def kept_to_customer(
    statement: Any,
    table: ProtectedTable,
    occurrence: str,
    is_customer: Callable[[object], bool],
    parameters: Mapping[str, object],
) -> bool:
    """Whether ``statement``'s WHERE keeps one occurrence of ``table`` to one customer.

    The proof is a top-level AND term comparing the occurrence's customer column with a
    value ``is_customer`` accepts (a bound value as executed: ``parameters`` override the
    statement's own). Anything else (no such term, OR, a subquery, a function of the
    column) proves nothing: a read that cannot be shown to stay with the gated customer is
    refused rather than trusted.
    """
    return any(
        _is_column_of(column, table, occurrence) and is_customer(_value(value, parameters))
        for term in _and_terms(getattr(statement, "whereclause", None))
        if isinstance(term, BinaryExpression) and term.operator is operators.eq
        for column, value in ((term.left, term.right), (term.right, term.left))
    )


def _and_terms(clause: ColumnElement[Any] | None) -> Iterator[ColumnElement[Any]]:
    if clause is None:
        return
    if isinstance(clause, BooleanClauseList) and clause.operator is operators.and_:
        for part in clause.clauses:
            yield from _and_terms(part)
    else:
        yield clause


def _is_column_of(element: object, table: ProtectedTable, occurrence: str) -> bool:
    if not isinstance(element, ColumnClause) or element.name.lower() != table.customer_column:
        return False
    owner = element.table
    if isinstance(owner, Alias) and isinstance(owner.element, TableClause):
        return occurrence == f"alias {owner.name}" and table_key(owner.element.name) == table.key
    return (
        isinstance(owner, TableClause)
        and occurrence == "table"
        and table_key(owner.name) == table.key
    )


def _value(element: object, parameters: Mapping[str, object]) -> object:
    """The value a bound parameter stands for as executed (a sentinel for anything else)."""
    if isinstance(element, BindParameter):
        if element.key in parameters:
            return parameters[element.key]
        return element.effective_value
    return _NOT_A_VALUE


_NOT_A_VALUE: Final = object()

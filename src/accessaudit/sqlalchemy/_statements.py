"""What a statement reads of the protected tables, and whether it keeps to one customer.

Pure functions over SQLAlchemy statement objects: no events, no I/O. A protected table can
stand in a statement in three ways, and each is handled differently (see ``Reach``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Select, Table, TextClause, inspect
from sqlalchemy.sql import operators, visitors
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, BooleanClauseList, ColumnClause
from sqlalchemy.sql.selectable import Alias, CompoundSelect, Join

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Set

    from sqlalchemy import ColumnElement
    from sqlalchemy.sql.selectable import FromClause


class Reach(Enum):
    """How a statement reaches a protected table."""

    ENTITY = "entity"
    """Selected as ORM entities: every row is checked as it is loaded (``load`` events)."""
    TOP = "top"
    """In the top-level FROM (alone or joined), not as an entity: its WHERE must prove it
    keeps to the gated customer (``kept_to_customer``)."""
    HIDDEN = "hidden"
    """Only inside a subquery, CTE, UNION or SQL text: its rows cannot be checked."""


@dataclass(frozen=True, slots=True)
class ProtectedTable:
    """A protected table: its key in the metadata, resource and customer column."""

    key: str
    """``schema.name`` or ``name``, as ``Table.fullname``."""
    resource: str
    customer_column: str
    data_categories: tuple[str, ...]


#: Statements that can hand out rows. DML with RETURNING hands back what it wrote, and the
#: ORM's own INSERT ... RETURNING of primary keys must not be refused: writes are not gated.
_READS = (Select, CompoundSelect, TextClause)
#: SQL text that reads: starts with SELECT, WITH, VALUES or TABLE (after comments, blanks).
_READING_TEXT = re.compile(
    r"^\s*(?:(?:--[^\n]*\n|/\*.*?\*/)\s*)*(select|with|table|values)\b", re.IGNORECASE | re.DOTALL
)


def is_read(statement: object) -> bool:
    """Whether ``statement`` (a statement object or driver SQL) can hand out table rows."""
    if isinstance(statement, str):
        return _READING_TEXT.match(statement) is not None
    if isinstance(statement, TextClause):
        return _READING_TEXT.match(statement.text) is not None
    return isinstance(statement, _READS)


def named_in_text(sql: str, protected: Mapping[str, ProtectedTable]) -> list[ProtectedTable]:
    """Protected tables whose name appears in SQL text as a word (quoted or not).

    A heuristic: it cannot see a name built at run time, a view or a function over the
    table (the README lists these limits); it can see a name in a comment or string, which
    errs on the side of refusing.
    """
    words = {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_$]*", sql)}
    return [t for key, t in protected.items() if key.rsplit(".", 1)[-1].lower() in words]


def reached(
    statement: Any, protected: Mapping[str, ProtectedTable], watched: Set[type[Any]]
) -> dict[str, Reach]:
    """Each protected table ``statement`` reads, by key, and how (the strongest way).

    ``watched``: the mapped classes whose loaded rows are checked one by one; an entity of
    another class mapped to a protected table counts as a top-level read of the table.
    """
    if isinstance(statement, TextClause):
        return {t.key: Reach.HIDDEN for t in named_in_text(statement.text, protected)}
    found: dict[str, Reach] = {}
    for element in visitors.iterate(statement):
        if isinstance(element, Table) and element.fullname in protected:
            found[element.fullname] = Reach.HIDDEN
    if not found or not isinstance(statement, Select):
        return found
    for key in _entity_tables(statement, watched):
        if key in found:
            found[key] = Reach.ENTITY
    if all(reach is Reach.ENTITY for reach in found.values()):
        return found  # the common ORM case: no need for the FROM list (costly to compute)
    for key in _top_tables(statement):
        if found.get(key) is Reach.HIDDEN:
            found[key] = Reach.TOP
    return found


def _top_tables(select: Select[Any]) -> Iterator[str]:
    for element in _top_froms(select.get_final_froms()):
        table = element.element if isinstance(element, Alias) else element
        if isinstance(table, Table):
            yield table.fullname


def _top_froms(froms: Iterable[FromClause]) -> Iterator[FromClause]:
    for element in froms:
        if isinstance(element, Join):
            yield from _top_froms((element.left, element.right))
        else:
            yield element


def _entity_tables(select: Select[Any], watched: Set[type[Any]]) -> Iterator[str]:
    """Tables of the watched ORM entities ``select`` loads whole (not single columns)."""
    for description in select.column_descriptions:
        expression = description.get("expr")
        info = inspect(expression, raiseerr=False) if expression is not None else None
        mapper = getattr(info, "mapper", None)
        whole = getattr(info, "is_mapper", False) or getattr(info, "is_aliased_class", False)
        if mapper is None or not whole:
            continue
        if not any(m.class_ in watched for m in mapper.iterate_to_root()):
            continue
        for table in mapper.tables:
            if isinstance(table, Table):
                yield table.fullname


def kept_to_customer(
    select: Select[Any], table: ProtectedTable, is_customer: Callable[[object], bool]
) -> bool:
    """Whether ``select``'s WHERE keeps ``table`` to one customer: ``column = value``.

    The proof is a top-level AND term comparing the table's customer column (or an alias's)
    with a value ``is_customer`` accepts. Anything else (no such term, OR, a subquery, a
    function of the column) proves nothing: a read that cannot be shown to stay with the
    gated customer is refused rather than trusted.
    """
    return any(
        _is_customer_column(column, table) and is_customer(_bound_value(value))
        for term in _and_terms(select.whereclause)
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


def _is_customer_column(element: object, table: ProtectedTable) -> bool:
    if not isinstance(element, ColumnClause) or element.name != table.customer_column:
        return False
    owner = element.table
    base = owner.element if isinstance(owner, Alias) else owner
    return isinstance(base, Table) and base.fullname == table.key


def _bound_value(element: object) -> object:
    """The value a bound parameter or literal stands for (a sentinel for anything else)."""
    if isinstance(element, BindParameter):
        return element.effective_value
    return _NOT_A_VALUE


_NOT_A_VALUE: Final = object()

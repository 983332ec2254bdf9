"""What a statement reads of the protected tables, and restricting it to one customer.

Pure functions over SQLAlchemy statement objects: no events, no I/O. A protected table can
stand in a statement in three ways, and each is handled differently (see ``Reach``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, Table, TextClause, false, inspect
from sqlalchemy.sql import visitors
from sqlalchemy.sql.selectable import Alias, CompoundSelect, Join

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Set

    from sqlalchemy import ColumnElement
    from sqlalchemy.sql.selectable import FromClause


class Reach(Enum):
    """How a statement reaches a protected table."""

    ENTITY = "entity"
    """Selected as ORM entities: every row is checked as it is loaded (``load`` events)."""
    TOP = "top"
    """In the top-level FROM (alone or joined), not as an entity: restricted by a WHERE."""
    HIDDEN = "hidden"
    """Only inside a subquery, CTE, UNION or SQL text: can be neither checked nor restricted."""


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
    for key in _top_tables(statement):
        if key in found:
            found[key] = Reach.TOP
    for key in _entity_tables(statement, watched):
        if key in found:
            found[key] = Reach.ENTITY
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


def restrict(select: Select[Any], table: ProtectedTable, customer: str | None) -> Select[Any]:
    """``select``, keeping only ``customer``'s rows of each top-level use of ``table``."""
    conditions = [
        _is_customer(element.c[table.customer_column], customer)
        for element in _top_froms(select.get_final_froms())
        if isinstance(base := element.element if isinstance(element, Alias) else element, Table)
        and base.fullname == table.key
    ]
    return select.where(*conditions)


def _is_customer(column: ColumnElement[Any], customer: str | None) -> ColumnElement[bool]:
    """``column = customer``, with the id as the column's type (ids in int columns are ints)."""
    if customer is None:
        return false()
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        python_type = str
    if python_type is int:
        try:
            return column == int(customer)
        except ValueError:
            return false()  # no row of an int column belongs to a customer named in letters
    return column == customer

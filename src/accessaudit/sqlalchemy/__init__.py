"""Nothing escapes the gate: reads of customer data through SQLAlchemy are gated or refused.

Declare which mapped classes or tables hold customer data, then install on the engine (or a
session, a sessionmaker, their async forms)::

    customer_data = CustomerData(gate)               # mode="observe" while adopting the gate
    customer_data.protect(Contact, resource="crm.contacts", customer="customer_id")
    customer_data.protect(invoices, resource="billing.invoices", customer="customer_id")
    customer_data.install(engine)

From then on, a query reading a protected table:

- **outside any gated access** (no ``@gate.protect`` function or ``gate.guard`` block for
  its resource is running) is refused with ``AccessDenied`` (reason ``ungated_read``) after
  the denial is committed; in observe mode it runs, recorded as ``access.ungated``. That
  covers ORM selects, ``Session.get``, legacy ``Query``, lazy and eager relationship loads,
  ``yield_per`` streams, Core ``select(table)``, and SQL text that names the table. A lazy
  query the gated code hands back runs after the access ended, so it is refused too.
- **inside a gated access** to its resource: ORM entities of the protected class are
  checked row by row as they load; a row of another customer fails the access
  (``AccessDenied``, recorded as ``access.failed`` with reason ``customer_mismatch``, the
  result withheld) and is never handed out. The outcome's ``record_count`` is the number of
  rows loaded. Every other use of the table (Core and column reads, aliases of it beside an
  entity) must show in the WHERE that it keeps to the gated customer (``customer column =
  id``, ANDed at the top level); one that does not, or a use inside a subquery, CTE, UNION,
  EXISTS or SQL text, is withheld the same way before it runs. Rows that load after the
  gated code returned (a ``Result`` handed back) are refused as ungated reads.

Migrations: ``audit_metadata`` holds the log's tables; pass ``include_object`` to Alembic's
``context.configure`` so that autogenerate never proposes to drop or alter them.

The hooks run where SQLAlchemy runs the query: for ``AsyncSession`` that is the event loop,
so recording a refusal there waits for its commit on the loop (refusals only: gated reads
record through the gate, which never blocks the loop).
"""

from __future__ import annotations

import sys
import weakref
from typing import TYPE_CHECKING, Any, Final, Literal

from sqlalchemy import Engine, Table, event
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapper, Session, scoped_session, sessionmaker

from accessaudit.exceptions import ConfigurationError, InvalidEvent
from accessaudit.gate._access import Access, Target
from accessaudit.gate._gate import as_identifier
from accessaudit.gate._running import running_access
from accessaudit.gate.decisions import AccessDecision, ReasonCode
from accessaudit.record._validate import check_text, exact_text
from accessaudit.record.fields import MAX_IDENTIFIER_CHARS
from accessaudit.sqlalchemy._statements import (
    ProtectedTable,
    Reach,
    Reading,
    is_read,
    kept_to_customer,
    named_in_text,
    reached,
    table_key,
    text_reads,
)
from accessaudit.store import AUDIT_TABLES, audit_metadata

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from types import FrameType

    from sqlalchemy.engine import Connection, ExecutionContext
    from sqlalchemy.orm import QueryContext

    from accessaudit.gate import Gate
    from accessaudit.record.fields import AttributeValue

__all__ = ["AUDIT_TABLES", "CustomerData", "Mode", "audit_metadata", "include_object"]

#: ``enforce`` refuses ungated reads; ``observe`` lets them run and records each one.
Mode = Literal["enforce", "observe"]
_MODES: Final = ("enforce", "observe")

#: Which ``CustomerData`` guards each engine: one, so no read is judged, and no row counted,
#: twice. A loaded row is judged by the one guarding the engine it came from, so two apps
#: (or two tests) in one process may protect the same mapped class.
_INSTALLED: weakref.WeakKeyDictionary[Engine, CustomerData] = weakref.WeakKeyDictionary()
#: Mapped classes with our load listeners (registered once per class, for every engine).
_LISTENING: weakref.WeakSet[type[Any]] = weakref.WeakSet()

Installable = (
    Engine
    | AsyncEngine
    | Session
    | AsyncSession
    | sessionmaker[Any]
    | async_sessionmaker[Any]
    | scoped_session[Any]
)


class CustomerData:
    """The tables that hold customer data, and the gate every read of them goes through."""

    def __init__(self, gate: Gate, *, mode: Mode = "enforce") -> None:
        if mode not in _MODES:
            msg = f"mode must be 'enforce' or 'observe', not {mode!r}"
            raise ValueError(msg)
        self.gate, self.mode = gate, mode
        self._tables: dict[str, ProtectedTable] = {}
        self._observed: weakref.WeakKeyDictionary[object, set[str]] = weakref.WeakKeyDictionary()
        self._entities: dict[type[Any], tuple[ProtectedTable, str]] = {}

    @property
    def tables(self) -> Mapping[str, ProtectedTable]:
        """The protected tables by key (``schema.name`` or ``name``)."""
        return self._tables

    def protect(
        self,
        target: type[Any] | Table,
        *,
        resource: str,
        customer: str = "customer_id",
        data_categories: Iterable[str] = (),
    ) -> None:
        """Declare that ``target`` (a mapped class or a ``Table``) holds customer data.

        ``resource`` is the name gated accesses to it use (``gate.protect(resource)``);
        ``customer`` names the attribute (mapped class) or column (table) holding the
        customer id. A mapped class's rows are checked one by one as they load.
        """
        categories = tuple(sorted(set(data_categories)))
        problems = [
            p
            for p in (
                check_text("resource", resource, MAX_IDENTIFIER_CHARS),
                *(check_text("data_categories", c, MAX_IDENTIFIER_CHARS) for c in categories),
            )
            if p is not None
        ]
        if problems:
            raise InvalidEvent(problems)
        if isinstance(target, Table):
            table, column, attribute = target, _column_of_table(target, customer), None
        else:
            table, column, attribute = _mapped(target, customer)
        declared = ProtectedTable(
            key=table_key(table.name),
            resource=exact_text(resource),
            customer_column=column,
            data_categories=tuple(exact_text(c) for c in categories),
        )
        known = self._tables.get(declared.key)
        if known is not None and known != declared:
            msg = f"table {declared.key} is already protected as {known.resource!r}"
            raise ConfigurationError(msg)
        self._tables[declared.key] = declared
        if attribute is not None and not isinstance(target, Table):
            self._watch(target, declared, attribute)

    def install(self, target: Installable) -> None:
        """Guard every read through ``target``: an engine, or a session or its factory.

        On a session or sessionmaker, each engine it connects to is guarded from its first
        transaction on. Installing on the engine itself covers everything that uses it.
        """
        if isinstance(target, AsyncEngine):
            self._install_engine(target.sync_engine)
        elif isinstance(target, Engine):
            self._install_engine(target)
        elif isinstance(target, AsyncSession):
            self.install(target.sync_session)
        elif isinstance(target, async_sessionmaker):
            bind = target.kw.get("bind")
            if bind is None:
                msg = "this async_sessionmaker has no bind: install on its engine instead"
                raise ConfigurationError(msg)
            self.install(bind)
        elif isinstance(target, Session | sessionmaker | scoped_session):
            event.listen(target, "after_begin", self._on_begin)
            bind = target.kw.get("bind") if isinstance(target, sessionmaker) else None
            if isinstance(bind, Engine | AsyncEngine):
                self.install(bind)
        else:
            msg = f"cannot install on {type(target).__name__}: pass an engine or a session"
            raise TypeError(msg)

    # -- the hooks --------------------------------------------------------------------------

    def _install_engine(self, engine: Engine) -> None:
        owner = _INSTALLED.get(engine)
        if owner is self:
            return
        if owner is not None:
            msg = "another CustomerData is already installed on this engine"
            raise ConfigurationError(msg)
        _INSTALLED[engine] = self
        event.listen(engine, "before_execute", self._before_execute, retval=True)
        event.listen(engine, "before_cursor_execute", self._before_cursor_execute)

    def _on_begin(self, session: Session, transaction: object, connection: Connection) -> None:
        self._install_engine(connection.engine)

    def _before_execute(
        self,
        conn: Connection,
        statement: Any,
        multiparams: Any,
        params: Any,
        execution_options: Any,
    ) -> tuple[Any, Any, Any]:
        if is_read(statement):
            reads = reached(statement, self._tables, self._entities.keys())
            if reads:
                parameter_sets = [*(multiparams or []), params or {}]
                self._judge(statement, reads, parameter_sets)
        return statement, multiparams, params

    def _before_cursor_execute(  # noqa: PLR0917 - SQLAlchemy calls it with six positionals
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: ExecutionContext | None,
        executemany: bool,
    ) -> None:
        # Statements compiled from objects were judged in before_execute; this sees the SQL
        # strings handed to the driver as they are (exec_driver_sql).
        if context is not None and context.compiled is not None:
            return
        if text_reads(statement):
            found = named_in_text(statement, self._tables)
            if found:
                self._judge(None, {table.key: Reading(Reach.HIDDEN) for table in found}, [])

    def _judge(
        self, statement: Any, reads: dict[str, Reading], parameter_sets: list[Mapping[str, Any]]
    ) -> None:
        """Raise for a read it refuses; record the reads it lets through unchecked."""
        access = running_access()
        customer = None if access is None else access.target.customer_id

        def is_customer(value: object) -> bool:
            return customer is not None and as_identifier(value) == customer

        for key, reading in reads.items():
            table = self._tables[key]
            if access is None or access.target.resource != table.resource:
                self._ungated(table, access, statement)
                continue
            if reading.reach is Reach.ENTITY:
                continue  # each row is checked as it loads
            unproven = sorted(
                occurrence
                for occurrence in reading.unchecked
                if not all(
                    kept_to_customer(statement, table, occurrence, is_customer, parameters)
                    for parameters in parameter_sets or [{}]
                )
            )
            if reading.reach is Reach.TOP and not unproven:
                continue
            where = (
                f"its WHERE does not keep {', '.join(unproven)} to the gated customer"
                if reading.reach is Reach.TOP
                else "it is read inside a subquery, CTE, UNION, EXISTS or SQL text"
            )
            raise access.withhold(
                ReasonCode.CUSTOMER_MISMATCH,
                f"rows of {table.key} could belong to other customers: {where}; add "
                f"`{table.key}.{table.customer_column} == {customer!r}` to the top-level WHERE "
                "for each use of the table, or select ORM entities (checked row by row)",
            )

    def _ungated(
        self, table: ProtectedTable, inside: Access | None, statement: object = None
    ) -> None:
        """Record a read of ``table`` that no gated access covers; refuse it unless observing."""
        where = (
            "outside any gated access"
            if inside is None
            else f"inside a gated access to {inside.target.resource}, which does not cover it"
        )
        target = Target(
            resource=table.resource,
            data_categories=frozenset(table.data_categories),
            field_names=(),
            action="read",
            function=_caller(),
            customer_id=None,
        )
        decision = AccessDecision(
            allowed=False,
            reason=ReasonCode.UNGATED_READ,
            policy_version=self.gate.setup.policy.version,
            detail=f"a query read {table.key} ({table.resource}) {where}",
        )
        extra: dict[str, AttributeValue] = {"table": table.key, "mode": self.mode}
        access = Access(self.gate.setup, target)
        if self.mode == "observe":
            access.observe(decision, extra)
            if statement is not None:  # its rows, when they load, are not recorded again
                self._observed.setdefault(statement, set()).add(table.key)
            return
        raise access.refuse(decision, extra)

    def _watch(self, cls: type[Any], table: ProtectedTable, attribute: str) -> None:
        self._entities[cls] = (table, attribute)
        if cls not in _LISTENING:
            _LISTENING.add(cls)
            event.listen(cls, "load", _on_load, propagate=True)
            event.listen(cls, "refresh", _on_refresh, propagate=True)

    def _entity(self, cls: type[Any]) -> tuple[ProtectedTable, str] | None:
        """How rows of ``cls`` (or of the protected class it inherits from) are checked."""
        for base in cls.__mro__:
            found = self._entities.get(base)
            if found is not None:
                return found
        return None

    def _loaded(
        self, instance: object, context: QueryContext, table: ProtectedTable, attribute: str
    ) -> None:
        """One row of a watched class has loaded: check whose it is and count it."""
        access = running_access()
        if access is None or access.target.resource != table.resource:
            # Rows arriving with no gated access for them running: a query whose statement
            # did not show the table (a joined eager load), or one started inside an access
            # and iterated after it ended (a Result handed back). Refused, or recorded once
            # per query in observe mode (unless its statement already was).
            marker = ("accessaudit.ungated", table.key)
            observed = table.key in self._observed.get(context.query, ())
            if marker not in context.attributes and not (self.mode == "observe" and observed):
                context.attributes[marker] = True
                self._ungated(table, access)
            return
        state = sa_inspect(instance)
        if attribute not in state.dict:
            raise access.withhold(
                ReasonCode.CUSTOMER_MISMATCH,
                f"rows of {table.key} were loaded without their {attribute} column, so whose "
                "they are cannot be checked; do not defer it",
            )
        if as_identifier(state.dict[attribute]) != access.target.customer_id:
            raise access.withhold(
                ReasonCode.CUSTOMER_MISMATCH,
                f"a row of {table.key} belongs to another customer than "
                f"{access.target.customer_id!r}",
            )
        access.count_loaded(1)


def include_object(
    item: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """Alembic's ``include_object`` hook: leave the audit log's tables out of autogenerate.

    ``context.configure(..., include_object=include_object)``. To combine with a hook of
    the app's own: ``lambda *a: include_object(*a) and app_hook(*a)``.
    """
    table = name if type_ == "table" else getattr(getattr(item, "table", None), "name", None)
    return table not in AUDIT_TABLES


def _on_load(instance: object, context: QueryContext) -> None:
    _judge_row(instance, context)


def _on_refresh(instance: object, context: QueryContext, attrs: object) -> None:
    _judge_row(instance, context)


def _judge_row(instance: object, context: QueryContext) -> None:
    """Hand a loaded row to the ``CustomerData`` guarding the engine it came from."""
    key = ("accessaudit.owner", type(instance))
    if key not in context.attributes:  # once per query and class, not per row
        bind = context.session.get_bind(sa_inspect(type(instance)))
        owner = _owner(bind if isinstance(bind, Engine) else bind.engine)
        context.attributes[key] = (owner, owner._entity(type(instance)) if owner else None)
    owner, entity = context.attributes[key]
    if owner is not None and entity is not None:
        owner._loaded(instance, context, *entity)


def _owner(engine: Engine) -> CustomerData | None:
    """The ``CustomerData`` guarding ``engine`` (or the engine it was derived from).

    An engine made by ``engine.execution_options(...)`` shares its parent's events, so its
    statements were judged by the parent's guard, which judges its rows too. An engine
    nobody installed a guard on is not guarded (the README's limits say so).
    """
    current: Engine | None = engine
    while current is not None:
        owner = _INSTALLED.get(current)
        if owner is not None:
            return owner
        current = getattr(current, "_proxied", None)  # OptionEngine -> its parent
    return None


def _column_of_table(table: Table, name: str) -> str:
    if name not in table.c:
        msg = f"table {table.fullname} has no column {name!r} to read the customer id from"
        raise ConfigurationError(msg)
    return name


def _mapped(cls: type[Any], attribute: str) -> tuple[Table, str, str]:
    """The table, customer column and attribute of a mapped class."""
    mapper = sa_inspect(cls, raiseerr=False)
    if not isinstance(mapper, Mapper):
        msg = f"{cls!r} is neither a mapped class nor a Table"
        raise TypeError(msg)
    prop = mapper.attrs.get(attribute)
    columns = getattr(prop, "columns", ())
    for table in mapper.tables:
        if isinstance(table, Table):
            for column in columns:
                if column.table is table:
                    return table, column.name, attribute
    msg = f"{cls.__qualname__} has no mapped column attribute {attribute!r} holding the customer id"
    raise ConfigurationError(msg)


def _caller() -> str:
    """Where the query came from: the innermost frame outside the libraries involved.

    Under ``AsyncSession`` the query runs in a greenlet whose frames end at SQLAlchemy's;
    the caller's frames are then those of the greenlet that switched into it.
    """
    frame: FrameType | None = sys._getframe(1)  # the cheap way to the caller's frame
    for start in (frame, *_parent_greenlet_frames()):
        frame = start
        while frame is not None:
            if not _is_library(frame):
                return _where(frame)
            frame = frame.f_back
    return "(unknown)"


def _parent_greenlet_frames() -> list[FrameType | None]:
    try:
        import greenlet  # noqa: PLC0415 - only there with SQLAlchemy's asyncio support
    except ImportError:  # pragma: no cover - the dev environment has it
        return []
    found, current = [], greenlet.getcurrent().parent
    while current is not None:
        found.append(current.gr_frame)
        current = current.parent
    return found


_LIBRARIES: Final = ("sqlalchemy", "accessaudit.", "contextlib", "asyncio", "greenlet")


def _is_library(frame: FrameType) -> bool:
    return str(frame.f_globals.get("__name__", "")).startswith(_LIBRARIES)


def _where(frame: FrameType) -> str:
    module = frame.f_globals.get("__name__", "")
    return f"{module}.{frame.f_code.co_qualname}"[:MAX_IDENTIFIER_CHARS]

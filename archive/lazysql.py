"""SQLAlchemy names, the catalog's models and tables, imported at their first use.

Why: importing SQLAlchemy's Core and ORM and declaring the models costs ~0.25 s of CPU, and
`archivectl put` of one small file uses none of it (its commit runs plain SQL, archive/rawsql.py,
on a stdlib sqlite3 connection: catalog/db.py), yet every core module imported it at load.
Here each name is a stand-in that imports the real thing the first time it is called or looked
into, so a module can still write ``select(m.Share).where(...)`` or keep a table or a text
clause (`lazy_text`) at module level, and only a process that runs such a statement pays for SQLAlchemy.

A stand-in passes for the real object where SQLAlchemy takes a clause (``__clause_element__``,
the protocol it already follows for ORM entities) and forwards every attribute; it is not the
object itself (`isinstance`, `is`): use ``real(x)`` where that matters.
"""
from __future__ import annotations

import importlib
import threading
from typing import Any, Callable

_UNSET = object()
_LOCK = threading.RLock()


class Lazy:
    """Whatever `make()` returns, made on first use (once, under a lock: imports are not
    re-entrant across threads anyway)."""
    __slots__ = ("_make", "_obj")

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._obj = _UNSET

    def _get(self) -> Any:
        obj = self._obj
        if obj is _UNSET:
            with _LOCK:
                obj = self._obj
                if obj is _UNSET:
                    obj = self._obj = self._make()
        return obj

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._get()(*args, **kwargs)

    def __clause_element__(self) -> Any:
        return self._get()

    def __repr__(self) -> str:
        return f"<lazy {self._obj if self._obj is not _UNSET else self._make!r}>"


def real(x: Any) -> Any:
    """The object behind a stand-in (anything else as it is)."""
    return x._get() if isinstance(x, Lazy) else x


def attr(module: str, name: str) -> Lazy:
    """`module.name`, imported on first use."""
    return Lazy(lambda: getattr(importlib.import_module(module), name))


def module(name: str) -> Lazy:
    """The module `name`, imported on first use."""
    return Lazy(lambda: importlib.import_module(name))


def table(name: str) -> Lazy:
    """The catalog's Table `name` (catalog/models.py)."""
    return Lazy(lambda: importlib.import_module("archive.catalog.models").Base.metadata.tables[name])


def text(sql: str) -> Any:
    """`sqlalchemy.text(sql)` (imports SQLAlchemy when called)."""
    from sqlalchemy import text
    return text(sql)


def lazy_text(sql: str) -> Lazy:
    """`sqlalchemy.text(sql)` built on first use, for a module-level statement.  It executes on a
    Connection (`conn.execute(stmt)` asks the statement to run itself: the stand-in forwards
    that); a Session's execute checks the statement's type: give it ``real(stmt)``."""
    return Lazy(lambda: importlib.import_module("sqlalchemy").text(sql))


#: the catalog's models (``m.Share``, ``m.Version.node_id``...)
models = module("archive.catalog.models")

# The SQLAlchemy functions and constructs the core's modules use.
select = attr("sqlalchemy", "select")
func = attr("sqlalchemy", "func")
case = attr("sqlalchemy", "case")
and_ = attr("sqlalchemy", "and_")
or_ = attr("sqlalchemy", "or_")


# DML takes its table as it is (SQLAlchemy does not look for __clause_element__ there)
def insert(table, *args: Any, **kwargs: Any) -> Any:
    from sqlalchemy import insert
    return insert(real(table), *args, **kwargs)


def update(table, *args: Any, **kwargs: Any) -> Any:
    from sqlalchemy import update
    return update(real(table), *args, **kwargs)


def delete(table, *args: Any, **kwargs: Any) -> Any:
    from sqlalchemy import delete
    return delete(real(table), *args, **kwargs)

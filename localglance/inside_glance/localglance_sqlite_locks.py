"""Loaded into each Glance worker by uWSGI (`import =` in glance-uwsgi.ini); never imported by the launcher.

Glance retries its image writes when the database reports a deadlock: image_create, image_update and
image_destroy carry `wrap_db_retry(retry_on_deadlock=True)` (glance/db/sqlalchemy/api.py), and oslo.db
reports MySQL's "Deadlock found" and "Lock wait timeout exceeded" and PostgreSQL's deadlocks as DBDeadlock.
SQLite's counterpart, "database is locked", is not in oslo.db's table, so on SQLite the same conflict is a
500 instead of a retry. SQLite gives it at once when two workers' transactions (each opened with a deferred
BEGIN that reads before it writes) meet, and that leaves damage behind: a DELETE is two transactions
(ImageRepo.remove: status "deleted", then image_destroy), and when the second fails the record stays listed
as "deleted" for ever. This adds SQLite's lock error to the deadlock row, so Glance on SQLite retries as
it does on the databases it supports for several workers.

Glance also retries SQLite lock errors itself in a few places (glance.common.utils.retry_on_db_lock, which
looks for an OperationalError wrapping sqlite3's): the error raised here is both, so those keep working.
"""

from oslo_db import exception  # type: ignore[import-not-found]
from oslo_db.sqlalchemy import exc_filters  # type: ignore[import-not-found]
from sqlalchemy import exc as sqla_exc  # type: ignore[import-not-found]


class SQLiteLockConflict(exception.DBDeadlock, sqla_exc.OperationalError):  # type: ignore[misc]
    """A DBDeadlock (oslo.db's retry) that still reads as SQLAlchemy's OperationalError over sqlite3's."""

    def __init__(self, error: sqla_exc.OperationalError) -> None:
        # Neither base's __init__: each would pass its own arguments up the other's chain.
        Exception.__init__(self, str(error))
        self.inner_exception = error  # DBError's
        self.statement, self.params, self.orig = error.statement, error.params, error.orig
        self.connection_invalidated = error.connection_invalidated
        self.hide_parameters = error.hide_parameters
        self.detail: list[str] = []

    def __str__(self) -> str:
        return str(self.inner_exception)


@exc_filters.filters("sqlite", sqla_exc.OperationalError, r".*database is locked.*")  # type: ignore[untyped-decorator]
def _sqlite_lock_is_a_deadlock(
    operational_error: sqla_exc.OperationalError, match: object, engine_name: str, is_disconnect: bool
) -> None:
    raise SQLiteLockConflict(operational_error)

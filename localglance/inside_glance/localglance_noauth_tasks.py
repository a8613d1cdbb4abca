"""Loaded into each Glance worker in noauth mode only (`import =` in glance-uwsgi.ini); never imported by
the launcher.

An interoperable import (glance-direct, web-download, copy-image) first records a task owned by the
caller's project. noauth's context has no project, and the tasks table refuses a NULL owner, so every
import answered 500 (`NOT NULL constraint failed: tasks.owner`). Tasks get a placeholder owner instead;
images keep theirs (none), so nothing else changes.
"""

from glance.db.sqlalchemy import api  # type: ignore[import-not-found]

NOAUTH_TASK_OWNER = "localglance-noauth"
_task_create = api.task_create


def task_create(context: object, values: dict[str, object]) -> object:
    if values.get("owner") is None:
        values = {**values, "owner": NOAUTH_TASK_OWNER}
    return _task_create(context, values)


api.task_create = task_create

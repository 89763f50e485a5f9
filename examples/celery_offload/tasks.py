"""Celery tasks of the offload example: the slow "database query" of the seed,
run by a Celery worker instead of on the web server's event loop.

Start a worker beside this file with::

    celery -A tasks worker --loglevel=info

``CELERY_BROKER_URL`` and ``CELERY_RESULT_BACKEND`` choose Redis (or RabbitMQ)
servers; both default to a Redis on localhost. ``SLOW_QUERY_SECONDS`` is how
slow the query pretends to be.
"""

from __future__ import annotations

import os
import sqlite3
import time

from celery import Celery

BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", BROKER_URL)
SLOW_QUERY_SECONDS = float(os.environ.get("SLOW_QUERY_SECONDS", "1.0"))

app = Celery("tasks", broker=BROKER_URL, backend=RESULT_BACKEND)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
)

_USERS = [(1, "ada", 1), (2, "grace", 2), (3, "linus", 1), (4, "barbara", 2)]


def query_users_sync(flag: int) -> list[dict[str, object]]:
    """The blocking query: what must never run on the event loop."""
    time.sleep(SLOW_QUERY_SECONDS)  # a busy database server, a missing index...
    with sqlite3.connect(":memory:") as db:
        db.execute("create table users (id integer primary key, name text, flag integer)")
        db.executemany("insert into users values (?, ?, ?)", _USERS)
        rows = db.execute("select id, name from users where flag = ? order by id", (flag,))
        return [{"id": id_, "name": name} for id_, name in rows]


@app.task(name="tasks.query_users")
def query_users(flag: int) -> list[dict[str, object]]:
    return query_users_sync(flag)

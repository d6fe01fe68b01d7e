"""`ApiError`, the app's one error answer, in a module that imports nothing but Python.

gunicorn's arbiter imports the worker class (app/serving/worker.py), which subclasses
`ApiError`, before it forks the workers; the gevent worker monkey-patches only after the
fork. `app/errors.py` imports redis, and redis (7.x) imports `redis.asyncio`, which takes
`ssl.SSLContext` by name: imported in the arbiter, that reference escaped the patch and
gevent warned, in every worker, "Monkey-patching ssl after ssl has already been imported
may lead to errors". So the class lives here and the arbiter imports no redis at all
(tests/devstack/test_serve_front_door.py holds it to that).
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An answer other than success: status, machine code, and a message that says what to fix."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        errors: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors
        self.headers = headers or {}

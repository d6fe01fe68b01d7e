"""The fault suite's database: its own, on our embedded Postgres (which a fault may stop
and start) or on a given server (not ours: those faults are skipped, the database dropped)."""

from __future__ import annotations

import os

from sqlalchemy import create_engine, make_url, text

from devstack.stack import Services
from service.settings import sqlalchemy_url


class SuiteDatabase:
    """A fresh database for this run on the Postgres of `services`; `ours` if embedded."""

    def __init__(self, services: Services):
        self.server = services.postgres
        server_url = services.database_url
        self.database = f"faults_{os.getpid()}"
        admin = create_engine(sqlalchemy_url(server_url), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{self.database}"'))
        admin.dispose()
        self.server_url = server_url
        self.url = make_url(sqlalchemy_url(server_url)).set(database=self.database).render_as_string(False)

    @property
    def ours(self) -> bool:
        return self.server is not None

    def _pg_ctl(self, *args: str) -> None:
        import pgserver

        pgserver.pg_ctl(  # type: ignore[attr-defined]
            list(args), pgdata=self.server.pgdata, user=self.server.system_user, timeout=30
        )

    def stop(self, mode: str) -> None:
        self._socket_dir = self.server._postmaster_info.socket_dir
        self._pg_ctl("-w", "-m", mode, "stop")

    def start(self) -> None:
        from pgserver.utils import PostmasterInfo

        log = str(self.server.log)
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self._socket_dir}", "-l", log, "start")
        # pgserver stops the server it knows of at exit: tell it about this one.
        self.server._postmaster_info = PostmasterInfo.read_from_pgdata(self.server.pgdata)

    def drop(self) -> None:
        admin = create_engine(sqlalchemy_url(self.server_url), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'))
        admin.dispose()

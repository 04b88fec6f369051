"""The store: one writer (writer.py) and the queries of each table family, on any
connection that speaks their SQL (SQLite or PostgreSQL, db.py).

An engine (sqlite.py, postgres.py) opens the connections, applies the schema
(schema.py) and says which of its errors mean that the store itself failed.
"""

from __future__ import annotations

from ..errors import Unavailable
from .events import Events
from .items import Items
from .jobs import Jobs
from .loops import Loops
from .models import Models
from .stats import Stats
from .tracking import Tracking
from .writer import Writer


class SqlStore(Writer, Events, Models, Loops, Jobs, Items, Tracking, Stats):
    """Every query of the service, through one writer per process."""

    location: str  # what a job in another process opens (a file path or a URL)

    def size_bytes(self) -> int:
        raise NotImplementedError

    def lead(self, loop: str) -> bool:
        """Whether this process may train ``loop`` now (see PostgresStore)."""
        return True

    def scrub(self) -> None:
        """After deleting logs: no copy of the deleted rows left in the store's files
        (SQLite: sqlite.py; PostgreSQL leaves them to VACUUM, docs/security.md)."""

    def ping(self) -> None:
        """Raise Unavailable unless the store is open and answers a trivial query."""
        if self.closed:
            raise Unavailable("The store is closed.")
        try:
            one = "SELECT count(*) FROM (SELECT 1 FROM loops LIMIT 1) AS one"
            self.reader().execute(one).fetchone()
        except Exception as ex:  # whatever keeps the store from answering: not ready
            raise Unavailable(f"The store cannot be read: {ex}.") from None


__all__ = ["SqlStore"]

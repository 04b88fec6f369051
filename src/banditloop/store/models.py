"""Saved models: numbered by the store, the newest few kept, each with the mark it covers."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

from .base import ModelInfo, ModelRecord
from .db import Conn, Queries, Reader

INFO_COLS = "loop, number, created, policy, events_learned, born, covers"


def model_record(row: Sequence[Any]) -> ModelRecord:
    """A ModelRecord from ``INFO_COLS, blob``."""
    return ModelRecord(*row[:7], blob=bytes(row[7]))


def newest(conn: Reader, loop: str) -> int:
    row = conn.execute("SELECT coalesce(max(number), 0) FROM models WHERE loop=?", (loop,))
    return int(row.fetchone()[0])


class Models(Queries):
    """The saved models of every loop."""

    def save_model(
        self, model: ModelRecord, covers: int | None, keep: int = 3, after: int | None = None
    ) -> Future[ModelRecord | None]:
        """Save a model as the loop's newest; the store numbers it.  ``covers`` None (a
        model from outside the trainer: reset, import) covers every mark made so far.
        With ``after``, save only if model ``after`` is still the newest (else None): the
        trainer must not bury a model another process saved meanwhile."""

        def job(conn: Conn) -> ModelRecord | None:
            if covers is not None:
                self._check_lead(conn, model.loop)
            if after is not None and newest(conn, model.loop) != after:
                return None
            top = covers
            if top is None:  # every mark made so far (index decisions_learned)
                top = conn.execute(
                    "SELECT coalesce(max(learned_in), 0) FROM decisions "
                    "WHERE loop=? AND learned_in IS NOT NULL",
                    (model.loop,),
                ).fetchone()[0]
            number = newest(conn, model.loop) + 1
            saved = replace(model, number=number, covers=top)
            conn.execute(
                f"INSERT INTO models ({INFO_COLS}, blob) VALUES (?,?,?,?,?,?,?,?)",
                (
                    saved.loop,
                    saved.number,
                    saved.created,
                    saved.policy,
                    saved.events_learned,
                    saved.born,
                    saved.covers,
                    saved.blob,
                ),
            )
            conn.execute(
                "DELETE FROM models WHERE loop=? AND number<=?", (saved.loop, number - keep)
            )
            return saved

        return self.submit(job)

    def model_number(self, loop: str) -> int:
        """Number of the loop's newest model (0: none); cheap, for watchers."""
        return newest(self.reader(), loop)

    def latest_model(self, loop: str) -> ModelRecord | None:
        row = (
            self.reader()
            .execute(
                f"SELECT {INFO_COLS}, blob FROM models WHERE loop=? ORDER BY number DESC LIMIT 1",
                (loop,),
            )
            .fetchone()
        )
        return model_record(row) if row else None

    def older_models(self, loop: str, below: int) -> list[ModelRecord]:
        """The loop's saved models numbered below ``below``, newest first."""
        rows = (
            self.reader()
            .execute(
                f"SELECT {INFO_COLS}, blob FROM models WHERE loop=? AND number<? "
                "ORDER BY number DESC",
                (loop, below),
            )
            .fetchall()
        )
        return [model_record(r) for r in rows]

    def saved_models(self, loop: str, limit: int = 1000) -> list[ModelInfo]:
        """The loop's saved models without their bytes, newest first."""
        rows = self.reader().execute(
            f"SELECT {INFO_COLS} FROM models WHERE loop=? ORDER BY number DESC LIMIT ?",
            (loop, limit),
        )
        return [ModelInfo(*r) for r in rows]

    def delete_models(self, loop: str, numbers: list[int]) -> Future[None]:
        def job(conn: Conn) -> None:
            conn.executemany(
                "DELETE FROM models WHERE loop=? AND number=?", [(loop, n) for n in numbers]
            )

        return self.submit(job)

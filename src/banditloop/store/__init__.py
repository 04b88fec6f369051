"""Stores: the only state shared by rank workers and the trainer."""

from .base import ClosedEvent, Decision, LoopRecord, ModelRecord, Store
from .sqlite import SqliteStore

__all__ = ["ClosedEvent", "Decision", "LoopRecord", "ModelRecord", "SqliteStore", "Store"]

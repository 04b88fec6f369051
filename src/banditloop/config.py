"""Settings of the server process, and the service configuration of a loop.

``Settings`` come from the environment (``BANDITLOOP_*``), a TOML config file
and the command line.  ``ServiceConfiguration`` is Azure Personalizer's wire
model of a loop's settings; ``LoopConfig`` is the same, parsed, for use inside.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import isodate
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import BadRequest

Aggregation = Literal["earliest", "sum", "average", "median", "min", "max"]
LearningMode = Literal["Online", "Apprentice", "LoggingOnly"]


class Settings(BaseSettings):
    """How this server process runs; every field is documented in docs/configuration.md."""

    model_config = SettingsConfigDict(env_prefix="BANDITLOOP_", extra="forbid")

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8080, description="Port to listen on.")
    data_dir: Path = Field(Path("data"), description="Directory of the SQLite store.")
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL",
        description="SQLite fsync policy. FULL survives power loss; NORMAL (WAL) survives "
        "a process crash and is faster.",
    )
    trainer_poll_seconds: float = Field(
        0.05, gt=0, description="How often the trainer looks for closed events."
    )
    trainer_batch: int = Field(
        256, gt=0, description="Events learned per lock hold; keeps rank stalls short."
    )
    app_id: str = Field("", description="Mixed into the sampling seed, as Azure's app ID was.")
    loop: dict[str, Any] = Field(
        default_factory=dict,
        description="Initial service configuration of the default loop (Azure field names).",
    )

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Settings:
        """Settings from a TOML file, then the environment, then explicit overrides."""
        values: dict[str, Any] = {}
        if config_file is not None:
            with open(config_file, "rb") as fh:
                values.update(tomllib.load(fh))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def parse_duration(text: str, field: str) -> float:
    """Seconds in an ISO-8601 duration such as ``PT10M``; a 400 naming the field if not."""
    try:
        value = isodate.parse_duration(text)
    except (isodate.ISO8601Error, ValueError, TypeError):
        raise BadRequest(
            f"{field} must be an ISO-8601 duration such as PT10M.", "InvalidServiceConfiguration"
        ) from None
    if isinstance(value, isodate.Duration):
        value = value.totimedelta(start=dt.datetime(2000, 1, 1))
    seconds = value.total_seconds()
    if seconds < 0:
        raise BadRequest(f"{field} must not be negative.", "InvalidServiceConfiguration")
    return seconds


def format_duration(seconds: float) -> str:
    return str(isodate.duration_isoformat(dt.timedelta(seconds=seconds)))


class ServiceConfiguration(BaseModel):
    """Azure Personalizer's ServiceConfiguration, field for field."""

    model_config = ConfigDict(extra="ignore")

    rewardWaitTime: str = "PT10M"
    defaultReward: float = Field(0.0, allow_inf_nan=False)
    rewardAggregation: Aggregation = "earliest"
    explorationPercentage: float = Field(0.2, ge=0, le=1)
    modelExportFrequency: str = "PT5S"
    logRetentionDays: int = 90
    lastConfigurationEditDate: dt.datetime | None = None
    learningMode: LearningMode = "Online"
    isAutoOptimizationEnabled: bool | None = False
    autoOptimizationFrequency: str | None = "P7D"
    autoOptimizationStartDate: dt.datetime | None = None
    modelRetrainDays: int = 0

    @field_validator("rewardWaitTime", "modelExportFrequency")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v, "duration")
        return v


@dataclass(frozen=True)
class LoopConfig:
    """A loop's service configuration, parsed for the code that uses it."""

    reward_wait: float
    default_reward: float
    aggregation: str
    exploration: float
    export_every: float
    retention_days: int
    learning_mode: str

    @classmethod
    def from_wire(cls, sc: ServiceConfiguration) -> LoopConfig:
        return cls(
            reward_wait=parse_duration(sc.rewardWaitTime, "rewardWaitTime"),
            default_reward=sc.defaultReward,
            aggregation=sc.rewardAggregation,
            exploration=sc.explorationPercentage,
            export_every=parse_duration(sc.modelExportFrequency, "modelExportFrequency"),
            retention_days=sc.logRetentionDays,
            learning_mode=sc.learningMode,
        )

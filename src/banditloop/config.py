"""Settings of the server process, and the service configuration of a loop.

``Settings`` come from the environment (``BANDITLOOP_*``), a TOML config file
and the command line.  ``ServiceConfiguration`` is Azure Personalizer's wire
model of a loop's settings; ``LoopConfig`` is the same, parsed, for use inside.
"""

from __future__ import annotations

import datetime as dt
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import isodate
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import BadRequest
from .policy import DEFAULT_POLICY
from .recommendations.config import ScenarioConfig, TrackingConfig, check_scenario_name
from .recommender import RecommenderConfig

Aggregation = Literal["earliest", "sum", "average", "median", "min", "max"]
LearningMode = Literal["Online", "Apprentice", "LoggingOnly"]
EventIdReuse = Literal["accept", "refuse"]


class LoopDeclaration(BaseModel):
    """A loop declared in the config file; its keys are (re)applied at every start."""

    model_config = ConfigDict(extra="forbid")

    configuration: dict[str, Any] = Field(default_factory=dict)
    policy: str | None = None
    client_keys: list[str] = Field(default_factory=list)
    admin_keys: list[str] = Field(default_factory=list)


class Settings(BaseSettings):
    """How this server process runs; every field is documented in docs/configuration.md."""

    model_config = SettingsConfigDict(env_prefix="BANDITLOOP_", extra="forbid")

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8080, description="Port to listen on.")
    data_dir: Path = Field(Path("data"), description="Directory of the SQLite store.")
    store: str | None = Field(
        None,
        description="A PostgreSQL URL (postgresql://user@host/db) to share the store between "
        "machines; unset: SQLite in data_dir (docs/deployment.md).",
    )
    store_pool_size: int = Field(
        8, ge=1, description="PostgreSQL connections for reads, per process (plus one writer)."
    )
    trainer: bool = Field(
        True,
        description="Whether this server may train. With PostgreSQL every such server is a "
        "candidate and one per loop is elected; rank-only nodes set it false.",
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL",
        description="SQLite fsync policy. FULL survives power loss; NORMAL (WAL) survives "
        "a process crash and is faster.",
    )
    trainer_poll_seconds: float = Field(
        0.05, gt=0, description="How often the trainer looks for closed events."
    )
    trainer_batch: int | None = Field(
        None,
        gt=0,
        description="Events learned per step. Default 32 in one process (small steps keep "
        "rank stalls short), 1024 in the separate trainer of --workers.",
    )
    app_id: str = Field("", description="Mixed into the sampling seed, as Azure's app ID was.")
    loop: dict[str, Any] = Field(
        default_factory=dict,
        description="Initial service configuration of every new loop (Azure field names).",
    )
    default_policy: str = Field(
        DEFAULT_POLICY,
        description="Policy of new loops and of DELETE /configurations/policy. Set it to "
        "Azure's default for byte-for-byte compatibility.",
    )
    client_keys: list[str] = Field(
        default_factory=list, description="Server-wide keys for Rank, Reward and Activate."
    )
    admin_keys: list[str] = Field(
        default_factory=list, description="Server-wide keys for every endpoint."
    )
    metrics_key_required: bool = Field(
        False,
        description="Whether /metrics needs a server admin key (it shows loop names and "
        "counters). Off: restrict it in the reverse proxy instead.",
    )
    loops: dict[str, LoopDeclaration] = Field(
        default_factory=dict, description="Loops to create at start-up, by name."
    )
    retention_check_seconds: float = Field(
        3600,
        gt=0,
        description="How often logs older than logRetentionDays are deleted and a due "
        "auto-optimization is started.",
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines as text, or as one JSON object per line."
    )
    access_log: bool = Field(
        False, description="Write one log line per HTTP request (off: the rank path stays lean)."
    )
    log_features: bool = Field(
        False,
        description="Allow feature values in logs: access log lines then carry request bodies.",
    )
    otel_exporter: Literal["none", "otlp", "console"] = Field(
        "none",
        description="OpenTelemetry spans of requests and recommender calls: none (off), "
        "otlp (to OTEL_EXPORTER_OTLP_ENDPOINT) or console; needs banditloop[tracing].",
    )
    dashboard_events: int = Field(
        10_000, gt=0, description="Latest events the dashboard's estimates are computed on."
    )
    max_body_bytes: int = Field(
        1 << 20, gt=0, description="Largest request body; larger ones get 413 (limits.py)."
    )
    max_import_bytes: int = Field(
        4 << 30,
        gt=0,
        description="Largest body of a log import (POST .../logs/import), in bytes.",
    )
    max_actions: int = Field(
        50, ge=1, le=10_000, description="Actions per Rank (50 as the original; may be raised)."
    )
    max_features: int = Field(
        10_000, gt=0, description="Features per Rank request, context and actions together."
    )
    max_string_length: int = Field(
        16_384, gt=0, description="Longest feature name or string value, in characters."
    )
    max_concurrent_requests: int = Field(
        0, ge=0, description="Requests in flight per process before 503 + Retry-After (0: off)."
    )
    max_write_queue: int = Field(
        10_000, ge=0, description="Writes waiting for the store before 503 + Retry-After (0: off)."
    )
    rate_limit_per_second: float = Field(
        0, ge=0, description="Requests per second per API key before 429 + Retry-After (0: off)."
    )
    rate_limit_burst: float = Field(
        0, ge=0, description="Requests a key may send at once (0: one second's worth)."
    )
    sqlite_busy_timeout_seconds: float = Field(
        30, gt=0, description="How long a write waits for a lock held by another process."
    )
    tracking_poll_seconds: float = Field(
        1.0,
        gt=0,
        description="How often each process reads newly tracked events into its built-in "
        "recommendation models.",
    )

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Settings:
        """Settings: explicit overrides win over the TOML file, which wins over the environment."""
        values: dict[str, Any] = {}
        if config_file is not None:
            with open(config_file, "rb") as fh:
                values.update(tomllib.load(fh))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def describe(ex: ValidationError) -> str:
    """A pydantic error as one line naming the fields."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"] for e in ex.errors()
    )


MAX_DURATION = 100 * 365 * 86400.0  # seconds: beyond, times stop being representable


def parse_duration(text: str, field: str) -> float:
    """Seconds in an ISO-8601 duration such as ``PT10M``; a 400 naming the field if not
    one, negative, or longer than 100 years."""
    try:
        value = isodate.parse_duration(text)
        if isinstance(value, isodate.Duration):
            value = value.totimedelta(start=dt.datetime(2000, 1, 1))
        seconds = float(value.total_seconds())
    except (isodate.ISO8601Error, ValueError, TypeError, OverflowError):
        raise BadRequest(
            f"{field} must be an ISO-8601 duration such as PT10M, of at most 100 years.",
            "InvalidServiceConfiguration",
        ) from None
    if seconds < 0:
        raise BadRequest(f"{field} must not be negative.", "InvalidServiceConfiguration")
    if seconds > MAX_DURATION:
        raise BadRequest(f"{field} must be at most 100 years.", "InvalidServiceConfiguration")
    return seconds


def representable(value: Any, field: str = "the configuration") -> None:
    """Refuse what the store cannot hold: integers beyond 64 bits, non-finite numbers."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if not -(1 << 63) <= value < (1 << 63):
            raise BadRequest(f"{field}: integers must fit in 64 bits.", CONFIG_CODE)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise BadRequest(f"{field}: numbers must be finite.", CONFIG_CODE)
    elif isinstance(value, dict):
        for k, v in value.items():
            representable(v, f"{field}.{k}" if field != "the configuration" else str(k))
    elif isinstance(value, list | tuple):
        for v in value:
            representable(v, field)


CONFIG_CODE = "InvalidServiceConfiguration"
MIN_REWARD_WAIT = 1.0  # Azure allowed 5 s; self-hosted users test with shorter windows
MAX_REWARD_WAIT = 2 * 86400.0
REWARD_SETTINGS = ("defaultReward", "rewardWaitTime", "rewardAggregation")


class ServiceConfiguration(BaseModel):
    """Azure Personalizer's ServiceConfiguration, field for field (durations as ISO-8601)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    rewardWaitTime: str = "PT10M"
    defaultReward: float = Field(0.0, ge=-1, le=1, allow_inf_nan=False)
    rewardAggregation: Aggregation = "earliest"
    explorationPercentage: float = Field(0.05, ge=0, le=1, allow_inf_nan=False)
    modelExportFrequency: str = "PT2S"
    logMirrorEnabled: bool | None = None
    logMirrorSasUri: str | None = None
    logRetentionDays: int = Field(90, ge=-1, le=36500)
    lastConfigurationEditDate: dt.datetime | None = None
    learningMode: LearningMode = "Online"
    isAutoOptimizationEnabled: bool | None = False
    autoOptimizationFrequency: str | None = "P7D"
    autoOptimizationStartDate: dt.datetime | None = None
    modelRetrainDays: int = Field(0, ge=0, le=36500)
    isInferenceExplainabilityEnabled: bool | None = False
    holdoutPercentage: float = Field(
        0.0,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="Extension: share of Rank calls served the baseline as a holdout group.",
    )
    eventIdReuse: EventIdReuse = Field(
        "accept",
        description="Extension: a Rank reusing an event ID with another body is a new "
        "decision ('accept', as Azure did) or refused with 409 ('refuse'); "
        "docs/operator-guide.md.",
    )
    latestApprenticeModeMetrics: dict[str, Any] | None = Field(
        None, description="Read-only: how well the model imitates the baseline in Apprentice mode."
    )
    recommender: RecommenderConfig | None = Field(
        None, description="Extension: the upstream recommender whose items Rank re-ranks."
    )
    tracking: TrackingConfig | None = Field(
        None,
        description="Extension: event types -> rewards and model weights, model windows "
        "(null: the defaults; docs/recommendations.md).",
    )
    scenarios: dict[str, ScenarioConfig] | None = Field(
        None, description="Extension: named recommendation scenarios (docs/recommendations.md)."
    )

    @field_validator("scenarios")
    @classmethod
    def _check_scenario_names(
        cls, scenarios: dict[str, ScenarioConfig] | None
    ) -> dict[str, ScenarioConfig] | None:
        for name in scenarios or ():
            check_scenario_name(name)
        return scenarios

    def check(self, previous: ServiceConfiguration | None = None) -> LoopConfig:
        """Apply the original's rules; returns the parsed configuration."""
        representable(self.model_dump(mode="json"))
        wait = parse_duration(self.rewardWaitTime, "rewardWaitTime")
        if not MIN_REWARD_WAIT <= wait <= MAX_REWARD_WAIT:
            raise BadRequest(
                "Reward wait time should be between 1 second and 2 days.", "InvalidRewardWaitTime"
            )
        if parse_duration(self.modelExportFrequency, "modelExportFrequency") < 1:
            raise BadRequest("modelExportFrequency must be at least 1 second.", CONFIG_CODE)
        if self.autoOptimizationFrequency:
            parse_duration(self.autoOptimizationFrequency, "autoOptimizationFrequency")
        min_days = math.ceil(wait / 86400 + 1)
        if self.logRetentionDays != -1 and self.logRetentionDays < min_days:
            raise BadRequest(
                "Log Retention Days must be -1 to store indefinitely or must be at least reward "
                f"wait time plus 1 day (rounded up), here {min_days}.",
                "InvalidLogRetentionDays",
            )
        if self.logRetentionDays != -1 and self.modelRetrainDays > self.logRetentionDays:
            raise BadRequest(
                "Model retrain days must be between 0 and the number of log retention days.",
                "InvalidModelRetrainDays",
            )
        if previous is not None and previous.learningMode != self.learningMode:
            changed = [f for f in REWARD_SETTINGS if getattr(self, f) != getattr(previous, f)]
            if changed:
                raise BadRequest(
                    "Updating defaultReward, rewardWaitTime and rewardAggregation when changing "
                    "learning mode is not allowed. Make the mode change and then change the "
                    "additional settings with an additional API call.",
                    "InvalidLearningModeServiceConfiguration",
                )
        return LoopConfig.from_wire(self)


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
    event_id_reuse: str = "accept"

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
            event_id_reuse=sc.eventIdReuse,
        )

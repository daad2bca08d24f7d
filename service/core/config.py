"""Settings from the environment (pydantic-settings). Built on demand by ``get_settings()``, never at import."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ApiKey", "Settings", "get_settings"]

Scope = Literal["read", "write"]


class ApiKey:
    """One configured key: its secret, its scope, and a short fingerprint that is safe to log and store."""

    __slots__ = ("fingerprint", "scope", "secret")

    def __init__(self, secret: str, scope: Scope) -> None:
        import hashlib

        self.secret = secret
        self.scope = scope
        self.fingerprint = hashlib.sha256(secret.encode()).hexdigest()[:12]

    def allows(self, needed: Scope) -> bool:
        return self.scope == "write" or needed == "read"

    def __repr__(self) -> str:  # never the secret
        return f"ApiKey({self.fingerprint}, {self.scope})"


class Settings(BaseSettings):
    """tvlars-tune's configuration. Every field reads ``TVLARS_<NAME>``; ``ray_address`` reads ``RAY_ADDRESS``."""

    model_config = SettingsConfigDict(env_prefix="TVLARS_", extra="ignore")

    database_url: str = "sqlite:///./tvlars-tune.db"
    api_keys: str = Field(default="", repr=False, description="comma list of KEY[:read|write] (default scope write)")
    data_dir: str | None = None
    ray_address: str | None = Field(default=None, validation_alias="RAY_ADDRESS")
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    max_trial_gb: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="the most host memory one trial may need (GiB), estimated at submit; default: this host's memory",
    )
    worker_heartbeat_s: float = Field(default=2.0, gt=0)
    worker_stale_s: float = Field(default=20.0, gt=0, description="a worker silent this long is dead")
    worker_poll_s: float = Field(default=1.0, gt=0)
    comparison_max_failures: int = Field(
        default=5, ge=1, description="a comparison that fails to advance this many times in a row ends FAILED"
    )
    comparison_retry_s: float = Field(
        default=2.0, gt=0, description="back-off after a comparison fails to advance: doubles each time, to 5 min"
    )
    ray_results_dir: str | None = None
    checkpoint_path: str | None = Field(
        default=None,
        description="Ray Tune storage for trial checkpoints: a folder every Ray node sees, or a URI (s3://...); "
        "default ray_results_dir",
    )
    # -- the database under load and in an outage --
    api_cache_ttl_s: float = Field(
        default=0.5,
        ge=0,
        description="how long a study read may serve trial data from memory (service.api.cache; 0 = off)",
    )
    db_pool_size: int = Field(default=16, ge=1, description="pooled connections per process (API threads match)")
    db_max_overflow: int = Field(default=4, ge=0, description="connections beyond the pool under bursts")
    db_pool_timeout_s: float = Field(default=2.0, gt=0, description="wait for a pooled connection, then 503")
    db_connect_timeout_s: int = Field(default=3, ge=1, description="PostgreSQL connect timeout (psycopg)")
    db_statement_timeout_s: float = Field(default=4.0, gt=0, description="PostgreSQL statement_timeout")
    db_outage_retry_s: float = Field(
        default=600.0, ge=0, description="how long the worker and engine retry through a database outage"
    )

    @property
    def api_threads(self) -> int:
        """Threads serving sync routes: one per connection the pool can hand out, so no thread waits on the pool."""
        return self.db_pool_size + self.db_max_overflow

    @field_validator("api_keys")
    @classmethod
    def _parse_check(cls, value: str) -> str:
        cls.parse_keys(value)
        return value

    @staticmethod
    def parse_keys(value: str) -> list[ApiKey]:
        keys = []
        for item in filter(None, (part.strip() for part in value.split(","))):
            secret, _, scope = item.partition(":")
            scope = scope or "write"
            if scope not in ("read", "write"):
                raise ValueError(f"TVLARS_API_KEYS: scope must be read or write, got {scope!r}")
            if len(secret) < 8:
                raise ValueError("TVLARS_API_KEYS: keys must be at least 8 characters")
            keys.append(ApiKey(secret, scope))  # type: ignore[arg-type]
        return keys

    @property
    def keys(self) -> list[ApiKey]:
        return self.parse_keys(self.api_keys)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys.strip())


@lru_cache
def get_settings() -> Settings:
    return Settings()

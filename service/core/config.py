"""Settings from the environment (pydantic-settings). Built on demand by ``get_settings()``, never at import."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .loopback import LOOPBACK_HOSTS, host_pattern

__all__ = ["ROLES", "ApiKey", "Role", "Settings", "get_settings", "owner_id"]

Role = Literal["read", "write", "admin"]
#: The roles a key may have, each allowing what those before it allow: admin ⊇ write ⊇ read.
ROLES: tuple[Role, ...] = ("read", "write", "admin")


def owner_id(secret: str, salt: str) -> str:
    """Who submitted a study or comparison, as every reader sees it (``owner``): HMAC-SHA256 of the key under the
    owner salt, 12 hex digits. Without the salt, which readers never see, no guess of a key can be tested against
    it."""
    return hmac.new(salt.encode(), secret.encode(), hashlib.sha256).hexdigest()[:12]


@dataclass(frozen=True)
class ApiKey:
    """One configured key: its secret, its role, and once the server knows its owner salt, its ``owner`` id."""

    secret: str = field(repr=False)  # never in a repr, a log line or a traceback's locals
    role: Role
    owner: str | None = None

    def allows(self, needed: Role) -> bool:
        return ROLES.index(self.role) >= ROLES.index(needed)

    @property
    def unsalted_owner(self) -> str:
        """The ``owner`` that studies submitted before owners were salted carry (a bare SHA-256 prefix of the key):
        the key still counts as their owner."""
        return hashlib.sha256(self.secret.encode()).hexdigest()[:12]


class Settings(BaseSettings):
    """tvlars-tune's configuration. Every field reads ``TVLARS_<NAME>``; ``ray_address`` reads ``RAY_ADDRESS``."""

    model_config = SettingsConfigDict(env_prefix="TVLARS_", extra="ignore")

    database_url: str = "sqlite:///./tvlars-tune.db"
    api_keys: str = Field(
        default="",
        repr=False,
        description="comma list of KEY[:read|write|admin] (default write); empty: no keys, loopback only",
    )
    allowed_hosts: str | None = Field(
        default=None,
        description="comma list of the Host names the API and the dashboard answer (`*.example.com`, `*` any); "
        "default: loopback names (localhost, 127.0.0.1, ::1) without API keys, any name with keys",
    )
    owner_salt: str | None = Field(
        default=None,
        repr=False,
        min_length=16,
        description="secret salt of the `owner` ids; default: a random salt the database keeps (tvlars_secrets)",
    )
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
    db_idle_in_transaction_s: float = Field(
        default=10.0,
        gt=0,
        description=(
            "PostgreSQL idle_in_transaction_session_timeout of the Optuna storage's connections: a process paused or "
            "cut off inside a write (between its lease proof and its commit) has it ended and its row locks freed "
            "after this long"
        ),
    )
    db_outage_retry_s: float = Field(
        default=600.0, ge=0, description="how long the worker and engine retry through a database outage"
    )
    checkpoint_interval_s: float = Field(
        default=10.0,
        ge=0,
        description=(
            "least time between two checkpoints of a trial on a warm runner (0: every epoch); a runner killed under "
            "its trial loses at most this much of it"
        ),
    )
    sqlite_synchronous: Literal["NORMAL", "FULL"] = Field(
        default="NORMAL",
        description=(
            "PRAGMA synchronous of a SQLite file in WAL mode: NORMAL keeps every commit through a killed process "
            "(not through a power loss) at half the disk waits of FULL"
        ),
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

    @field_validator("allowed_hosts")
    @classmethod
    def _check_hosts(cls, value: str | None) -> str | None:
        for name in _items(value or ""):
            if "*" in name[1:] or (name.startswith("*") and name != "*" and not name.startswith("*.")):
                raise ValueError(f"TVLARS_ALLOWED_HOSTS: {name!r}: a wildcard must be '*' or lead as '*.example.com'")
        return value

    @staticmethod
    def parse_keys(value: str) -> list[ApiKey]:
        keys = []
        for item in _items(value):
            secret, _, role = item.partition(":")
            role = role or "write"
            if role not in ROLES:
                raise ValueError(f"TVLARS_API_KEYS: a key's role must be read, write or admin, got {role!r}")
            if len(secret) < 8:
                raise ValueError("TVLARS_API_KEYS: keys must be at least 8 characters")
            keys.append(ApiKey(secret, role))  # type: ignore[arg-type]
        return keys

    @property
    def keys(self) -> list[ApiKey]:
        return self.parse_keys(self.api_keys)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys.strip())

    @property
    def host_patterns(self) -> list[str] | None:
        """The Host names to answer (Starlette's ``TrustedHostMiddleware`` patterns), or None for any:
        TVLARS_ALLOWED_HOSTS if set, else the loopback names when there are no API keys."""
        names = list(_items(self.allowed_hosts or ""))
        if not names and not self.auth_enabled:
            names = list(LOOPBACK_HOSTS)
        if not names or "*" in names:
            return None
        return [host_pattern(n) for n in names]


def _items(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@lru_cache
def get_settings() -> Settings:
    return Settings()

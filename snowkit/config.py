"""Operational configuration: one validated model from defaults, a file and the environment.

pydantic-settings does the parsing and the environment overrides (``SNOWKIT_`` prefix, ``__``
for nesting, e.g. ``SNOWKIT_RETRY__MAX_ATTEMPTS=5``). What we add: the seed's explicit
environment (argument or ``BEAST_ENVIRONMENT``, no guessing), its per-environment defaults,
config files in TOML/JSON/YAML, and errors that list every problem with the variable to set and
never echo the offending value (it may be a secret).

Priority, highest first: environment variables, the config file (its ``[environments.<name>]``
section over its top level), the per-environment defaults, the built-in defaults.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any, Literal, get_origin
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from snowkit.loopback import is_loopback
from snowkit.ops.errors import ConfigurationError, ErrorCategory, ErrorSeverity
from snowkit.ops.redaction import redact

ENVIRONMENT_VARIABLE = "BEAST_ENVIRONMENT"
CONFIG_FILE_VARIABLE = "SNOWKIT_CONFIG"
LEGACY_INSTANCE_VARIABLE = "SERVICENOW_INSTANCE"
ENV_PREFIX = "SNOWKIT_"
ENV_NESTED_DELIMITER = "__"


class Environment(Enum):
    DEVELOPMENT = "development"
    TESTING = "testing"
    STAGING = "staging"
    PRODUCTION = "production"
    UNKNOWN = "unknown"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    format: Literal["structured", "json", "console", "text"] = "structured"
    console_output: bool = True
    file_output: str | None = None  # None: .snowkit/logs/snowkit.jsonl
    file_enabled: bool = True
    max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    backup_count: int = Field(default=5, ge=0, le=100)

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class RetryConfig(_Section):
    max_attempts: int = Field(default=3, ge=1, le=20)
    base_delay_seconds: float = Field(default=1.0, ge=0)
    max_delay_seconds: float = Field(default=60.0, ge=0)
    exponential_base: float = Field(default=2.0, ge=1)
    jitter: bool = True
    deadline_seconds: float | None = Field(default=None, gt=0)
    max_retry_after_seconds: float = Field(default=120.0, ge=0)
    budget_ratio: float = Field(default=0.2, ge=0, le=10)
    budget_min_retries: int = Field(default=10, ge=0)
    budget_window_seconds: float = Field(default=10.0, gt=0)


class CircuitBreakerConfig(_Section):
    failure_threshold: int = Field(default=5, ge=1)
    recovery_timeout_seconds: float = Field(default=60, ge=0)
    failure_rate_threshold: float | None = Field(default=None, gt=0, le=1)
    window_size: int = Field(default=20, ge=1)
    minimum_calls: int = Field(default=10, ge=1)


AuthName = Literal["api_key", "oauth", "basic"]


def _strip_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


class ServiceNowConfig(_Section):
    instance: str = "embedded"
    verify: bool = True
    ca_bundle: str | None = None
    proxies: dict[str, str] = Field(default_factory=dict)
    connect_timeout: float = Field(default=5.0, gt=0, le=300)
    read_timeout: float = Field(default=30.0, gt=0, le=600)
    workers: int = Field(default=8, ge=1, le=64)
    page_size: int = Field(default=500, ge=1, le=10_000)
    batch_size: int = Field(default=50, ge=1, le=1_000)
    auth_order: list[AuthName] = Field(default_factory=lambda: ["api_key", "oauth", "basic"])

    @field_validator("instance")
    @classmethod
    def _instance(cls, value: str) -> str:
        value = value.strip()
        if value == "embedded":
            return value
        if "://" not in value:
            if not value or any(c in value for c in " /@?#"):
                raise ValueError("must be 'embedded', an https:// URL or an instance host name")
            value = f"https://{value if '.' in value else value + '.service-now.com'}"
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("must be 'embedded', an https:// URL or an instance host name")
        if parts.username or parts.password:
            raise ValueError("must not contain a user name or password; use credentials")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            # the client refuses it at the first request: say so when the file is read
            raise ValueError("must use https:// (plain http only for a loopback address)")
        return value.rstrip("/")

    @field_validator("auth_order")
    @classmethod
    def _auth_order(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must name at least one of api_key, oauth, basic")
        if len(set(value)) != len(value):
            raise ValueError("must not repeat a method")
        return value


def _check_op_ref(value: str | None) -> str | None:
    if value is not None and not value.startswith("op://"):
        raise ValueError("must be a 1Password secret reference starting with op://")
    return value


class CredentialsConfig(_Section):
    """Where secrets come from. Only references and non-secret names live in configuration."""

    username: str | None = None
    client_id: str | None = None
    api_key_ref: str | None = None
    oauth_token_ref: str | None = None
    password_ref: str | None = None
    client_secret_ref: str | None = None
    op_timeout_seconds: float = Field(default=15.0, gt=0, le=120)

    _refs = field_validator("api_key_ref", "oauth_token_ref", "password_ref", "client_secret_ref")(
        classmethod(lambda cls, v: _check_op_ref(v))
    )


class OperationalConfig(BaseSettings):
    """The seed's operational settings plus the ServiceNow connection and credential sources."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        hide_input_in_errors=True,
        case_sensitive=False,
    )

    environment: Environment = Environment.UNKNOWN
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    circuit_breaker: CircuitBreakerConfig = Field(default_factory=CircuitBreakerConfig)
    servicenow: ServiceNowConfig = Field(default_factory=ServiceNowConfig)
    credentials: CredentialsConfig = Field(default_factory=CredentialsConfig)
    health_check_interval_seconds: int = Field(default=300, ge=1)
    metrics_collection_enabled: bool = True
    audit_trail_enabled: bool = True
    audit_key_ref: str | None = None
    state_dir: str | None = None  # the `snowkit` command's state tree; SNOWKIT_HOME wins

    _audit_ref = field_validator("audit_key_ref")(classmethod(lambda cls, v: _check_op_ref(v)))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment variables override the file (passed as init kwargs by the manager).
        return (env_settings, init_settings)

    def masked_dict(self) -> dict[str, Any]:
        """The effective configuration for display: secrets and URL credentials masked."""
        data = self.model_dump(mode="json")
        sn = data["servicenow"]
        sn["proxies"] = {k: _strip_userinfo(v) for k, v in sn["proxies"].items()}
        return redact(data)


# -- loading -----------------------------------------------------------------------------------
ENVIRONMENT_DEFAULTS: dict[Environment, dict[str, dict[str, Any]]] = {
    Environment.DEVELOPMENT: {
        "logging": {"level": "DEBUG", "format": "console"},
        "retry": {"max_attempts": 2},
    },
    Environment.TESTING: {"logging": {"level": "WARNING"}, "retry": {"max_attempts": 1}},
    Environment.PRODUCTION: {
        "logging": {"level": "INFO", "format": "json"},
        "retry": {"max_attempts": 5},
    },
}


def env_var_name(location: tuple[Any, ...]) -> str:
    """``("retry", "max_attempts")`` → ``SNOWKIT_RETRY__MAX_ATTEMPTS``."""
    parts = [str(p) for p in location if not isinstance(p, int)]
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(parts).upper()


def _config_error(problems: list[str], source: str = "configuration") -> ConfigurationError:
    listing = "\n".join(f"  - {p}" for p in problems)
    plural = "problem" if len(problems) == 1 else "problems"
    return ConfigurationError(
        f"Invalid {source} ({len(problems)} {plural}):\n{listing}",
        operation="load_configuration",
        category=ErrorCategory.CONFIGURATION,
        severity=ErrorSeverity.CRITICAL,
        details={"problems": problems},
        guidance="Fix each listed setting in the config file or its environment variable "
        "(values are not shown, they may be secret), then run `snowkit config show`.",
    )


def _problems_from(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors(include_input=False, include_url=False, include_context=False):
        loc = tuple(item.get("loc", ()))
        dotted = ".".join(str(p) for p in loc) or "(root)"
        message = item.get("msg", "invalid")
        if item.get("type") == "extra_forbidden":
            message = "unknown setting (check the spelling)"
        problems.append(f"{dotted} ({env_var_name(loc)}): {message}")
    return problems


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_environment(environment: Environment | str | None = None) -> Environment:
    """The explicit environment: the argument, else ``BEAST_ENVIRONMENT``; never guessed."""
    valid = ", ".join(e.value for e in Environment)
    if isinstance(environment, Environment):
        return environment
    raw = environment if environment is not None else os.environ.get(ENVIRONMENT_VARIABLE)
    if not raw:
        raise _config_error(
            [
                f"environment ({ENVIRONMENT_VARIABLE}): not set. Set {ENVIRONMENT_VARIABLE} or "
                f"pass environment=...; valid values: {valid}"
            ]
        )
    try:
        return Environment(str(raw).strip().lower())
    except ValueError:
        raise _config_error(
            [f"environment ({ENVIRONMENT_VARIABLE}): not a valid environment; use one of: {valid}"]
        ) from None


def read_config_file(path: Path | str) -> dict[str, Any]:
    """A config file as a dict: TOML, JSON or YAML by extension."""
    file = Path(path)
    if not file.is_file():
        raise _config_error([f"config file {file}: not found"])
    suffix = file.suffix.lower()
    try:
        if suffix == ".toml":
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        elif suffix == ".json":
            data = json.loads(file.read_text(encoding="utf-8"))
        elif suffix in {".yaml", ".yml"}:
            import yaml

            data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        else:
            raise _config_error([f"config file {file}: use .toml, .json or .yaml"])
    except ConfigurationError:
        raise
    except Exception as exc:
        # Parser messages give positions, not values; keep only the exception type and position.
        where = getattr(exc, "lineno", None)
        position = f" near line {where}" if where else ""
        raise _config_error([f"config file {file}: not valid {suffix[1:]}{position}"]) from None
    if not isinstance(data, dict):
        raise _config_error([f"config file {file}: the top level must be a table/object"])
    if set(data) == {"snowkit"} and isinstance(data["snowkit"], dict):
        data = data["snowkit"]
    return data


class ConfigurationManager:
    """Loads ``OperationalConfig`` the seed's way: explicit environment, fail fast."""

    def __init__(self) -> None:
        self.config: OperationalConfig | None = None

    def load_configuration(
        self,
        config_file: Path | str | None = None,
        environment: Environment | str | None = None,
    ) -> OperationalConfig:
        env = resolve_environment(environment)
        config_file = config_file or os.environ.get(CONFIG_FILE_VARIABLE) or None
        file_data = read_config_file(config_file) if config_file else {}
        sections = file_data.pop("environments", None) or {}
        if not isinstance(sections, dict):
            raise _config_error(["environments: must be a table of per-environment sections"])
        problems = _section_problems(sections) + _unknown_variables(os.environ)
        if problems:  # a typo had been ignored silently: the setting never applied
            raise _config_error(problems)
        file_data.pop("environment", None)  # the environment is chosen explicitly, not by file
        data = _deep_merge(ENVIRONMENT_DEFAULTS.get(env, {}), file_data)
        env_section = sections.get(env.value)
        if isinstance(env_section, dict):
            data = _deep_merge(data, env_section)
        legacy_instance = os.environ.get(LEGACY_INSTANCE_VARIABLE)
        from_legacy = bool(
            legacy_instance
            and "instance" not in (data.get("servicenow") or {})
            and not os.environ.get(env_var_name(("servicenow", "instance")))
        )
        if from_legacy:
            # The original loader's variable; SNOWKIT_SERVICENOW__INSTANCE still wins.
            data = _deep_merge(data, {"servicenow": {"instance": legacy_instance}})
        try:
            config = OperationalConfig(**data)
        except ValidationError as exc:
            problems = _problems_from(exc)
            if from_legacy:  # name the variable the user set, not the one derived
                derived = env_var_name(("servicenow", "instance"))
                problems = [p.replace(derived, LEGACY_INSTANCE_VARIABLE) for p in problems]
            raise _config_error(problems) from None
        except SettingsError as exc:
            # e.g. a nested variable that is not valid JSON; the message names only the field.
            raise _config_error([f"{_settings_field(exc)}: {exc}"]) from None
        config = config.model_copy(update={"environment": env})
        self.config = config
        return config


#: ``SNOWKIT_*`` variables that are no setting: paths, the audit key, the runner's hand-offs
OTHER_VARIABLES = frozenset({
    "SNOWKIT_HOME", "SNOWKIT_REPORTS", "SNOWKIT_RUN_DIR", CONFIG_FILE_VARIABLE,
    "SNOWKIT_AUDIT_KEY", "SNOWKIT_AUDIT_KEY_OP_REF", "SNOWKIT_AUDIT_ANCHOR",
    "SNOWKIT_DRILL_FIGURES",
})  # fmt: skip


def _unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """``SNOWKIT_*`` variables that name no setting (e.g. ``SNOWKIT_RETRY_MAX_ATTEMPTS``, one
    underscore short of ``SNOWKIT_RETRY__MAX_ATTEMPTS``): pydantic-settings skips them."""
    problems = []
    for name in sorted(environ):  # pydantic-settings matches names in any case
        if not name.upper().startswith(ENV_PREFIX) or name.upper() in OTHER_VARIABLES:
            continue
        path = name[len(ENV_PREFIX) :].lower().split(ENV_NESTED_DELIMITER)
        if not _names_a_setting(OperationalConfig, path):
            problems.append(
                f"{name}: no such setting (nesting takes two underscores, e.g. "
                f"{env_var_name(('retry', 'max_attempts'))}; README, Configuration)"
            )
    return problems


def _names_a_setting(model: type[BaseModel], path: list[str]) -> bool:
    field = model.model_fields.get(path[0])
    if field is None:
        return False
    rest = path[1:]
    if not rest:
        return True
    nested = field.annotation
    if get_origin(nested) in (dict, Mapping):  # e.g. servicenow.proxies: any key is one
        return True
    return (
        isinstance(nested, type)
        and issubclass(nested, BaseModel)
        and _names_a_setting(nested, rest)
    )


def _section_problems(sections: Mapping[str, Any]) -> list[str]:
    """``[environments.<name>]`` sections must name an environment and be tables: a section
    for ``prod`` (not ``production``) had been ignored, its settings never applied."""
    known = [e.value for e in Environment]
    problems = []
    for name, section in sections.items():
        if name not in known:
            problems.append(f"environments.{name}: unknown environment (one of {', '.join(known)})")
        elif not isinstance(section, dict):
            problems.append(f"environments.{name}: must be a table of settings")
    return problems


def _settings_field(exc: SettingsError) -> str:
    text = str(exc)
    if 'field "' in text:
        name = text.split('field "', 1)[1].split('"', 1)[0]
        return f"{name} ({env_var_name((name,))})"
    return "environment variables"


__all__ = [
    "CONFIG_FILE_VARIABLE",
    "ENVIRONMENT_DEFAULTS",
    "ENVIRONMENT_VARIABLE",
    "CircuitBreakerConfig",
    "ConfigurationError",
    "ConfigurationManager",
    "CredentialsConfig",
    "Environment",
    "LoggingConfig",
    "OperationalConfig",
    "RetryConfig",
    "ServiceNowConfig",
    "env_var_name",
    "read_config_file",
    "resolve_environment",
]

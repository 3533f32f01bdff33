"""snowkit's operational layer: errors, logs, retries, circuit breaking, metrics, health, audit.

Names are imported lazily (module ``__getattr__``) so ``import snowkit.ops`` stays cheap and
works even while some modules are being written; ``from snowkit.ops import RetryManager``
imports only what it needs.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name → module under snowkit.ops that defines it.
_EXPORTS: dict[str, str] = {
    # redaction
    "SecretRegistry": "redaction",
    "redact": "redaction",
    "secrets": "redaction",
    # errors
    "AmbiguousWriteError": "errors",
    "AuthenticationError": "errors",
    "AuthorizationError": "errors",
    "ConfigurationError": "errors",
    "CredentialUnavailableError": "errors",
    "DeadlineExceededError": "errors",
    "ErrorCategory": "errors",
    "ErrorContext": "errors",
    "ErrorHandler": "errors",
    "ErrorSeverity": "errors",
    "HibernatingInstanceError": "errors",
    "InvalidTableError": "errors",
    "NetworkError": "errors",
    "OperationalError": "errors",
    "RateLimitError": "errors",
    "RecordNotFoundError": "errors",
    "RetryBudgetExhaustedError": "errors",
    "TransientServerError": "errors",
    # logging
    "StructuredLogger": "logging",
    "bind_run_id": "logging",
    "configure_logging": "logging",
    "correlation_scope": "logging",
    "current_correlation_id": "logging",
    "get_logger": "logging",
    "new_run_id": "logging",
    # retry
    "RetryBudget": "retry",
    "RetryManager": "retry",
    "RetryPolicy": "retry",
    "parse_retry_after": "retry",
    # breaker
    "CircuitBreaker": "breaker",
    "CircuitOpenError": "breaker",
    "CircuitState": "breaker",
    # metrics, health, audit (written alongside)
    "MetricsCollector": "metrics",
    "OperationMetrics": "metrics",
    "SystemMetrics": "metrics",
    "HealthCheck": "health",
    "HealthMonitor": "health",
    "HealthStatus": "health",
    "AuditTrail": "audit",
    "verify_audit": "audit",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'snowkit.ops' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"snowkit.ops.{module_name}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

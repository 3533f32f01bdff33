"""What the three UniFi collectors share: one HTTP session, retries, a breaker, the cache.

Every request goes ``breaker.call(retry.execute_with_retry(one attempt))``: an attempt turns
429 into ``RateLimitError(retry_after)``, 5xx into ``TransientServerError`` and connection
trouble into ``NetworkError`` so the shared RetryManager and CircuitBreaker decide. When a
source stays down, :meth:`BaseCollector.collect` answers from the last-known-good cache, marked
stale, and says so in the log and in ``inventory.warnings``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import orjson
import requests
from pydantic import SecretStr

from snowkit.ops.breaker import CircuitBreaker, CircuitOpenError
from snowkit.ops.errors import (
    AuthenticationError,
    AuthorizationError,
    ConfigurationError,
    DeadlineExceededError,
    ErrorCategory,
    NetworkError,
    OperationalError,
    RateLimitError,
    RetryBudgetExhaustedError,
    TransientServerError,
)
from snowkit.ops.logging import get_logger
from snowkit.ops.redaction import secrets as secret_registry
from snowkit.ops.retry import RetryManager, RetryPolicy, parse_retry_after
from snowkit.unifi.cache import LastKnownGoodCache
from snowkit.unifi.models.inventory import Inventory, Provenance

DEFAULT_TIMEOUT = (5.0, 60.0)
MAX_PAGES = 10_000
USER_AGENT = "snowkit-unifi-collector"

# Errors meaning "the source is down right now", answered from the last-known-good cache.
SOURCE_DOWN_ERRORS: tuple[type[BaseException], ...] = (
    NetworkError,
    TransientServerError,
    CircuitOpenError,
    RateLimitError,
    DeadlineExceededError,
    RetryBudgetExhaustedError,
)


def secret(value: str | SecretStr) -> SecretStr:
    """Wrap and register a secret so no sink can print it."""
    wrapped = value if isinstance(value, SecretStr) else SecretStr(value)
    secret_registry.register(wrapped)
    return wrapped


class UnexpectedResponseError(OperationalError):
    """The source answered, but not with what its API documents (HTML, bad paging, ...)."""

    default_category = ErrorCategory.DATA_VALIDATION


class SourceUnavailableError(OperationalError):
    """A source is down and there is no cached copy to fall back on."""

    default_category = ErrorCategory.NETWORK


class BaseCollector(ABC):
    """Subclasses implement :meth:`_collect`; callers use :meth:`collect`."""

    source: ClassVar[str]

    def __init__(
        self,
        base_url: str,
        *,
        verify: bool | str = True,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        retry_manager: RetryManager | None = None,
        breaker: CircuitBreaker | None = None,
        cache: LastKnownGoodCache | None = None,
        use_cache: bool = True,
        session: requests.Session | None = None,
        max_pages: int = MAX_PAGES,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retry_manager = retry_manager or RetryManager(
            RetryPolicy(max_attempts=4, base_delay_seconds=0.5, max_delay_seconds=10.0)
        )
        self.breaker = breaker or CircuitBreaker(
            name=f"unifi-{self.source}",
            failure_threshold=5,
            recovery_timeout_seconds=60,
        )
        self.cache = cache or LastKnownGoodCache(clock=wall_clock)
        self.use_cache = use_cache
        self.session = session or requests.Session()
        # A CA bundle path for self-signed consoles, or a bool. Passed on every request: a
        # Session attribute would lose against REQUESTS_CA_BUNDLE in the environment.
        self.verify = verify
        self.session.headers["User-Agent"] = USER_AGENT
        self.max_pages = max_pages
        self.log = get_logger(f"snowkit.unifi.{self.source}")

    # -- public ------------------------------------------------------------------------------
    def collect(self) -> Inventory:
        """The source's inventory; stale cached data when the source is down, else an error."""
        started = time.monotonic()
        provenance = Provenance(self.source)
        try:
            inventory = self._collect(provenance)
        except SOURCE_DOWN_ERRORS as exc:
            return self._fall_back(exc)
        if self.use_cache:
            self.cache.save(self.source, inventory)
        self.log.info(
            "unifi_collect_complete",
            source=self.source,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
            **inventory.counts(),
        )
        return inventory

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> BaseCollector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- for subclasses ----------------------------------------------------------------------
    @abstractmethod
    def _collect(self, provenance: Provenance) -> Inventory: ...

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        operation: str | None = None,
        allow_status: tuple[int, ...] = (),
    ) -> requests.Response:
        """One logical request with retries and the breaker; returns a 2xx response (or one
        whose status is in ``allow_status``)."""
        url = f"{self.base_url}{path}"
        name = operation or f"unifi.{self.source}.{method.lower()} {path}"

        def attempt() -> requests.Response:
            try:
                response = self.session.request(
                    method,
                    url,
                    params=params,
                    json=json,
                    headers=headers,
                    timeout=self.timeout,
                    verify=self.verify,
                )
            except requests.exceptions.SSLError as exc:
                raise ConfigurationError(  # not "down": retrying or stale data would hide it
                    f"TLS verification failed for {self.source} at {self.base_url}",
                    operation=name,
                    guidance="Pass verify=<path to the console's CA certificate> (or verify=False "
                    "on a trusted network) for a self-signed console.",
                ) from exc
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
                raise NetworkError(
                    f"cannot reach {self.source} at {self.base_url}: {type(exc).__name__}",
                    operation=name,
                ) from exc
            if response.status_code not in allow_status:
                self.raise_for_status(response, name)
            return response

        return self.breaker.call(
            lambda: self.retry_manager.execute_with_retry(attempt, operation_name=name),
            operation_name=name,
        )

    def get_json(self, path: str, *, params: Mapping[str, Any] | None = None, **kw: Any) -> Any:
        response = self.request("GET", path, params=params, **kw)
        try:
            return orjson.loads(response.content)  # 3-5x faster than json for 100k clients
        except orjson.JSONDecodeError as exc:
            raise UnexpectedResponseError(
                f"{self.source} answered {path} with something that is not JSON",
                operation=f"unifi.{self.source}.get",
                guidance="Check the base URL: it should point at the console or API root.",
            ) from exc

    def raise_for_status(self, response: requests.Response, operation: str) -> None:
        status = response.status_code
        if status < 400:
            return
        detail = _error_detail(response)
        message = f"{self.source} answered HTTP {status} for {operation}"
        if detail:
            message += f": {detail}"
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise RateLimitError(
                message,
                operation=operation,
                http_status=status,
                details={"retry_after": retry_after},
            )
        if status >= 500:
            raise TransientServerError(message, operation=operation, http_status=status)
        if status == 401:
            raise AuthenticationError(
                message, operation=operation, http_status=status, guidance=self.auth_guidance
            )
        if status == 403:
            raise AuthorizationError(
                message, operation=operation, http_status=status, guidance=self.auth_guidance
            )
        raise UnexpectedResponseError(
            message,
            operation=operation,
            http_status=status,
            guidance="Check the base URL and the site name.",
        )

    auth_guidance: ClassVar[str] = "Check the credentials configured for this UniFi source."

    # -- fallback ----------------------------------------------------------------------------
    def _fall_back(self, exc: BaseException) -> Inventory:
        cached = self.cache.load(self.source) if self.use_cache else None
        if cached is None:
            raise SourceUnavailableError(
                f"UniFi source '{self.source}' at {self.base_url} is unavailable ({exc}) and there "
                "is no last-known-good copy to fall back on",
                operation=f"unifi.{self.source}.collect",
                guidance="Check that the console/API is reachable and healthy, then run again; "
                "once one collection succeeds, later outages are bridged with cached data.",
            ) from exc
        inventory = cached.inventory
        saved = datetime.fromtimestamp(cached.saved_at, UTC).isoformat()
        warning = (
            f"stale data: {self.source} unavailable ({type(exc).__name__}); using the copy "
            f"saved {saved}, {cached.age_seconds:.0f} s old"
        )
        inventory.warnings.append(warning)
        self.log.warning(
            "stale_data",
            source=self.source,
            age_seconds=round(cached.age_seconds, 1),
            saved_at=saved,
            reason=type(exc).__name__,
            error=str(exc),
        )
        return inventory


def _error_detail(response: requests.Response) -> str:
    """A short, secret-free description from the error body of any of the three APIs."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    meta = body.get("meta")
    if isinstance(meta, dict) and meta.get("msg"):
        return str(meta["msg"])[:200]
    for key in ("code", "message"):
        if body.get(key):
            return str(body[key])[:200]
    return ""

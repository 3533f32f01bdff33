"""The resilient ServiceNow client: Table, Batch and IRE APIs behind one request path.

``ServiceNowAPIClient`` sends every request through retry → circuit breaker → auth fallback,
with metrics, structured logs, error contexts and the audit trail (see ``client``); ``Query``
builds encoded queries no value can subvert; ``AdaptiveLimiter`` paces bulk work.
"""

from snowkit.servicenow.batch import BatchRequest, BatchResult
from snowkit.servicenow.client import ServiceNowAPIClient
from snowkit.servicenow.limiter import AdaptiveLimiter, RateLimitPacer
from snowkit.servicenow.paging import PagingMode
from snowkit.servicenow.query import Query, QueryValueError
from snowkit.servicenow.transport import InstanceURLError, Timeouts

__all__ = [
    "AdaptiveLimiter",
    "BatchRequest",
    "BatchResult",
    "InstanceURLError",
    "PagingMode",
    "Query",
    "QueryValueError",
    "RateLimitPacer",
    "ServiceNowAPIClient",
    "Timeouts",
]

"""One collector per UniFi API, sharing session, retry, breaker and cache handling."""

from snowkit.unifi.collectors.base import (
    BaseCollector,
    SourceUnavailableError,
    UnexpectedResponseError,
)
from snowkit.unifi.collectors.integration import IntegrationCollector
from snowkit.unifi.collectors.network import NetworkAppCollector
from snowkit.unifi.collectors.sitemanager import SiteManagerCollector

__all__ = [
    "BaseCollector",
    "IntegrationCollector",
    "NetworkAppCollector",
    "SiteManagerCollector",
    "SourceUnavailableError",
    "UnexpectedResponseError",
]

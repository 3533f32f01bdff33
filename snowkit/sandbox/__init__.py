"""The embedded ServiceNow-compatible instance (Table, Batch, IRE APIs, OAuth, fault injection).

``with Sandbox.start() as sb:`` serves HTTPS on 127.0.0.1 with a persisted private CA
(``sb.ca_path``); see docs/sandbox.md for what it emulates and the fault profile format.
"""

from snowkit.sandbox.auth import OAuthClient
from snowkit.sandbox.faults import FaultProfile, OutageWindow, RateLimitRule
from snowkit.sandbox.server import Sandbox

__all__ = ["FaultProfile", "OAuthClient", "OutageWindow", "RateLimitRule", "Sandbox"]

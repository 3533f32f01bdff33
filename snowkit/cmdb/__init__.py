"""CMDB side of snowkit: transform + validation (UniFi part); the sync engine appends its names.

Keep this a plain re-export list so the sync engine's names can be appended below.
"""

from snowkit.cmdb.apply import SyncEngine, dependency_phases
from snowkit.cmdb.classes import client_class, device_class
from snowkit.cmdb.job import run_load
from snowkit.cmdb.outbox import Outbox, OutboxEntry, ReplayResult
from snowkit.cmdb.plan import Plan, PlanItem, build_plan, read_snapshot
from snowkit.cmdb.quality import emit_quality_events, quality_frame, quality_summary
from snowkit.cmdb.report import RunReport
from snowkit.cmdb.rollback import RollbackResult
from snowkit.cmdb.schema import SchemaNotReadyError, check_schema, ensure_schema
from snowkit.cmdb.transform import (
    CONNECTS_TO,
    DEPENDS_ON,
    CMDBRecord,
    DuplicateRecord,
    RelationshipSpec,
    TransformResult,
    transform,
)
from snowkit.cmdb.validation import FieldIssue, QuarantinedRecord, sanitize_value, validate_record
from snowkit.cmdb.verify import VerifyResult

__all__ = [
    "CONNECTS_TO",
    "DEPENDS_ON",
    "CMDBRecord",
    "DuplicateRecord",
    "FieldIssue",
    "Outbox",
    "OutboxEntry",
    "Plan",
    "PlanItem",
    "QuarantinedRecord",
    "RelationshipSpec",
    "ReplayResult",
    "RollbackResult",
    "RunReport",
    "SchemaNotReadyError",
    "SyncEngine",
    "TransformResult",
    "VerifyResult",
    "build_plan",
    "check_schema",
    "client_class",
    "dependency_phases",
    "device_class",
    "emit_quality_events",
    "ensure_schema",
    "quality_frame",
    "quality_summary",
    "read_snapshot",
    "run_load",
    "sanitize_value",
    "transform",
    "validate_record",
]

"""CMDB side of snowkit: transform + validation (UniFi part); the sync engine appends its names.

Keep this a plain re-export list so the sync engine's names can be appended below.
"""

from snowkit.cmdb.classes import client_class, device_class
from snowkit.cmdb.quality import emit_quality_events, quality_frame, quality_summary
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

__all__ = [
    "CONNECTS_TO",
    "DEPENDS_ON",
    "CMDBRecord",
    "DuplicateRecord",
    "FieldIssue",
    "QuarantinedRecord",
    "RelationshipSpec",
    "TransformResult",
    "client_class",
    "device_class",
    "emit_quality_events",
    "quality_frame",
    "quality_summary",
    "sanitize_value",
    "transform",
    "validate_record",
]

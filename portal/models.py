# The audit trail's models live in the bottom layer (audit/) and belong to this app, whose
# migrations made their tables: importing them here registers them when Django loads the apps.
from audit.models import AuditChainHead, AuditEvent

__all__ = ["AuditChainHead", "AuditEvent"]

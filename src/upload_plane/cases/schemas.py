"""Wire types of cases, logs and files."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

Title = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Reference = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Description = Annotated[str, msgspec.Meta(max_length=4000)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class CaseCreate(msgspec.Struct, forbid_unknown_fields=True):
    title: Title
    reference: Reference | None = None
    description: Description = ""


class CaseUpdate(msgspec.Struct, forbid_unknown_fields=True):
    title: Title | msgspec.UnsetType = msgspec.UNSET
    reference: Reference | msgspec.UnsetType | None = msgspec.UNSET
    description: Description | msgspec.UnsetType = msgspec.UNSET


class CaseOut(msgspec.Struct):
    id: str
    title: str
    reference: str | None
    description: str
    created_by: str
    created_at: datetime
    updated_at: datetime


class CasePage(msgspec.Struct):
    items: list[CaseOut]
    next_cursor: str | None


class LogCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    description: Description = ""


class LogOut(msgspec.Struct):
    id: str
    case_id: str
    name: str
    description: str
    created_by: str
    created_at: datetime


class LogPage(msgspec.Struct):
    items: list[LogOut]
    next_cursor: str | None


class MemberSet(msgspec.Struct, forbid_unknown_fields=True):
    role: Literal["viewer", "contributor", "manager"]


class MemberOut(msgspec.Struct):
    user_id: str
    username: str
    role: str
    added_by: str
    created_at: datetime
    updated_at: datetime


class AuditEventOut(msgspec.Struct):
    id: str
    at: datetime
    actor_id: str | None
    actor: str
    action: str
    subject_type: str
    subject_id: str
    case_id: str | None
    address: str | None
    user_agent: str | None
    details: dict[str, Any]


class AuditPage(msgspec.Struct):
    items: list[AuditEventOut]
    next_cursor: str | None

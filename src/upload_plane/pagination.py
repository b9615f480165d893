"""Cursor pagination over time-ordered ids: ``?limit=&cursor=`` -> ``{items, next_cursor}``."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from .errors import ValidationFailed

T = TypeVar("T")


class HasId(Protocol):
    id: str


R = TypeVar("R", bound=HasId)
DEFAULT_LIMIT = 50
MAX_LIMIT = 500


@dataclass(frozen=True, slots=True)
class PageRequest:
    limit: int
    after_id: str | None

    @classmethod
    def parse(cls, limit: int | None, cursor: str | None) -> PageRequest:
        limit = DEFAULT_LIMIT if limit is None else limit
        if not 1 <= limit <= MAX_LIMIT:
            raise ValidationFailed(f"limit must be within 1..{MAX_LIMIT}")
        return cls(limit=limit, after_id=decode_cursor(cursor) if cursor else None)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValidationFailed("cursor is not valid") from exc
    if not value or len(value) > 64:
        raise ValidationFailed("cursor is not valid")
    return value


def page_of(rows: list[R], limit: int) -> Page[R]:
    """Given up to ``limit + 1`` rows, return the page and the cursor for the next one."""
    if len(rows) <= limit:
        return Page(items=rows, next_cursor=None)
    items = rows[:limit]
    return Page(items=items, next_cursor=encode_cursor(items[-1].id))


async def paginate(session: AsyncSession, query: Any, model: Any, page: PageRequest) -> Page[Any]:
    """Run ``query`` (a select of ``model``) newest first, one page after ``page.after_id``."""
    if page.after_id is not None:
        query = query.where(col(model.id) < page.after_id)
    query = query.order_by(col(model.id).desc()).limit(page.limit + 1)
    return page_of(list((await session.exec(query)).all()), page.limit)

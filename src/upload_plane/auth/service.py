"""Accounts and credentials. Free of HTTP: the controller, the middleware and the CLI use it.

- Login creates a sign-in (``AuthSession``) with a refresh token, an access token and a session
  cookie that all name it. Limits, in counters every replica shares (``ratelimit.py``): attempts
  per client address; failures per account *and* address (an address that guesses waits, the
  account's owner elsewhere does not; a success from that address clears its count); and failures
  per account from everywhere, a much higher ceiling against guessing spread over many addresses.
  Password hashing runs in worker threads behind a small capacity limiter, so a burst of logins
  cannot stall the event loop.
- Refresh rotates: the presented token is marked used (compare-and-set) and a new one issued in the
  same sign-in. A used token presented again means it was stolen or replayed: the whole sign-in is
  revoked. Logout revokes the sign-in.
- **Credentials end when they should.** Setting a password or disabling a user revokes every
  sign-in (its access tokens, cookie and refresh tokens) and every personal access token of that
  user, in the transaction of the change, with an audit event; enabling the user again brings none
  back. An admin can list and revoke any user's sign-ins and tokens. The user row is locked while
  a sign-in or a token is made (``_hold``), so one made at the same moment as a reset is either
  seen and revoked by it or refused.
- A personal access token cannot issue tokens: a leaked one must not be able to outlive its own
  revocation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from ..audit.service import Audit
from ..db import Database
from ..errors import Conflict, CredentialNotAllowed, NotFound, Unauthenticated, ValidationFailed
from ..models import AuthSession, PersonalAccessToken, RefreshToken, User, utcnow
from ..pagination import Page, PageRequest, paginate
from ..ratelimit import Limit, RateLimits
from ..settings import Settings
from . import tokens
from .passwords import PasswordHashing
from .principal import PAT_CREDENTIAL, ClientInfo, Principal
from .usernames import normalize_username, valid_new_username

ROLES = ("admin", "user")
MIN_PASSWORD_LENGTH = 8


@dataclass(frozen=True, slots=True)
class SignIn:
    access_token: str
    expires_in: int
    refresh_token: str
    session_cookie: str
    session_ttl: int


@dataclass(frozen=True, slots=True)
class IssuedToken:
    row: PersonalAccessToken
    token: str  # shown once


@dataclass(frozen=True, slots=True)
class EndedCredentials:
    sessions: int  # sign-ins revoked (each with its access tokens, cookie and refresh tokens)
    tokens: int  # personal access tokens revoked


class AuthService:
    def __init__(
        self,
        session: AsyncSession,
        settings: Settings,
        hashing: PasswordHashing | None = None,
        db: Database | None = None,
    ) -> None:
        self.session = session
        self.settings = settings
        self._hashing = hashing
        self.db = db  # for the shared rate counters of login (the CLI's user commands need none)
        self.audit = Audit(session)
        self.address_limit = Limit(
            "login_address",
            settings.login_attempts_per_address,
            settings.login_window,
            "sign-in attempts from this address",
        )
        self.account_address_limit = Limit(
            "login_account_address",
            settings.login_failures_per_account_address,
            settings.login_window,
            "failed sign-ins for this account from this address",
        )
        self.account_limit = Limit(
            "login_account",
            settings.login_failures_per_account,
            settings.login_window,
            "failed sign-ins for this account",
        )

    # -- passwords, off the event loop -----------------------------------------------------------

    @property
    def hashing(self) -> PasswordHashing:
        """The application's hashing pool, or (CLI, tests) a private one made on first need."""
        if self._hashing is None:
            self._hashing = PasswordHashing(1, self.settings.password_hash_cost)
        return self._hashing

    async def _hash(self, password: str) -> str:
        return await self.hashing.hash(password)

    async def _verify(self, password_hash: str | None, password: str) -> bool:
        return await self.hashing.verify(password_hash, password)

    # -- sign in and out -----------------------------------------------------------------------

    async def login(self, username: str, password: str, client: ClientInfo) -> SignIn:
        async with self.hashing.admission:
            return await self._login(username, password, client)

    async def _login(self, username: str, password: str, client: ClientInfo) -> SignIn:
        name = normalize_username(username)
        now = utcnow()
        if self.db is None:
            raise RuntimeError("login needs the rate counters' connections")
        address = client.address or "unknown"
        from_here = f"{name}\n{address}"  # one account from one address
        async with self.db.connect() as conn:
            limits = RateLimits(conn)
            await limits.check(self.account_address_limit, from_here, now)
            await limits.check(self.account_limit, name, now)
            await limits.take(self.address_limit, address, now)
        user = await self.find(name)
        verified_hash = user.password_hash if user else None
        ok = await self._verify(verified_hash, password)
        if ok and user and not user.disabled:
            held = await self._hold(user.id)  # a reset or a disable since the check wins
            ok = held.password_hash == verified_hash and not held.disabled
        if not user or not ok or user.disabled:
            async with self.db.connect() as conn:
                limits = RateLimits(conn)
                await limits.hit(self.account_address_limit, from_here, now)
                await limits.hit(self.account_limit, name, now)
            who = Principal.of(user, "password", client=client) if user else None
            self.audit.record(
                who,
                "login.failed",
                "user",
                user.id if user else name,
                actor=name,
                reason="disabled" if user and ok else "credentials",
            )
            await self.session.commit()  # the counters and the event stand although the request fails
            raise Unauthenticated("Unknown username or wrong password")
        async with self.db.connect() as conn:  # before this session writes (SQLite: one writer)
            await RateLimits(conn).reset(self.account_address_limit, from_here, now)
        sign_in = await self._open_session(user, client, now)
        self.audit.record(Principal.of(user, "password", client=client), "login.succeeded", "user", user.id)
        return sign_in

    async def _hold(self, user_id: str) -> User:
        """The user as committed now, locked until this transaction ends: a password set or a
        disable (which update this row first) waits for a sign-in or token being made, then
        revokes it; one that came first is seen here."""
        stmt = select(User).where(User.id == user_id).with_for_update()
        user = (await self.session.exec(stmt.execution_options(populate_existing=True))).first()
        if user is None:
            raise Unauthenticated("The account no longer exists")
        return user

    async def _open_session(self, user: User, client: ClientInfo, now: datetime) -> SignIn:
        settings = self.settings
        auth_session = AuthSession(
            user_id=user.id,
            created_at=now,
            expires_at=now + timedelta(seconds=settings.refresh_token_ttl),
            address=client.address,
            user_agent=(client.user_agent or "")[:255] or None,
        )
        self.session.add(auth_session)
        refresh = self._new_refresh_token(auth_session, now)
        access = tokens.issue_jwt(
            user.id, auth_session.id, tokens.ACCESS, settings.jwt_secret, settings.access_token_ttl, now
        )
        cookie = tokens.issue_jwt(
            user.id, auth_session.id, tokens.SESSION, settings.jwt_secret, settings.session_ttl, now
        )
        await self.session.flush()
        return SignIn(access.token, access.expires_in, refresh, cookie.token, settings.session_ttl)

    def _new_refresh_token(self, auth_session: AuthSession, now: datetime) -> str:
        token = tokens.new_refresh_token()
        self.session.add(
            RefreshToken(
                session_id=auth_session.id,
                token_hash=tokens.token_hash(token),
                created_at=now,
                expires_at=auth_session.expires_at,
            )
        )
        return token

    async def refresh(self, refresh_token: str, client: ClientInfo) -> SignIn:
        """Rotate: a new access and refresh token for the same sign-in; the presented one is spent."""
        now = utcnow()
        stmt = (
            select(RefreshToken, AuthSession, User)
            .join(AuthSession, col(AuthSession.id) == col(RefreshToken.session_id))
            .join(User, col(User.id) == col(AuthSession.user_id))
            .where(RefreshToken.token_hash == tokens.token_hash(refresh_token))
        )
        row = (await self.session.exec(stmt)).first()
        if row is None:
            raise Unauthenticated("The refresh token is not valid")
        token, auth_session, user = row
        if auth_session.revoked_at is not None or auth_session.expires_at <= now or token.expires_at <= now:
            raise Unauthenticated("The refresh token has expired or was revoked; sign in again")
        spent = await self.session.exec(
            update(RefreshToken)
            .where(col(RefreshToken.id) == token.id, col(RefreshToken.used_at).is_(None))
            .values(used_at=now)
        )
        if spent.rowcount != 1:  # already rotated: a replay of an old token, or a stolen copy
            await self._revoke_session(auth_session.id, now)
            self.audit.record(
                Principal.of(user, "refresh", auth_session.id, client),
                "session.revoked",
                "session",
                auth_session.id,
                reason="refresh token reused",
            )
            await self.session.commit()
            raise Unauthenticated("This refresh token was already used; the sign-in has been revoked")
        if user.disabled:
            raise Unauthenticated("The account is disabled")
        refresh = self._new_refresh_token(auth_session, now)
        settings = self.settings
        access = tokens.issue_jwt(
            user.id, auth_session.id, tokens.ACCESS, settings.jwt_secret, settings.access_token_ttl, now
        )
        cookie = tokens.issue_jwt(
            user.id, auth_session.id, tokens.SESSION, settings.jwt_secret, settings.session_ttl, now
        )
        await self.session.flush()
        return SignIn(access.token, access.expires_in, refresh, cookie.token, settings.session_ttl)

    async def _revoke_session(self, session_id: str, now: datetime) -> bool:
        result = await self.session.exec(
            update(AuthSession)
            .where(col(AuthSession.id) == session_id, col(AuthSession.revoked_at).is_(None))
            .values(revoked_at=now)
        )
        return bool(result.rowcount == 1)

    async def logout(self, who: Principal | None, refresh_token: str | None) -> None:
        """Revoke the sign-in of the caller's credential and/or of ``refresh_token``; idempotent."""
        now = utcnow()
        ids: set[str] = set()
        if who is not None and who.credential in (tokens.ACCESS, tokens.SESSION) and who.credential_id:
            ids.add(who.credential_id)
        if refresh_token:
            stmt = select(RefreshToken.session_id).where(
                RefreshToken.token_hash == tokens.token_hash(refresh_token)
            )
            found = (await self.session.exec(stmt)).first()
            if found:
                ids.add(found)
        for session_id in sorted(ids):
            if await self._revoke_session(session_id, now):
                self.audit.record(who, "logout", "session", session_id)

    # -- personal access tokens ----------------------------------------------------------------

    async def issue_personal_token(self, who: Principal, name: str, expires_in_days: int) -> IssuedToken:
        if who.credential == PAT_CREDENTIAL:
            raise CredentialNotAllowed(
                "a personal access token cannot create tokens; sign in with a password to create one"
            )
        if not 1 <= expires_in_days <= self.settings.personal_token_max_days:
            raise ValidationFailed(
                f"expires_in_days must be within 1..{self.settings.personal_token_max_days}"
            )
        await self._still_signed_in(who)
        now = utcnow()
        token = tokens.new_personal_access_token()
        row = PersonalAccessToken(
            user_id=who.id,
            name=name,
            token_hash=tokens.token_hash(token),
            hint=token[: len(tokens.PAT_PREFIX) + 4],
            created_at=now,
            expires_at=now + timedelta(days=expires_in_days),
        )
        self.session.add(row)
        self.audit.record(who, "token.issued", "token", row.id, name=name, expires_at=row.expires_at)
        await self.session.flush()
        return IssuedToken(row, token)

    async def _still_signed_in(self, who: Principal) -> None:
        """Lock the caller's user row, and refuse if the credential this request came with was
        revoked since it was checked (a reset racing with this request)."""
        user = await self._hold(who.id)
        live = not user.disabled
        if live and who.credential in (tokens.ACCESS, tokens.SESSION) and who.credential_id:
            stmt = select(AuthSession).where(AuthSession.id == who.credential_id)
            sign_in = (await self.session.exec(stmt.execution_options(populate_existing=True))).first()
            live = sign_in is not None and sign_in.revoked_at is None
        if not live:
            raise Unauthenticated("The sign-in has ended; sign in again")

    async def list_personal_tokens(self, user_id: str, page: PageRequest) -> Page[PersonalAccessToken]:
        query = select(PersonalAccessToken).where(PersonalAccessToken.user_id == user_id)
        return await paginate(self.session, query, PersonalAccessToken, page)

    async def revoke_personal_token(self, who: Principal, token_id: str, user_id: str | None = None) -> None:
        """Revoke one token (idempotent): the caller's own, or (admins) anyone's; with ``user_id``,
        only a token of that user."""
        row = await self.session.get(PersonalAccessToken, token_id)
        if row is None or (row.user_id != who.id and not who.is_admin):
            raise NotFound("No such token")
        if user_id is not None and row.user_id != user_id:
            raise NotFound("No such token")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            self.session.add(row)
            self.audit.record(who, "token.revoked", "token", row.id, name=row.name, user_id=row.user_id)
            await self.session.flush()

    # -- a user's sign-ins, and ending every credential -----------------------------------------

    async def list_sessions(self, user_id: str, page: PageRequest) -> Page[AuthSession]:
        query = select(AuthSession).where(AuthSession.user_id == user_id)
        return await paginate(self.session, query, AuthSession, page)

    async def revoke_session(self, who: Principal, user_id: str, session_id: str) -> None:
        """End one sign-in of ``user_id`` (admins; idempotent)."""
        row = await self.session.get(AuthSession, session_id)
        if row is None or row.user_id != user_id:
            raise NotFound("No such sign-in")
        if await self._revoke_session(row.id, utcnow()):
            self.audit.record(who, "session.revoked", "session", row.id, user_id=user_id, reason="admin")

    async def end_credentials(
        self, who: Principal | None, user: User, reason: str, *, quiet_if_none: bool = False
    ) -> EndedCredentials:
        """Revoke every sign-in and personal access token of ``user`` in this transaction, with one
        audit event saying how many and why (``password_set``, ``disabled``, ``enabled``,
        ``admin``); with ``quiet_if_none``, no event when there was nothing to end."""
        now = utcnow()
        sessions = await self.session.exec(
            update(AuthSession)
            .where(col(AuthSession.user_id) == user.id, col(AuthSession.revoked_at).is_(None))
            .values(revoked_at=now)
        )
        pats = await self.session.exec(
            update(PersonalAccessToken)
            .where(col(PersonalAccessToken.user_id) == user.id, col(PersonalAccessToken.revoked_at).is_(None))
            .values(revoked_at=now)
        )
        ended = EndedCredentials(int(sessions.rowcount), int(pats.rowcount))
        if quiet_if_none and not (ended.sessions or ended.tokens):
            return ended
        self.audit.record(
            who, "user.credentials_revoked", "user", user.id, username=user.username, reason=reason,
            sessions=ended.sessions, tokens=ended.tokens,
        )  # fmt: skip
        await self.session.flush()
        return ended

    # -- users ---------------------------------------------------------------------------------

    async def find(self, username: str) -> User | None:
        name = normalize_username(username)
        return (await self.session.exec(select(User).where(User.username == name))).first()

    async def create_user(
        self, who: Principal | None, username: str, password: str, role: str = "user"
    ) -> User:
        if role not in ROLES:
            raise ValidationFailed(f"role must be one of {', '.join(ROLES)}")
        self._check_password(password)
        username = valid_new_username(username)
        if await self.find(username):
            raise Conflict(f"user {username!r} already exists")
        user = User(username=username, password_hash=await self._hash(password), role=role)
        self.session.add(user)
        self.audit.record(who, "user.created", "user", user.id, username=username, role=role)
        await self.session.flush()
        return user

    def _check_password(self, password: str) -> None:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise ValidationFailed(f"password must have at least {MIN_PASSWORD_LENGTH} characters")

    async def get_user(self, user_id: str) -> User:
        user = await self.session.get(User, user_id)
        if user is None:
            raise NotFound("No such user")
        return user

    async def set_password(self, who: Principal | None, user: User, password: str) -> User:
        """Set the password and end every sign-in and token of the user (whoever knew the old
        password may hold one)."""
        self._check_password(password)
        user.password_hash = await self._hash(password)
        self.session.add(user)
        self.audit.record(who, "user.password_set", "user", user.id, username=user.username)
        await self.session.flush()  # the user row first: it is what sign-ins being made wait on
        await self.end_credentials(who, user, "password_set")
        return user

    async def update_user(self, who: Principal | None, user: User, changes: dict[str, Any]) -> User:
        """Change ``role`` and/or ``disabled``; the last enabled admin cannot be demoted or disabled."""
        if "role" in changes and changes["role"] not in ROLES:
            raise ValidationFailed(f"role must be one of {', '.join(ROLES)}")
        losing_admin = (
            user.role == "admin"
            and not user.disabled
            and (changes.get("role", "admin") != "admin" or changes.get("disabled", False))
        )
        if losing_admin:
            others = select(func.count()).where(
                User.role == "admin", col(User.disabled).is_(False), User.id != user.id
            )
            if not (await self.session.exec(others)).one():
                raise Conflict("this is the last enabled administrator")
        was_disabled = user.disabled
        for name, value in changes.items():
            setattr(user, name, value)
        self.session.add(user)
        self.audit.record(who, "user.updated", "user", user.id, username=user.username, changes=changes)
        await self.session.flush()  # the user row first: it is what sign-ins being made wait on
        if changes.get("disabled") and not was_disabled:
            await self.end_credentials(who, user, "disabled")
        elif was_disabled and changes.get("disabled") is False:
            # Normally nothing is left (the disable ended it all), but a user disabled before
            # disabling ended credentials must not get old ones back either.
            await self.end_credentials(who, user, "enabled", quiet_if_none=True)
        return user

    async def list_users(self, page: PageRequest) -> Page[User]:
        return await paginate(self.session, select(User), User, page)

"""Human agents' accounts and console authentication.

- Passwords are hashed with argon2id (``argon2-cffi``'s RFC 9106 low-memory profile, the library
  default); a hash made with older parameters is re-hashed on the next successful login when the
  store can update accounts.
- Console sessions live in an encrypted, authenticated cookie (``aiohttp-session``'s
  ``EncryptedCookieStorage``, Fernet: AES-128-CBC + HMAC-SHA256). The 32-byte key is derived with
  HKDF-SHA256 from ``settings.console_session_secret`` when set, or read from
  ``data_dir/console.key`` (created once with mode 0600) so sessions survive restarts.
- Login attempts are rate-limited per login name and per client address (``limits``' moving
  window, in memory).
- State-changing console calls need the ``X-Switchboard-CSRF`` header to equal the token stored
  in the session (returned by login and ``/me``); cookies are ``SameSite=Strict`` as well.
- Every account has a role (:class:`~bot.store.base.AgentRole`); :func:`require` checks a
  :class:`Permission` against :data:`ROLE_PERMISSIONS` on the server for every console call.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Protocol, runtime_checkable

from aiohttp import web
from aiohttp_session import Session, get_session, new_session
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from bot.config import Settings
from bot.errors import Conflict, Forbidden, NotFound, PayloadInvalid, RateLimited, Unauthorized
from bot.rate_limits import counted
from bot.store.base import AgentAccount, AgentRole, Store

log = logging.getLogger(__name__)

CSRF_HEADER = "X-Switchboard-CSRF"
"""Header that must carry the session's CSRF token on state-changing console requests."""

SESSION_COOKIE = "switchboard_console"
"""Name of the console session cookie."""

SESSION_MAX_AGE_S = 12 * 3600
"""Console sessions expire 12 hours (seconds) after login."""

KEY_FILE = "console.key"
"""File in ``data_dir`` holding the random session key when no secret is configured."""

MIN_PASSWORD_CHARS = 8
"""Shortest password ``add_agent`` accepts."""

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_hasher = PasswordHasher()
# Verified when a login name is unknown, so unknown names cost as much time as wrong passwords.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


# --- roles --------------------------------------------------------------------------------------


class Permission(StrEnum):
    """What a console call needs.

    ``read``: see the queue, conversations, the event stream; ``act``: claim, reply, add notes,
    resolve, transfer; ``manage``: agent accounts and settings.
    """

    READ = "read"
    ACT = "act"
    MANAGE = "manage"


ROLE_PERMISSIONS: Mapping[AgentRole, frozenset[Permission]] = {
    AgentRole.ADMIN: frozenset(Permission),
    AgentRole.AGENT: frozenset({Permission.READ, Permission.ACT}),
    AgentRole.VIEWER: frozenset({Permission.READ}),
}
"""The permissions of each role."""


class RoleForbidden(Forbidden):
    """The account's role lacks the permission a call needs (HTTP 403)."""


def permissions(account: AgentAccount) -> frozenset[Permission]:
    """The permissions the account's role grants."""
    return ROLE_PERMISSIONS[account.role]


def require(account: AgentAccount, permission: Permission) -> None:
    """Refuse unless the account's role grants ``permission``.

    Raises:
        RoleForbidden: the role lacks it (HTTP 403).
    """
    if permission not in ROLE_PERMISSIONS[account.role]:
        raise RoleForbidden(f"the {account.role.value} role may not {permission.value}")


def parse_role(value: object) -> AgentRole:
    """A role from user input (``admin``, ``agent``, ``viewer``).

    Raises:
        PayloadInvalid: anything else (``field`` is ``role``).
    """
    try:
        return AgentRole(str(value))
    except ValueError:
        roles = ", ".join(r.value for r in AgentRole)
        raise PayloadInvalid(f"role must be one of {roles}", field="role") from None


# --- passwords ----------------------------------------------------------------------------------


def hash_password(password: str) -> str:
    """Hash a password with argon2id.

    Returns:
        A PHC string (``$argon2id$v=19$m=...,t=...,p=...$salt$hash``).
    """
    return _hasher.hash(password)


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    """The result of :func:`verify_password`.

    Attributes:
        ok: the password matches.
        new_hash: a fresh hash to store when the old one used outdated parameters (only when
            ``ok``), else None.
    """

    ok: bool
    new_hash: str | None = None


def verify_password(password_hash: str, password: str) -> PasswordCheck:
    """Check a password against a stored argon2 hash (constant time in the library).

    Args:
        password_hash: the stored PHC string.
        password: what the user typed.

    Returns:
        Whether it matches, and a re-hash when the stored parameters are outdated. A malformed
        stored hash never matches.
    """
    try:
        _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return PasswordCheck(ok=False)
    if _hasher.check_needs_rehash(password_hash):
        return PasswordCheck(ok=True, new_hash=_hasher.hash(password))
    return PasswordCheck(ok=True)


@runtime_checkable
class AgentUpdater(Protocol):
    """A store that can replace an agent account (used to persist password re-hashes)."""

    async def update_agent(self, account: AgentAccount) -> None:
        """Replace the account with the same name."""


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise PayloadInvalid(
            f"passwords need at least {MIN_PASSWORD_CHARS} characters", field="password"
        )


async def add_agent(
    store: Store,
    name: str,
    password: str,
    display_name: str | None = None,
    *,
    role: AgentRole = AgentRole.AGENT,
    actor: str | None = None,
) -> AgentAccount:
    """Create a human agent account (``switchboard agents add NAME``).

    Args:
        store: where accounts live.
        name: login name: 1-64 characters of letters, digits, ``.``, ``_``, ``@``, ``-``.
        password: at least :data:`MIN_PASSWORD_CHARS` characters; only its hash is stored.
        display_name: the name customers see; defaults to ``name``.
        role: what the account may do in the console.
        actor: who creates it, for the audit log (defaults to ``name``: the command line).

    Returns:
        The stored account.

    Raises:
        PayloadInvalid: the name or password is not acceptable (``field`` says which).
        Conflict: the name is taken.
    """
    if not _NAME_RE.match(name):
        raise PayloadInvalid(
            "agent names are 1-64 letters, digits, '.', '_', '@' or '-'", field="name"
        )
    _check_password(password)
    account = AgentAccount(
        name=name,
        display_name=(display_name or name).strip()[:100] or name,
        password_hash=await asyncio.to_thread(hash_password, password),
        role=role,
    )
    await store.create_agent(account)
    await store.audit(
        actor or name,
        "agent.create",
        None,
        {"agent": name, "display_name": account.display_name, "role": role.value},
    )
    log.info("auth.agent_added", extra={"agent": name, "role": role.value})
    return account


async def change_agent(
    store: Store,
    name: str,
    *,
    actor: str,
    role: AgentRole | None = None,
    active: bool | None = None,
    display_name: str | None = None,
    password: str | None = None,
) -> AgentAccount:
    """Change an account: role, enabled or disabled, display name, password (reset).

    Disabling takes effect on the account's next console request (sessions check ``active``).
    The last active admin can be neither demoted nor disabled, so someone can always manage
    accounts.

    Args:
        store: where accounts live.
        name: the login name.
        actor: who changes it, for the audit log (``cli`` from the command line).
        role: the new role, or None to keep it.
        active: False disables login, True enables it, None keeps it.
        display_name: the new display name, or None to keep it.
        password: a new password (at least :data:`MIN_PASSWORD_CHARS`), or None to keep it.

    Returns:
        The stored account.

    Raises:
        NotFound: no account has that name.
        PayloadInvalid: the password is too short or the display name empty.
        Conflict: the change would leave no active admin.
    """
    account = await store.agent(name)
    if account is None:
        raise NotFound(f"no agent {name!r}")
    new_hash = None
    if password is not None:
        _check_password(password)
        new_hash = await asyncio.to_thread(hash_password, password)
    if display_name is not None and not display_name.strip():
        raise PayloadInvalid("the display name is empty", field="display_name")
    updated = replace(
        account,
        password_hash=new_hash or account.password_hash,
        display_name=display_name.strip()[:100] if display_name else account.display_name,
        role=role or account.role,
        active=account.active if active is None else active,
    )
    loses_admin = account.role is AgentRole.ADMIN and account.active
    if loses_admin and (updated.role is not AgentRole.ADMIN or not updated.active):
        admins = [a for a in await store.list_agents() if a.role is AgentRole.ADMIN and a.active]
        if len(admins) <= 1:
            raise Conflict("this is the last active admin; make another admin first")
    await store.update_agent(updated)
    detail: dict[str, object] = {"agent": name}
    if role is not None:
        detail["role"] = role.value
    if active is not None:
        detail["active"] = active
    if display_name is not None:
        detail["display_name"] = updated.display_name
    if password is not None:
        detail["password_reset"] = True
    await store.audit(actor, "agent.update", None, detail)
    log.info("auth.agent_changed", extra={"agent": name, "actor": actor})
    return updated


async def authenticate(store: Store, name: str, password: str) -> AgentAccount:
    """Check a login.

    Returns:
        The active account.

    Raises:
        Unauthorized: unknown name, wrong password or disabled account (one message for all).
    """
    account = await store.agent(name)
    # argon2 takes ~0.2 s of CPU and releases the GIL: keep it off the event loop.
    check = await asyncio.to_thread(
        verify_password, account.password_hash if account else _DUMMY_HASH, password
    )
    if account is None or not check.ok or not account.active:
        raise Unauthorized("wrong name or password")
    if check.new_hash is not None and isinstance(store, AgentUpdater):
        account = replace(account, password_hash=check.new_hash)
        await store.update_agent(account)
    return account


# --- login rate limit ---------------------------------------------------------------------------


class LoginLimiter:
    """Failed-login limits: per login name and per client address, moving windows.

    Args:
        per_name: failed attempts allowed per name in ``window_minutes``.
        per_address: failed attempts allowed per client address in ``window_minutes``.
        window_minutes: window length in minutes.
        storage: where the counters live (:func:`bot.rate_limits.counter_storage`: Redis when
            lanes are shared, so every ingress sees the same failures); process memory when
            None.

    Raises (from its methods):
        bot.errors.BackendUnavailable: the counters' storage cannot be reached.
    """

    def __init__(
        self,
        *,
        per_name: int = 5,
        per_address: int = 20,
        window_minutes: int = 5,
        storage: Storage | None = None,
    ):
        self._storage = storage if storage is not None else MemoryStorage()
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._name_item = RateLimitItemPerMinute(per_name, window_minutes)
        self._addr_item = RateLimitItemPerMinute(per_address, window_minutes)
        self.window_s = window_minutes * 60

    async def check(self, name: str, address: str) -> None:
        """Refuse when either limit is used up.

        Raises:
            RateLimited: too many failures; ``retry_after`` is when the oldest one expires.
        """
        for item, ident in ((self._name_item, name.casefold()), (self._addr_item, address)):
            if not await counted(self._limiter.test(item, "login", ident)):
                stats = await counted(self._limiter.get_window_stats(item, "login", ident))
                retry = max(1.0, stats.reset_time - time.time())
                raise RateLimited("too many failed logins; try again later", retry_after=retry)

    async def failed(self, name: str, address: str) -> None:
        """Count one failed attempt."""
        await counted(self._limiter.hit(self._name_item, "login", name.casefold()))
        await counted(self._limiter.hit(self._addr_item, "login", address))

    async def succeeded(self, name: str) -> None:
        """Forget the name's failures after a successful login."""
        await counted(self._limiter.clear(self._name_item, "login", name.casefold()))


# --- console sessions ---------------------------------------------------------------------------


def session_key_bytes(settings: Settings) -> bytes:
    """The 32-byte console session key.

    Derived with HKDF-SHA256 from ``settings.console_session_secret`` when set; otherwise read
    from ``data_dir/console.key``, which is created with 32 random bytes and mode 0600 when
    missing.

    Raises:
        ValueError: the key file does not hold exactly 32 bytes.
    """
    if settings.console_session_secret is not None:
        secret = settings.console_session_secret.get_secret_value().encode()
        return HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"switchboard console session"
        ).derive(secret)
    path = Path(settings.data_dir) / KEY_FILE
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first
            return path.read_bytes()
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        log.info("auth.session_key_created", extra={"path": str(path)})
        return key
    if len(key) != 32:
        raise ValueError(f"{path} must hold exactly 32 bytes")
    return key


async def start_session(request: web.Request, account: AgentAccount) -> str:
    """Begin a fresh console session for ``account`` (new cookie, new CSRF token).

    Returns:
        The CSRF token the page must send in :data:`CSRF_HEADER`.
    """
    session = await new_session(request)
    token = secrets.token_urlsafe(32)
    session["agent"] = account.name
    session["csrf"] = token
    return token


async def end_session(request: web.Request) -> None:
    """Forget the console session (the cookie is cleared)."""
    session = await get_session(request)
    session.invalidate()


async def session_agent(request: web.Request, store: Store) -> tuple[AgentAccount, Session]:
    """The logged-in, still active agent of a console request.

    Raises:
        Unauthorized: no session, or the account is gone or disabled.
    """
    session = await get_session(request)
    name = session.get("agent")
    if not isinstance(name, str):
        raise Unauthorized("log in first")
    account = await store.agent(name)
    if account is None or not account.active:
        session.invalidate()
        raise Unauthorized("log in first")
    return account, session


class CsrfFailed(Forbidden):
    """A state-changing console request lacked the session's CSRF token (HTTP 403)."""


def check_csrf(request: web.Request, session: Session) -> None:
    """Require the session's CSRF token in :data:`CSRF_HEADER`.

    Raises:
        CsrfFailed: missing or wrong token (HTTP 403).
    """
    expected = session.get("csrf")
    given = request.headers.get(CSRF_HEADER, "")
    if not isinstance(expected, str) or not hmac.compare_digest(
        expected.encode(), given.encode("utf-8", "surrogateescape")
    ):
        raise CsrfFailed("missing or wrong CSRF token")


__all__ = [
    "CSRF_HEADER",
    "ROLE_PERMISSIONS",
    "SESSION_COOKIE",
    "SESSION_MAX_AGE_S",
    "AgentUpdater",
    "CsrfFailed",
    "LoginLimiter",
    "PasswordCheck",
    "Permission",
    "RoleForbidden",
    "add_agent",
    "authenticate",
    "change_agent",
    "check_csrf",
    "end_session",
    "hash_password",
    "parse_role",
    "permissions",
    "require",
    "session_agent",
    "session_key_bytes",
    "start_session",
    "verify_password",
]


def require_admin_key(request: web.Request, keys: list[bytes]) -> None:
    """Check ``Authorization: Bearer KEY`` (RFC 6750) against the admin API keys.

    Every key is compared, in constant time, whatever matched before.

    Args:
        request: the admin API request.
        keys: ``settings.admin_api_keys`` as bytes; empty turns the admin API off.

    Raises:
        bot.errors.Forbidden: when no admin key is configured (whatever the address).
        bot.errors.Unauthorized: when the request carries no matching key.
    """
    if not keys:
        raise Forbidden("the admin API is off: set SWITCHBOARD_ADMIN_API_KEYS")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    presented = token.strip().encode()
    matched = False
    for key in keys:
        matched = hmac.compare_digest(presented, key) | matched
    if scheme.lower() != "bearer" or not presented or not matched:
        raise Unauthorized("an admin API key is required (Authorization: Bearer KEY)")

"""Bearer tokens: stored as sha256 hashes, compared in constant time; SQD_TOKEN is an admin token."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from sqd.server.store.models import Token
from sqd.settings import Settings

TOKEN_PREFIX = "sqd_"


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(session: Session, name: str) -> tuple[Token, str]:
    """A new token; the secret is returned once and only its hash is stored."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = Token(name=name, hash=hash_token(secret))
    session.add(row)
    session.flush()
    return row, secret


def list_tokens(session: Session) -> list[Token]:
    return list(session.scalars(select(Token).order_by(Token.id)))


def revoke_token(session: Session, token_id: int) -> Token | None:
    row = session.get(Token, token_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = time.time()
    return row


def token_is_valid(session: Session, settings: Settings, secret: str) -> bool:
    if settings.token is not None and hmac.compare_digest(secret.encode(), settings.token.get_secret_value().encode()):
        return True
    digest = hash_token(secret)
    row = session.scalar(select(Token).where(Token.hash == digest))
    # the lookup is by hash, so timing reveals nothing about the secret; compare again to be explicit
    return row is not None and row.revoked_at is None and hmac.compare_digest(row.hash, digest)


def bound_to_localhost(settings: Settings) -> bool:
    host = settings.server.host
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def reads_are_open(settings: Settings) -> bool:
    return settings.server.open_reads_on_localhost and bound_to_localhost(settings)

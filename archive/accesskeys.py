"""S3 access keys of catalog users, and the user flag that allows creating shares.

SigV4 needs the secret itself (the server recomputes the client's HMAC), so secrets cannot be
stored as one-way hashes.  They are sealed with AES-256-GCM under a key derived (HKDF) from the
repository's master key, which lives in ``keys.json`` (wrapped by the passphrase when the
repository is encrypted), never in the catalog: a copied catalog, or a catalog database on a
shared PostgreSQL server, does not hand out usable secrets.  The access key id is the associated
data, so a sealed secret cannot be moved to another key id.  Keys are catalog events, so they
survive ``archivectl recover``.
"""
from __future__ import annotations

import base64
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import select
from sqlalchemy.orm import Session

from .catalog import models as m
from .clock import now_us, seconds
from .errors import AuthFailed, NotFound
from .types import User

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def _aead(repo) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"edge-archive s3 secrets").derive(
        repo.key.enc_key + repo.key.id_key)
    return AESGCM(key)


def seal(repo, key_id: str, secret: str) -> str:
    nonce = os.urandom(12)
    return base64.b64encode(nonce + _aead(repo).encrypt(nonce, secret.encode(), key_id.encode())).decode()


def unseal(repo, key_id: str, sealed: str) -> str:
    raw = base64.b64decode(sealed)
    try:
        return _aead(repo).decrypt(raw[:12], raw[12:], key_id.encode()).decode()
    except InvalidTag:
        raise AuthFailed("access key sealed under another repository key") from None


def _user_row(s: Session, name: str) -> m.User:
    row = s.scalar(select(m.User).where(m.User.name == name))
    if row is None:
        raise NotFound(f"no user {name!r}")
    return row


def create_key(repo, user: str, key_id: str | None = None, secret: str | None = None) -> tuple[str, str]:
    """A new access key for `user`: returns (access_key_id, secret_access_key).  The secret is
    shown to the caller once; explicit values are for tests and migrations from other stores."""
    key_id = key_id or "EA" + "".join(secrets.choice(_ALPHABET) for _ in range(18))
    secret = secret or base64.b64encode(os.urandom(30)).decode()
    if not (3 <= len(key_id) <= 64 and key_id.isascii() and key_id.isalnum()):
        raise ValueError("access key ids are 3-64 ASCII letters and digits")

    def build(s: Session) -> list[dict]:
        _user_row(s, user)
        if s.get(m.AccessKey, key_id) is not None:
            from .errors import Exists
            raise Exists(f"access key {key_id} exists")
        return [{"op": "access_key", "at": now_us(), "key_id": key_id, "user": user,
                 "sealed": seal(repo, key_id, secret)}]
    repo.mutate(build, audit=lambda evs: [repo.audit_row("s3_key_add", None, detail=f"{user} {key_id}")])
    return key_id, secret


def list_keys(repo, user: str) -> list[dict]:
    """[{access_key_id, created_at}] of a user (never the secrets)."""
    with repo.catalog.session() as s:
        _user_row(s, user)
        rows = s.scalars(select(m.AccessKey).where(m.AccessKey.user_name == user).order_by(m.AccessKey.created_at))
        return [{"access_key_id": r.key_id, "created_at": seconds(r.created_at)} for r in rows]


def revoke_key(repo, user: str, key_id: str) -> None:
    def build(s: Session) -> list[dict]:
        row = s.get(m.AccessKey, key_id)
        if row is None or row.user_name != user:
            raise NotFound(f"user {user!r} has no access key {key_id}")
        return [{"op": "access_key", "at": now_us(), "key_id": key_id, "user": user}]
    repo.mutate(build, audit=lambda evs: [repo.audit_row("s3_key_revoke", None, detail=f"{user} {key_id}")])


def lookup(repo, key_id: str) -> tuple[User, str]:
    """(user, secret) of an access key; AuthFailed for unknown keys or disabled users."""
    with repo.catalog.session() as s:
        row = s.get(m.AccessKey, key_id)
        user = s.scalar(select(m.User).where(m.User.name == row.user_name)) if row is not None else None
        if row is None or user is None or user.disabled:
            raise AuthFailed("unknown access key")
        return User(user.id, user.name), unseal(repo, key_id, row.sealed_secret)


def set_create_shares(repo, user: str, allowed: bool) -> None:
    """Allow (or forbid) a user to create shares itself (S3 CreateBucket)."""
    def build(s: Session) -> list[dict]:
        _user_row(s, user)
        return [{"op": "user_set", "at": now_us(), "name": user, "values": {"create_shares": bool(allowed)}}]
    repo.mutate(build, audit=lambda evs: [repo.audit_row("user_set", None, detail=f"{user} create_shares={allowed}")])


def can_create_shares(repo, user: User | str | None) -> bool:
    if user is None:
        return True
    name = user if isinstance(user, str) else user.name
    with repo.catalog.session() as s:
        return bool(s.scalar(select(m.User.create_shares).where(m.User.name == name)))

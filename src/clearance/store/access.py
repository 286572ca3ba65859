"""Who may call, where notifications go, how channels deliver, and the promotions registry."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson

from clearance.errors import Conflict, InvalidInput, NotFound
from clearance.store.db import Database

ACCESS_TYPES = ("admin", "integrations")


def hash_key(key: str) -> str:
    """Unsalted digest, for random session tokens only (looked up by their digest)."""
    return hashlib.sha256(key.encode()).hexdigest()


def salted_key_hash(key: str, salt: bytes | None = None) -> str:
    # Generated keys carry 256 bits of randomness, so one salted SHA-256 is enough (a slow hash, as
    # for passwords, buys nothing against brute force here and would cost every uncached call).
    salt = salt or secrets.token_bytes(16)
    return f"sha256${salt.hex()}${hashlib.sha256(salt + key.encode()).hexdigest()}"


def key_matches(key: str, stored: str) -> bool:
    """Constant-time check of a key against its stored hash (salted, or a pre-0003 bare digest)."""
    if stored.startswith("sha256$"):
        _, salt_hex, _ = stored.split("$")
        return hmac.compare_digest(salted_key_hash(key, bytes.fromhex(salt_hex)), stored)
    return hmac.compare_digest(hash_key(key), stored)


KEY_PREFIX = "clr_"
MIN_CHOSEN_KEY_LENGTH = 24


def key_id_of(key: str) -> str | None:
    """Generated keys read `clr_<12 hex id>_<secret>`; the id finds the row without the secret."""
    if len(key) > 17 and key.startswith(KEY_PREFIX) and key[16] == "_":
        kid = key[4:16]
        if all(c in "0123456789abcdef" for c in kid):
            return "key_" + kid
    return None


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


@cache
def _decoy_hash() -> str:
    """A hash no password matches, made once: an unknown user costs the one check a known one
    does (hashing a decoy per call cost unknown users a second scrypt)."""
    return hash_password(secrets.token_urlsafe(32))


def check_password(password: str, stored: str) -> bool:
    try:
        _, salt_hex, digest_hex = stored.split("$")
    except ValueError:
        return False
    candidate = hash_password(password, bytes.fromhex(salt_hex)).split("$")[2]
    return hmac.compare_digest(candidate, digest_hex)


@dataclass(frozen=True)
class Principal:
    name: str  # the key id, or the login user name
    access_type: str
    rate_limit_per_second: float | None = None  # None: the server's setting


@dataclass(frozen=True)
class ChannelConfig:
    channel_id: int
    name: str
    clearance_lead_seconds: int | None
    delivery: str  # "file" | "webhook"
    target: str | None  # directory for file, URL for webhook


class AccessStore:
    db: Database

    # --- API keys -------------------------------------------------------------------------------
    def create_api_key(
        self,
        access_type: str,
        name: str,
        now_ms: int,
        key: str | None = None,
        rate_limit_per_second: float | None = None,
    ) -> tuple[str, str]:
        """Create a key; return (key_id, key). Only a salted hash is stored: the key is shown once.

        A chosen `key` (CLEARANCE_BOOTSTRAP_API_KEY) must be at least 24 characters; creating the
        same chosen key again returns the existing one."""
        if access_type not in ACCESS_TYPES:
            raise InvalidInput(f"access type must be one of {ACCESS_TYPES}", field="type")
        if key is None:
            kid = secrets.token_hex(6)
            key = f"{KEY_PREFIX}{kid}_{secrets.token_urlsafe(32)}"
            key_id, by_scan = "key_" + kid, 0
        else:
            if len(key) < MIN_CHOSEN_KEY_LENGTH or len(key) > 256 or not key.isprintable():
                raise InvalidInput(
                    f"a chosen API key must be {MIN_CHOSEN_KEY_LENGTH} to 256 printable characters",
                    field="key",
                )
            found = self.principal_for_key(key)
            if found is not None:
                return found.name, key
            key_id, by_scan = "key_" + secrets.token_hex(6), 1
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO api_keys (key_id, key_hash, access_type, name, created_at, "
                "rate_limit_per_second, by_scan) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key_id,
                    salted_key_hash(key),
                    access_type,
                    name,
                    now_ms,
                    rate_limit_per_second,
                    by_scan,
                ),
            )
        return key_id, key

    def principal_for_key(self, key: str) -> Principal | None:
        """The active key's principal, or None. Generated keys are found by their id; chosen and
        pre-0003 keys by checking each such key's salted hash (there are only a few)."""
        columns = "key_id, access_type, rate_limit_per_second, key_hash FROM api_keys"
        key_id = key_id_of(key)
        with self.db.reader() as tx:
            rows = (
                tx.fetchall(
                    f"SELECT {columns} WHERE key_id = ? AND revoked_at IS NULL AND by_scan = 0",
                    (key_id,),
                )
                if key_id
                else []
            )
            if not rows:
                rows = tx.fetchall(f"SELECT {columns} WHERE by_scan = 1 AND revoked_at IS NULL")
        for row in rows:
            if key_matches(key, row[3]):
                if not row[3].startswith("sha256$"):
                    self._resalt(row[0], key)
                return Principal(row[0], row[1], row[2])
        return None

    def _resalt(self, key_id: str, key: str) -> None:
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE api_keys SET key_hash = ? WHERE key_id = ?", (salted_key_hash(key), key_id)
            )

    def list_api_keys(self) -> list[dict[str, Any]]:
        with self.db.reader() as tx:
            return tx.fetchdicts(
                "SELECT key_id, access_type, name, created_at, revoked_at, rate_limit_per_second "
                "FROM api_keys ORDER BY created_at, key_id"
            )

    def revoke_api_key(self, key_id: str, now_ms: int) -> None:
        """Revoke the key and end the sessions opened with it (a console session signed in with
        the key is also an Authorization-Token: it must not outlive the key)."""
        with self.db.transaction() as tx:
            if not tx.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (now_ms, key_id),
            ):
                raise NotFound(f"no active key {key_id}")
            tx.execute("DELETE FROM sessions WHERE username = ?", (key_id,))

    # --- audit trail ----------------------------------------------------------------------------
    def record_audit(
        self, at_ms: int, actor: str, action: str, target: str, detail: dict[str, Any]
    ) -> None:
        """One line of the audit trail; ids grow in the order lines are written."""
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO audit_log (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                (at_ms, actor, action, target, orjson.dumps(detail).decode()),
            )

    def audit_page(self, after: int, limit: int, target: str | None = None) -> list[dict[str, Any]]:
        where: list[str] = ["audit_id > ?"]
        params: list[Any] = [after]
        if target is not None:
            where.append("target = ?")
            params.append(target)
        with self.db.reader() as tx:
            rows = tx.fetchall(
                "SELECT audit_id, at, actor, action, target, detail FROM audit_log WHERE "
                + " AND ".join(where)
                + " ORDER BY audit_id LIMIT ?",
                [*params, limit],
            )
        return [
            {
                "audit_id": int(r[0]),
                "at": int(r[1]),
                "actor": r[2],
                "action": r[3],
                "target": r[4],
                "detail": orjson.loads(r[5]),
            }
            for r in rows
        ]

    # --- login users and session tokens ---------------------------------------------------------
    def upsert_user(self, username: str, password: str, access_type: str, now_ms: int) -> None:
        """Create or replace a login user. A new password or access type ends the user's
        sessions (the same again, as the bootstrap user at every start, keeps them)."""
        with self.db.reader() as tx:
            old = tx.fetchone(
                "SELECT password_hash, access_type FROM users WHERE username = ?", (username,)
            )
        same = old is not None and old[1] == access_type and check_password(password, old[0])
        with self.db.transaction() as tx:
            if old is not None and not same:
                tx.execute("DELETE FROM sessions WHERE username = ?", (username,))
            tx.execute("DELETE FROM users WHERE username = ?", (username,))
            tx.execute(
                "INSERT INTO users (username, password_hash, access_type, created_at) "
                "VALUES (?, ?, ?, ?)",
                (username, hash_password(password), access_type, now_ms),
            )

    def warm_login(self) -> None:
        """Make the decoy hash now (at start), so that even the first unknown user costs the one
        scrypt a known user does."""
        _decoy_hash()

    def login(self, username: str, password: str, now_ms: int) -> str | None:
        with self.db.reader() as tx:
            row = tx.fetchone(
                "SELECT password_hash, access_type FROM users WHERE username = ?", (username,)
            )
        stored = row[0] if row else _decoy_hash()  # one scrypt either way: no timing oracle
        if not check_password(password, stored) or row is None:
            return None
        token = secrets.token_urlsafe(32)
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO sessions (token_hash, username, access_type, last_used_at) "
                "VALUES (?, ?, ?, ?)",
                (hash_key(token), username, row[1], now_ms),
            )
        return token

    def principal_for_token(
        self, token: str, now_ms: int, idle_ms: int
    ) -> tuple[Principal | None, bool]:
        """Return (principal, expired). Using a token extends its life."""
        token_hash = hash_key(token)
        with self.db.reader() as tx:
            row = tx.fetchone(
                "SELECT username, access_type, last_used_at FROM sessions WHERE token_hash = ?",
                (token_hash,),
            )
        if row is None:
            return None, False
        if now_ms - int(row[2]) > idle_ms:
            return None, True
        if now_ms - int(row[2]) > 1000:  # refresh at most once a second per token
            with self.db.transaction() as tx:
                tx.execute(
                    "UPDATE sessions SET last_used_at = ? WHERE token_hash = ?",
                    (now_ms, token_hash),
                )
        return Principal(row[0], row[1]), False

    # --- listeners ------------------------------------------------------------------------------
    def register_listener(
        self, event_type_id: int, channel_id: int | None, url: str, now_ms: int
    ) -> None:
        with self.db.transaction() as tx:
            tx.execute(
                "DELETE FROM listeners WHERE event_type_id = ? AND channel_id = ?",
                (event_type_id, channel_id or 0),
            )
            tx.execute(
                "INSERT INTO listeners (event_type_id, channel_id, listener_url, created_at) "
                "VALUES (?, ?, ?, ?)",
                (event_type_id, channel_id or 0, url, now_ms),
            )

    def unregister_listener(self, event_type_id: int, channel_id: int | None) -> None:
        with self.db.transaction() as tx:
            if not tx.execute(
                "DELETE FROM listeners WHERE event_type_id = ? AND channel_id = ?",
                (event_type_id, channel_id or 0),
            ):
                raise NotFound(
                    f"no listener registered for EventTypeID {event_type_id}"
                    + (f" and ChannelID {channel_id}" if channel_id else "")
                )

    def list_listeners(self) -> list[tuple[int, str, int | None]]:
        with self.db.reader() as tx:
            rows = tx.fetchall(
                "SELECT event_type_id, listener_url, channel_id FROM listeners "
                "ORDER BY event_type_id, channel_id"
            )
        return [(int(r[0]), r[1], int(r[2]) or None) for r in rows]

    # --- channels -------------------------------------------------------------------------------
    def put_channel(self, config: ChannelConfig, now_ms: int) -> None:
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM channels WHERE channel_id = ?", (config.channel_id,))
            tx.execute(
                "INSERT INTO channels (channel_id, name, clearance_lead_seconds, delivery, target, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    config.channel_id,
                    config.name,
                    config.clearance_lead_seconds,
                    config.delivery,
                    config.target,
                    now_ms,
                ),
            )

    def get_channels(self, channel_ids: list[int]) -> dict[int, ChannelConfig]:
        if not channel_ids:
            return {}
        marks = ", ".join("?" for _ in channel_ids)
        with self.db.reader() as tx:
            rows = tx.fetchall(
                "SELECT channel_id, name, clearance_lead_seconds, delivery, target FROM channels "
                f"WHERE channel_id IN ({marks})",
                channel_ids,
            )
        return {int(r[0]): ChannelConfig(int(r[0]), r[1], r[2], r[3], r[4]) for r in rows}

    # --- promotions -----------------------------------------------------------------------------
    def add_promotions(self, promotions: list[tuple[str, str]], now_ms: int) -> None:
        with self.db.transaction() as tx:
            existing = tx.present("promotions", "promo_code", [code for code, _ in promotions])
            if existing:
                raise Conflict(
                    f"promo codes already exist: {sorted(existing)[:10]}", field="PromoCode"
                )
            tx.executemany(
                "INSERT INTO promotions (promo_code, promotion_name, created_at) VALUES (?, ?, ?)",
                [(code, name, now_ms) for code, name in promotions],
            )

    def list_promotions(self) -> list[dict[str, Any]]:
        with self.db.reader() as tx:
            rows = tx.fetchall(
                "SELECT promo_code, promotion_name FROM promotions ORDER BY promo_code"
            )
        return [{"PromoCode": r[0], "PromotionName": r[1]} for r in rows]

    def delete_promotions(self, codes: list[str]) -> int:
        with self.db.transaction() as tx:
            return tx.executemany(
                "DELETE FROM promotions WHERE promo_code = ?", [(c,) for c in codes]
            )

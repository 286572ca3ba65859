"""Who may call, where notifications go, how channels deliver, and the promotions registry."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from clearance.errors import Conflict, InvalidInput, NotFound
from clearance.store.db import Database

ACCESS_TYPES = ("admin", "integrations")


def hash_key(key: str) -> str:
    # API keys carry 256 bits of randomness, so a fast hash is safe for them (unlike passwords).
    return hashlib.sha256(key.encode()).hexdigest()


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        _, salt_hex, digest_hex = stored.split("$")
    except ValueError:
        return False
    candidate = hash_password(password, bytes.fromhex(salt_hex)).split("$")[2]
    return hmac.compare_digest(candidate, digest_hex)


@dataclass(frozen=True)
class Principal:
    name: str
    access_type: str


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
        self, access_type: str, name: str, now_ms: int, key: str | None = None
    ) -> tuple[str, str]:
        """Create a key; return (key_id, key). The key itself is never stored or shown again."""
        if access_type not in ACCESS_TYPES:
            raise InvalidInput(f"access type must be one of {ACCESS_TYPES}", field="type")
        key = key or "clr_" + secrets.token_urlsafe(32)
        key_id = "key_" + hash_key(key)[:12]
        with self.db.transaction() as tx:
            if tx.fetchone("SELECT 1 FROM api_keys WHERE key_hash = ?", (hash_key(key),)):
                return key_id, key
            tx.execute(
                "INSERT INTO api_keys (key_id, key_hash, access_type, name, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (key_id, hash_key(key), access_type, name, now_ms),
            )
        return key_id, key

    def principal_for_key(self, key: str) -> Principal | None:
        with self.db.reader() as tx:
            row = tx.fetchone(
                "SELECT key_id, access_type FROM api_keys WHERE key_hash = ? "
                "AND revoked_at IS NULL",
                (hash_key(key),),
            )
        return Principal(row[0], row[1]) if row else None

    def revoke_api_key(self, key_id: str, now_ms: int) -> None:
        with self.db.transaction() as tx:
            if not tx.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (now_ms, key_id),
            ):
                raise NotFound(f"no active key {key_id}")

    # --- login users and session tokens ---------------------------------------------------------
    def upsert_user(self, username: str, password: str, access_type: str, now_ms: int) -> None:
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM users WHERE username = ?", (username,))
            tx.execute(
                "INSERT INTO users (username, password_hash, access_type, created_at) "
                "VALUES (?, ?, ?, ?)",
                (username, hash_password(password), access_type, now_ms),
            )

    def login(self, username: str, password: str, now_ms: int) -> str | None:
        with self.db.reader() as tx:
            row = tx.fetchone(
                "SELECT password_hash, access_type FROM users WHERE username = ?", (username,)
            )
        stored = row[0] if row else hash_password("decoy")  # same work for unknown users
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
            codes = [code for code, _ in promotions]
            existing: set[str] = set()
            for i in range(0, len(codes), 500):
                part = codes[i : i + 500]
                marks = ", ".join("?" for _ in part)
                existing.update(
                    r[0]
                    for r in tx.fetchall(
                        f"SELECT promo_code FROM promotions WHERE promo_code IN ({marks})", part
                    )
                )
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

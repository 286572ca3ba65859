"""File channel: each batch becomes one NDJSON file, written atomically (temp file + rename),
so a batch redelivered after a crash replaces itself instead of appearing twice."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from clearance.channels.base import ChannelError, SendRecord
from clearance.store import Batch


class FileDelivery:
    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    def path_for(self, batch: Batch) -> Path:
        return (
            self.directory
            / f"campaign-{batch.campaign_id}"
            / f"channel-{batch.channel_id}"
            / f"sends-{batch.first_seq:012d}-{batch.last_seq:012d}.ndjson"
        )

    def deliver(self, batch: Batch, sends: list[SendRecord]) -> None:
        path = self.path_for(batch)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as fh:
                fh.write(b"".join(orjson.dumps(s.wire()) + b"\n" for s in sends))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise ChannelError(f"cannot write {path}: {exc}") from exc

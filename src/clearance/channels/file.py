"""File channel: each batch becomes one NDJSON file, written atomically (temp file + rename),
so a batch redelivered after a crash replaces itself instead of appearing twice."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from clearance.channels.base import BatchName, ChannelError


class FileDelivery:
    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    def path_for(self, name: BatchName) -> Path:
        path = (
            self.directory
            / name.folder
            / f"channel-{name.channel_id}"
            / f"sends-{name.first}-{name.last}.ndjson"
        )
        # Belt and braces: the names are built safe, and a path that still leaves the folder
        # (a link planted inside it, a future caller) is refused rather than written.
        if not path.resolve().is_relative_to(self.directory.resolve()):
            raise ChannelError(f"batch {name.message_id} would be written outside {self.directory}")
        return path

    def deliver(self, name: BatchName, sends: list[dict[str, Any]]) -> None:
        path = self.path_for(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as fh:
                line = orjson.OPT_APPEND_NEWLINE
                fh.write(b"".join([orjson.dumps(s, option=line) for s in sends]))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise ChannelError(f"cannot write {path}: {exc}") from exc

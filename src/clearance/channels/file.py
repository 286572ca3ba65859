"""File channel: each batch becomes one NDJSON file, written atomically (temp file + rename),
so a batch redelivered after a crash replaces itself instead of appearing twice."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from clearance.channels.base import BatchName, ChannelError
from clearance.errors import InvalidInput

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_subdirectory(raw: str, field: str = "delivery.directory") -> str:
    """A file channel's own folder: a relative path below CLEARANCE_FILE_CHANNEL_DIR, never a
    path elsewhere (checked when the channel is saved and again at every delivery)."""
    parts = PurePosixPath(raw).parts
    if (
        not parts
        or PurePosixPath(raw).is_absolute()
        or ".." in parts
        or "\\" in raw
        or _CONTROL.search(raw)
    ):
        raise InvalidInput(
            f"{field} must be a relative subdirectory of CLEARANCE_FILE_CHANNEL_DIR", field=field
        )
    return raw


class FileDelivery:
    """Writes under `root` (CLEARANCE_FILE_CHANNEL_DIR), in the channel's `subdirectory` if it
    has one; any path that resolves outside `root` (a planted link, a stored folder that was
    never checked) is refused, not written."""

    def __init__(self, root: str, subdirectory: str | None = None) -> None:
        self.root = Path(root)
        self.subdirectory = subdirectory
        self.directory = self.root / subdirectory if subdirectory else self.root

    def path_for(self, name: BatchName) -> Path:
        if self.subdirectory is not None:
            try:
                check_subdirectory(self.subdirectory)
            except InvalidInput as exc:
                raise ChannelError(f"channel folder {self.subdirectory!r}: {exc.message}") from exc
        path = (
            self.directory
            / name.folder
            / f"channel-{name.channel_id}"
            / f"sends-{name.first}-{name.last}.ndjson"
        )
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise ChannelError(f"batch {name.message_id} would be written outside {self.root}")
        return path

    def deliver(self, name: BatchName, sends: list[dict[str, Any]]) -> None:
        path = self.path_for(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # a name of its own: two deliveries of one batch at once must not share a temp file
            tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
            with open(tmp, "wb") as fh:
                line = orjson.OPT_APPEND_NEWLINE
                fh.write(b"".join([orjson.dumps(s, option=line) for s in sends]))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise ChannelError(f"cannot write {path}: {exc}") from exc

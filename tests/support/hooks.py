"""Transform hooks the tests configure (`tables[].transform: tests.support.hooks:...`)."""

from __future__ import annotations

import os
from typing import Any

from streamsync.transform.actions import ChangeRecord


def explode_unless_fixed(record: ChangeRecord) -> Any:
    """Raises for items with an `explode` attribute until HOOK_FIXED is set, like a hook with a
    bug that its owner later fixes; otherwise indexes the new image unchanged (or deletes)."""
    image = record.new_image
    if image is not None and "explode" in image and not os.environ.get("HOOK_FIXED"):
        raise ValueError(f"cannot handle {record.doc_id}")
    if image is None:
        return [{"op": "delete"}]
    return image

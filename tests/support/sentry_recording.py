"""A Sentry transport that keeps events in memory, so tests see exactly what would be sent."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport


class RecordingTransport(Transport):
    captured: ClassVar[list[dict[str, Any]]] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        for item in envelope.items:
            if item.type == "event":
                RecordingTransport.captured.append(json.loads(item.payload.get_bytes()))

"""Readiness of the bot, read by /ready: reconciled and the first sync caught up."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Readiness:
    reconciled: bool = False
    synced: bool = False

    @property
    def ready(self) -> bool:
        return self.reconciled and self.synced

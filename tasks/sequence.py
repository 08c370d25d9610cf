"""PlatformChatSequence: the one global source of platform_chat_ids.

An id is never handed out twice, not even after a crash or after the database
is lost: before ids are issued, a block of them is reserved in the bot's
account data on the homeserver (the high-water mark). A wiped database starts
above that mark (see tasks/reconcile).
"""

from __future__ import annotations

import anyio
import structlog

from contracts.markers import SEQUENCE_ACCOUNT_DATA_TYPE, SequenceHighWater
from contracts.matrix import MatrixPort
from contracts.store import Store

log = structlog.get_logger(__name__)

RESERVE_BLOCK = 32


class PlatformChatSequence:
    def __init__(self, store: Store, matrix: MatrixPort, *, block: int = RESERVE_BLOCK) -> None:
        self._store = store
        self._matrix = matrix
        self._block = block
        self._lock = anyio.Lock()

    async def allocate(self) -> str:
        """A never-used platform_chat_id. Raises MatrixError if the reservation cannot be saved."""
        async with self._lock:
            state = self._store.sequence_state()
            if state.next_value > state.reserved_through:
                remote = await self.remote_high_water()
                if remote > state.reserved_through:
                    # Ids up to `remote` may have been issued by a database we no longer have.
                    self._store.raise_sequence_floor(remote + 1)
                    state = self._store.sequence_state()
                through = state.next_value + self._block - 1
                # Matrix first: a crash after this only leaves some ids unused.
                await self._matrix.set_account_data(
                    SEQUENCE_ACCOUNT_DATA_TYPE,
                    SequenceHighWater(reserved_through=through).model_dump(),
                )
                self._store.set_reserved_through(through)
                log.info("sequence.reserved", reserved_through=through)
            return str(self._store.allocate_platform_chat_id())

    async def remote_high_water(self) -> int:
        content = await self._matrix.get_account_data(SEQUENCE_ACCOUNT_DATA_TYPE)
        if not content:
            return 0
        try:
            return SequenceHighWater.model_validate(content).reserved_through
        except ValueError:
            log.warning("sequence.bad_high_water", content_keys=sorted(content))
            return 0

"""Everything the bot says to its Matrix homeserver.

- ``parse``: pure; raw JSON answers to :mod:`contracts.matrix` values and errors.
- ``request``: the one helper for raw HTTP requests on nio's aiohttp session.
- ``nio_adapter``: ``NioMatrix``, the MatrixPort on matrix-nio (with ``e2ee`` the only
  modules that import nio): login, nio's typed calls, raw JSON endpoints through ``request``.
- ``e2ee``: end-to-end encryption on nio's Olm machine, fed from the raw ``/sync``.
- ``cross_signing``: the bot cross-signs its own device (Ed25519, no nio).
- ``probe``: ``check-config --probe`` asks whether the device is cross-signed (no nio).
- ``trio_bridge``: runs the (asyncio-only) adapter from trio through trio-asyncio.
- ``session``, ``sync_query``, ``snapshot``: ``session.json``, the ``/sync`` query, and
  the full-state sync ``surface run`` sends before its heavy imports. These three import
  neither nio nor aiohttp, and this file imports nothing, so that early path stays light.
"""

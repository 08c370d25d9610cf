"""Everything the bot says to its Matrix homeserver.

- ``parse``: pure; raw JSON answers to :mod:`contracts.matrix` values and errors.
- ``request``: the one helper for raw HTTP requests on nio's aiohttp session.
- ``nio_adapter``: ``NioMatrix``, the MatrixPort on matrix-nio (the only module that
  imports nio): login, nio's typed calls, raw JSON endpoints through ``request``.
- ``trio_bridge``: runs the (asyncio-only) adapter from trio through trio-asyncio.
- ``session``, ``sync_query``, ``snapshot``: ``session.json``, the ``/sync`` query, and
  the full-state sync ``surface run`` sends before its heavy imports. These three import
  neither nio nor aiohttp, and this file imports nothing, so that early path stays light.
"""

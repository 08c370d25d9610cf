"""Benchmarks of the bot against a real local Synapse: `uv run python -m benchmarks`.

Every figure of issue 8 is measured in one run on one fresh Synapse that the run
starts itself (temp dir, free loopback port):

- ``echo``: round trip user -> bot (in-process echo agent) -> user, against a
  minimal raw matrix-nio echo client on the same homeserver (``raw_echo``);
- ``concurrency``: 50 rooms each ask an agent that takes 1 s (the reference
  platform-agent service), and per-room order with 5 messages per room;
- ``reconcile``: 100/500/1000 chat rooms, database deleted, start -> /ready
  against one timeline-limit-0 full-state sync, HTTP requests counted by a
  loopback proxy (``proxy``);
- ``restart``: SIGTERM, a message sent while the bot is down, start, time to
  its answer (1000 rooms, intact state);
- ``memory``: the bot's RSS idle and with 1000 rooms;
- ``throughput``: open-loop load over 100 rooms (instant agent), stepping the rate
  until the p99 round trip passes 1 s, against the raw echo client (``load``,
  ``throughput``);
- ``soak``: 10 minutes at half the held rate: every message answered once, RSS
  growth after warm-up, error lines in the bot's log (``soak``).

Results go to ``benchmarks/results/latest.{json,md,png}`` and ``latest-load.png``; see README.md.
"""

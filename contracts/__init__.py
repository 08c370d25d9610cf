"""Every boundary of lambda-surface as typed models and protocols.

This package imports nothing else of ours: `tasks/` and `runtime/` depend on
it, never the other way round.
"""

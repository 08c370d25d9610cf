"""Errors of the local homeserver tooling::

DevHomeserverError
├── HomeserverStartError   Synapse could not be configured, spawned or made healthy
└── RegistrationError      the admin register API or the password login refused us
    └── PasswordRefused    the user exists and its password is refused
"""

from __future__ import annotations

__all__ = ["DevHomeserverError", "HomeserverStartError", "PasswordRefused", "RegistrationError"]


class DevHomeserverError(Exception):
    """Base class for errors of the local homeserver launcher."""


class HomeserverStartError(DevHomeserverError):
    """Synapse could not be configured, spawned, or did not become healthy in time."""


class RegistrationError(DevHomeserverError):
    """A user could not be registered nor logged in."""


class PasswordRefused(RegistrationError):
    """The user exists, but a login with the given password is refused."""

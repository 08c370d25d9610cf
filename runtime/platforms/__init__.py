"""Implementations of contracts.platform.PlatformClient."""

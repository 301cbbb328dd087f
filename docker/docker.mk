# Docker targets, included from the repository root's Makefile (paths are relative to
# the root). See docs/docker.md.
#
#   make docker-build   base image (debootstrap, once) + wheels + the shardlite image
#   make docker-up      build if needed, start 3 nodes, wait for health and a leader
#   make docker-down    stop and remove the containers and network (volumes kept)
#   make docker-clean   the same, and remove the volumes (all data)
#   make docker-rmi     remove the images these targets built (the next build is cold)
#   make docker-test    the docker test suite (tests/docker) in a private compose project
#
# With a registry: make docker-up DOCKER_BASE=python:3.11-slim (no debootstrap).

DOCKER_LOCAL_BASE ?= shardlite-base:bookworm
DOCKER_BASE       ?= $(DOCKER_LOCAL_BASE)
DOCKER_IMAGE      ?= shardlite:latest
# The build stage, tagged so that its layers stay cached between builds.
DOCKER_BUILD_STAGE ?= shardlite:build
DOCKER_PROJECT    ?= shardlite
DOCKER_BIND       ?= 127.0.0.1
DOCKER_PORTS      ?= 7001 7002 7003
DOCKER_WAIT       ?= 120
DOCKER_FILE       := docker/docker-compose.yml
# TLS and tokens on, merged over it (the docker tests run both).
DOCKER_SECURE_FILE := docker/docker-compose.secure.yml
# `docker compose` (v2 plugin) when it works, else docker-compose (v1, as Debian ships).
# Worked out once, on first use.
DOCKER_COMPOSE ?= $(eval DOCKER_COMPOSE := $$(shell if docker compose version >/dev/null 2>&1; \
	then echo "docker compose"; else echo docker-compose; fi))$(DOCKER_COMPOSE)

_docker_compose = env SHARDLITE_IMAGE=$(DOCKER_IMAGE) SHARDLITE_BASE_IMAGE=$(DOCKER_BASE) \
	SHARDLITE_BIND=$(DOCKER_BIND) SHARDLITE_PORT_N1=$(word 1,$(DOCKER_PORTS)) \
	SHARDLITE_PORT_N2=$(word 2,$(DOCKER_PORTS)) SHARDLITE_PORT_N3=$(word 3,$(DOCKER_PORTS)) \
	$(DOCKER_COMPOSE) -f $(DOCKER_FILE) -p $(DOCKER_PROJECT)

.PHONY: docker-base docker-wheels docker-build docker-up docker-down docker-clean \
	docker-config docker-rmi docker-test docker-help

docker-help:
	@echo "make docker-build  - build $(DOCKER_IMAGE) on $(DOCKER_BASE) (local base built once)"
	@echo "make docker-up     - start the 3-node cluster on $(DOCKER_BIND):$(DOCKER_PORTS)"
	@echo "make docker-down   - stop it (volumes kept); make docker-clean also drops the data"
	@echo "make docker-rmi    - remove the images built here (base included)"
	@echo "make docker-test   - build, then test the cluster in containers (tests/docker)"

# The local base: only when DOCKER_BASE is it (a registry image needs no building).
docker-base:
ifeq ($(DOCKER_BASE),$(DOCKER_LOCAL_BASE))
	docker/build-base.sh $(DOCKER_LOCAL_BASE)
else
	@echo "docker-base: using $(DOCKER_BASE)"
endif

docker-wheels: $(VENV)/.installed-run
	docker/build-wheels.sh $(BIN)/pip docker/wheels

# Old builds (untagged images labelled org.shardlite.stage) are pruned; nothing else.
docker-build: docker-base docker-wheels
	docker build --quiet -f docker/Dockerfile --build-arg BASE_IMAGE=$(DOCKER_BASE) \
		--target build -t $(DOCKER_BUILD_STAGE) . >/dev/null
	docker build --quiet -f docker/Dockerfile --build-arg BASE_IMAGE=$(DOCKER_BASE) \
		-t $(DOCKER_IMAGE) . >/dev/null
	@docker image prune --force --filter label=org.shardlite.stage >/dev/null
	@docker image inspect -f '$(DOCKER_IMAGE): {{.Size}} bytes' $(DOCKER_IMAGE) \
		| awk '{ printf "%s %.0f MB\n", $$1, $$2 / 1e6 }'

docker-config:
	$(_docker_compose) config --quiet && echo "$(DOCKER_FILE): valid"

docker-up: docker-build $(VENV)/.installed-run
	$(_docker_compose) up -d --no-build
	docker/wait-cluster.sh $(BIN)/shardlite $(DOCKER_WAIT) \
		$(foreach p,$(DOCKER_PORTS),$(DOCKER_BIND):$(p)) -- $(_docker_compose)

docker-down:
	$(_docker_compose) down --remove-orphans

docker-clean:
	$(_docker_compose) down --volumes --remove-orphans

# Remove the images the targets above built (for a cold build); nothing else.
docker-rmi:
	-docker image rm $(DOCKER_IMAGE) $(DOCKER_BUILD_STAGE) $(DOCKER_LOCAL_BASE)
	docker image prune --force --filter label=org.shardlite.stage >/dev/null

# A compose project of its own (never a user's), removed afterwards whatever happened.
docker-test: docker-build $(VENV)/.installed-test
	@project=shardlite-test-$$(date +%s)-$$$$; \
	echo "docker-test: compose project $$project"; \
	trap 'docker/cleanup.sh $$project $(DOCKER_COMPOSE) -f $(DOCKER_FILE); \
		docker/cleanup.sh $$project-secure $(DOCKER_COMPOSE) -f $(DOCKER_FILE) -f $(DOCKER_SECURE_FILE)' \
		INT TERM; \
	SHARDLITE_TEST_PROJECT=$$project SHARDLITE_TEST_IMAGE=$(DOCKER_IMAGE) \
	SHARDLITE_TEST_BASE_IMAGE=$(DOCKER_BASE) \
	SHARDLITE_TEST_COMPOSE="$(DOCKER_COMPOSE)" \
		$(BIN)/pytest tests/docker -p no:cacheprovider --timeout 420 $(PYTEST_ARGS); \
	rc=$$?; \
	docker/cleanup.sh $$project $(DOCKER_COMPOSE) -f $(DOCKER_FILE) || rc=1; \
	docker/cleanup.sh $$project-secure $(DOCKER_COMPOSE) -f $(DOCKER_FILE) -f $(DOCKER_SECURE_FILE) \
		|| rc=1; \
	exit $$rc

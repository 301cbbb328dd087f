"""Tests of the docker image and the three-node docker-compose cluster (make docker-test).

They need a Docker engine and the image (make docker-build); the default test run does
not collect them.
"""

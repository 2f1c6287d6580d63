"""Shared pytest configuration: real Gremlin Server fixtures live in tests/fleet_fixtures.py."""

pytest_plugins = ["tests.fleet_fixtures", "tests.kube_fixtures", "tests.moto_support"]

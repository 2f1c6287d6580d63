"""Shared pytest configuration: real Gremlin Server fixtures live in tests/fleet_fixtures.py."""

from hypothesis import settings

pytest_plugins = ["tests.fleet_fixtures", "tests.kube_fixtures", "tests.moto_support"]

# Hypothesis fails an example that takes over 200 ms by default: a wall-clock assertion that a
# loaded CI machine trips (a GraphSON property spec did, on the pure build at load 12). Specs
# here assert behaviour, never speed, so no example has a deadline.
settings.register_profile("gremlinlb", deadline=None)
settings.load_profile("gremlinlb")

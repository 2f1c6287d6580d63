"""PUT /v1/hosts bodies, the settings they carry, and the state file that keeps them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from gremlinlb.sidecar.hostlist import (
    STATE_FILE,
    BadUpdateError,
    HostList,
    HostRules,
    load_state,
    parse_body,
    parse_update,
    save_state,
)
from hypothesis import given
from hypothesis import strategies as st

from gremlinlb.core import BalancerSettings, HealthCheckSettings, Policy, parse_endpoint
from gremlinlb.schema import SettingsError, from_document, to_document

DEFAULTS = BalancerSettings()


def test_valid_body_gives_the_generation_hosts_and_merged_settings() -> None:
    update = parse_update(
        {"generation": 3, "hosts": ["a:1", "wss://b:2/gremlin"], "settings": {"max_attempts": 5}},
        DEFAULTS,
    )
    assert update.generation == 3
    assert [e.url for e in update.hosts] == ["ws://a:1/gremlin", "wss://b:2/gremlin"]
    assert update.settings.max_attempts == 5
    assert update.settings.health == DEFAULTS.health


def test_settings_absent_keep_the_current_ones() -> None:
    current = BalancerSettings(max_attempts=7)
    assert parse_update({"generation": 1, "hosts": []}, current).settings is current


def test_boolean_is_not_a_generation() -> None:
    with pytest.raises(BadUpdateError, match="generation"):
        parse_update({"generation": True, "hosts": []}, DEFAULTS)


def test_bad_host_names_its_position() -> None:
    with pytest.raises(BadUpdateError, match=r"hosts\[1\]: .*scheme 'http'"):
        parse_update({"generation": 1, "hosts": ["a:1", "http://b:2"]}, DEFAULTS)


def test_nested_setting_error_names_the_full_path() -> None:
    with pytest.raises(SettingsError, match=r"settings\.health\.timeout: must be a number"):
        from_document({"health": {"timeout": "5s"}}, DEFAULTS)


def test_policy_must_be_a_known_name() -> None:
    with pytest.raises(SettingsError, match="round_robin, least_in_flight"):
        from_document({"policy": "fastest"}, DEFAULTS)


def test_nested_object_must_be_an_object() -> None:
    with pytest.raises(SettingsError, match=r"settings\.buffer: must be a JSON object"):
        from_document({"buffer": 5}, DEFAULTS)


def test_probe_script_may_be_reset_to_null() -> None:
    current = BalancerSettings(health=HealthCheckSettings(probe_script="1"))
    assert from_document({"health": {"probe_script": None}}, current).health.probe_script is None


settings_strategy = st.builds(
    BalancerSettings,
    policy=st.sampled_from(Policy),
    health=st.builds(
        HealthCheckSettings,
        interval=st.floats(0.1, 100),
        timeout=st.floats(0.1, 100),
        rise=st.integers(1, 10),
        fall=st.integers(1, 10),
        probe_healthy=st.booleans(),
        probe_script=st.one_of(st.none(), st.text(min_size=1).filter(str.strip)),
    ),
    max_attempts=st.integers(1, 10),
    request_timeout=st.floats(0.1, 100),
)


@given(settings_strategy)
def test_settings_survive_a_json_round_trip(settings: BalancerSettings) -> None:
    text = json.dumps(to_document(settings))
    assert from_document(json.loads(text), DEFAULTS) == settings


def test_saved_host_list_is_loaded_back(tmp_path: Path) -> None:
    hosts = HostList(
        9, (parse_endpoint("a:1"), parse_endpoint("b:2")), BalancerSettings(max_attempts=4)
    )
    save_state(tmp_path / "state", hosts)
    assert load_state(tmp_path / "state", DEFAULTS) == hosts


def test_saving_replaces_the_file_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    for generation in range(3):
        save_state(tmp_path, HostList(generation, (parse_endpoint("a:1"),), DEFAULTS))
    assert [p.name for p in tmp_path.iterdir()] == [STATE_FILE]
    loaded = load_state(tmp_path, DEFAULTS)
    assert loaded is not None
    assert loaded.generation == 2


def test_missing_state_file_means_no_saved_list(tmp_path: Path) -> None:
    assert load_state(tmp_path, DEFAULTS) is None


def test_corrupt_state_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text('{"generation": 1, "hosts": [')
    with pytest.raises(BadUpdateError, match="fix or delete it"):
        load_state(tmp_path, DEFAULTS)


@pytest.mark.parametrize(
    "body",
    [
        None,
        "text",
        {"generation": 1},
        {"generation": 1, "hosts": [1]},
        {"generation": 1.5, "hosts": []},
    ],
)
def test_malformed_bodies_are_refused(body: Any) -> None:
    with pytest.raises(BadUpdateError):
        parse_update(body, DEFAULTS)


OWN = HostRules(own_ports=frozenset({9901, 8182}))

REFUSED_HOSTS: dict[str, tuple[str, str]] = {
    "nul_byte": ("gremlin\x00evil:8182", "'\\x00'"),
    "quote": ('grem"lin:8182', "'\"'"),
    "percent": ("ws://gremlin%2e:8182", "'%'"),
    "label_starting_with_dash": ("-gremlin:8182", "not a valid DNS name"),
    "dot_dot_segment": ("ws://gremlin:8182/../v1/hosts", "not a plain path"),
    "encoded_path": ("ws://gremlin:8182/%2e%2e/v1", "not a plain path"),
    "admin_port_on_loopback": ("127.0.0.1:9901", "this sidecar's own port"),
    "gremlin_port_on_localhost": ("localhost:8182", "this sidecar's own port"),
    "admin_port_on_v6_loopback": ("[::1]:9901", "this sidecar's own port"),
    "admin_port_on_the_wildcard": ("0.0.0.0:9901", "this sidecar's own port"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_HOSTS))
def test_hosts_that_are_not_plain_or_are_the_sidecar_itself_are_refused(case: str) -> None:
    host, complaint = REFUSED_HOSTS[case]
    with pytest.raises(BadUpdateError, match=r"hosts\[1\]: ") as raised:
        parse_update({"generation": 1, "hosts": ["a:1", host]}, DEFAULTS, OWN)
    assert complaint in str(raised.value)


@pytest.mark.parametrize(
    "host",
    ["gremlin-0.gremlin.ns.svc.cluster.local:8182", "10.1.2.3:9901", "[fd00::1]:8182", "h:1/a/b"],
)
def test_dns_names_ip_addresses_and_plain_paths_are_accepted(host: str) -> None:
    assert len(parse_update({"generation": 1, "hosts": [host]}, DEFAULTS, OWN).hosts) == 1


def test_a_list_longer_than_max_hosts_is_refused_before_any_host_is_read() -> None:
    with pytest.raises(BadUpdateError, match="3 entries, more than the limit of 2"):
        parse_update({"generation": 1, "hosts": ["a:1", "b:1", 7]}, DEFAULTS, HostRules(2))


def test_json_nested_too_deeply_is_a_bad_update() -> None:
    with pytest.raises(BadUpdateError, match="nested too deeply"):
        parse_body("[" * 100_000 + "]" * 100_000)


def test_a_saved_list_with_a_bad_host_is_refused_at_start(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text(json.dumps({"generation": 1, "hosts": ["a\u0000b:1"]}))
    with pytest.raises(BadUpdateError, match="fix or delete it"):
        load_state(tmp_path, DEFAULTS)


def test_saved_roles_and_zones_are_loaded_back(tmp_path: Path) -> None:
    hosts = HostList(
        3, (parse_endpoint("a:1?role=writer&zone=z1"), parse_endpoint("b:2?role=reader")), DEFAULTS
    )
    save_state(tmp_path, hosts)
    loaded = load_state(tmp_path, DEFAULTS)
    assert loaded is not None
    assert [(e.text) for e in loaded.hosts] == [
        "ws://a:1/gremlin?role=writer&zone=z1",
        "ws://b:2/gremlin?role=reader",
    ]


def test_a_pushed_host_keeps_its_signed_host_and_shows_it_back() -> None:
    pushed = "ws://10.0.0.5:8182/gremlin?role=writer&sigv4_host=db-1.example:8182"
    update = parse_update({"generation": 1, "hosts": [pushed]}, DEFAULTS)
    assert update.hosts[0].sigv4_host == "db-1.example:8182"
    assert update.to_json()["hosts"] == [pushed]


def test_a_pushed_host_with_a_bad_signed_host_is_refused_with_its_index() -> None:
    with pytest.raises(
        BadUpdateError, match=r"hosts\[0\]: .*sigv4_host 'db-1'; give the host:port"
    ):
        parse_update({"generation": 1, "hosts": ["a:1?sigv4_host=db-1"]}, DEFAULTS)


def test_a_host_with_an_unknown_query_key_is_refused_with_its_index() -> None:
    with pytest.raises(BadUpdateError, match=r"hosts\[1\]: .*query key 'weight'"):
        parse_update({"generation": 1, "hosts": ["a:1", "b:2?weight=3"]}, DEFAULTS)


# -- client_zones: how many clients run in each zone ------------------------------------------


def test_client_zones_come_with_the_list_without_empty_zones() -> None:
    update = parse_update(
        {"generation": 1, "hosts": ["a:1"], "client_zones": {"b": 1, "a": 3, "c": 0}}, DEFAULTS
    )
    assert update.client_zones == {"a": 3, "b": 1}


def test_a_list_without_client_zones_has_none() -> None:
    assert parse_update({"generation": 1, "hosts": []}, DEFAULTS).client_zones is None
    assert (
        parse_update({"generation": 1, "hosts": [], "client_zones": {}}, DEFAULTS).client_zones
        is None
    )


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ([3, 1], "client_zones must be an object of zone name -> number of clients"),
        ({"a": -1}, "client_zones: the client count of zone 'a' must be an integer >= 0"),
        ({"a": 1.5}, "client_zones: the client count of zone 'a' must be an integer >= 0"),
        ({"a": True}, "client_zones: the client count of zone 'a' must be an integer >= 0"),
        ({"a": "3"}, "client_zones: the client count of zone 'a' must be an integer >= 0"),
        ({" ": 1}, "client_zones: client zone names must be non-empty strings, got ' '"),
        ({"a\nb": 1}, "printable characters"),
        ({f"z{i}": 1 for i in range(257)}, "more than the limit of 256"),
    ],
    ids=["list", "negative", "fraction", "boolean", "string", "blank", "newline", "too-many"],
)
def test_bad_client_zones_are_refused_naming_the_zone(value: Any, complaint: str) -> None:
    with pytest.raises(BadUpdateError) as refused:
        parse_update({"generation": 1, "hosts": [], "client_zones": value}, DEFAULTS)
    assert complaint in str(refused.value)


def test_client_zones_are_kept_in_the_state_file(tmp_path: Path) -> None:
    hosts = HostList(2, (parse_endpoint("a:1?zone=a"),), DEFAULTS, {"a": 3, "b": 1})
    save_state(tmp_path, hosts)
    assert json.loads((tmp_path / STATE_FILE).read_text())["client_zones"] == {"a": 3, "b": 1}
    assert load_state(tmp_path, DEFAULTS) == hosts

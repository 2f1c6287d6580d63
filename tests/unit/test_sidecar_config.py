"""Sidecar configuration: flags over environment over config file, checked with clear errors."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from gremlinlb.sidecar.config import OPTIONS, Address, ConfigError, load_config, parse_address
from gremlinlb.sidecar.ids import IdSource
from gremlinlb.sidecar.logs import JsonFormatter

from gremlinlb import certificates as certs
from gremlinlb.core import Policy, ReadRouting


def load(flags: dict[str, Any] | None = None, env: dict[str, str] | None = None, **kw: Any) -> Any:
    return load_config(flags or {}, env or {}, **kw)


def test_defaults_bind_the_gremlin_port_to_loopback() -> None:
    config = load()
    assert config.listen == Address("127.0.0.1", 8182)
    assert config.listen.loopback
    assert config.backend.max_message_bytes == 10 * 1024 * 1024


def test_endpoints_are_parsed_deduplicated_and_in_order() -> None:
    config = load({"endpoints": "b:8182, a:8182,b:8182"})
    assert [e.address for e in config.endpoints] == ["b:8182", "a:8182"]


def test_flag_wins_over_environment_which_wins_over_the_file(tmp_path: Path) -> None:
    file = tmp_path / "sidecar.json"
    file.write_text(json.dumps({"max_attempts": 5, "rise": 4, "fall": 6}))
    config = load(
        {"max_attempts": "2"},
        {"GREMLINLB_MAX_ATTEMPTS": "3", "GREMLINLB_RISE": "3"},
        config_file=str(file),
    )
    assert config.settings.max_attempts == 2
    assert config.settings.health.rise == 3
    assert config.settings.health.fall == 6


def test_config_file_may_list_endpoints_and_use_dashes(tmp_path: Path) -> None:
    file = tmp_path / "sidecar.json"
    file.write_text(json.dumps({"endpoints": ["h1:8182", "h2:8182"], "health-interval": 2}))
    config = load(config_file=str(file))
    assert [e.address for e in config.endpoints] == ["h1:8182", "h2:8182"]
    assert config.settings.health.interval == 2.0


def test_config_file_named_by_environment_is_read(tmp_path: Path) -> None:
    file = tmp_path / "sidecar.json"
    file.write_text(json.dumps({"policy": "least_in_flight"}))
    assert load(env={"GREMLINLB_CONFIG": str(file)}).settings.policy is Policy.LEAST_IN_FLIGHT


def test_unknown_key_in_the_config_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "sidecar.json"
    file.write_text(json.dumps({"endpoint": "h:1"}))
    with pytest.raises(ConfigError, match="unknown setting"):
        load(config_file=str(file))


def test_config_file_that_is_not_json_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "sidecar.json"
    file.write_text("listen: 1")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load(config_file=str(file))


def test_error_names_the_environment_variable_it_came_from() -> None:
    with pytest.raises(ConfigError, match="GREMLINLB_CONNECTIONS_PER_HOST: must be an integer >="):
        load(env={"GREMLINLB_CONNECTIONS_PER_HOST": "0"})


def test_number_of_seconds_must_be_a_number() -> None:
    with pytest.raises(ConfigError, match="--request-timeout: must be a number"):
        load({"request_timeout": "soon"})


def test_core_range_checks_still_apply() -> None:
    with pytest.raises(ConfigError, match="--fall: must be an integer >= 1"):
        load({"fall": "0"})


def test_boolean_accepts_the_usual_spellings() -> None:
    assert load({"probe_healthy": "false"}).settings.health.probe_healthy is False
    assert load({"probe_healthy": "on"}).settings.health.probe_healthy is True
    with pytest.raises(ConfigError, match="true or false"):
        load({"probe_healthy": "maybe"})


def test_token_and_password_are_read_from_files(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("abc\n")
    (tmp_path / "password").write_text("pw\n")
    config = load(
        {
            "token_file": str(tmp_path / "token"),
            "backend_username": "app",
            "backend_password_file": str(tmp_path / "password"),
        }
    )
    assert config.token == "abc"
    assert (config.backend.username, config.backend.password) == ("app", "pw")
    assert "pw" not in repr(config.backend)


def test_password_may_come_from_the_environment() -> None:
    config = load({"backend_username": "app"}, {"GREMLINLB_BACKEND_PASSWORD": "pw"})
    assert config.backend.sasl_plain() == "AGFwcABwdw=="  # base64 of \0app\0pw


def test_username_without_password_is_refused() -> None:
    with pytest.raises(ConfigError, match="both a backend username and a password"):
        load({"backend_username": "app"})


def test_empty_token_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        load({"token_file": str(tmp_path / "token")})


def test_unreadable_ca_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="cannot load CA bundle"):
        load({"backend_ca_file": str(tmp_path / "ca.pem")})


def test_message_size_limit_applies_to_both_sides() -> None:
    config = load({"max_message_bytes": "20971520"})
    assert config.backend.max_message_bytes == config.proxy.max_message_bytes == 20971520


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8182", Address("127.0.0.1", 8182)),
        ("0.0.0.0:9901", Address("0.0.0.0", 9901)),
        ("[::1]:0", Address("::1", 0)),
        ("localhost:1", Address("localhost", 1)),
    ],
)
def test_addresses_are_host_and_port(text: str, expected: Address) -> None:
    assert parse_address(text, "--listen") == expected


@pytest.mark.parametrize("text", ["8182", ":8182", "host:port", "h:70000"])
def test_bad_addresses_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="--listen"):
        parse_address(text, "--listen")


def test_backend_ids_are_unique_version_4_uuids() -> None:
    source = IdSource()
    ids = [source.next() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 16 and i[6] >> 4 == 4 and i[8] >> 6 == 0b10 for i in ids)


def test_json_log_lines_carry_level_logger_message_and_extras() -> None:
    record = logging.LogRecord("gremlinlb.x", logging.WARNING, __file__, 1, "a %s", ("b",), None)
    record.host = "h:1"
    line = json.loads(JsonFormatter().format(record))
    assert (line["level"], line["logger"], line["message"], line["host"]) == (
        "warning",
        "gremlinlb.x",
        "a b",
        "h:1",
    )


def test_gray_failure_flags_reach_the_core_settings() -> None:
    config = load(
        {
            "unhealthy_interval": "0.5",
            "consecutive_failures": "7",
            "slow_start": "0",
            "hedge": "false",
            "hedge_max_delay": "0.2",
            "extra_budget_ratio": "0.1",
        }
    )
    settings = config.settings
    assert settings.health.unhealthy_interval == 0.5
    assert settings.outlier.consecutive_failures == 7
    assert settings.slow_start == 0.0
    assert settings.hedge.enabled is False
    assert settings.hedge.max_delay == 0.2
    assert settings.budget.ratio == 0.1


def test_hedge_delay_below_its_floor_is_refused_naming_the_settings() -> None:
    with pytest.raises(ConfigError, match="delay_floor"):
        load({"hedge_max_delay": "0.001"})


def test_memory_bounds_handshake_timeout_and_max_hosts_come_from_flags() -> None:
    config = load(
        {
            "memory_budget_bytes": "100000000",
            "client_pause_bytes": "1000000",
            "client_max_queued_bytes": "8000000",
            "max_requests_per_client": "64",
            "handshake_timeout": "2.5",
            "max_hosts": "50",
        }
    )
    memory = config.proxy.memory
    assert (memory.budget_bytes, memory.client_pause_bytes) == (100_000_000, 1_000_000)
    assert (memory.client_max_queued_bytes, memory.max_requests_per_client) == (8_000_000, 64)
    assert (config.proxy.handshake_timeout, config.max_hosts) == (2.5, 50)


def test_a_client_cap_above_the_memory_budget_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"memory_budget_bytes \(1000000\) must be >="):
        load({"memory_budget_bytes": "1000000"})


def test_handshake_timeout_has_a_floor() -> None:
    with pytest.raises(
        ConfigError, match=r"GREMLINLB_HANDSHAKE_TIMEOUT: must be a number >= 0\.1 sec"
    ):
        load(env={"GREMLINLB_HANDSHAKE_TIMEOUT": "0"})


README = Path(__file__).resolve().parents[2] / "sidecar" / "README.md"


def test_the_sidecar_readme_documents_every_flag() -> None:
    readme = README.read_text()
    assert [option.flag for option in OPTIONS if f"`{option.flag}`" not in readme] == []


def test_the_sidecar_readme_gives_the_defaults_the_flags_have() -> None:
    """Rows such as | `--rise` / `--fall` | 1 / 2 | ... | against the options' own defaults."""
    by_flag = {option.flag: option for option in OPTIONS}

    def same(documented: str, default: object) -> bool:
        text = re.sub(r" \(.*\)$", "", documented.strip(" `"))
        try:
            return float(text) == float(str(default))
        except ValueError:
            return text == str(default)

    wrong = []
    for row in re.finditer(r"^\| (`--[^|]*) \| ([^|]+) \|", README.read_text(), re.MULTILINE):
        flags = [flag.strip(" `") for flag in row.group(1).split(" / ")]
        for flag, documented in zip(flags, row.group(2).split(" / "), strict=True):
            default = by_flag[flag].default
            if default is not None and not same(documented, default):
                wrong.append((flag, documented, default))
    assert wrong == []


def test_log_format_and_event_loop_are_one_of_their_names() -> None:
    config = load({"log_format": "json", "event_loop": "asyncio"})
    assert (config.log_format, config.event_loop) == ("json", "asyncio")
    with pytest.raises(ConfigError, match="GREMLINLB_LOG_FORMAT: must be one of text, json"):
        load(env={"GREMLINLB_LOG_FORMAT": "yaml"})


def test_a_ca_file_requires_tls_unless_backend_tls_says_otherwise(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(certs.generate(["gremlin"]).ca_pem)
    assert load({"backend_ca_file": str(ca)}).host_policy.require_tls is True
    flags = {"backend_ca_file": str(ca), "backend_tls": "false"}
    assert load(flags).host_policy.require_tls is False
    assert load({"backend_tls": "yes"}).host_policy.require_tls is True


def test_traversal_sources_to_probe_are_a_comma_separated_list() -> None:
    config = load({"traversal_sources": "g2, g3,g2"})
    assert config.traversal_sources == ("g2", "g3")


def test_a_traversal_source_that_is_no_name_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"--traversal-sources: 'g-2' is not a traversal source"):
        load({"traversal_sources": "g2,g-2"})


def test_keepalive_and_max_connection_age_are_core_settings() -> None:
    config = load({"keepalive_interval": "10", "max_connection_age": "3600"})
    assert config.settings.keepalive_interval == 10.0
    assert config.settings.max_connection_age == 3600.0


def test_a_negative_max_connection_age_is_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"--max-connection-age: must be a number 0 \(off\) or >= 1 sec"
    ):
        load({"max_connection_age": "-1"})


def test_the_zone_comes_from_the_environment_and_empty_means_unknown() -> None:
    assert load(env={"GREMLINLB_ZONE": "us-east-1a"}).zone == "us-east-1a"
    assert load(env={"GREMLINLB_ZONE": ""}).zone is None  # the downward API without the label


def test_read_routing_is_one_of_its_names() -> None:
    assert load({"read_routing": "readers_only"}).settings.read_routing is ReadRouting.READERS_ONLY
    with pytest.raises(ConfigError, match="one of prefer_readers, readers_only, any"):
        load({"read_routing": "writers"})


def test_endpoints_carry_their_roles() -> None:
    config = load({"endpoints": "w:8182?role=writer,r:8182?role=reader&zone=b"})
    assert [(e.role.value, e.zone) for e in config.endpoints] == [("writer", None), ("reader", "b")]


def test_endpoints_carry_their_signed_hosts() -> None:
    config = load({"endpoints": "127.0.0.1:9001?sigv4_host=db-1.example:8182,127.0.0.1:9002"})
    assert [e.sigv4_host for e in config.endpoints] == ["db-1.example:8182", None]


def test_admin_allowed_hosts_come_from_a_repeated_flag_or_a_comma_separated_variable() -> None:
    flags = {"admin_allowed_host": ["gremlinlb.test", "*.pods.example,10.0.0.0/8"]}
    assert load(flags).admin_allowed_hosts == ("gremlinlb.test", "*.pods.example", "10.0.0.0/8")
    env = {"GREMLINLB_ADMIN_ALLOWED_HOST": "a.test,b.test"}
    assert load(env=env).admin_allowed_hosts == ("a.test", "b.test")
    with pytest.raises(ConfigError, match="--admin-allowed-host: 'a/b' is neither a CIDR"):
        load({"admin_allowed_host": ["a/b"]})


def test_the_generated_token_file_can_be_placed(tmp_path: Path) -> None:
    path = tmp_path / "token"
    assert load({"generate_token_file": str(path)}).generate_token_file == path
    assert load().generate_token_file is None  # the runtime directory

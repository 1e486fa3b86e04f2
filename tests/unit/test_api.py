"""The public API's parts that need no broker: keys, where the customer goes, settings,
the CLI command, and the answers given before anything is published (Starlette's
TestClient; the app's lifespan, which connects, is not run)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from routerd.api import API_ENV_VARS, ApiSettings, KeysError, KeyStore, hash_key
from routerd.api.app import create_app
from routerd.api.customer import CustomerRefused, with_customer
from routerd.api.keys import KeysFile
from routerd.cli import app as cli
from routerd.client import Publisher
from routerd.settings import SettingsError
from tests.conftest import ROOT, SHIPPED_CONFIG

KEY = "s3cret"
# `printf '%s' s3cret | sha256sum`, the one-liner docs/api.md gives.
KEY_HASH = "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0"


def test_hash_key_is_the_sha256_hex_the_docs_one_liner_prints() -> None:
    assert hash_key(KEY) == KEY_HASH


def test_a_keys_file_in_yaml_or_json_maps_each_key_to_its_customer(tmp_path: Path) -> None:
    yaml_file = tmp_path / "keys.yaml"
    yaml_file.write_text(f'cus-42:\n  - "{KEY_HASH}"\ncus-7: []\n')
    json_file = tmp_path / "keys.json"
    json_file.write_text(json.dumps({"cus-42": [KEY_HASH]}))
    for path in (yaml_file, json_file):
        keys = KeyStore.load(path)
        assert keys.customer_of(KEY) == "cus-42"
        assert keys.customer_of("other") is None
        assert keys.customer_of(KEY_HASH) is None  # the stored hash opens nothing


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("- a\n", "expected a mapping"),
        ("cus-1: abc\n", "expected a list"),
        ("cus-1: [plain-key]\n", "'plain-key' is not a sha256 hex digest"),
        (f"cus-1: ['{KEY_HASH.upper()}']\n", "is not a sha256 hex digest"),
        (f"cus-1: ['{KEY_HASH}']\ncus-2: ['{KEY_HASH}']\n", "belongs to 'cus-1' and 'cus-2'"),
        ("cus-1: [\n", "not YAML or JSON"),
    ],
)
def test_a_broken_keys_file_names_the_file_and_the_problem(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(KeysError) as caught:
        KeyStore.load(path)
    assert str(path) in str(caught.value) and problem in str(caught.value)


def test_a_missing_keys_file_is_a_keys_error(tmp_path: Path) -> None:
    with pytest.raises(KeysError, match="cannot read it"):
        KeyStore.load(tmp_path / "nope.yaml")


def test_the_customer_is_set_from_the_key_in_the_place_of_each_version() -> None:
    v1 = {"schema_version": 1, "subject": "x"}
    assert with_customer(v1, "cus-1") == {
        "schema_version": 1,
        "subject": "x",
        "customer_id": "cus-1",
    }
    assert "customer_id" not in v1  # the caller's dict is kept
    assert with_customer({"schema_version": 1, "customer_id": "cus-1"}, "cus-1")["customer_id"] == (
        "cus-1"
    )
    v2 = {"schema_version": 2, "account": {"subaccount": "eu"}}
    assert with_customer(v2, "cus-2")["account"] == {"subaccount": "eu", "id": "cus-2"}
    assert with_customer({"schema_version": 2}, "cus-2")["account"] == {"id": "cus-2"}
    # A wrong type is left for the schema check to name.
    assert with_customer({"schema_version": 2, "account": "x"}, "cus-2")["account"] == "x"


@pytest.mark.parametrize(
    ("body", "code", "pointer"),
    [
        ({"schema_version": 1, "customer_id": "cus-9"}, "customer_mismatch", "/customer_id"),
        ({"schema_version": 2, "account": {"id": "cus-9"}}, "customer_mismatch", "/account/id"),
        ({"schema_version": 3}, "unknown_schema_version", "/schema_version"),
        ({"schema_version": True}, "unknown_schema_version", "/schema_version"),
        ({"subject": "x"}, "missing_schema_version", ""),
    ],
)
def test_a_body_the_key_cannot_send_is_refused(
    body: dict[str, object], code: str, pointer: str
) -> None:
    with pytest.raises(CustomerRefused) as caught:
        with_customer(body, "cus-1")
    assert caught.value.as_dict() == {
        "code": code,
        "message": str(caught.value),
        "pointer": pointer,
    }


def test_settings_flags_over_environment(tmp_path: Path) -> None:
    env = {"ROUTERD_API_ADDR": "0.0.0.0:9000", "ROUTERD_API_KEYS": "/env/keys.yaml"}
    from_env = ApiSettings.from_sources({}, env)
    assert (from_env.listen_host, from_env.listen_port) == ("0.0.0.0", 9000)
    assert from_env.keys_path == Path("/env/keys.yaml")
    flags = ApiSettings.from_sources({"listen": "[::1]:8081", "keys": tmp_path}, env)
    assert (flags.listen_host, flags.listen_port, flags.keys_path) == ("::1", 8081, tmp_path)
    assert flags.listen_addr == "[::1]:8081"
    logged = ApiSettings.from_sources({"keys": "k", "log_format": "json"}, env)
    assert (logged.common.log_format, logged.common.log_level) == ("json", "info")
    default = ApiSettings.from_sources({"keys": "k.yaml"}, {})
    assert default.listen_addr == "127.0.0.1:8080"
    assert default.max_in_flight == 32
    bounded = {**env, "ROUTERD_API_MAX_IN_FLIGHT": "8"}
    assert ApiSettings.from_sources({}, bounded).max_in_flight == 8
    assert ApiSettings.from_sources({"max_in_flight": 4}, bounded).max_in_flight == 4
    assert default.common.config_path == Path("config/routes.yaml")


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({}, {}, "give --keys FILE or ROUTERD_API_KEYS"),
        (
            {"keys": "k", "listen": "8080"},
            {},
            "invalid listen address '8080' (from option --listen)",
        ),
        ({"keys": "k"}, {"ROUTERD_API_ADDR": "h:99999"}, "ROUTERD_API_ADDR): the port must be"),
        ({"keys": "k", "amqp_url": "http://x"}, {}, "invalid AMQP URL"),
        ({"keys": "k", "log_format": "yaml"}, {}, "invalid log format 'yaml' (from option"),
        ({"keys": "k"}, {"ROUTERD_LOG_LEVEL": "loud"}, "ROUTERD_LOG_LEVEL"),
        (
            {"keys": "k"},
            {"ROUTERD_API_MAX_IN_FLIGHT": "0"},
            "invalid sends in flight '0' (from environment variable ROUTERD_API_MAX_IN_FLIGHT): "
            "use a whole number of 1 or more, e.g. 32",
        ),
        ({"keys": "k", "max_in_flight": "many"}, {}, "invalid sends in flight 'many' (from option"),
    ],
)
def test_bad_settings_say_which_and_where_from(
    flags: dict[str, str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        ApiSettings.from_sources(flags, env)
    assert message in str(caught.value)


def test_the_api_command_names_its_variables_and_refuses_bad_settings(tmp_path: Path) -> None:
    runner = CliRunner()
    shown = runner.invoke(cli, ["api", "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0
    for var in [*API_ENV_VARS.values(), "ROUTERD_CONFIG", "ROUTERD_AMQP_URL"]:
        assert var in shown.output
    no_keys = runner.invoke(cli, ["api"], env={"ROUTERD_API_KEYS": ""})
    assert no_keys.exit_code == 2 and "routerd api: invalid API keys file" in no_keys.output
    broken = tmp_path / "keys.yaml"
    broken.write_text("cus-1: [nope]\n")
    # A process of its own: `routerd api` sets up logging on its stderr.
    refused = subprocess.run(
        [sys.executable, "-m", "routerd", "api", "--keys", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("ROUTERD_")},
    )
    assert refused.returncode == 2
    assert f"API keys file {broken}: customer 'cus-1': 'nope'" in refused.stderr


@pytest.mark.anyio
async def test_answers_before_anything_is_published() -> None:
    keys = KeyStore.from_mapping({"cus-42": [KEY_HASH]}, Path("keys.yaml"))
    # Port 1: nothing may be published here; the app's lifespan (which connects) is not run.
    publisher = Publisher("amqp://guest:guest@127.0.0.1:1/", config=SHIPPED_CONFIG)
    transport = httpx.ASGITransport(app=create_app(publisher, keys))
    auth = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        document = await client.get("/openapi.yaml")
        assert document.headers["content-type"].startswith("application/yaml")
        unknown = await client.post("/v1/send", json={}, headers={"Authorization": "Bearer x"})
        assert unknown.status_code == 401
        assert unknown.headers["www-authenticate"].startswith("Bearer")
        not_json = await client.post("/v1/send", content=b"\xff", headers=auth)
        assert not_json.json()["reasons"][0]["code"] == "invalid_json"
        assert (await client.post("/v1/send", json="text", headers=auth)).status_code == 400
        too_big = await client.post("/v1/send", content=b" " * (1024 * 1024 + 1), headers=auth)
        assert too_big.status_code == 413 and too_big.json()["limit"] == 1024 * 1024
        missing = await client.get("/v2/send")
        assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}
        wrong_method = await client.get("/v1/send")
        assert wrong_method.status_code == 405 and wrong_method.json()["error"]


def test_the_api_needs_a_publisher_with_a_config() -> None:
    keys = KeyStore.from_mapping({}, Path("keys.yaml"))
    with pytest.raises(ValueError, match="config="):
        create_app(Publisher("amqp://127.0.0.1:1/", queue="q"), keys)


def test_the_keys_file_is_read_again_when_it_changes_and_a_broken_edit_keeps_the_old_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="routerd.api.keys")
    path = tmp_path / "keys.yaml"
    path.write_text(f'cus-42: ["{KEY_HASH}"]\n')
    now = [0.0]
    keys = KeysFile(path, clock=lambda: now[0])
    assert keys.customer_of(KEY) == "cus-42"

    # A rotation: the old key is gone, a new one belongs to another customer.
    path.write_text(f'cus-7: ["{hash_key("n3w")}"]\n')
    assert keys.customer_of("n3w") is None, "not looked at again within the second"
    now[0] += 1.0
    assert keys.customer_of("n3w") == "cus-7"
    assert keys.customer_of(KEY) is None
    assert "API keys reloaded" in caplog.text

    path.write_text("cus-7: [not-a-hash]\n")
    now[0] += 1.0
    assert keys.customer_of("n3w") == "cus-7"
    assert "keeping the API keys loaded before" in caplog.text
    assert caplog.text.count("keeping the API keys") == 1
    now[0] += 1.0
    keys.customer_of("n3w")
    assert caplog.text.count("keeping the API keys") == 1, "said once per change"

    path.unlink()
    now[0] += 1.0
    assert keys.customer_of("n3w") == "cus-7"
    path.write_text(f'cus-42: ["{KEY_HASH}"]\n')
    now[0] += 1.0
    assert keys.customer_of(KEY) == "cus-42"

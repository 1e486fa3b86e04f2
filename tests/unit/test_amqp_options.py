"""The broker connection's options: read from the AMQP URL's query, written back for aiormq."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from yarl import URL

from routerd.amqp.options import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_HEARTBEAT,
    BrokerOptions,
    BrokerOptionsError,
)

TLS_URL = (
    "amqps://router:s3cret@broker:5671/prod"
    "?cafile=/tls/ca.pem&certfile=/tls/client.pem&keyfile=/tls/client.key"
)


def aiormq_reads(url: str) -> dict[str, str]:
    """The query as aiormq reads it (through yarl; the first of a repeated key wins)."""
    query = URL(url).query
    return {key: query[key] for key in query}


def test_defaults_set_an_explicit_heartbeat() -> None:
    options = BrokerOptions.from_url("amqp://guest:guest@127.0.0.1:5672/")
    assert options.heartbeat == DEFAULT_HEARTBEAT == 10
    assert options.connect_timeout == DEFAULT_CONNECT_TIMEOUT
    assert (options.publish_timeout, options.reconnect_min, options.reconnect_max) == (
        10.0,
        0.5,
        30.0,
    )
    assert not options.tls
    assert options.tls_files == {}
    assert options.connection_name.startswith("routerd ")
    # aiormq's own default is 60 s: the URL it gets always states ours.
    assert aiormq_reads(options.client_url()) == {"heartbeat": "10"}


def test_tls_files_come_from_the_query_and_reach_aiormq() -> None:
    options = BrokerOptions.from_url(TLS_URL)
    assert options.tls
    assert (options.cafile, options.certfile, options.keyfile) == (
        "/tls/ca.pem",
        "/tls/client.pem",
        "/tls/client.key",
    )
    sent = aiormq_reads(options.client_url())
    assert sent == {
        "heartbeat": "10",
        "cafile": "/tls/ca.pem",
        "certfile": "/tls/client.pem",
        "keyfile": "/tls/client.key",
    }
    parts = urlsplit(options.client_url())
    assert (parts.scheme, parts.netloc, parts.path) == (
        "amqps",
        "router:s3cret@broker:5671",
        "/prod",
    )


def test_tls_without_files_verifies_with_the_system_cas() -> None:
    options = BrokerOptions.from_url("amqps://u:p@broker/")
    assert options.tls and options.tls_files == {}


def test_heartbeat_timeout_and_name_from_the_query() -> None:
    options = BrokerOptions.from_url("amqp://u:p@h/?heartbeat=5&timeout=2.5&name=eu-1")
    assert (options.heartbeat, options.connect_timeout) == (5, 2.5)
    assert options.connection_name == "eu-1"
    # The name travels as a client property, the timeout is routerd's own.
    assert aiormq_reads(options.client_url()) == {"heartbeat": "5"}


def test_zero_turns_heartbeats_off_as_aiormq_allows() -> None:
    assert BrokerOptions.from_url("amqp://h/?heartbeat=0").heartbeat == 0


def test_the_options_object_is_the_truth_for_what_aiormq_reads() -> None:
    options = BrokerOptions(
        "amqps://h/?heartbeat=60&cafile=/old.pem&capath=/etc/ssl/certs&no_verify_ssl=0",
        heartbeat=3,
        cafile="/new dir/ca+1.pem",
    )
    assert aiormq_reads(options.client_url()) == {
        "heartbeat": "3",
        "cafile": "/new dir/ca+1.pem",
        # Keys routerd does not own reach aiormq as written.
        "capath": "/etc/ssl/certs",
        "no_verify_ssl": "0",
    }


def test_unowned_query_pieces_are_kept_byte_for_byte() -> None:
    url = "amqps://h/?cadata=QUJD%2BREVG%3D&auth=external"
    client = BrokerOptions.from_url(url).client_url()
    assert "cadata=QUJD%2BREVG%3D&auth=external&" in client
    assert aiormq_reads(client)["cadata"] == aiormq_reads(url)["cadata"] == "QUJD+REVG="


def test_a_repeated_key_reads_as_aiormq_reads_it() -> None:
    url = "amqp://h/?heartbeat=4&heartbeat=40"
    assert BrokerOptions.from_url(url).heartbeat == int(aiormq_reads(url)["heartbeat"]) == 4


@pytest.mark.parametrize(
    ("url", "message"),
    [
        # aiormq would quietly run without heartbeats on each of these.
        ("amqp://h/?heartbeat=soon", "heartbeat=soon: use whole seconds"),
        ("amqp://h/?heartbeat=-1", "0..65534"),
        ("amqp://h/?heartbeat=1.5", "whole seconds"),
        ("amqp://h/?heartbeat=70000", "0..65534"),
        # aiormq ignores TLS files on a plain connection: the traffic would go unencrypted.
        ("amqp://h/?cafile=/tls/ca.pem", "cafile=/tls/ca.pem: TLS files need an amqps:// URL"),
        ("amqp://h/?certfile=/c.pem&keyfile=/k.pem", "certfile=/c.pem: TLS files need an amqps"),
        ("amqps://h/?keyfile=/k.pem", "keyfile=/k.pem: a key needs its certificate"),
        ("amqp://h/?timeout=0", "timeout=0: the connection timeout must be a positive"),
        ("amqp://h/?timeout=inf", "positive number of seconds"),
    ],
)
def test_bad_query_values_are_named(url: str, message: str) -> None:
    with pytest.raises(BrokerOptionsError) as caught:
        BrokerOptions.from_url(url)
    assert message in str(caught.value)


def test_the_password_stays_out_of_repr_and_description() -> None:
    options = BrokerOptions.from_url(TLS_URL)
    assert "s3cret" not in repr(options)
    described = options.describe()
    assert "s3cret" not in str(described)
    assert described["amqp_url"].startswith("amqps://router:***@broker:5671/prod")
    assert described["heartbeat"] == 10
    assert described["tls"] is True
    assert described["cafile"] == "/tls/ca.pem"

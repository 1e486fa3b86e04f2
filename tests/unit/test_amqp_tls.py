"""TLS options of the broker connection: the context routerd builds (as aiormq would, plus
verify_hostname), files that cannot be used, and what a failed handshake is reported as."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

from routerd.amqp.options import BrokerOptions, BrokerOptionsError, tls_failure
from tests.harness.tlsproxy import issue


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def test_plain_amqp_has_no_context() -> None:
    assert BrokerOptions.from_url("amqp://h/").ssl_context() is None


def test_hostname_checking_is_on_by_default(ca: trustme.CA, tmp_path: Path) -> None:
    files = issue(ca, tmp_path, "client", "routerd")
    url = f"amqps://h/?cafile={files.ca}&certfile={files.cert}&keyfile={files.key}"
    context = BrokerOptions.from_url(url).ssl_context()
    assert context is not None
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    # Only the given CA is trusted, not the system's store beside it.
    assert len(context.get_ca_certs()) == 1


@pytest.mark.parametrize("value", ["0", "false", "no", "False"])
def test_verify_hostname_0_skips_only_the_name_check(value: str) -> None:
    options = BrokerOptions.from_url(f"amqps://h/?verify_hostname={value}")
    context = options.ssl_context()
    assert context is not None
    assert not context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert options.describe()["verify_hostname"] is False
    assert "verify_hostname" not in options.client_url(), "routerd's key, not aiormq's"


def test_aiormqs_no_verify_ssl_still_turns_all_verification_off() -> None:
    context = BrokerOptions.from_url("amqps://h/?no_verify_ssl=1").ssl_context()
    assert context is not None
    assert not context.check_hostname and context.verify_mode == ssl.CERT_NONE


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("amqps://h/?verify_hostname=maybe", "verify_hostname=maybe: use 1 (the default) or 0"),
        ("amqp://h/?verify_hostname=0", "only an amqps:// URL verifies names"),
    ],
)
def test_bad_verify_hostname_values_are_named(url: str, message: str) -> None:
    with pytest.raises(BrokerOptionsError) as caught:
        BrokerOptions.from_url(url)
    assert message in str(caught.value)


def test_files_that_are_no_certificates_are_named(ca: trustme.CA, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(BrokerOptionsError) as caught:
        BrokerOptions.from_url(f"amqps://h/?cafile={junk}").ssl_context()
    assert f"cafile={junk}: cannot be read as CA certificates" in str(caught.value)
    files = issue(ca, tmp_path, "client", "routerd")
    other = issue(trustme.CA(), tmp_path, "other", "routerd")
    mismatched = f"amqps://h/?certfile={files.cert}&keyfile={other.key}"
    with pytest.raises(BrokerOptionsError) as caught:
        BrokerOptions.from_url(mismatched).ssl_context()
    assert f"certfile={files.cert}: cannot be used with keyfile={other.key}" in str(caught.value)
    assert "its unencrypted private key" in str(caught.value)


def _verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, message)
    exc.verify_code, exc.verify_message = code, message
    return exc


def test_a_failed_handshake_says_what_to_do() -> None:
    options = BrokerOptions.from_url("amqps://u:p@broker.internal/?cafile=/tls/ca.pem")
    wrapped = ConnectionError("wrapped")
    wrapped.__cause__ = _verify_error(20, "unable to get local issuer certificate")
    assert tls_failure(wrapped, options) == (
        "TLS: the broker's certificate is not trusted (unable to get local issuer "
        "certificate) by cafile=/tls/ca.pem; set cafile= in the URL to the CA that signed "
        "the broker's certificate"
    )
    mismatch = tls_failure(_verify_error(62, "Hostname mismatch"), options)
    assert mismatch is not None
    assert "does not name broker.internal" in mismatch and "verify_hostname=0" in mismatch
    assert tls_failure(ConnectionRefusedError(111, "refused"), options) is None


def test_a_looping_exception_chain_is_walked_once() -> None:
    # What aiormq raised on a refused client certificate: an error whose context chain
    # comes back to itself. Walking it must end (it once held the event loop forever).
    options = BrokerOptions.from_url("amqps://u:p@broker/")
    outer, inner = ConnectionError("outer"), ConnectionError("inner")
    outer.__context__, inner.__context__ = inner, outer
    assert tls_failure(outer, options) is None
    inner.__cause__ = ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] alert")
    inner.__cause__.reason = "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    failure = tls_failure(outer, options)
    assert failure is not None and "asks for a client certificate" in failure

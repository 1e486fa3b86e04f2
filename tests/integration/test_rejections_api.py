"""`GET /v1/rejections` of the reference API over a real store (SQLite and PostgreSQL): one
customer's key never sees another's rejections, pages are newest first and complete, and
each page follows schemas/rejections/page.json."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from routerd.api import KeyStore, hash_key
from routerd.api.app import create_app, openapi_document
from routerd.client import Publisher
from routerd.pipeline.envelope import Envelope
from routerd.rejections.record import rejection_of
from routerd.rejections.store import RejectionStore
from tests.conftest import ROOT, SHIPPED_CONFIG
from tests.integration.test_rejections_record import pg_url, postgres_database

pytestmark = pytest.mark.anyio

SCHEMAS = ROOT / "schemas" / "rejections"
KEYS = {"cus-a": "key-of-a", "cus-b": "key-of-b", "cus-c": "key-of-c"}


def openapi_page_validator() -> jsonschema.Draft202012Validator:
    """The OpenAPI document's RejectionsPage: it must agree with schemas/rejections/."""
    document = yaml.safe_load(openapi_document())
    uri = "urn:routerd-api"
    registry: Registry = Registry().with_resource(
        uri, Resource.from_contents(document, default_specification=DRAFT202012)
    )
    return jsonschema.Draft202012Validator(
        {"$ref": f"{uri}#/components/schemas/RejectionsPage"}, registry=registry
    )


def page_validator() -> jsonschema.Draft202012Validator:
    resources = {}
    for name in ("rejection.json", "page.json"):
        schema = json.loads((SCHEMAS / name).read_text())
        resources[schema["$id"]] = Resource.from_contents(schema)
    registry: Registry = Registry().with_resources(resources.items())
    page = json.loads((SCHEMAS / "page.json").read_text())
    return jsonschema.Draft202012Validator(page, registry=registry)


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RejectionStore]:
    if request.param == "sqlite":
        opened = RejectionStore.open(str(tmp_path / "r.sqlite3"))
        await opened.migrate()
        yield opened
        await opened.close()
        return
    async with postgres_database() as name:
        opened = RejectionStore.open(pg_url(name))
        await opened.migrate()
        yield opened
        await opened.close()


def rejection(customer: str | None, i: int, at: datetime) -> Envelope:
    body = {"schema_version": 1, "subject": f"n{i}"}
    if customer is not None:
        body["customer_id"] = customer
    return Envelope(
        json.dumps(body).encode(),
        {"x-rejected-reasons": [{"code": "schema_violation", "message": "m", "pointer": ""}]},
        {"message_id": f"{customer}-{i}"},
    )


@pytest.fixture
async def client(store: RejectionStore) -> AsyncIterator[httpx.AsyncClient]:
    now = datetime.now(UTC)
    rows = [
        rejection_of(rejection(customer, i, now - timedelta(hours=i)), now - timedelta(hours=i))
        for customer, count in (("cus-a", 23), ("cus-b", 5), (None, 3))
        for i in range(count)
    ]
    await store.add(rows)
    keys = KeyStore({hash_key(key): customer for customer, key in KEYS.items()})
    publisher = Publisher("amqp://guest:guest@127.0.0.1:1/", config=SHIPPED_CONFIG)
    app = create_app(publisher, keys, store)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        yield http


async def pages(http: httpx.AsyncClient, key: str, **params: str) -> list[dict[str, object]]:
    """Every page of the key's rejections, following next_cursor; each page checked."""
    validators = (page_validator(), openapi_page_validator())
    found: list[dict[str, object]] = []
    cursor: str | None = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        answer = await http.get(
            "/v1/rejections", params=query, headers={"Authorization": f"Bearer {key}"}
        )
        assert answer.status_code == 200, answer.text
        page = answer.json()
        for validator in validators:
            validator.validate(page)
        found.extend(page["rejections"])
        cursor = page["next_cursor"]
        if cursor is None:
            return found


async def test_a_key_sees_only_its_customers_rejections_newest_first(
    client: httpx.AsyncClient,
) -> None:
    a = await pages(client, KEYS["cus-a"], limit="5")
    assert len(a) == 23 and {r["customer_id"] for r in a} == {"cus-a"}
    assert [r["id"] for r in a] == sorted((r["id"] for r in a), reverse=True)
    assert len({r["id"] for r in a}) == 23
    # The query cannot widen what a key sees.
    b = await pages(client, KEYS["cus-b"], customer_id="cus-a", customer="cus-a")
    assert len(b) == 5 and {r["customer_id"] for r in b} == {"cus-b"}
    assert await pages(client, KEYS["cus-c"]) == []
    recent = await pages(client, KEYS["cus-a"], since="150m")
    assert [r["message_id"] for r in recent] == ["cus-a-2", "cus-a-1", "cus-a-0"]


async def test_reasons_have_the_shape_of_the_rejected_queues_header(
    client: httpx.AsyncClient,
) -> None:
    (first, *_) = await pages(client, KEYS["cus-b"])
    assert first["reasons"] == [{"code": "schema_violation", "message": "m", "pointer": ""}]
    assert first["reason"] == "schema_violation"


@pytest.mark.parametrize(
    ("headers", "params", "status", "text"),
    [
        ({}, {}, 401, "missing or unknown API key"),
        ({"Authorization": "Bearer nobody"}, {}, 401, "missing or unknown API key"),
        ({"Authorization": "Bearer key-of-a"}, {"since": "soon"}, 400, "since 'soon'"),
        ({"Authorization": "Bearer key-of-a"}, {"limit": "0"}, 400, "limit '0': use 1..200"),
        ({"Authorization": "Bearer key-of-a"}, {"cursor": "x"}, 400, "next_cursor"),
    ],
)
async def test_a_request_the_endpoint_cannot_answer_says_why(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    params: dict[str, str],
    status: int,
    text: str,
) -> None:
    answer = await client.get("/v1/rejections", params=params, headers=headers)
    assert answer.status_code == status and text in answer.json()["error"]


async def test_without_a_rejections_database_the_endpoint_says_how_to_enable_it() -> None:
    keys = KeyStore({hash_key("key-of-a"): "cus-a"})
    publisher = Publisher("amqp://guest:guest@127.0.0.1:1/", config=SHIPPED_CONFIG)
    transport = httpx.ASGITransport(app=create_app(publisher, keys))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        answer = await http.get("/v1/rejections", headers={"Authorization": "Bearer key-of-a"})
    assert answer.status_code == 404 and "--rejections-db" in answer.json()["error"]

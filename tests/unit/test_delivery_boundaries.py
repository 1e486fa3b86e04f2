"""The layers' import rules: only the broker adapter knows the broker client."""

from __future__ import annotations

import ast
from pathlib import Path

import routerd

PACKAGE = Path(routerd.__file__).parent
BROKER_CLIENTS = ("aiormq", "pamqp", "yarl")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def modules(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def test_only_the_amqp_package_imports_the_broker_client() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(
            name for name in imported_modules(path) if name.split(".")[0] in BROKER_CLIENTS
        )
        for path in modules(PACKAGE)
        if "amqp" not in path.relative_to(PACKAGE).parts
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_delivery_knows_neither_the_broker_adapter_nor_the_metrics() -> None:
    # Delivery logic is broker-independent; what else learns of decisions attaches as a sink.
    for path in modules(PACKAGE / "delivery"):
        for name in imported_modules(path):
            assert not name.startswith(("routerd.amqp", "routerd.observe", "routerd.daemon")), (
                f"{path.name} imports {name}"
            )

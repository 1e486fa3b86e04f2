"""Config bombs: files that would make a YAML or JSON reader expand, recurse or build objects
without bound. `routerd lint` refuses each with a message that names the file and the
position; a running `routerd serve` refuses each on reload and keeps routing with its old
table.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import anyio
import pytest

from routerd.config.model import ConfigError
from routerd.config.source import MAX_DEPTH, MAX_FILE_BYTES, read_document
from tests.factories import encode, valid_v1
from tests.harness.accounting import QueueNames
from tests.harness.broker import Broker, Outgoing
from tests.harness.daemon import metric_sum, running_daemon
from tests.harness.wait import wait_for

ALIAS_BOMB = "\n".join(
    [
        "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]",
        *(
            f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
)
# Each bomb: what is written into the config, and the code lint answers with.
BOMBS: dict[str, tuple[str, str]] = {
    "billion laughs": (ALIAS_BOMB, "yaml-too-large"),
    "deep flow": ("a: " + "[" * 100_000 + "]" * 100_000, "yaml-too-deep"),
    "deep block": ("\n".join(" " * i + "k:" for i in range(3_000)) + " 1", "yaml-too-deep"),
    "python object": ("bomb: !!python/object/apply:os.system [echo pwned]", "yaml-tag"),
    "python object on a mapping": ("bomb: !!python/object:os.system {queue: q}", "yaml-tag"),
    "custom tag": ("bomb: !include other.yaml", "yaml-tag"),
}


def refusal(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        read_document(path)
    (problem,) = caught.value.problems
    assert str(problem).startswith(f"{path}:")
    return problem.code


@pytest.mark.parametrize("name", BOMBS)
def test_bombs_are_refused_by_the_reader(name: str, tmp_path: Path) -> None:
    text, code = BOMBS[name]
    path = tmp_path / "routes.yaml"
    path.write_text(text + "\n")
    assert refusal(path) == code


def test_a_file_over_the_size_limit_is_not_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    with path.open("wb") as out:
        # Sparse: 10 GB on paper, nothing on disk; only the first 8 MiB + 1 byte is read.
        out.truncate(10 * 1024**3)
    assert refusal(path) == "yaml-too-large"
    exact = tmp_path / "exact.yaml"
    exact.write_text("a: " + "x" * (MAX_FILE_BYTES - 4) + "\n")
    assert read_document(exact).data == {"a": "x" * (MAX_FILE_BYTES - 4)}


def test_nesting_up_to_the_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n")
    assert read_document(path).data is not None
    path.write_text("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n")
    assert refusal(path) == "yaml-too-deep"


@pytest.mark.parametrize("depth", [MAX_DEPTH + 5, 100_000])
def test_deep_json_is_refused(tmp_path: Path, depth: int) -> None:
    path = tmp_path / "v1.json"
    path.write_text("[" * depth + "]" * depth)
    assert refusal(path) == "yaml-too-deep"


def test_yaml_own_tags_still_work(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("a: !!str 0777\nb: !!int '12'\nc: !!map {d: !!seq [1]}\n")
    assert read_document(path).data == {"a": "0777", "b": 12, "c": {"d": [1]}}


@pytest.mark.broker
@pytest.mark.anyio
async def test_a_running_daemon_refuses_bombs_and_keeps_routing(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str, log_dir: Path
) -> None:
    config = anyio.Path(isolated_config)
    schema = config.parent.parent / "schemas" / "send_request.v1.yaml"
    originals = {config: await config.read_text(), schema: await schema.read_text()}
    async with running_daemon(isolated_config, amqp_url, log_dir) as daemon:
        for n, (name, (text, code)) in enumerate(BOMBS.items()):
            # Alternately in the route config and in a schema it names.
            target = config if n % 2 == 0 else schema
            before = metric_sum(await daemon.metrics(), "routerd_reloads_total", result="refused")
            offset = len(daemon.log_text())
            await target.write_text(originals[target] + "\n" + text + "\n")
            daemon.send(signal.SIGHUP)
            await daemon.wait_for_log(rf"\[{code}\]", within=60, after=offset)
            await wait_for(
                daemon.metrics,
                lambda m, b=before: metric_sum(m, "routerd_reloads_total", result="refused") > b,
                within=30,
                what=f"{name}: a refused reload counted",
            )
            assert daemon.returncode is None, f"{name} stopped the daemon"
            assert await daemon.ready_status() == 200
            # Still routing with the old table.
            await broker.publish(names.source, [Outgoing(encode(_transactional(n)), {})])
            await wait_for(
                lambda: broker.depth(names.transactional),
                lambda d, sent=n + 1: d == sent,
                within=30,
                what=f"routing after {name}",
            )
            await target.write_text(originals[target])
        assert await daemon.stop(within=30) == 0
        log = daemon.log_text()
    assert "Traceback" not in log
    assert "RecursionError" not in log
    assert json.dumps("pwned") not in log


def _transactional(seed: int) -> dict[str, object]:
    return valid_v1(seed, recipients=1, tags=[], stream="transactional")

"""Can a target's routing key reach any of its queues? The exchange's matching, statically.

A routing key that no binding of the target's queues matches makes every request routed
there come back unroutable, and end in rejected. The routing key is a template, so the
question is whether *some* rendering of it matches: a field renders as any text (dots
included), a partition as digits. The analysis over-approximates what a template can
render, so it only reports a target that truly can never be reached.

Topic bindings are matched word by word (`*` is exactly one word, `#` zero or more), as
RabbitMQ does; direct bindings must equal the key; fanout and headers exchanges ignore it.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from routerd.config.model import RoutingKeyTemplate, Target

__all__ = ["can_reach", "receiving_queues", "unreachable_queues"]


class Word(enum.Enum):
    """What one position of a word sequence may hold, besides a literal word."""

    ONE = "one word"
    ONE_OR_MORE = "one or more words"
    ANY_NUMBER = "zero or more words"


Token = str | Word


@dataclass(frozen=True, slots=True)
class _Piece:
    literal: str = ""
    field: bool = False  # renders as any text
    digits: bool = False  # renders as a number (a partition)


def unreachable_queues(target: Target) -> list[str]:
    """The queues of `target` whose binding no rendering of its routing key can match;
    empty when the exchange ignores routing keys or nothing is bound by routerd."""
    if not target.exchange or target.exchange_type in ("fanout", "headers"):
        return []
    return [
        queue.name
        for queue in target.queues
        if queue.binding_key is not None
        and not can_reach(target.routing_key, queue.binding_key, target.exchange_type)
    ]


def receiving_queues(target: Target, routing_key: str) -> list[str]:
    """The queues of `target` that a publish with this rendered routing key reaches, as far
    as routerd declared their bindings (the default exchange routes by queue name)."""
    if not target.exchange:
        return [routing_key]
    literal = RoutingKeyTemplate(routing_key, (routing_key,))
    return [
        queue.name
        for queue in target.queues
        if target.exchange_type in ("fanout", "headers")
        or can_reach(
            literal,
            routing_key if queue.binding_key is None else queue.binding_key,
            target.exchange_type,
        )
    ]


def can_reach(template: RoutingKeyTemplate, binding_key: str, exchange_type: str) -> bool:
    """Whether some rendering of `template` matches `binding_key` on such an exchange."""
    pieces = _pieces(template)
    if exchange_type == "direct":
        return re.fullmatch(_char_regex(pieces), binding_key, re.DOTALL) is not None
    return _meet(tuple(_template_words(pieces)), tuple(_binding_words(binding_key)))


def _pieces(template: RoutingKeyTemplate) -> list[_Piece]:
    pieces = []
    for part in template.parts:
        if isinstance(part, str):
            pieces.append(_Piece(literal=part))
        elif part == ("$partition",):
            pieces.append(_Piece(digits=True))
        else:
            pieces.append(_Piece(field=True))
    return pieces


def _char_regex(pieces: Sequence[_Piece]) -> str:
    return "".join(
        re.escape(p.literal) if not (p.field or p.digits) else ".*" if p.field else "[0-9]+"
        for p in pieces
    )


def _template_words(pieces: Sequence[_Piece]) -> list[Token]:
    """The rendered key as words: literal words stay, a word holding a field becomes one or
    more words of any text (a field may hold dots), one holding a partition any one word."""
    words: list[Token] = []
    current: list[_Piece] = []

    def close() -> None:
        if any(p.field for p in current):
            words.append(Word.ONE_OR_MORE)
        elif any(p.digits for p in current):
            words.append(Word.ONE)
        else:
            words.append("".join(p.literal for p in current))

    for piece in pieces:
        if piece.field or piece.digits:
            current.append(piece)
            continue
        first, *rest = piece.literal.split(".")
        current.append(_Piece(literal=first))
        for word in rest:
            close()
            current = [_Piece(literal=word)]
    close()
    return words


def _binding_words(binding_key: str) -> list[Token]:
    special = {"*": Word.ONE, "#": Word.ANY_NUMBER}
    return [special.get(word, word) for word in binding_key.split(".")]


def _meet(key: tuple[Token, ...], binding: tuple[Token, ...]) -> bool:
    """Whether one word sequence fits both patterns."""

    @functools.cache
    def meet(i: int, j: int) -> bool:
        if j < len(binding) and binding[j] is Word.ANY_NUMBER and meet(i, j + 1):
            return True
        if i == len(key) or j == len(binding):
            return i == len(key) and j == len(binding)
        ours, theirs = key[i], binding[j]
        if isinstance(ours, str) and isinstance(theirs, str) and ours != theirs:
            return False
        # One word both sides accept: move on, or stay where a side takes more words.
        next_i = (i, i + 1) if ours is Word.ONE_OR_MORE else (i + 1,)
        next_j = (j, j + 1) if theirs is Word.ANY_NUMBER else (j + 1,)
        return any(meet(a, b) for a in next_i for b in next_j if (a, b) != (i, j))

    return meet(0, 0)

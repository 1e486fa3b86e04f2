"""The text form of an explanation: aligned sections a person reads top to bottom.

It renders the same plain data `--format json` prints, so the two never disagree.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from routerd.pipeline.decide import REASONS_HEADER

LABEL_WIDTH = 14
MAX_MESSAGE = 200
# Longer values a test saw are summarised in the text output (JSON has them whole).
MAX_SEEN = 40

_COLORS = {"green": "32", "red": "31", "dim": "2", "bold": "1"}


class _Lines:
    def __init__(self, color: bool) -> None:
        self.lines: list[str] = []
        self.color = color

    def paint(self, text: str, style: str) -> str:
        return f"\033[{_COLORS[style]}m{text}\033[0m" if self.color else text

    def field(self, label: str, value: str, indent: int = 0) -> None:
        self.lines.append(f"{' ' * indent}{label:<{LABEL_WIDTH - indent}} {value}".rstrip())

    def many(self, label: str, values: list[str], indent: int = 0, empty: str = "(none)") -> None:
        self.field(label, values[0] if values else empty, indent)
        pad = " " * (LABEL_WIDTH + 1)
        self.lines.extend(pad + value for value in values[1:])

    def blank(self) -> None:
        self.lines.append("")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render_text(explanation: Mapping[str, Any], *, color: bool = False) -> str:
    out = _Lines(color)
    _request(out, explanation)
    out.blank()
    _schema(out, explanation)
    out.blank()
    _rules(out, explanation)
    out.blank()
    _decision(out, explanation["decision"])
    return out.text()


def _request(out: _Lines, explanation: Mapping[str, Any]) -> None:
    request, config = explanation["request"], explanation["config"]
    out.field("send request", f"{request['source']} ({request['size']} bytes)")
    out.field("published to", f"source queue {explanation['decision']['source']}")
    out.many("properties", _pairs(request["properties"], "="), indent=2)
    out.many("headers", _pairs(request["headers"], "="), indent=2)
    out.field("config", f"{config['file']} (hash {config['hash']})")


def _schema(out: _Lines, explanation: Mapping[str, Any]) -> None:
    schema, stage = explanation["schema"], explanation["stopped_at"]
    reasons = explanation["decision"]["reasons"]
    if schema is None:
        why = {
            "decode": "the body could not be decoded",
            "validate": "no schema fits",
        }.get(stage or "", "the pipeline stopped before choosing one")
        code = f" ({reasons[0]['code']})" if reasons else ""
        out.field("schema", f"none: {why}{code}")
        return
    out.field(
        "schema",
        f"{schema['name']} v{schema['version']} ({schema['file']}), "
        f"version from {schema['version_from']}",
    )
    validation = explanation["validation"]
    if validation["valid"]:
        out.field("validation", out.paint("valid", "green"))
        return
    errors = validation["errors"]
    out.field("validation", out.paint(f"invalid, {len(errors)} error(s)", "red"))
    width = max(len(_pointer(e)) for e in errors)
    keyword_width = max(len(e["keyword"] or "") for e in errors)
    for error in errors:
        keyword = error["keyword"] or ""
        out.lines.append(
            f"  {_pointer(error):<{width}}  {keyword:<{keyword_width}}  {_short(error['message'])}"
        )


def _rules(out: _Lines, explanation: Mapping[str, Any]) -> None:
    rules = explanation["rules"]
    stage = explanation["stopped_at"]
    if stage in ("decode", "validate"):
        out.field("rules", f"not tried: the request was rejected at {stage}")
        return
    out.field("rules", "first match wins")
    name_width = max((len(r["rule"]) for r in rules), default=0)
    for number, rule in enumerate(rules, 1):
        result = rule["result"]
        shown = {
            "matched": out.paint("MATCHED", "green"),
            "no_match": "no match",
            "not_tried": out.paint("not tried", "dim"),
        }[result]
        where = f"category {rule['category']}, target {rule['target']}"
        out.lines.append(f"  {number:>2}. {rule['rule']:<{name_width}}  {shown:<9}  {where}")
        if rule["condition"] is not None:
            rows = _condition_rows(rule["condition"], 0)
            width = max(len(text) for text, _, _ in rows)
            for text, held, seen in rows:
                answer = out.paint("yes", "green") if held else out.paint("no", "red")
                # Pad the plain word, not the colour codes, so the values line up.
                after = f"{'' if held else ' '}  {seen}" if seen else ""
                out.lines.append(f"        {text:<{width}}  {answer}{after}")
    if not any(r["result"] == "matched" for r in rules):
        decision = explanation["decision"]
        fallback = "rejected" if decision["rejected"] else f"unmatched target {decision['target']}"
        out.lines.append(f"  no rule matched: the request goes to {fallback}")


def _condition_rows(node: Mapping[str, Any], depth: int) -> list[tuple[str, bool, str]]:
    rows = [("  " * depth + node["text"], bool(node["matched"]), _seen(node.get("seen")))]
    for child in node.get("children", ()):
        rows.extend(_condition_rows(child, depth + 1))
    return rows


def _seen(seen: Mapping[str, Any] | None) -> str:
    """What a test saw, briefly: `(saw 60)`, `(missing)`."""
    if seen is None:
        return ""
    if not seen["present"]:
        return "(missing)"
    return f"(saw {_brief(seen['value'])})"


def _brief(value: Any) -> str:
    # A whole recipient list would bury the answer; its size is what a person needs.
    text = json.dumps(value, default=str, ensure_ascii=False)
    if len(text) <= MAX_SEEN:
        return text
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    if isinstance(value, dict):
        return f"an object of {len(value)} keys"
    if isinstance(value, str):
        start = json.dumps(value[:MAX_SEEN], ensure_ascii=False)[:-1]
        return f'{start}..." ({len(value)} characters)'
    return text[:MAX_SEEN] + "..."


def _decision(out: _Lines, decision: Mapping[str, Any]) -> None:
    if decision["rejected"]:
        out.field("decision", out.paint("REJECTED", "red"))
    else:
        out.field("decision", out.paint("ROUTED", "green"))
    out.field("target", decision["target"], indent=2)
    exchange = decision["exchange"] or '"" (the default exchange)'
    out.field("exchange", f"{exchange} ({decision['exchange_type']})", indent=2)
    key = decision["routing_key"]
    if partition := decision["partition"]:
        key += (
            f"  (partition {partition['number']} of {partition['count']}, "
            f"by {partition['by']} = {json.dumps(partition['value'])})"
        )
    out.field("routing key", key, indent=2)
    if decision["rejected"]:
        out.many("reasons", [_reason_line(r) for r in decision["reasons"]], indent=2)
    else:
        out.field("category", decision["category"] or "-", indent=2)
        out.field("rule", decision["rule"] or "-", indent=2)
        priority = decision["priority"]
        out.field("priority", "-" if priority is None else str(priority), indent=2)
    out.many("headers", _pairs(decision["headers"], ": "), indent=2)


def _reason_line(reason: Mapping[str, Any]) -> str:
    if reason["pointer"] is not None:
        # Validation errors were listed in full under `validation`.
        return f"{reason['code']} at {_pointer(reason)}"
    return f"{reason['code']}: {_short(reason['message'])}"


def _pairs(values: Mapping[str, Any], sep: str) -> list[str]:
    pairs = []
    for name, value in values.items():
        if name == REASONS_HEADER and isinstance(value, list):
            shown = f"[{len(value)} reason(s), listed above]"
        else:
            shown = value if isinstance(value, str) else json.dumps(value, default=str)
        pairs.append(f"{name}{sep}{_short(shown)}")
    return pairs


def _pointer(reason: Mapping[str, Any]) -> str:
    # The empty pointer is the whole request; say so rather than print nothing.
    pointer = reason["pointer"]
    return "(root)" if pointer == "" else str(pointer or "")


def _short(text: str) -> str:
    """Cut a long message (a schema error can quote a whole field) to what fits a screen."""
    if len(text) <= MAX_MESSAGE:
        return text
    return f"{text[:MAX_MESSAGE]}... ({len(text) - MAX_MESSAGE} more characters)"

"""What ``cachetier`` prints: the status tables, ages and one-line API errors.

Pure: no I/O and no clock reads (``now`` is passed in); objects come in as the
JSON dicts the API server returns, and any field may be missing (a tier the
operator has not reconciled yet has no status), which prints as ``-``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cachetier import names

JsonObj = dict[str, Any]


def human_duration(seconds: float) -> str:
    """An age as ``kubectl get`` prints it (Go's ``duration.HumanDuration``)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if hours < 24 * 365 * 2:
        return f"{days}d"
    years = days // 365
    if hours < 24 * 365 * 8:
        return f"{years}y{days % 365}d" if days % 365 else f"{years}y"
    return f"{years}y"


def age(timestamp: str | None, now: datetime) -> str:
    """The age of an RFC 3339 timestamp at ``now``, or ``-``."""
    if not timestamp:
        return "-"
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "-"
    return human_duration((now - then).total_seconds())


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns left-aligned, three spaces apart, as ``kubectl get`` prints them."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    lines = [
        "   ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [headers, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def field(obj: Any, *path: str) -> Any:
    """``obj[path[0]][path[1]]...``, or None where a level is missing or not a dict."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _condition(tier: JsonObj, kind: str) -> JsonObj | None:
    for condition in field(tier, "status", "conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == kind:
            return condition
    return None


def is_paused(tier: JsonObj) -> bool:
    """Whether the tier carries ``cachetier.io/rollout-paused: "true"``."""
    value = field(tier, "metadata", "annotations", names.ANNOTATION_ROLLOUT_PAUSED)
    return str(value).lower() == "true"


def rollout_cell(tier: JsonObj) -> str:
    """``effective/target% on|off [paused]``: effective from status, the rest from spec."""
    spec = field(tier, "spec", "rollout") or {}
    target = spec.get("percent", 100)
    effective = field(tier, "status", "rollout", "effectivePercent")
    text = f"{'-' if effective is None else effective}/{target}%"
    text += " on" if spec.get("enabled", True) else " off"
    return text + (" paused" if is_paused(tier) else "")


def consumers_cell(tier: JsonObj) -> str:
    """``enabled/selected`` workloads, or ``-`` before the operator reported."""
    consumers = field(tier, "status", "consumers")
    if not isinstance(consumers, dict):
        return "-"
    return f"{consumers.get('enabled', 0)}/{consumers.get('selected', 0)}"


def health_cell(tier: JsonObj) -> str:
    """``up 0.4ms``, ``down`` or ``-``."""
    health = field(tier, "status", "health")
    if not isinstance(health, dict) or not health.get("checkedAt"):
        return "-"
    if not health.get("up"):
        return "down"
    latency = health.get("latencyMs")
    return "up" if latency is None else f"up {latency:.1f}ms"


TIER_HEADERS = ("NAME", "MODE", "PHASE", "READY", "ROLLOUT", "CONSUMERS", "HEALTH", "AGE")


def tier_row(tier: JsonObj, now: datetime) -> list[str]:
    """One row of the ``status`` table, in :data:`TIER_HEADERS` order."""
    ready = _condition(tier, "Ready")
    return [
        str(field(tier, "metadata", "name")),
        str(field(tier, "spec", "mode") or "standalone"),
        str(field(tier, "status", "phase") or "-"),
        str(ready.get("status", "-")) if ready else "-",
        rollout_cell(tier),
        consumers_cell(tier),
        health_cell(tier),
        age(field(tier, "metadata", "creationTimestamp"), now),
    ]


def format_tiers(tiers: Sequence[JsonObj], now: datetime, *, namespaces: bool = False) -> str:
    """The ``status`` table; with ``namespaces`` a NAMESPACE column first."""
    rows = [tier_row(t, now) for t in tiers]
    if not namespaces:
        return format_table(TIER_HEADERS, rows)
    spaced = [
        [str(field(t, "metadata", "namespace")), *r] for t, r in zip(tiers, rows, strict=True)
    ]
    return format_table(("NAMESPACE", *TIER_HEADERS), spaced)


def format_tier_detail(tier: JsonObj, now: datetime) -> str:
    """``status TIER``: the row, then rollout, health, conditions and consumer workloads."""
    parts = [format_tiers([tier], now)]
    spec = field(tier, "spec", "rollout") or {}
    observed = field(tier, "status", "rollout") or {}
    facts = [
        f"{'enabled' if spec.get('enabled', True) else 'rolled back (enabled: false)'}",
        f"target {spec.get('percent', 100)}%",
        f"granularity {spec.get('granularity', 'workload')}",
    ]
    if spec.get("steps"):
        facts.append(f"steps {spec['steps']} every {spec.get('stepInterval', '10m')}")
    if "effectivePercent" in observed:
        facts.append(f"effective {observed['effectivePercent']}%")
    if observed.get("step") is not None:
        facts.append(f"step {observed['step']}")
    if observed.get("reason"):
        facts.append(f"reason {observed['reason']}")
    if is_paused(tier):
        facts.append("paused")
    parts.append("\nRollout:  " + ", ".join(facts))
    health = field(tier, "status", "health")
    if isinstance(health, dict) and health.get("checkedAt"):
        line = f"Health:   {'up' if health.get('up') else 'down'}"
        for key, label, fmt in (
            ("latencyMs", "latency", "{:.2f} ms"),
            ("hitRate", "hit rate", "{:.0%}"),
            ("errorRate", "error rate", "{:.2%}"),
        ):
            if health.get(key) is not None:
                line += f", {label} {fmt.format(health[key])}"
        line += f", checked {age(health['checkedAt'], now)} ago"
        if health.get("message"):
            line += f": {health['message']}"
        parts.append(line)
    conditions = field(tier, "status", "conditions") or []
    if conditions:
        rows = [
            [
                str(c.get("type", "")),
                str(c.get("status", "")),
                str(c.get("reason", "")),
                age(c.get("lastTransitionTime"), now),
                " ".join(str(c.get("message", "")).split()),
            ]
            for c in conditions
        ]
        table = format_table(("TYPE", "STATUS", "REASON", "AGE", "MESSAGE"), rows)
        parts.append("\nConditions:\n" + table)
    workloads = field(tier, "status", "consumers", "workloads") or []
    if workloads:
        rows = [
            [
                str(w.get("kind", "")),
                str(w.get("name", "")),
                "true" if w.get("enabled") else "false",
                "yes" if w.get("pinned") else "no",
            ]
            for w in workloads
        ]
        table = format_table(("KIND", "NAME", "REDIS_ENABLED", "PINNED"), rows)
        parts.append("\nConsumers:\n" + table)
    else:
        parts.append("\nConsumers: none reported yet")
    return "\n".join(parts)


BAR_WIDTH = 30


def percent_bar(effective: int | None, target: int, width: int = BAR_WIDTH) -> str:
    """``[######|.......]``: ``#`` up to the effective percent, ``|`` at the target."""
    filled = round(width * (effective or 0) / 100)
    mark = min(width - 1, round(width * target / 100)) if target < 100 else None
    cells = ["#" if i < filled else "." for i in range(width)]
    if mark is not None and mark >= filled:
        cells[mark] = "|"
    return "[" + "".join(cells) + "]"


def format_watch(tier: JsonObj, events: Sequence[JsonObj], now: datetime, last: int = 6) -> str:
    """One view of ``status TIER --watch``: phase, the rollout as a bar, consumers, health,
    rotations and updates under way, and the tier's last Events (newest last)."""
    name = field(tier, "metadata", "name")
    ns = field(tier, "metadata", "namespace")
    spec = field(tier, "spec", "rollout") or {}
    target = int(spec.get("percent", 100))
    effective = field(tier, "status", "rollout", "effectivePercent")
    ready = _condition(tier, "Ready") or {}
    lines = [
        f"CacheTier {ns}/{name}  mode {field(tier, 'spec', 'mode') or 'standalone'}  "
        f"phase {field(tier, 'status', 'phase') or '-'}  ready {ready.get('status', '-')}"
        f"  generation {field(tier, 'metadata', 'generation')}"
        f" (observed {field(tier, 'status', 'observedGeneration') or '-'})",
        "",
        f"Rollout    {percent_bar(effective, target)} "
        f"{'-' if effective is None else effective}% of {target}%"
        + ("" if spec.get("enabled", True) else "  ROLLED BACK (enabled: false)")
        + ("  paused" if is_paused(tier) else ""),
        f"Consumers  {consumers_cell(tier)} enabled/selected",
    ]
    health = field(tier, "status", "health")
    if isinstance(health, dict) and health.get("checkedAt"):
        parts = ["up" if health.get("up") else "DOWN"]
        for key, label, fmt in (
            ("latencyMs", "latency", "{:.2f} ms"),
            ("hitRate", "hit rate", "{:.0%}"),
            ("errorRate", "error rate", "{:.2%}"),
        ):
            if health.get(key) is not None:
                parts.append(f"{label} {fmt.format(health[key])}")
        lines.append(f"Health     {', '.join(parts)} ({age(health['checkedAt'], now)} ago)")
    else:
        lines.append("Health     not probed yet")
    progressing = _condition(tier, "Progressing") or {}
    if progressing.get("status") == "True":
        lines.append(f"Progress   {progressing.get('reason')}: {progressing.get('message', '')}")
    update = field(tier, "status", "update")
    if isinstance(update, dict) and update.get("total"):
        lines.append(
            f"Update     {update.get('updated', 0)}/{update.get('total')} pods updated"
            + (f", replacing {update['current']}" if update.get("current") else "")
        )
    auth = field(tier, "status", "auth") or {}
    for label, rot in (("Password", auth), ("Operator", auth.get("operator") or {})):
        if rot.get("rotation"):
            lines.append(
                f"{label:<10} rotation {rot['rotation']}"
                + (f" ({rot['stage']})" if rot.get("stage") and rot["rotation"] != "Done" else "")
                + (f" since {age(rot.get('since'), now)}" if rot.get("since") else "")
            )
    shown = sorted(
        events,
        key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""),
    )[-last:]
    lines.append("")
    if shown:
        rows = [
            [
                age(e.get("lastTimestamp") or e.get("eventTime"), now),
                str(e.get("type", "")),
                str(e.get("reason", "")),
                " ".join(str(e.get("message", "")).split())[:100],
            ]
            for e in shown
        ]
        lines.append("Events:\n" + format_table(("AGE", "TYPE", "REASON", "MESSAGE"), rows))
    else:
        lines.append("Events:    none")
    return "\n".join(lines)


def api_error_message(status: int, body: str | None, *, name: str | None, namespace: str) -> str:
    """One line for a non-2xx answer of the API server about CacheTier ``name``."""
    try:
        parsed = json.loads(body or "")
    except ValueError:
        parsed = None
    info: JsonObj = parsed if isinstance(parsed, dict) else {}
    message = " ".join(str(info.get("message") or body or "").split())
    what = f'CacheTier "{name}"' if name else "CacheTiers"
    if status == 404:
        if name and field(info, "details", "name") == name:
            return f'{what} not found in namespace "{namespace}"'
        return (
            f"the API server does not serve {names.PLURAL}.{names.GROUP}: "
            "is the CacheTier CRD installed?"
        )
    if status == 401:
        return "unauthorized: the kubeconfig's credentials were refused"
    if status == 403:
        return f"forbidden: {message}"
    if status == 422:
        return f"rejected by the API server: {message}"
    return f"API server answered {status}: {message or 'no details'}"

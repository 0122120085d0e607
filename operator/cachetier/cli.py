"""``cachetier``: the SRE command line (status, rollout set/pause/resume, rollback).

It works through the Kubernetes API only, like ``kubectl patch``: it reads
CacheTiers and merge-patches them under field manager ``cachetier-cli``; the
operator does the rest. So it needs the same RBAC as the equivalent kubectl
commands (get/list/patch on ``cachetiers.cachetier.io``) and nothing else, and
every change it makes is an ordinary spec or annotation change that GitOps
tools show as drift.

- ``rollout set TIER N``: ``spec.rollout.percent = N`` and ``enabled = true``; when
  the tier is held by an automatic rollback it also writes the annotation
  ``cachetier.io/rearm`` (a new value each time), which re-arms the rollout even
  when the spec does not change. It says what changed, or that nothing did.
- ``rollback TIER``: ``spec.rollout.enabled = false`` (the percent is kept, so
  ``rollout set`` or re-enabling resumes where it was).
- ``rollout pause|resume TIER``: adds or removes the annotation
  ``cachetier.io/rollout-paused: "true"``; while it is present the operator holds
  ``rollout.steps`` on the current step (a rollback still works at once).

Errors (not found, forbidden, rejected, unreachable API, bad kubeconfig) are one
line on stderr and exit code 1; usage errors (bad arguments, an out-of-range
percent) exit 2. Set
``CACHETIER_DEBUG=1`` to get the traceback of an unexpected error.

Layout: argument parsing (pure), then the few functions that call the API,
then the commands and ``main``; what is printed is made in ``cli_format`` (pure).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from cachetier import names
from cachetier.cli_format import (
    JsonObj,
    field,
    format_tier_detail,
    format_tiers,
    format_watch,
)
from cachetier.kube.tier_api import (
    TierApiError,
    connect,
    get_tier,
    list_tiers,
    patch_tier,
    tier_events,
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(Exception):
    """An error the user can act on; printed as one line, exit code 1."""


class UsageError(CliError):
    """Bad arguments (found before any API call): one line, exit code 2, as argparse."""


# --- arguments (pure) ------------------------------------------------------


def default_kubeconfig(environ: dict[str, str] | None = None) -> str:
    """``$KUBECONFIG`` (a path or an ``os.pathsep`` list), else ``~/.kube/config``."""
    env = os.environ if environ is None else environ
    return env.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())


def _global_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "-n",
        "--namespace",
        default=default,
        help="namespace of the CacheTier (default: the kubeconfig context's, else 'default')",
    )
    parser.add_argument(
        "--kubeconfig",
        default=default,
        help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)",
    )


def program_name(argv0: str) -> str:
    """``kubectl cachetier`` when run as the kubectl plugin (``kubectl-cachetier``)."""
    return "kubectl cachetier" if Path(argv0).name.startswith("kubectl-") else "cachetier"


def build_parser(prog: str = "cachetier") -> argparse.ArgumentParser:
    """The argument parser of ``cachetier`` (and of the ``kubectl cachetier`` plugin)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Operate CacheTier rollouts through the Kubernetes API.",
    )
    _global_options(parser, default=None)
    # As with kubectl, -n and --kubeconfig may also follow the command.
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, default=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    status = commands.add_parser(
        "status", help="show tiers, their rollout, consumers and health", parents=[common]
    )
    status.add_argument("tier", nargs="?", metavar="TIER", help="show one tier in detail")
    status.add_argument(
        "-A", "--all-namespaces", action="store_true", help="list tiers of every namespace"
    )
    status.add_argument(
        "-w",
        "--watch",
        action="store_true",
        help="with TIER: a live view (rollout bar, consumers, health, last Events)",
    )
    status.add_argument(
        "--interval", type=float, default=2.0, metavar="S", help="--watch: seconds between views"
    )
    status.add_argument(
        "--count", type=int, default=0, metavar="N", help="--watch: stop after N views (0: never)"
    )

    rollout = commands.add_parser("rollout", help="change the rollout of a tier")
    actions = rollout.add_subparsers(dest="action", required=True, metavar="ACTION")
    set_ = actions.add_parser(
        "set", help="set the target percent (and enable the rollout)", parents=[common]
    )
    set_.add_argument("tier", metavar="TIER")
    set_.add_argument("percent", metavar="N", help="target percent, 0..100")
    for action, text in (
        ("pause", "hold rollout.steps on the current step"),
        ("resume", "let rollout.steps advance again"),
    ):
        actions.add_parser(action, help=text, parents=[common]).add_argument("tier", metavar="TIER")

    rollback = commands.add_parser(
        "rollback", help="switch every consumer off now (rollout.enabled=false)", parents=[common]
    )
    rollback.add_argument("tier", metavar="TIER")
    rotate = commands.add_parser(
        "rotate-password",
        help="rotate the application password with no downtime (generated passwords)",
        parents=[common],
    )
    rotate.add_argument("tier", metavar="TIER")
    rotate.add_argument(
        "--operator",
        action="store_true",
        help="rotate the operator's own password (replication links, Sentinels) instead",
    )
    return parser


def parse_percent(text: str) -> int:
    """A target percent from the command line: ``25`` or ``25%``, 0..100."""
    digits = text.strip().removesuffix("%")
    if not digits.isdigit() or not 0 <= int(digits) <= 100:
        raise UsageError(f"percent must be a whole number from 0 to 100, got {text!r}")
    return int(digits)


# --- commands --------------------------------------------------------------


def build_patch(args: argparse.Namespace) -> JsonObj:
    """The merge patch a changing command sends (pure; validates the percent first)."""
    if args.command == "rollback":
        return {"spec": {"rollout": {"enabled": False}}}
    if args.command == "rotate-password":
        return {}  # the annotation's value is the time: see rotate_patch
    if args.action == "set":
        return {"spec": {"rollout": {"percent": parse_percent(args.percent), "enabled": True}}}
    paused = "true" if args.action == "pause" else None  # null deletes in a merge patch
    return {"metadata": {"annotations": {names.ANNOTATION_ROLLOUT_PAUSED: paused}}}


def auto_rolled_back(tier: JsonObj) -> bool:
    """Whether an automatic rollback holds the tier at its current generation (pure)."""
    held = field(tier, "status", "rollout", "rolledBackGeneration")
    return held is not None and held == field(tier, "metadata", "generation")


def rearm_patch(patch: JsonObj, now: datetime) -> JsonObj:
    """``patch`` plus a new ``cachetier.io/rearm`` value (pure)."""
    meta = dict(patch.get("metadata") or {})
    annotations = dict(meta.get("annotations") or {})
    annotations[names.ANNOTATION_REARM] = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    meta["annotations"] = annotations
    return {**patch, "metadata": meta}


def rotate_patch(now: datetime, operator: bool = False) -> JsonObj:
    """``cachetier.io/rotate-password`` (``rotate-operator-password``) set to a new value
    (pure): the operator rotates."""
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    key = (
        names.ANNOTATION_ROTATE_OPERATOR_PASSWORD if operator else names.ANNOTATION_ROTATE_PASSWORD
    )
    return {"metadata": {"annotations": {key: stamp}}}


def describe_change(
    args: argparse.Namespace,
    result: JsonObj,
    before: JsonObj | None = None,
    *,
    rearmed: bool = False,
) -> str:
    """The line printed after a change, from the patched object the API returned (pure).

    With ``before`` (the tier as it was), ``rollout set`` says when nothing changed.
    """
    name = f'cachetier "{args.tier}"'
    if args.command == "rotate-password" and getattr(args, "operator", False):
        return (
            f"{name} operator password rotation requested: the new one is added beside the "
            "old, the operator, replicas and Sentinels switch to it, then the old one is "
            f"removed (cachetier status {args.tier}; status.auth.operator)"
        )
    if args.command == "rotate-password":
        if field(result, "spec", "auth", "passwordSecretRef"):
            return (
                f"{name} takes its password from a Secret of yours: change that Secret's "
                "content and the operator rotates to it (the annotation is ignored)"
            )
        return (
            f"{name} password rotation requested: the new password is added beside the old, "
            "consumers roll onto it, then the old one is removed "
            f"(cachetier status {args.tier}; status.auth)"
        )
    rollout = field(result, "spec", "rollout") or {}
    if args.command == "rollback":
        kept = rollout.get("percent", 100)
        return f"{name} rolled back: rollout.enabled=false, percent {kept} kept"
    if args.action == "set":
        old = (field(before, "spec", "rollout") or {}) if before is not None else None
        same = old is not None and (old.get("percent", 100), old.get("enabled", True)) == (
            rollout.get("percent"),
            rollout.get("enabled", True),
        )
        if rearmed:
            verb = "stays at" if same else "set to"
            return (
                f"{name} rollout {verb} {rollout.get('percent')}% (enabled) and re-armed "
                f"after the automatic rollback ({names.ANNOTATION_REARM})"
            )
        if same:
            return f"{name} rollout already at {rollout.get('percent')}% (enabled): nothing changed"
        return f"{name} rollout set to {rollout.get('percent')}% (enabled)"
    if args.action == "pause":
        return f'{name} rollout paused: steps hold until "cachetier rollout resume"'
    return f"{name} rollout resumed"


def run(args: argparse.Namespace, now: datetime) -> str:
    """Carry out a parsed command; returns what to print on stdout."""
    if getattr(args, "watch", False) and args.tier is None:
        raise UsageError("status --watch needs a TIER")
    patch = None if args.command == "status" else build_patch(args)  # bad input: no API call
    api, context_namespace = connect(args.kubeconfig or default_kubeconfig())
    namespace: str = args.namespace or context_namespace
    if patch is not None and args.command == "rollout" and args.action == "set":
        before = get_tier(api, namespace, args.tier)
        rearm = auto_rolled_back(before)
        if rearm:
            patch = rearm_patch(patch, now)
        result = patch_tier(api, namespace, args.tier, patch)
        return describe_change(args, result, before, rearmed=rearm)
    if args.command == "rotate-password":
        patch = rotate_patch(now, operator=args.operator)
    if patch is not None:
        return describe_change(args, patch_tier(api, namespace, args.tier, patch))
    if args.tier is not None and getattr(args, "watch", False):
        return watch(api, namespace, args)
    if args.tier is not None:
        return format_tier_detail(get_tier(api, namespace, args.tier), now)
    scope = None if args.all_namespaces else namespace
    tiers = list_tiers(api, scope)
    if not tiers:
        where = "any namespace" if scope is None else f"namespace {namespace}"
        return f"No CacheTiers found in {where}."
    return format_tiers(tiers, now, namespaces=scope is None)


CLEAR = "\x1b[H\x1b[2J"


def watch(
    api: object,
    namespace: str,
    args: argparse.Namespace,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """``status TIER --watch``: a fresh view every ``--interval`` seconds (the screen
    cleared on a terminal, views separated otherwise) until Ctrl-C or ``--count``."""
    shown = 0
    tty = sys.stdout.isatty()
    while True:
        tier = get_tier(api, namespace, args.tier)
        view = format_watch(tier, tier_events(api, namespace, args.tier), datetime.now(UTC))
        print((CLEAR if tty else ("" if shown == 0 else "\n---\n")) + view, flush=True)
        shown += 1
        if args.count and shown >= args.count:
            return ""
        try:
            sleep(max(0.2, args.interval))
        except KeyboardInterrupt:
            return ""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cachetier`` console script; returns the exit code."""
    args = build_parser(program_name(sys.argv[0])).parse_args(argv)  # exits 2 on a usage error
    try:
        print(run(args, datetime.now(UTC)))
    except (CliError, TierApiError) as exc:
        print(f"cachetier: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # no tracebacks for SREs; CACHETIER_DEBUG=1 shows them
        if os.environ.get("CACHETIER_DEBUG"):
            raise
        detail = " ".join(str(exc).split())
        print(f"cachetier: error: unexpected {type(exc).__name__}: {detail}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

"""Write crds/cachetier.yaml from the pydantic models (``make crds``).

Usage::

    python hack/gen_crds.py            # (re)write the file
    python hack/gen_crds.py --check    # exit 1 with a diff when the file is stale

The CRD itself is built by ``cachetier.api.crd``; this script only does the I/O.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from cachetier.api.crd import render_crd_yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / "crds" / "cachetier.yaml"
CHART_OUTPUT = REPO_ROOT / "charts" / "cachetier" / "crds" / "cachetier.yaml"


def main(argv: list[str] | None = None) -> int:
    """Write or check the CRD file; return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 and print a diff if the file differs from the models",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the CRD file")
    args = parser.parse_args(argv)

    wanted = render_crd_yaml()
    outputs: list[Path] = [args.output]
    if args.output == DEFAULT_OUTPUT:
        outputs.append(CHART_OUTPUT)  # the Helm chart ships the same file
    status = 0
    for output in outputs:
        status |= _write_or_check(output, wanted, args.check)
    return status


def _write_or_check(output: Path, wanted: str, check: bool) -> int:
    current = output.read_text() if output.exists() else ""
    if check:
        if current == wanted:
            return 0
        sys.stdout.writelines(
            difflib.unified_diff(
                current.splitlines(keepends=True),
                wanted.splitlines(keepends=True),
                fromfile=f"{output} (checked in)",
                tofile=f"{output} (from the models)",
            )
        )
        print(f"{output} is stale: run `make crds` and commit the result.", file=sys.stderr)
        return 1
    if current != wanted:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(wanted)
        print(f"wrote {output}", file=sys.stderr)
    else:
        print(f"{output} is up to date", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

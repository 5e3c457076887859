"""``hvdr diagram``: write the lifecycle diagrams generated from the model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from hvdr import diagrams
from hvdr.status import UsageError, examples

FORMATS = ("svg", "png", "dot", "mermaid", "markdown")


def register(subparsers: Any) -> None:
    """Add the ``diagram`` subcommand."""
    parser = subparsers.add_parser(
        "diagram",
        help="write the lifecycle as SVG/PNG/DOT/Mermaid, from the model",
        epilog=examples(
            ("hvdr diagram", "SVG, DOT, Mermaid and the Markdown table in diagrams/"),
            (
                "hvdr diagram --format png --out /tmp/pictures",
                "a PNG only, somewhere else",
            ),
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--format",
        action="append",
        choices=FORMATS,
        help="repeat for several (default: svg, dot, mermaid and markdown)",
    )
    parser.add_argument("--out", type=Path, default=Path("diagrams"), help="directory")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Write the diagrams; without ``dot``, write DOT and Mermaid and say how to."""
    console = Console()
    out: Path = args.out
    if out.exists() and not out.is_dir():
        msg = f"--out {str(out)!r} is a file; give a directory"
        raise UsageError(msg)
    if not out.parent.is_dir():
        msg = f"--out {str(out)!r}: its folder {str(out.parent)!r} does not exist"
        raise UsageError(msg)
    formats = set(args.format or ("svg", "dot", "mermaid", "markdown"))
    images = formats & {"svg", "png"}
    if images and not diagrams.dot_available():
        console.print(
            f"[yellow]Graphviz's 'dot' is not installed: writing DOT and Mermaid only. "
            f"For {', '.join(sorted(images))}: apt-get install graphviz[/yellow]"
        )
        formats = (formats - images) | {"dot", "mermaid"}
    for path in diagrams.write(args.out, formats):
        console.print(f"wrote {path}")
    return 0

"""Write the docs' tables of numbers from the code, in place, between their marker comments.

    python scripts/gen_tables.py           # rewrite every table that differs from what the code gives
    python scripts/gen_tables.py --check   # change nothing; exit 1 naming each stale table

A table lives in README.md or a docs page between ``<!-- begin: NAME -->`` and ``<!-- end: NAME -->``.
Every figure comes from the models' registrations (``@register_model``) and from ``cnnzoo.report`` on
the meta device, so no weights are allocated and the whole run takes a few seconds.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout: import this checkout's cnnzoo
    sys.path.insert(0, str(ROOT))

from cnnzoo import count_parameters, list_models  # noqa: E402
from cnnzoo.models.registry import model_info  # noqa: E402
from cnnzoo.report import all_models_rows, build_on_meta, natural_input, render, render_rows, summarize  # noqa: E402


def _summary_line(name: str) -> str:
    """The builder's docstring up to its figures: 'ResNet-18: 11,689,512 parameters.' -> 'ResNet-18'."""
    first = model_info(name).builder.__doc__.strip().splitlines()[0]
    return re.split(r": \d", first)[0].rstrip(".")


def _zoo_order(name: str) -> tuple:
    """Family, then the CIFAR-sized models before the ImageNet ones, then depth: resnet20 ... resnet152."""
    family = re.match(r"[a-z]+", name)[0]
    return family, model_info(name).input_size, [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def zoo_table() -> str:
    """One row per registered model: what it is, its parameters (default arguments), natural and smallest input."""
    lines = ["| name | architecture | parameters | natural input | smallest input |", "|---|---|---:|---|---:|"]
    for name in sorted(list_models(), key=_zoo_order):
        model = build_on_meta(name)
        info = model_info(name)
        lines.append(
            f"| `{name}` | {_summary_line(name)} | {count_parameters(model):,} | "
            f"{model.in_channels}x{info.input_size}x{info.input_size} | {info.min_size} |"
        )
    return "\n".join(lines) + "\n"


def published_table() -> str:
    """What ``python -m cnnzoo.report --all --format markdown`` prints: ours against the published figures."""
    header, rows = all_models_rows()
    return render_rows(header, rows, "markdown")


def _alexnet_report() -> str:
    model = build_on_meta("alexnet")
    return render(summarize(model, natural_input("alexnet", model), name="alexnet"))


def alexnet_report() -> str:
    """What ``python -m cnnzoo.report alexnet`` prints."""
    return "```\n" + _alexnet_report() + "```\n"


def alexnet_report_head() -> str:
    """Its first rows, for the README."""
    return "```\n" + "".join(_alexnet_report().splitlines(keepends=True)[:5]) + "...\n```\n"


TABLES: dict[str, tuple[str, Callable[[], str]]] = {
    "zoo-table": ("docs/zoo.md", zoo_table),
    "published-figures": ("docs/reports.md", published_table),
    "report-alexnet": ("docs/reports.md", alexnet_report),
    "report-alexnet-head": ("README.md", alexnet_report_head),
}


def _markers(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- begin: {re.escape(name)} -->\n)(.*?)(<!-- end: {re.escape(name)} -->)", re.S)


def committed(name: str, root: Path = ROOT) -> str:
    """The table ``name`` as its docs page holds it now."""
    path, _ = TABLES[name]
    match = _markers(name).search((root / path).read_text())
    if match is None:
        raise ValueError(f"{path} has no '<!-- begin: {name} -->' ... '<!-- end: {name} -->' markers")
    return match[2].strip("\n") + "\n"


def generated(name: str) -> str:
    """The table ``name`` as the code gives it now."""
    return TABLES[name][1]()


def write(name: str, body: str, root: Path = ROOT) -> None:
    path = root / TABLES[name][0]
    text = path.read_text()
    path.write_text(_markers(name).sub(lambda m: f"{m[1]}\n{body}\n{m[3]}", text, count=1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/gen_tables.py", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table is stale")
    p.add_argument("names", nargs="*", metavar="NAME", help=f"only these tables ({', '.join(TABLES)}; default: all)")
    args = p.parse_args(argv)
    for name in args.names:
        if name not in TABLES:
            p.error(f"unknown table {name!r}; the tables are {', '.join(TABLES)}")
    stale = []
    for name in args.names or TABLES:
        body = generated(name)
        if body != committed(name):
            stale.append(name)
            if not args.check:
                write(name, body)
    for name in stale:
        verb = "is stale" if args.check else "rewritten"
        print(f"{TABLES[name][0]}: table {name} {verb}", file=sys.stderr if args.check else sys.stdout)
    if args.check and stale:
        print("run python scripts/gen_tables.py to rewrite them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

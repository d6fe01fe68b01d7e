"""`bin/bench`: run the SPEC §8 benchmarks and print each figure beside its ceiling.

bin/bench              # the full suite (under 10 minutes), writes bench/results.json
bin/bench --quick      # a smoke run in seconds; writes .local/bench/quick-results.json
bin/bench --profile    # also samples the web and worker processes with py-spy
bin/bench --fresh      # rebuild the 10M-event feed and retention datasets instead of reusing them
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from bench.env import LOCAL, ROOT
from bench.report import Figure, as_markdown, as_text, figures, machine_line, with_figures
from bench.suite import PHASES, Options, run_suite

DOCS = ROOT / "docs" / "benchmarks.md"
TABLE_MARKERS = ("<!-- bench:table -->", "<!-- /bench:table -->")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bin/bench", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, seconds: a smoke run")
    parser.add_argument("--fresh", action="store_true", help="rebuild the feed and retention datasets")
    parser.add_argument("--profile", action="store_true", help="py-spy the web and worker processes")
    parser.add_argument("--out", type=Path, help="where results.json goes")
    parser.add_argument("--update-docs", action="store_true", help="put the table in docs/benchmarks.md")
    parser.add_argument("--database-prefix", default=os.environ.get("BENCH_DATABASE", "tl_bench"))
    parser.add_argument("--drop-databases", action="store_true", help="drop the bench databases at the end")
    parser.add_argument(
        "--only", help=f"comma-separated phases to run, of {','.join(PHASES)} (default: all)", default=""
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment for the web and worker processes, e.g. GUNICORN_WORKER_CLASS=gthread",
    )
    return parser.parse_args(argv)


def update_docs(markdown: str) -> None:
    text = DOCS.read_text()
    start, end = TABLE_MARKERS
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    DOCS.write_text(pattern.sub(lambda _: f"{start}\n{markdown}\n{end}", text))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    options = Options(
        quick=args.quick,
        fresh=args.fresh,
        profile=args.profile,
        database_prefix=args.database_prefix,
        drop_databases=args.drop_databases,
        only=tuple(name for name in args.only.split(",") if name) or PHASES,
        env=dict(pair.split("=", 1) for pair in args.env),
    )
    unknown = set(options.only) - set(PHASES)
    if unknown:
        raise SystemExit(f"unknown phases: {', '.join(sorted(unknown))}; choose from {', '.join(PHASES)}")
    out: Path = args.out or (LOCAL / "quick-results.json" if args.quick else ROOT / "bench" / "results.json")
    results = with_figures(run_suite(options))
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".json.tmp")
    partial.write_text(json.dumps(results, indent=2, default=str) + "\n")
    partial.replace(out)
    rows = [Figure(**{k: v for k, v in row.items() if k != "verdict"}) for row in results["figures"]]
    assert [r.name for r in rows] == [r.name for r in figures(results["details"])]
    print()
    print(as_text(rows))
    print()
    print("Machine:", machine_line(results["meta"]))
    print(f"Results: {out}")
    if args.update_docs and not args.quick:
        update_docs(as_markdown(rows) + "\n\n" + "Machine: " + machine_line(results["meta"]))
        print(f"Table written into {DOCS.relative_to(ROOT)}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])

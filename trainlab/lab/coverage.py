"""docs/lab.md's summary rows, coverage table and experiment sections, generated from the
experiments' own claim lists (``results.json``), so the page states what was measured.

    python -m trainlab.lab.coverage runs/lab/*                     # summary rows of these runs
    python -m trainlab.lab.coverage --section runs/lab/adaptive    # one experiment's section
    python -m trainlab.lab.coverage --coverage docs/lab.md          # the coverage table of the page

The coverage table is computed from the page's summary table (one row per claim, copied from
each run's results), which ``tests/test_lab.py`` checks against the table printed on the page.
"""
from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

from trainlab.lab.common import AGREES, CLAIM_COLUMNS, DISAGREES, PARTLY, markdown_table

VERDICTS = (AGREES, PARTLY, DISAGREES)


SUMMARY_ROW = re.compile(r"^\| \[([\w-]+)\]\(#[\w-]+\) \| (.+) \| (agrees|partly|does not agree) \|$")


def summary_rows(result: dict) -> str:
    """The summary-table rows of one run: experiment, claim, verdict."""
    name = result["experiment"]
    return "\n".join(f"| [{name}](#{name}) | “{c['claim']}” | {c['verdict']} |" for c in result["claims"])


def claims_in_summary(page: str) -> list[tuple[str, str, str]]:
    """(experiment, claim, verdict) for every row of a page's summary table."""
    return [m.groups() for m in map(SUMMARY_ROW.match, page.splitlines()) if m]


def coverage_rows(claims: list[tuple[str, str, str]]) -> list[dict]:
    """One row per experiment (claims and verdict counts, in order of appearance), a total last."""
    counts: dict[str, Counter] = {}
    for experiment, _, verdict in claims:
        counts.setdefault(experiment, Counter())[verdict] += 1
    rows = [{"experiment": f"[{e}](#{e})", "claims": sum(c.values()), **{v: c.get(v, 0) for v in VERDICTS}}
            for e, c in counts.items()]
    rows.append({"experiment": "**total**", "claims": sum(r["claims"] for r in rows),
                 **{v: sum(r[v] for r in rows) for v in VERDICTS}})
    return rows


def coverage_markdown(page: str) -> str:
    """The coverage table of a page, from its summary table."""
    return markdown_table(["experiment", "claims", *VERDICTS], coverage_rows(claims_in_summary(page)))


def section_markdown(result: dict, run_dir: Path, img: str) -> str:
    """An experiment's section: title, setup, measured table, claims table, plots (as
    ``{img}/{experiment}-{plot}.png``, where the caller copies them)."""
    name = result["experiment"]
    quoted = [{**c, "claim": f"“{c['claim']}”"} for c in result["claims"]]
    parts = [f"## {name}", "", f"*{result['title']}* — `trainlab lab {name}` ({result['wall_seconds']:.0f} s at "
             "default size on the shared machine)", "", f"**How it was measured.** {result['setup']}", "",
             markdown_table(result["columns"], result["rows"]), "", markdown_table(CLAIM_COLUMNS, quoted), ""]
    parts += [f"![{name}: {Path(p).stem}]({img}/{name}-{Path(p).stem}.png)" for p in result["plots"]]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", help="lab experiment directories (each with results.json), or with "
                                             "--coverage the docs page")
    p.add_argument("--section", action="store_true", help="print each run's docs section instead of its summary rows")
    p.add_argument("--coverage", action="store_true", help="print the coverage table of the page given")
    p.add_argument("--img", default="img/lab", help="where the docs keep the plots (for --section)")
    args = p.parse_args(argv)
    if args.coverage:
        print(coverage_markdown(Path(args.paths[0]).read_text()))
        return 0
    results = [json.loads((Path(d) / "results.json").read_text()) for d in args.paths]
    show = (lambda r, d: section_markdown(r, Path(d), args.img)) if args.section else (lambda r, d: summary_rows(r))
    print("\n".join(show(r, d) for r, d in zip(results, args.paths)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

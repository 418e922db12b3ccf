"""End-to-end catalog search on a simulated dataset with a trained run (issue: identify a coin).

Indexes the catalog images of half the run's held-out coins, then searches with captures of
(a) indexed coins (closed set: top-1) and (b) coins left out of the index (open set: how often
the verdict wrongly says `match`), and checks that the top-1 answer survives rotation, rescaling,
an off-centre placement on a larger canvas, JPEG compression and conversion to grey.

    python benchmarks/search_e2e.py --run runs/demo --data data/demo
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.search_eval import search_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="run directory (pipeline train)")
    parser.add_argument("--data", type=Path, action="append", required=True, help="dataset(s)")
    parser.add_argument("--queries", type=int, default=400, help="queries per set, at most")
    parser.add_argument("--robustness-photos", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--appearance-only",
        action="store_true",
        help="rank by the embedding alone, ignoring the run's outline weight (RUN/fusion.json)",
    )
    args = parser.parse_args()
    report = search_report(
        args.run,
        args.data,
        seed=args.seed,
        max_queries=args.queries,
        robustness_photos=args.robustness_photos,
        outline=not args.appearance_only,
    )
    print(json.dumps(report, indent=2))
    print(
        f"indexed {report['indexed_coins']} coins ({report['catalog_entries']} catalog entries); "
        f"closed-set top-1 {100 * (report['closed_set_top1'] or 0):.1f}% "
        f"over {report['closed_set_queries']} queries (outline weight {report['outline_weight']:g})"
    )
    if "open_set_false_match_rate" in report:
        print(
            f"open set ({report['left_out_coins']} coins not indexed): false `match` rate "
            f"{100 * report['open_set_false_match_rate']:.1f}% over {report['open_set_queries']} queries"
        )
    if "robustness_top1_unchanged" in report:
        print(f"top-1 unchanged under photo transforms: {report['robustness_top1_unchanged']}")


if __name__ == "__main__":
    main()

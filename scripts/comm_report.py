"""Communication-cost report: every op kind of every suite against its closed form, one
train_xor.py iteration by label and critical path, growth sweeps, LAN/WAN projections
checked against simulated runs. Writes OUT/report.md, OUT/report.json and OUT/*.png.

    python scripts/comm_report.py --out reports/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import trio
from seed_net import DATA, TARGET, loss_fn, make_net

from actors import configure_logging
from training.report import Workload, build, config, write

TRAIN_XOR = Workload("train_xor.py", make_net, DATA, TARGET, loss_fn, 0.1)
"""scripts/train_xor.py's defaults: the seed's Net and init, data, loss, lr 0.1."""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("reports"), help="output directory")
    ap.add_argument("--quick", action="store_true", help="a fast subset (a few seconds)")
    args = ap.parse_args(argv)
    configure_logging(level="warning")
    report = trio.run(build, config(args.quick), TRAIN_XOR)
    write(report, args.out)
    bad = report.mismatches
    print(f"wrote {args.out}/report.md, report.json and plots in {report.meta['runtime_s']} s")
    for line in bad:
        print(f"MISMATCH: {line}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""Communication-cost report: every op kind of every suite against its closed form, one
train_xor.py iteration by label and critical path, growth sweeps, LAN/WAN projections
checked against simulated runs, SecureNN's / Falcon's networks A-D. Writes OUT/report.md,
OUT/report.json and OUT/*.png (with --networks-only: OUT/networks.md and OUT/networks.json).

    python scripts/comm_report.py --out reports/
    python scripts/comm_report.py --networks-only --networks A,D --out /tmp/nets
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import _checkout  # noqa: F401  (this checkout's packages first on sys.path)
import trio
from seed_net import DATA, TARGET, loss_fn, make_net

from actors import configure_logging
from training.report import NETWORKS, Workload, build, build_networks, config, write, write_networks

TRAIN_XOR = Workload("train_xor.py", make_net, DATA, TARGET, loss_fn, 0.1)
"""scripts/train_xor.py's defaults: the seed's Net and init, data, loss, lr 0.1."""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("reports"), help="output directory")
    ap.add_argument("--quick", action="store_true", help="a fast subset (a few seconds)")
    ap.add_argument(
        "--networks",
        help="comma-separated SecureNN/Falcon networks (A,B,C,D) or 'none' "
        "(default: A-D, quick: D at batch 8)",
    )
    ap.add_argument("--batch", type=int, help="batch of the networks (default 128, quick 8)")
    ap.add_argument(
        "--networks-only",
        action="store_true",
        help="measure only the networks; write OUT/networks.md and OUT/networks.json",
    )
    args = ap.parse_args(argv)
    cfg = config(args.quick)
    if args.networks is not None:
        names = tuple(s.strip() for s in args.networks.split(",") if s.strip() not in ("", "none"))
        unknown = [s for s in names if s not in NETWORKS]
        if unknown:
            ap.error(f"unknown networks {unknown}; known: {', '.join(NETWORKS)}")
        cfg = replace(cfg, networks=names)
    if args.batch is not None:
        cfg = replace(cfg, network_batch=args.batch)
    configure_logging(level="warning")
    if args.networks_only:
        report = trio.run(build_networks, cfg)
        write_networks(report, args.out)
        print(f"wrote {args.out}/networks.md, networks.json in {report.meta['runtime_s']} s")
    else:
        report = trio.run(build, cfg, TRAIN_XOR)
        write(report, args.out)
        print(f"wrote {args.out}/report.md, report.json and plots in {report.meta['runtime_s']} s")
    bad = report.mismatches
    for line in bad:
        print(f"MISMATCH: {line}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

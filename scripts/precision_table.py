"""The seed's "effect of fixed precision" experiment, measured.

Trains the seed's Net with its deterministic init for 20 iterations at several fixed-point
settings and prints a Markdown table of the largest |encrypted - plaintext| loss gap and
the final losses. Every figure comes from this run.
"""

from __future__ import annotations

import argparse
import contextlib
import io

import _checkout  # noqa: F401  (this checkout's packages first on sys.path)
import trio
from train_xor import parse_args, train

from actors import configure_logging

SETTINGS = [(10, 2), (10, 3), (10, 4), (2, 16)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parties", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=20)
    args = ap.parse_args()
    configure_logging(level="warning")
    rows = []
    for base, precision in SETTINGS:
        run = parse_args(
            [
                "--base", str(base),
                "--precision", str(precision),
                "--parties", str(args.parties),
                "--iterations", str(args.iterations),
                "--quiet",
            ]
        )  # fmt: skip
        with contextlib.redirect_stdout(io.StringIO()):  # train() prints its own summary
            result = trio.run(train, run)
        records, plain = result["records"], result["plain"]
        rows.append(
            (base, precision, result["max_gap"], records[-1].loss, plain[-1])  # type: ignore[index]
        )
    print()
    print(f"{args.parties} parties, {args.iterations} iterations, lr 0.1, seed init")
    print()
    print(
        "| base | precision | largest abs(encrypted - plaintext) | final encrypted | final plaintext |"
    )
    print("|---|---|---|---|---|")
    for base, precision, gap, enc, pl in rows:
        print(f"| {base} | {precision} | {gap:.5f} | {enc:.4f} | {pl:.4f} |")


if __name__ == "__main__":
    main()

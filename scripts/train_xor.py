"""The seed experiment: train the seed's Net on secret-shared data with a crypto provider.

Prints, per iteration, the encrypted loss beside the plaintext loss (same init, same
data, plain PyTorch in this process), the measured online rounds, online and offline
bytes and time; then a summary. Run with --help for the flags.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from contextlib import AbstractAsyncContextManager

import _checkout  # noqa: F401  (this checkout's packages first on sys.path)
import torch
import trio
from seed_net import DATA, TARGET, loss_fn, make_net, plaintext_losses

from actors import NetworkProfile, configure_logging
from protocols.errors import NumericError
from protocols.suite import SUITES, describe, get_suite, suite_arg
from training import SGD, Cluster, TrainingCoordinator, launch
from training.progress import ProgressBar

PARTY_NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    launch.add_encoding_args(ap, base=10)
    ap.add_argument("--parties", type=int, default=2, help="number of parties >= 2 (default 2)")
    ap.add_argument("--iterations", type=int, default=20, help="SGD iterations (default 20)")
    ap.add_argument("--lr", type=float, default=0.1, help="learning rate (default 0.1)")
    ap.add_argument(
        "--latency-ms", type=float, default=0.0, help="simulated party-to-party latency"
    )
    ap.add_argument("--log-json", metavar="PATH", help="write structlog JSON lines to PATH")
    ap.add_argument(
        "--protocols",
        default="default",
        type=suite_arg,
        help=f"protocol suite: {', '.join(sorted(SUITES))} or default@N (default: 2 parties "
        "compare by FSS up to a limit that follows the link's latency, 205 elements per op "
        "in one process, and by the carry tree above; see README)",
    )
    ap.add_argument(
        "--init-seed", type=int, default=None, help="seed of torch's init with --random-init"
    )
    ap.add_argument(
        "--insecure-seed",
        type=int,
        default=None,
        help="seed the cluster's PRGs: reproducible shares and material, INSECURE",
    )
    ap.add_argument(
        "--random-init", action="store_true", help="torch's random init, not the seed's"
    )
    ap.add_argument(
        "--transport",
        choices=["memory", "tcp"],
        default="memory",
        help="memory: every actor in this process; tcp: the parties and the provider as "
        "separate processes on 127.0.0.1 over mutual TLS (fresh certificates)",
    )
    ap.add_argument(
        "--data-owners",
        metavar="DATA,TARGETS",
        help="parties that hold the data and the targets and share them themselves "
        "(e.g. alice,bob); by default the coordinator shares both",
    )
    launch.add_check_args(ap)
    ap.add_argument(
        "--replay",
        action="store_true",
        help="replay the recorded step (training.replay): later steps issue the same ops "
        "without the frontend; the per-phase split is then not measured",
    )
    ap.add_argument("--quiet", action="store_true", help="only the summary")
    args = ap.parse_args(argv)
    launch.check_script_args(ap, args)
    if args.log_json is not None:  # a usage error now, not a traceback after set-up
        folder = os.path.dirname(os.path.abspath(args.log_json))
        if not os.path.isdir(folder):
            ap.error(f"--log-json {args.log_json}: the folder {folder} does not exist")
    if not 2 <= args.parties <= len(PARTY_NAMES):
        ap.error(f"--parties must be between 2 and {len(PARTY_NAMES)}")
    if args.iterations < 1:
        ap.error("--iterations must be >= 1")
    if args.latency_ms < 0:
        ap.error("--latency-ms must be >= 0")
    if args.transport == "tcp" and args.latency_ms:
        ap.error("--latency-ms simulates links in memory; it does not apply to --transport tcp")
    if args.data_owners is not None:
        owners = args.data_owners.split(",")
        if len(owners) != 2 or not all(o in PARTY_NAMES[: args.parties] for o in owners):
            ap.error(f"--data-owners takes two of {PARTY_NAMES[: args.parties]}, comma-separated")
        args.data_owners = owners
        if args.insecure_seed is not None:
            ap.error(
                "--insecure-seed and --data-owners together are refused: whoever knows the "
                "seed can derive every mask, so the owners' data would not be hidden"
            )
    return args


OWNERS_ALLOW = {"coordinator": {"max_elements": 1}}
"""With --data-owners, each owner's own rule: the coordinator may receive 1-element values
derived from its data (the loss), nothing larger (not the predictions, not the model)."""


def open_cluster(
    args: argparse.Namespace, names: list[str], profile: NetworkProfile | None
) -> AbstractAsyncContextManager[Cluster]:
    """The cluster of this run: in memory, or node processes over TLS (always stopped)."""
    owned: dict[str, dict[str, torch.Tensor]] = {}
    if args.data_owners:
        owned.setdefault(args.data_owners[0], {})["features"] = DATA
        owned.setdefault(args.data_owners[1], {})["targets"] = TARGET
    return launch.open_cluster(
        args.transport,
        names,
        "james",
        seed=args.insecure_seed,
        protocols=args.protocols,
        network=profile,
        data=owned,
        reveal=dict.fromkeys(owned, OWNERS_ALLOW),
        report=None if args.quiet else print,
        **launch.check_options(args),
    )


async def train(args: argparse.Namespace) -> dict[str, object]:
    net = make_net(args.random_init, args.init_seed)
    plain = plaintext_losses(net, args.iterations, args.lr)
    profile = NetworkProfile(latency=args.latency_ms / 1000) if args.latency_ms else None
    names = PARTY_NAMES[: args.parties]
    show_progress = not args.quiet and args.iterations > 50
    async with open_cluster(args, names, profile) as cluster:
        if args.data_owners:
            x = cluster.share_from(args.data_owners[0], "features", args.precision, args.base)
            y = cluster.share_from(args.data_owners[1], "targets", args.precision, args.base)
        else:
            x = cluster.share(DATA, precision=args.precision, base=args.base)
            y = cluster.share(TARGET, precision=args.precision, base=args.base)
        model = cluster.share_module(net, precision=args.precision, base=args.base)
        opt = SGD(model.parameters(), lr=args.lr)
        coord = TrainingCoordinator(cluster, model, opt, loss_fn, replay=args.replay)
        await cluster.flush()
        setup = cluster.stats()
        if not args.quiet and not show_progress:
            print(
                f"{'iter':>4} {'encrypted':>10} {'plaintext':>10} {'|gap|':>8} "
                f"{'rounds':>6} {'online B':>9} {'offline B':>9} {'ms':>7}"
            )
        records = []
        t0 = time.perf_counter()
        # the library's progress bar (stderr, on a terminal only); the table otherwise
        with ProgressBar(
            args.iterations, "encrypted SGD", None if show_progress else False
        ) as progress:
            for i in range(args.iterations):
                last = i == args.iterations - 1
                # with --data-owners the predictions are the owners' to reveal, not ours
                rec = await coord.step(x, y, reveal_predictions=last and not args.data_owners)
                records.append(rec)
                gap = abs(rec.loss - plain[i])
                if show_progress:
                    progress.advance(1, {"loss": rec.loss}, shown={"loss": f"{rec.loss:.4f}"})
                elif not args.quiet:
                    print(
                        f"{i:>4} {rec.loss:>10.4f} {plain[i]:>10.4f} {gap:>8.4f} "
                        f"{rec.online_rounds:>6} {rec.online_bytes:>9} {rec.offline_bytes:>9} "
                        f"{rec.seconds * 1000:>7.1f}"
                    )
        elapsed = time.perf_counter() - t0
        total = cluster.stats() - setup
        checker = cluster.checker
        replayed = coord.replay
    gaps = [abs(r.loss - p) for r, p in zip(records, plain, strict=True)]
    worst = max(range(len(gaps)), key=gaps.__getitem__)
    phases = records[-1].phases
    preds = records[-1].predictions
    print()
    print(
        f"parties {args.parties}, protocols {protocols_line(args)}, base {args.base}, "
        f"precision {args.precision}, lr {args.lr}, transport {args.transport}"
        + (
            f" ({args.parties + 1} node processes, mutual TLS)"
            if args.transport == "tcp"
            else " (one process)"
        )
        + (
            f", data from {args.data_owners[0]}, targets from {args.data_owners[1]}"
            if args.data_owners
            else ""
        )
    )
    print(f"final loss        {records[-1].loss:.4f} (plaintext {plain[-1]:.4f})")
    print(f"largest |gap|     {gaps[worst]:.4f} at iteration {worst}")
    split = ", ".join(f"{k} {v.online_rounds}" for k, v in phases.items())
    print(
        f"per iteration     {records[-1].online_rounds} online rounds "
        + (f"({split})" if split else "(phases not measured with --replay)")
        + f", {records[-1].online_bytes} online bytes, {records[-1].offline_bytes} offline bytes"
    )
    print(
        f"totals            {total.online_rounds} rounds, {total.online_bytes} online B, "
        f"{total.offline_bytes} offline B, {total.output_bytes} output B, "
        f"{total.control_bytes} control B, {total.messages} messages"
    )
    if len(records) > 1:  # the first step also loads the kernels (and, over tcp, warms up)
        later = statistics.median(r.seconds for r in records[1:])
        print(
            f"time              {1000 * later:.1f} ms per iteration (the median after iteration "
            f"0, which took {1000 * records[0].seconds:.1f} ms; {elapsed:.2f} s in all)"
        )
    else:
        print(f"time              {1000 * elapsed:.1f} ms for the one iteration")
    if replayed is not None:
        why = "" if replayed.why_not is None else f"; the last recorded: {replayed.why_not}"
        print(
            f"replay            {replayed.replayed} of {len(records)} steps replayed, "
            f"{replayed.recorded} recorded{why}"
        )
    if preds is not None:
        shown = ", ".join(f"{v:.3f}" for v in preds.reshape(-1).tolist())
        print(f"predictions       [{shown}] for targets {TARGET.reshape(-1).tolist()}")
    elif args.data_owners:
        print(
            f"predictions       not revealed: {' and '.join(args.data_owners)} allow the "
            "coordinator 1-element values derived from their data (the loss) only"
        )
    if checker is not None:  # the closing flush has checked the last ops too
        print(checker.summary())
    return {"records": records, "plain": plain, "max_gap": gaps[worst], "total": total}


def protocols_line(args: argparse.Namespace) -> str:
    """The suite as asked for, and with 3+ parties what it runs as (protocols.suite)."""
    if args.parties <= 2:
        return str(args.protocols)
    return describe(get_suite(str(args.protocols)), args.parties)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(json_path=args.log_json, level="warning" if not args.log_json else "info")
    try:
        trio.run(train, args)
    except NumericError as exc:  # a wrapped or out-of-range value: say it, no traceback
        print(f"train_xor.py: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Communication-cost report: rounds and bytes per protocol, per training iteration, growth.

Writes OUT/report.md, OUT/report.json (every figure) and OUT/*.png. With no --log it runs
every measurement itself, including the train_xor.py loop with structlog JSON lines (kept
as OUT/train_xor.jsonl and read back for the training section); with --log PATH the
training section is read from a train_xor.py --log-json log instead. Examples:

    python scripts/comm_report.py --out reports/
    python scripts/train_xor.py --log-json run.jsonl && python scripts/comm_report.py --log run.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import trio
from report_analysis import (
    LoggedIteration,
    iterations_from_log,
    log_has_dealer_bytes,
    log_has_tensor_ids,
    read_log,
)
from report_costs import LAN, WAN, Profile
from report_measure import (
    PARTY_NAMES,
    measure_protocols,
    measure_training,
    mlp_workload,
    sweep_point,
    timed_runs,
)
from report_render import render_markdown, render_plots
from report_training import (
    projection_section,
    protocols_section,
    sweep_projections,
    sweep_section,
    training_section,
)

from actors import NetworkProfile, configure_logging

DEFAULT_BATCHES = [2**i for i in range(10)]  # 1 .. 512
DEFAULT_WIDTHS = [2**i for i in range(1, 10)]  # 2 .. 512
BARRIERS = "optional phase_barriers=True"
"""Names the timing runs in the coordinator's optional mode (not train_xor.py's default)."""


def _one(values: list[int], name: str) -> int:
    if len(values) != 1:
        raise ValueError(f"{name}: timed iterations differ in rounds waited: {values}")
    return values[0]


def _log_notes(log_iters: list[LoggedIteration]) -> list[str]:
    """What a log-only training section cannot show, given the fields the log has."""
    ops = [o for it in log_iters for o in it.ops]
    notes = [
        "Training section read from a log: it has no local ops, no dealer requests and no "
        "input/output/control traffic, so closed forms per op, local-op counts and the traffic "
        "tables are missing, and wire bytes exclude message headers."
    ]
    if log_has_tensor_ids(ops):
        notes.append(
            "Critical path from the log: linked by tensor ids where an op consumes another "
            "logged op's output, by depths where local ops (not logged) sit in between (certain "
            "when one op ended at that depth, a pick among equals otherwise; rounds exact)."
        )
    else:
        notes.append(
            "This log has no input/output tensor ids: the critical path is a chain linked by "
            "depths (exact in rounds, a pick among ops of equal depth)."
        )
    if not log_has_dealer_bytes(ops):
        notes.append("This log has no dealer bytes per op: dealer bytes are given per phase only.")
    if not all(it.by_field for it in log_iters):
        notes.append("Some ops carry no iteration field: those were assigned by file order.")
    return notes


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join((__doc__ or "").splitlines()[1:]),
    )
    ap.add_argument(
        "--out", type=Path, default=Path("reports"), help="output directory (default reports/)"
    )
    ap.add_argument(
        "--log",
        type=Path,
        metavar="PATH",
        help="read the training section from this train_xor.py --log-json log",
    )
    ap.add_argument(
        "--parties",
        type=_ints,
        default=[2, 3],
        help="party counts for the protocol table (default 2,3)",
    )
    ap.add_argument(
        "--train-parties",
        type=int,
        default=2,
        help="parties for train_xor, timing and sweeps (default 2; with --log: from the log)",
    )
    ap.add_argument(
        "--iterations",
        type=int,
        default=20,
        help="train_xor.py iterations to run and log (default 20, as train_xor.py)",
    )
    ap.add_argument(
        "--elements",
        type=int,
        default=1024,
        help="elements per protocol measurement (default 1024)",
    )
    ap.add_argument(
        "--matmul", type=int, default=16, help="matmul measured on m x m matrices (default 16)"
    )
    ap.add_argument(
        "--batches", type=_ints, default=None, help="batch sizes to sweep (default 1,2,4,...,512)"
    )
    ap.add_argument(
        "--widths", type=_ints, default=None, help="hidden widths to sweep (default 2,4,...,512)"
    )
    ap.add_argument(
        "--sweep-step",
        type=int,
        default=1,
        help="keep every k-th default sweep value, always keeping the largest (default 1: all)",
    )
    ap.add_argument(
        "--sweep-parties",
        type=_ints,
        default=None,
        help="party counts for the sweeps (default: --train-parties and 3)",
    )
    ap.add_argument(
        "--sweep-width",
        type=int,
        default=2,
        help="hidden width of the batch sweep (default 2, train_xor's)",
    )
    ap.add_argument(
        "--sweep-batch",
        type=int,
        default=4,
        help="batch of the width sweep (default 4, train_xor's)",
    )
    ap.add_argument(
        "--in-features", type=int, default=2, help="input features of the sweep MLP (default 2)"
    )
    ap.add_argument(
        "--sweep-iterations", type=int, default=2, help="iterations per sweep point (default 2)"
    )
    ap.add_argument("--no-sweeps", action="store_true", help="skip the sweeps")
    ap.add_argument(
        "--timing-iterations",
        type=int,
        default=12,
        help="timed iterations per timing run (default 12)",
    )
    ap.add_argument(
        "--timing-warmup", type=int, default=2, help="untimed iterations first (default 2)"
    )
    ap.add_argument(
        "--latency-ms",
        type=float,
        default=20.0,
        help="simulated latency of the projection check (default 20)",
    )
    ap.add_argument(
        "--bandwidth-batch",
        type=int,
        default=512,
        help="batch of the MLP run that checks the bandwidth term (default 512)",
    )
    ap.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed the clusters' PRGs (deterministic, INSECURE; costs do not depend on it)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="small settings for tests: 64 elements, 4 iterations, short sweeps and timing",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.elements = min(args.elements, 64)
        args.matmul = min(args.matmul, 4)
        args.iterations = min(args.iterations, 4)
        args.batches = args.batches or [1, 4, 16, 64]
        args.widths = args.widths or [2, 8, 32]
        args.timing_iterations = min(args.timing_iterations, 4)
        args.timing_warmup = min(args.timing_warmup, 1)
        args.bandwidth_batch = min(args.bandwidth_batch, 128)
        args.sweep_parties = args.sweep_parties or [args.train_parties]
        args.sweep_iterations = 1
    if min(args.parties) < 2 or max(args.parties) > len(PARTY_NAMES):
        ap.error(f"--parties must be between 2 and {len(PARTY_NAMES)}")
    for name in (
        "iterations",
        "elements",
        "matmul",
        "sweep_step",
        "timing_iterations",
        "sweep_iterations",
    ):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.timing_warmup < 0 or args.latency_ms <= 0:
        ap.error("--timing-warmup must be >= 0 and --latency-ms > 0")
    if args.log is not None and not args.log.is_file():
        ap.error(f"--log {args.log}: no such file")
    return args


def _subsample(values: list[int], step: int) -> list[int]:
    kept = values[::step]
    return kept if kept[-1] == values[-1] else [*kept, values[-1]]


async def _warm_up() -> None:
    """torch's first int64 kernels take seconds to load: pay that outside every timing."""
    await timed_runs(2, [("warm-up", None, False)], 1, 1)


async def build(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    out: Path = args.out
    notes: list[str] = []
    await _warm_up()

    rows = []
    for n in args.parties:
        rows += await measure_protocols(n, args.elements, args.matmul, args.seed)
    protocols = protocols_section(rows, args.matmul)

    run = None
    if args.log is not None:
        log_path = args.log
        events = read_log(log_path)
        source = f"the log {log_path}"
        log_iters = iterations_from_log(events)
        actors = {a for it in log_iters for o in it.ops for a in o.bytes_sent}
        n_train = len(actors) if actors else args.train_parties
        notes += _log_notes(log_iters)
    else:
        n_train = args.train_parties
        log_path = out / "train_xor.jsonl"
        run = await measure_training(n_train, args.iterations, log_path, seed=args.seed)
        events = read_log(log_path)
        source = (
            f"the JSON-lines log {log_path.name} of this run of train_xor.py's loop, with the "
            f"network's envelopes recorded beside it"
        )
        log_iters = iterations_from_log(events)
    training = training_section(log_iters, events, run, source)

    lat = args.latency_ms / 1000
    sims: list[tuple[str, Profile, bool]] = [
        (f"{args.latency_ms:g} ms latency", Profile("sim", lat, None), False),
        (f"{args.latency_ms:g} ms latency, {BARRIERS}", Profile("sim", lat, None), True),
        ("LAN profile (0.2 ms, 10 Gbit/s)", LAN, False),
        ("WAN profile (40 ms, 100 Mbit/s)", WAN, False),
    ]
    configs: list[tuple[str, NetworkProfile | None, bool]] = [
        ("compute", None, False),
        (f"compute, {BARRIERS}", None, True),
    ]
    configs += [
        (name, NetworkProfile(latency=p.latency, bandwidth=p.bandwidth), b) for name, p, b in sims
    ]
    timing = await timed_runs(n_train, configs, args.timing_warmup, args.timing_iterations)
    barrier_run = timing[f"compute, {BARRIERS}"]
    training["optional_phase_barriers"] = {
        "run": f"compute, {BARRIERS}",
        "rounds_waited": _one(barrier_run["rounds_waited"], BARRIERS),
        "by_phase": barrier_run["rounds_waited_by_phase"],
    }
    simulated: list[dict[str, Any]] = [
        {
            "name": name,
            "workload": "train_xor",
            "profile": prof,
            "run": timing[name],
            "base": timing[f"compute, {BARRIERS}" if b else "compute"],
            "rounds_waited": _one(timing[name]["rounds_waited"], name),
        }
        for name, prof, b in sims
    ]
    # The bandwidth term is negligible for train_xor: check it where it is not.
    bw_prof = Profile("narrow", 1e-3, 10e6)
    bw_batch = args.bandwidth_batch
    bw_name = f"MLP batch {bw_batch}: 1 ms, 10 Mbit/s"
    bw = await timed_runs(
        n_train,
        [("compute", None, False), (bw_name, NetworkProfile(latency=1e-3, bandwidth=10e6), False)],
        args.timing_warmup,
        args.timing_iterations,
        workload=lambda: mlp_workload(bw_batch, args.sweep_width, args.in_features),
    )
    simulated.append(
        {
            "name": bw_name,
            "workload": f"MLP({args.in_features}, {args.sweep_width}), batch {bw_batch}",
            "profile": bw_prof,
            "run": bw[bw_name],
            "base": bw["compute"],
            "rounds_waited": _one(bw[bw_name]["rounds_waited"], bw_name),
        }
    )
    timing |= {f"{k} [{bw_name}]": v for k, v in bw.items()}
    projection = projection_section(timing["compute"], training["offline_bytes"], simulated)

    sweeps = None
    if not args.no_sweeps:
        batches = args.batches or _subsample(DEFAULT_BATCHES, args.sweep_step)
        widths = args.widths or _subsample(DEFAULT_WIDTHS, args.sweep_step)
        sweep_parties = args.sweep_parties or sorted({n_train, 3})
        bpts, wpts = [], []
        for n in sweep_parties:
            for b in batches:
                bpts.append(
                    await sweep_point(
                        n, b, args.sweep_width, args.in_features, args.sweep_iterations
                    )
                )
            for w in widths:
                wpts.append(
                    await sweep_point(
                        n, args.sweep_batch, w, args.in_features, args.sweep_iterations
                    )
                )
        sweep_projections(bpts)
        sweep_projections(wpts)
        full = batches == DEFAULT_BATCHES and widths == DEFAULT_WIDTHS
        sweeps = {
            "in_features": args.in_features,
            "iterations": args.sweep_iterations,
            "batch_sweep_width": args.sweep_width,
            "width_sweep_batch": args.sweep_batch,
            "batches": batches,
            "widths": widths,
            "subsample_note": (
                "Full sweeps (batch 1..512, width 2..512, powers of 2)."
                if full
                else f"Sweeps subsampled for speed: batches {batches}, widths {widths}."
            ),
            "batch": sweep_section(bpts, "batch"),
            "width": sweep_section(wpts, "width"),
        }
    else:
        notes.append("Sweeps skipped (--no-sweeps).")

    main_check = projection["checks"][0]
    excess = main_check["measured_s"] - main_check["projected_s"]
    notes.append(
        f"At {args.latency_ms:g} ms the measured time exceeds the projection by "
        f"{1000 * excess:.1f} ms per iteration, {1000 * excess / max(main_check['rounds_waited'], 1):.2f} ms "
        "per round: each round's local work (decode, compute, encode) and the simulator's "
        "timer wake-ups add to the latency instead of overlapping with it."
    )
    notes += [
        "Projection: rounds x latency + the busiest party's online bytes on the wire "
        "(payload + headers) / bandwidth + local compute time measured without latency. "
        "Per party, not per link: with 3+ parties a party's bytes go to several peers, which "
        "the simulator carries on separate links in parallel, a real NIC in series.",
        "Dealer material, inputs and commands are not on the projected path: the simulator "
        "delivers provider and coordinator messages instantly (offline preprocessing, local "
        "coordinator). The dealer column shows what moving that material would cost.",
        "The simulated network delays each party-to-party message by the latency (plus "
        "bytes/bandwidth with a busy link), so the measured times include trio's timer "
        "granularity and the local work that does not overlap with waiting.",
        "Timings are medians on this machine, which other processes share; rounds and bytes "
        "are exact and deterministic. The compute time of a sweep point is the fastest of its "
        f"{args.sweep_iterations} iteration(s) in one cluster, so its projections are noisier "
        "than the paired runs of section 4.",
    ]
    runtime = time.perf_counter() - t0
    return {
        "meta": {
            "command": " ".join(["python", "scripts/comm_report.py", *sys.argv[1:]])
            if args.argv is None
            else " ".join(["python", "scripts/comm_report.py", *args.argv]),
            "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "runtime_s": runtime,
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "log": str(log_path.name if run is not None else log_path),
            "settings": {
                k: (str(v) if isinstance(v, Path) else v)
                for k, v in vars(args).items()
                if k != "argv"
            },
        },
        "protocols": protocols,
        "training": training,
        "timing": timing,
        "projection": projection,
        "sweeps": sweeps,
        "notes": notes,
    }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and obj != obj:  # NaN
        return None
    return obj


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.argv = argv
    configure_logging(level="warning")
    args.out.mkdir(parents=True, exist_ok=True)
    report = _jsonable(trio.run(build, args))
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    plots = render_plots(report, args.out)
    (args.out / "report.md").write_text(render_markdown(report, plots), encoding="utf-8")
    print(f"wrote {args.out / 'report.md'}, report.json and {', '.join(plots)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

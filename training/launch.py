"""A script's cluster, in memory or as node processes on this host over mutual TLS.

``open_cluster("memory", ...)`` is :meth:`Cluster.start`: every actor in this process.
``open_cluster("tcp", ...)`` runs the parties and the provider as separate node processes
(``python -m actors.node``) on 127.0.0.1: fresh CA and certificates and a cluster file in
a temporary folder, one process per node (its log in that folder), the coordinator here
(:meth:`Cluster.connect`). The nodes are always stopped on the way out; nonzero exit
codes are passed to ``report`` (e.g. ``print``). The nodes inherit this process's working
directory, so a relative path (a checkpoint directory) means the same folder to them; a
script with a checkpoint folder passes it (``checkpoints``): a node writes nowhere else.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import torch

from actors import NetworkProfile
from actors.config import write_local_config
from actors.node import save_tensors, spawn_nodes, stop_nodes
from actors.policy import policy_from_table
from protocols import FixedPoint
from protocols.errors import EncodingError

from .cluster import Cluster, default_precision

TRANSPORTS = ("memory", "tcp")


def _value_bound(text: str) -> str | float | None:
    if text in ("headroom", "none"):
        return None if text == "none" else text
    try:
        bound = float(text)
    except ValueError:
        bound = -1.0
    if not bound > 0:
        raise argparse.ArgumentTypeError(f"'headroom', 'none' or a positive number, not {text!r}")
    return bound


def add_check_args(ap: argparse.ArgumentParser) -> None:
    """The scripts' flags for the numeric safety nets (``check_options`` reads them)."""
    ap.add_argument(
        "--check",
        action="store_true",
        help="check mode: every op's result is revealed to the coordinator and compared "
        "with plaintext torch; the first op off tolerance is named (slower)",
    )
    ap.add_argument(
        "--value-bound",
        type=_value_bound,
        default="headroom",
        help="largest |value| a reveal accepts: 'headroom' (default: the ring's), a "
        "number, or 'none'",
    )


def add_encoding_args(ap: argparse.ArgumentParser, base: int = 10) -> None:
    """``--base`` and ``--precision`` (default: the library's for the base: 3 digits in
    base 10, 16 bits in base 2); :func:`check_script_args` validates and resolves them."""
    ap.add_argument("--base", type=int, default=base, help=f"fixed-point base (default {base})")
    ap.add_argument(
        "--precision",
        type=int,
        default=None,
        help="fractional digits in the base (default: 3 in base 10, 16 bits in base 2)",
    )


def check_script_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse a bad base, precision or learning rate as a usage error (not a traceback
    later), and fill in the base's default precision."""
    if args.precision is None:
        try:
            args.precision = default_precision(args.base)
        except EncodingError as exc:
            ap.error(str(exc))
    try:
        FixedPoint(args.base, args.precision)
    except EncodingError as exc:
        ap.error(str(exc))
    lr = getattr(args, "lr", None)
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        ap.error(f"--lr must be a positive number, got {lr}")


def check_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"check": args.check, "value_bound": args.value_bound}


@asynccontextmanager
async def open_cluster(
    transport: str,
    parties: Sequence[str],
    provider: str = "james",
    *,
    seed: int | None = None,
    protocols: str = "default",
    network: NetworkProfile | None = None,
    data: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    reveal: Mapping[str, Mapping[str, Mapping[str, int]]] | None = None,
    checkpoints: str | Path | None = None,
    report: Callable[[str], object] | None = None,
    **options: Any,
) -> AsyncIterator[Cluster]:
    """The cluster of a run (see module doc). ``data``: each party's named local tensors
    (``cluster.share_from``); ``reveal``: each party's own rules, party -> recipient ->
    limits (``{"alice": {"coordinator": {"max_elements": 1}}}``; here one user speaks for
    every party, so they go into each node's own table); ``checkpoints``: the folder the
    nodes may write checkpoint files in; ``network`` simulates links in memory only;
    ``options`` go to :meth:`Cluster.start` / :meth:`Cluster.connect` (``check``, ...).
    With a ``seed`` the nodes are started with ``--allow-insecure-seed``."""
    owned = {k: dict(v) for k, v in (data or {}).items()}
    rules = {p: {to: dict(lim) for to, lim in r.items()} for p, r in (reveal or {}).items()}
    if transport == "memory":
        policies = {p: policy_from_table(r, f"{p}'s reveal rules") for p, r in rules.items()}
        async with Cluster.start(
            list(parties),
            provider=provider,
            seed=seed,
            network=network,
            protocols=protocols,
            data=owned,
            reveal_policy=policies,
            **options,
        ) as cluster:
            yield cluster
        return
    if transport != "tcp":
        raise ValueError(f"transport must be one of {TRANSPORTS}, got {transport!r}")
    if network is not None:
        raise ValueError("a simulated network profile does not apply to transport 'tcp'")
    with tempfile.TemporaryDirectory(prefix="smpc-tls-") as tmp:
        files = {}
        for owner, tensors in owned.items():
            files[owner] = Path(tmp) / f"{owner}.npz"
            save_tensors(files[owner], tensors)
        config = write_local_config(
            tmp, parties, provider, data=files, checkpoints=checkpoints, reveal=rules
        )
        procs = spawn_nodes(
            config, [*parties, provider], log_dir=tmp, allow_insecure_seed=seed is not None
        )
        try:
            async with Cluster.connect(
                config, seed=seed, protocols=protocols, **options
            ) as cluster:
                yield cluster
        finally:
            codes = stop_nodes(procs)
            if any(codes.values()) and report is not None:
                report(f"node exit codes: {codes}")

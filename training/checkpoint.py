"""Checkpoints of a shared model and its optimiser, without revealing anything.

``save_checkpoint`` has every party write **its own** shares of the model's parameters
and buffers and of the optimiser's shared state (momentum, Adam moments) to
``<dir>/<party>.shares.pt`` (runtime command ``save``); the coordinator writes only public
metadata to ``<dir>/checkpoint.json``: names, shapes, fixed-point encodings, the
optimiser's hyper-parameters and step counts, the model's plaintext buffers (BatchNorm's
``num_batches_tracked``: public counts), the next op id, and the caller's ``extra`` (e.g.
the epoch). No file holds a plaintext weight or two parties' shares.

``load_checkpoint`` rebuilds the shared model from a plaintext *template* of the same
architecture (only its structure is used: no weight of it is shared or sent), has every
party read its own file back (command ``load``), and restores the optimiser state. The
op ids continue from the saved ones, so with a seeded cluster (``seed=``) a resumed run
draws the same masks and dealer material as the uninterrupted run and continues
identically, provided it issues the same ops.

The parties write to a directory the coordinator names, on their own file system: with
``Cluster.start`` (one process) that is this machine's; with node processes on this host
(``training.launch``, ``Cluster.connect``) each node writes its own file there too
(give an absolute path: a relative one is relative to each node's working directory).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from protocols import FixedPoint

from .tensor import SharedTensor

META = "checkpoint.json"
VERSION = 1


def _collect(
    model: nn.Module, optimizer: Any
) -> tuple[list[SharedTensor], list[dict[str, Any]], dict[str, Any] | None]:
    tensors: list[SharedTensor] = []
    entries: list[dict[str, Any]] = []

    def add(name: str, t: SharedTensor) -> None:
        tensors.append(t)
        entries.append(
            {
                "name": name,
                "shape": list(t.shape),
                "base": t.fp.base,
                "precision": t.fp.precision,
                "prec": t.prec,
                "requires_grad": bool(t.requires_grad),
            }
        )

    for name, p in model.named_parameters():
        if not isinstance(p, SharedTensor):
            raise TypeError(f"parameter {name!r} is not shared: checkpoint a shared model")
        add(name, p)
    for name, b in model.named_buffers():
        if isinstance(b, SharedTensor):
            add(name, b)
    if optimizer is None:
        return tensors, entries, None
    index = {id(p): i for i, (_, p) in enumerate(model.named_parameters())}
    groups = []
    state: dict[str, dict[str, Any]] = {}
    for group in optimizer.param_groups:
        groups.append(
            {
                "params": [index[id(p)] for p in group["params"]],
                **{k: v for k, v in group.items() if k != "params"},
            }
        )
        for p in group["params"]:
            st = optimizer.state.get(id(p), {})
            public: dict[str, Any] = {}
            for key in sorted(st):
                value = st[key]
                if isinstance(value, SharedTensor):
                    add(f"optimizer.{index[id(p)]}.{key}", value)
                    public[key] = {"shared": len(tensors) - 1}
                elif isinstance(value, int | float | bool):
                    public[key] = value
                else:
                    raise TypeError(f"optimizer state {key!r} of type {type(value).__name__}")
            state[str(index[id(p)])] = public
    opt = {"class": type(optimizer).__name__, "param_groups": groups, "state": state}
    return tensors, entries, opt


async def save_checkpoint(
    cluster: Any,
    directory: str | Path,
    model: nn.Module,
    optimizer: Any = None,
    *,
    extra: dict[str, Any] | None = None,
) -> None:
    """Save ``model`` (and ``optimizer``) as shares, one file per party (see module doc)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors, entries, opt = _collect(model, optimizer)
    cluster.save_shares([t.tid for t in tensors], directory)
    await cluster.flush()
    meta = {
        "version": VERSION,
        "parties": list(cluster.parties),
        "tensors": entries,
        "public_buffers": _public_buffers(model),
        "optimizer": opt,
        "next_op": cluster._next_op,
        "extra": extra or {},
    }
    (directory / META).write_text(json.dumps(meta, indent=1))


def _public_buffers(model: nn.Module) -> dict[str, dict[str, Any]]:
    """The model's plaintext buffers (BatchNorm's ``num_batches_tracked``, which
    ``momentum=None`` divides by): public already, so their values go in the metadata."""
    out: dict[str, dict[str, Any]] = {}
    for name, b in model.named_buffers():
        if isinstance(b, torch.Tensor):
            out[name] = {"dtype": str(b.dtype).removeprefix("torch."), "values": b.tolist()}
    return out


def _restore_public(model: nn.Module, saved: dict[str, dict[str, Any]]) -> None:
    for mname, sub in model.named_modules():
        prefix = f"{mname}." if mname else ""
        for bname, b in list(sub._buffers.items()):
            entry = saved.get(prefix + bname)
            if entry is None or not isinstance(b, torch.Tensor):
                continue
            value = torch.tensor(entry["values"], dtype=getattr(torch, entry["dtype"]))
            if tuple(value.shape) != tuple(b.shape):
                raise ValueError(
                    f"checkpoint buffer {prefix + bname} is {tuple(value.shape)}, the "
                    f"template's {tuple(b.shape)}"
                )
            sub._buffers[bname] = value


@dataclass
class Resumed:
    """What :func:`load_checkpoint` restored."""

    model: nn.Module
    optimizer: Any
    extra: dict[str, Any]


async def load_checkpoint(
    cluster: Any,
    directory: str | Path,
    template: nn.Module,
    make_optimizer: Callable[[Any], Any] | None = None,
) -> Resumed:
    """Rebuild the shared model on the structure of ``template`` and, with
    ``make_optimizer(params)``, its optimiser, from a checkpoint (see module doc)."""
    directory = Path(directory)
    meta = json.loads((directory / META).read_text())
    if meta.get("version") != VERSION:
        raise ValueError(f"{directory}: unsupported checkpoint version {meta.get('version')}")
    if list(meta["parties"]) != list(cluster.parties):
        raise ValueError(
            f"{directory} was written by parties {meta['parties']}, this cluster has "
            f"{list(cluster.parties)}"
        )
    entries = meta["tensors"]
    tids = cluster.load_shares(directory, len(entries))
    handles: list[SharedTensor] = []
    for e, tid in zip(entries, tids, strict=True):
        t = SharedTensor(cluster, tid, e["shape"], FixedPoint(e["base"], e["precision"]), e["prec"])
        t.requires_grad = bool(e["requires_grad"])
        handles.append(t)
    by_name = {e["name"]: h for e, h in zip(entries, handles, strict=True)}
    model = copy.deepcopy(template)
    for mname, sub in model.named_modules():
        prefix = f"{mname}." if mname else ""
        for pname, p in list(sub._parameters.items()):
            if p is None:
                continue
            h = by_name.get(prefix + pname)
            if h is None or tuple(h.shape) != tuple(p.shape):
                raise ValueError(
                    f"checkpoint has no parameter {prefix + pname} of {tuple(p.shape)}"
                )
            sub._parameters[pname] = h  # type: ignore[assignment]
        for bname, b in list(sub._buffers.items()):
            if b is not None and prefix + bname in by_name:
                sub._buffers[bname] = by_name[prefix + bname]  # type: ignore[assignment]
    _restore_public(model, meta.get("public_buffers", {}))
    optimizer = None
    opt = meta["optimizer"]
    if make_optimizer is not None:
        if opt is None:
            raise ValueError(f"{directory} holds no optimizer state")
        params = list(model.parameters())
        optimizer = make_optimizer(params)
        if type(optimizer).__name__ != opt["class"]:
            raise ValueError(f"checkpoint optimizer is {opt['class']}, got {type(optimizer)}")
        if len(optimizer.param_groups) != len(opt["param_groups"]):
            raise ValueError("the optimizer's parameter groups differ from the checkpoint's")
        for group, saved in zip(optimizer.param_groups, opt["param_groups"], strict=True):
            if [id(p) for p in group["params"]] != [id(params[i]) for i in saved["params"]]:
                raise ValueError("the optimizer's parameter groups differ from the checkpoint's")
            group.update({k: v for k, v in saved.items() if k != "params"})
        for i, st in opt["state"].items():
            p = params[int(i)]
            optimizer.state[id(p)] = {
                k: handles[v["shared"]] if isinstance(v, dict) else v for k, v in st.items()
            }
    await cluster.flush()
    cluster.resume_op_ids(meta["next_op"])
    return Resumed(model, optimizer, meta["extra"])

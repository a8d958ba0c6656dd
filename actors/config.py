"""The cluster file (TOML): who the actors are, where they listen, which certificates they use.

Example (``cluster.toml``; relative paths are relative to this file)::

    parties = ["alice", "bob"]          # in this order: the actor earlier in the list dials
    provider = "james"                  # the crypto provider (dealer), after the parties
    coordinator = "coordinator"         # dials every other actor, listens nowhere
    ca = "certs/ca.pem"                 # the CA every actor trusts
    idle_timeout = 60.0                 # a node exits after this long without its coordinator

    [actors.alice]
    host = "10.0.0.1"                   # where the others reach it
    port = 7101
    listen = "0.0.0.0"                  # optional: the address it binds (default: host)
    cert = "certs/alice.pem"
    key = "certs/alice.key"
    data = "alice.npz"                  # optional: named local tensors (numpy .npz)
    checkpoints = "ckpt"                # optional: the only folder its checkpoint files go
                                        # in (default: "checkpoints" beside this file)

    [actors.alice.reveal]               # optional: alice's OWN rules for values derived
    coordinator = { max_elements = 1 }  # from her data (a loss, not a batch; also
                                        # max_total = N). Read by alice's node only; the
                                        # coordinator's word is never taken. No table:
                                        # nothing derived from her data is revealed.

    [actors.bob]   ...                  # the same for every party and the provider
    [actors.coordinator]
    cert = "certs/coordinator.pem"
    key = "certs/coordinator.key"
"""

from __future__ import annotations

import socket
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .names import ConfigError, check_name
from .policy import NO_REVEALS, RevealPolicy, policy_from_table

__all__ = ["ActorAddress", "ClusterConfig", "ConfigError", "check_name", "load_config"]


@dataclass(frozen=True, slots=True)
class ActorAddress:
    name: str
    cert: Path
    key: Path
    host: str = ""
    port: int = 0
    listen: str = ""
    data: Path | None = None
    checkpoints: Path | None = None
    """The folder this node's checkpoint files must be in."""
    reveal: RevealPolicy = NO_REVEALS
    """This party's own reveal rules (read by its own node only)."""


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    parties: tuple[str, ...]
    provider: str
    coordinator: str
    ca: Path
    actors: Mapping[str, ActorAddress]
    idle_timeout: float = 60.0
    path: Path | None = field(default=None, compare=False)

    @property
    def nodes(self) -> tuple[str, ...]:
        """The actors that run as node processes, in dialling order."""
        return (*self.parties, self.provider)

    def dials(self, name: str) -> list[str]:
        """The peers ``name`` connects to (every node after it; the coordinator: all)."""
        if name == self.coordinator:
            return list(self.nodes)
        order = self.nodes
        return list(order[order.index(name) + 1 :])

    def accepts(self, name: str) -> list[str]:
        """The peers that connect to ``name``."""
        order = self.nodes
        return [*order[: order.index(name)], self.coordinator]


def load_config(path: str | Path) -> ClusterConfig:
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read cluster file {p}: {exc}") from None
    return parse_config(raw, p.parent, p)


def parse_config(raw: Mapping[str, object], base: Path, path: Path | None = None) -> ClusterConfig:
    def need(d: Mapping[str, object], key: str, kind: type, where: str) -> object:
        if key not in d:
            raise ConfigError(f"{where}: missing {key!r}")
        v = d[key]
        if not isinstance(v, kind):
            raise ConfigError(f"{where}: {key!r} must be a {kind.__name__}, got {v!r}")
        return v

    parties = need(raw, "parties", list, "cluster file")
    assert isinstance(parties, list)
    if len(parties) < 2 or not all(isinstance(x, str) and x for x in parties):
        raise ConfigError(f"cluster file: 'parties' must list at least 2 names, got {parties}")
    provider = str(need(raw, "provider", str, "cluster file"))
    coordinator = str(raw.get("coordinator", "coordinator"))
    everyone = [*parties, provider, coordinator]
    for n in everyone:
        check_name(n)
    if len(set(everyone)) != len(everyone):
        raise ConfigError(f"cluster file: actor names must be distinct, got {everyone}")
    ca = base / str(need(raw, "ca", str, "cluster file"))
    actors_raw = need(raw, "actors", dict, "cluster file")
    assert isinstance(actors_raw, dict)
    actors: dict[str, ActorAddress] = {}
    for name in everyone:
        where = f"[actors.{name}]"
        entry = actors_raw.get(name)
        if not isinstance(entry, dict):
            raise ConfigError(f"cluster file: no {where} table")
        host, port, listen = "", 0, ""
        if name != coordinator:
            host = str(need(entry, "host", str, where))
            got = need(entry, "port", int, where)
            assert isinstance(got, int)
            port = got
            if not 0 < port < 65536:
                raise ConfigError(f"{where}: port {port} out of range")
            listen = str(entry.get("listen", host))
        data = entry.get("data")
        ckpt = entry.get("checkpoints", "checkpoints")
        if not isinstance(ckpt, str) or not ckpt:
            raise ConfigError(f"{where}: 'checkpoints' must be a folder, got {ckpt!r}")
        try:
            reveal = policy_from_table(entry.get("reveal", {}), f"[actors.{name}.reveal]")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if reveal.rules and name not in parties:
            raise ConfigError(f"[actors.{name}.reveal]: only a party has reveal rules")
        actors[name] = ActorAddress(
            name,
            base / str(need(entry, "cert", str, where)),
            base / str(need(entry, "key", str, where)),
            host,
            port,
            listen,
            None if data is None else base / str(data),
            base / ckpt,
            reveal,
        )
    unknown = set(actors_raw) - set(everyone)
    if unknown:
        raise ConfigError(f"cluster file: [actors] names unknown actors {sorted(unknown)}")
    idle = raw.get("idle_timeout", 60.0)
    if not isinstance(idle, int | float) or idle <= 0:
        raise ConfigError(f"cluster file: idle_timeout must be > 0 seconds, got {idle!r}")
    return ClusterConfig(tuple(parties), provider, coordinator, ca, actors, float(idle), path)


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` ports free right now on ``host`` (for local clusters and tests)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def write_local_config(
    folder: str | Path,
    parties: Sequence[str],
    provider: str = "james",
    coordinator: str = "coordinator",
    *,
    data: Mapping[str, str | Path] | None = None,
    idle_timeout: float = 30.0,
    host: str = "127.0.0.1",
    checkpoints: str | Path | None = None,
    reveal: Mapping[str, Mapping[str, Mapping[str, int]]] | None = None,
) -> Path:
    """Fresh certificates and a cluster file for every actor on ``host`` (free ports) in
    ``folder``; returns the cluster file's path. ``checkpoints``: every node's checkpoint
    folder; ``reveal``: party -> recipient -> limits (``{"max_elements": 1}``), written
    into that party's own table (a local cluster's user speaks for every party)."""
    from .certs import write_certs

    root = Path(folder)
    names = [*parties, provider]
    write_certs(root, [*names, coordinator], dict.fromkeys(names, host))
    ports = free_ports(len(names), host)
    lines = [
        f"parties = [{', '.join(repr(p) for p in parties)}]".replace("'", '"'),
        f'provider = "{provider}"',
        f'coordinator = "{coordinator}"',
        'ca = "ca.pem"',
        f"idle_timeout = {float(idle_timeout)}",
        "",
    ]
    for name, port in zip(names, ports, strict=True):
        lines += [
            f"[actors.{name}]",
            f'host = "{host}"',
            f"port = {port}",
            f'cert = "{name}.pem"',
            f'key = "{name}.key"',
        ]
        if data and name in data:
            lines.append(f'data = "{Path(data[name]).resolve()}"')
        if checkpoints is not None:
            lines.append(f'checkpoints = "{Path(checkpoints).resolve()}"')
        rules = (reveal or {}).get(name)
        if rules:
            lines.append(f"[actors.{name}.reveal]")
            for to, limits in rules.items():
                body = ", ".join(f"{k} = {int(v)}" for k, v in limits.items())
                lines.append(f"{to} = {{ {body} }}")
        lines.append("")
    lines += [
        f"[actors.{coordinator}]",
        f'cert = "{coordinator}.pem"',
        f'key = "{coordinator}.key"',
        "",
    ]
    path = root / "cluster.toml"
    path.write_text("\n".join(lines))
    return path

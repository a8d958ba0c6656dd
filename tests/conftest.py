"""Shared test helpers (imported by the test modules): party names and an envelope tap."""

from __future__ import annotations

from collections.abc import Callable

from actors import Envelope

PARTIES: dict[int, list[str]] = {2: ["alice", "bob"], 3: ["alice", "bob", "carol"]}
PROVIDER = "james"


class Tap:
    """Records (and passes on) every envelope the network accepts from now on."""

    def __init__(self, cluster: object, drop: Callable[[Envelope], bool] | None = None) -> None:
        self.envelopes: list[Envelope] = []
        self._drop = drop
        cluster.network.interceptor = self  # type: ignore[attr-defined]

    def __call__(self, env: Envelope) -> Envelope | None:
        self.envelopes.append(env)
        return None if self._drop is not None and self._drop(env) else env

    def commands(self, party: str = "alice") -> list[str]:
        """Kinds of the commands the coordinator sent to ``party``."""
        return [
            cmd["k"]
            for env in self.envelopes
            if env.receiver == party and env.tag.startswith("cmd/")
            for cmd in env.control()
        ]

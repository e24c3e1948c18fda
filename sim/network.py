"""The simulated networks: one networkx graph per network type, links that fail.

Each network is a switch with one link per attached node (host, management node,
storage target, power controller). A message travels the shortest up path of its
network; its latency is the sum of the links' latencies and each link may drop it.
Paths are cached per topology version, so routing costs a dict lookup between faults.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from random import Random

import networkx as nx

from actors.states import Network

LINK_LATENCY_S = 0.00025  # one hop on a LAN


@dataclass
class Link:
    up: bool = True
    latency_s: float = LINK_LATENCY_S
    loss: float = 0.0
    jitter_s: float = 0.0  # each crossing adds a uniform delay in [0, jitter_s)


def switch(network: Network) -> str:
    return f"switch:{network.value}"


class NetworkModel:
    def __init__(self, rng: Random) -> None:
        self.rng = rng
        self.graphs: dict[Network, nx.Graph] = {n: nx.Graph() for n in Network}
        self.version = 0
        self._routes: dict[tuple[Network, str, str], list[Link] | None] = {}
        self._route_version = 0
        self.blocked: set[frozenset[str]] = set()  # node pairs cut apart (a host losing a pool)

    def attach(self, node: str, networks: Iterable[Network], template: Link | None = None) -> None:
        """Connect ``node`` to each network's switch with a link like ``template``."""
        base = template or Link()
        for network in networks:
            link = Link(base.up, base.latency_s, base.loss, base.jitter_s)
            self.graphs[network].add_edge(node, switch(network), link=link)
        self.version += 1

    def link(self, node: str, network: Network) -> Link | None:
        graph = self.graphs[network]
        if not graph.has_edge(node, switch(network)):
            return None
        link: Link = graph.edges[node, switch(network)]["link"]
        return link

    def set_up(self, node: str, network: Network, up: bool) -> None:
        link = self.link(node, network)
        if link is not None and link.up != up:
            link.up = up
            self.version += 1

    def block(self, a: str, b: str, blocked: bool) -> None:
        pair = frozenset((a, b))
        if blocked:
            self.blocked.add(pair)
        else:
            self.blocked.discard(pair)

    def route(self, network: Network, src: str, dst: str) -> list[Link] | None:
        """The links a message crosses, or None when no up path exists."""
        if self._route_version != self.version:
            self._routes.clear()
            self._route_version = self.version
        key = (network, src, dst)
        if key in self._routes:
            return self._routes[key]
        graph = self.graphs[network]
        links: list[Link] | None = None
        if src in graph and dst in graph:
            up_view = nx.subgraph_view(graph, filter_edge=lambda u, v: graph.edges[u, v]["link"].up)
            try:
                path = nx.shortest_path(up_view, src, dst)
                links = [graph.edges[u, v]["link"] for u, v in zip(path, path[1:], strict=False)]
            except nx.NetworkXNoPath:
                links = None
        self._routes[key] = links
        return links

    def transit(self, network: Network, src: str, dst: str) -> float | None:
        """Delay of one message from ``src`` to ``dst``, or None when it is lost."""
        if frozenset((src, dst)) in self.blocked:
            return None
        links = self.route(network, src, dst)
        if links is None:
            return None
        delay = 0.0
        for link in links:
            if link.loss and self.rng.random() < link.loss:
                return None
            delay += link.latency_s
            if link.jitter_s:
                delay += self.rng.uniform(0.0, link.jitter_s)
        return delay

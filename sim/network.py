"""The simulated networks: one networkx graph per network type, links that fail.

Each network is a switch with one link per attached node (host, management node,
storage target, power controller). A message travels the shortest up path of its
network; its latency is the sum of the links' latencies and each link may drop it.

Routing costs a dict lookup and a check of the path's links, whatever the cluster size
and however often links fail. Each pair's path in the whole graph is cached until a node
is attached (for a node and a switch this is two links, found without a search); when a
link on it is down, the shortest path over the links that are up is searched instead,
cached until the next link changes state, and a node whose links are all down is known
unreachable without a search. A path with no loss or jitter on its links has a fixed
delay, kept until a link changes; change links only through this class's methods.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from random import Random
from typing import Final

import networkx as nx

from actors.states import Network

LINK_LATENCY_S = 0.00025  # one hop on a LAN


@dataclass
class Link:
    up: bool = True
    latency_s: float = LINK_LATENCY_S
    loss: float = 0.0
    jitter_s: float = 0.0  # each crossing adds a uniform delay in [0, jitter_s)
    in_up: bool = True  # one-way partitions: the node hears nothing ...
    out_up: bool = True  # ... or is not heard
    extra_latency_s: float = 0.0  # a link-loss fault's added latency


def switch(network: Network) -> str:
    return f"switch:{network.value}"


Hop = tuple[Link, bool]  # a link and whether the message leaves the link's node over it
_UNSEEN: Final = object()


class NetworkModel:
    def __init__(self, rng: Random) -> None:
        self.rng = rng
        self.graphs: dict[Network, nx.Graph] = {n: nx.Graph() for n in Network}
        self.version = 0
        self._routes: dict[tuple[Network, str, str], list[tuple[Link, bool]] | None] = {}
        self._route_version = 0
        self._paths: dict[tuple[Network, str, str], tuple[Hop, ...] | None] = {}  # all links
        # pair -> its delay while its path is clean and up, or None when each crossing is
        # drawn or nothing gets through; forgotten when any link changes
        self._fixed: dict[tuple[Network, str, str], float | None] = {}
        self.fixed_token = object()  # replaced by every change that may change a fixed delay
        self._delays: dict[float, float] = {}  # one float object per fixed delay value
        self.blocked: set[frozenset[str]] = set()  # node pairs cut apart (a host losing a pool)

    def attach(self, node: str, networks: Iterable[Network], template: Link | None = None) -> None:
        """Connect ``node`` to each network's switch with a link like ``template``."""
        base = template or Link()
        for network in networks:
            link = Link(base.up, base.latency_s, base.loss, base.jitter_s)
            self.graphs[network].add_edge(node, switch(network), link=link)
        self.version += 1
        self._paths.clear()
        self._unfix()

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
            self._unfix()

    def set_direction(self, node: str, network: Network, direction: str, up: bool) -> None:
        """Cut or heal one direction of a node's link: ``in``, ``out`` or ``both``."""
        link = self.link(node, network)
        if link is None:
            return
        self._unfix()
        if direction in ("in", "both"):
            link.in_up = up
        if direction in ("out", "both"):
            link.out_up = up

    def degrade(self, node: str, network: Network, loss: float, extra_latency_s: float) -> None:
        """A link-loss fault on one of a node's links (loss 0 and no latency heals it)."""
        link = self.link(node, network)
        if link is not None:
            link.loss = loss
            link.extra_latency_s = extra_latency_s
            self._unfix()

    def block(self, a: str, b: str, blocked: bool) -> None:
        pair = frozenset((a, b))
        if blocked:
            self.blocked.add(pair)
        else:
            self.blocked.discard(pair)
        self.fixed_token = object()

    def _unfix(self) -> None:
        self._fixed.clear()
        self.fixed_token = object()

    def route(self, network: Network, src: str, dst: str) -> list[tuple[Link, bool]] | None:
        """The links a message crosses, each with whether it leaves the link's node
        (outbound) or enters it, or None when no up path exists."""
        path = self._path(network, src, dst)
        if path is None:
            return None
        for link, _ in path:
            if not link.up:
                return self._up_route(network, src, dst)
        return list(path)

    def _path(self, network: Network, src: str, dst: str) -> tuple[Hop, ...] | None:
        """The shortest path over all links, up or down (cached until a node is attached)."""
        key = (network, src, dst)
        path = self._paths.get(key, _UNSEEN)
        if path is not _UNSEEN:
            return path  # type: ignore[return-value]
        graph = self.graphs[network]
        hub = switch(network)
        found: tuple[Hop, ...] | None
        if src == dst:
            found = () if src in graph else None
        elif graph.has_edge(src, dst):
            found = ((graph.edges[src, dst]["link"], not src.startswith("switch:")),)
        elif graph.has_edge(src, hub) and graph.has_edge(dst, hub):
            found = ((graph.edges[src, hub]["link"], True), (graph.edges[dst, hub]["link"], False))
        else:  # not a node and a switch: search the whole graph
            found = self._search(graph, src, dst, up_only=False)
        self._paths[key] = found
        return found

    def _up_route(self, network: Network, src: str, dst: str) -> list[Hop] | None:
        """The shortest path over links that are up (cached until a link changes state)."""
        if self._route_version != self.version:
            self._routes.clear()
            self._route_version = self.version
        key = (network, src, dst)
        if key in self._routes:
            return self._routes[key]
        graph = self.graphs[network]
        links: list[Hop] | None = None
        if src in graph and dst in graph and _reachable(graph, src) and _reachable(graph, dst):
            path = self._search(graph, src, dst, up_only=True)
            links = None if path is None else list(path)
        self._routes[key] = links
        return links

    @staticmethod
    def _search(graph: nx.Graph, src: str, dst: str, up_only: bool) -> tuple[Hop, ...] | None:
        if src not in graph or dst not in graph:
            return None
        view = graph
        if up_only:
            view = nx.subgraph_view(graph, filter_edge=lambda u, v: graph.edges[u, v]["link"].up)
        try:
            path = nx.shortest_path(view, src, dst)
        except nx.NetworkXNoPath:
            return None
        # Every link joins a node to a switch: leaving a node is outbound.
        return tuple((graph.edges[u, v]["link"], not u.startswith("switch:"))
                     for u, v in zip(path, path[1:], strict=False))

    def fixed_delay(self, network: Network, src: str, dst: str) -> float | None:
        """The delay of every message from ``src`` to ``dst`` until ``fixed_token`` changes,
        or None when each crossing is drawn (a lossy or jittery link on the path) or none
        gets through. Draws nothing: ``transit`` gives the crossing itself."""
        if self.blocked and frozenset((src, dst)) in self.blocked:
            return None
        key = (network, src, dst)
        fixed = self._fixed.get(key, _UNSEEN)
        if fixed is _UNSEEN:
            fixed = self._fixed[key] = self._clean_delay(network, src, dst)
        return fixed  # type: ignore[return-value]

    def _links(self, network: Network, src: str, dst: str) -> tuple[Hop, ...] | list[Hop] | None:
        """The links a message crosses now: the shortest path, or the shortest over the
        links that are up when one of it is down; None when there is none."""
        links: tuple[Hop, ...] | list[Hop] | None = self._paths.get((network, src, dst), _UNSEEN)  # type: ignore[assignment]
        if links is _UNSEEN:
            links = self._path(network, src, dst)
        if links is None:
            return None
        if all(link.up for link, _ in links):
            return links
        return self._up_route(network, src, dst)

    def _clean_delay(self, network: Network, src: str, dst: str) -> float | None:
        links = self._links(network, src, dst)
        if links is None:
            return None
        delay = 0.0
        for link, outbound in links:
            if not (link.out_up if outbound else link.in_up) or link.loss or link.jitter_s:
                return None
            delay += link.latency_s + link.extra_latency_s
        return self._delays.setdefault(delay, delay)  # shared: a send reads it, hot in cache

    def transit(self, network: Network, src: str, dst: str) -> float | None:
        """Delay of one message from ``src`` to ``dst``, or None when it is lost."""
        fixed = self.fixed_delay(network, src, dst)
        if fixed is not None:
            return fixed
        if self.blocked and frozenset((src, dst)) in self.blocked:
            return None
        links = self._links(network, src, dst)
        if links is None:
            return None
        delay = 0.0
        for link, outbound in links:
            if not (link.out_up if outbound else link.in_up):
                return None
            if link.loss and self.rng.random() < link.loss:
                return None
            delay += link.latency_s + link.extra_latency_s
            if link.jitter_s:
                delay += self.rng.uniform(0.0, link.jitter_s)
        return delay


def _reachable(graph: nx.Graph, node: str) -> bool:
    """Whether ``node`` has a link that is up (else nothing reaches it: no search needed)."""
    return any(data["link"].up for data in graph.adj[node].values())

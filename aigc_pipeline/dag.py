"""The directed graph of a pipeline's stages, and the few graph algorithms the engine uses.

A pipeline has a handful of stages; what it needs of a graph library is an adjacency list, a
topological order, a cycle to report, and the stages upstream or downstream of one. networkx did
that and cost 0.18 s of every command's start (importing it loads all of its algorithms).
Nodes and edges keep their insertion order, so every answer here is deterministic.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator


class Dag:
    """Stage ids and the edges between them (an edge from a stage to the stage that consumes it)."""

    def __init__(self) -> None:
        self._successors: dict[str, list[str]] = {}
        self._predecessors: dict[str, list[str]] = {}

    def add_nodes_from(self, nodes: Iterable[str]) -> None:
        for node in nodes:
            self.add_node(node)

    def add_node(self, node: str) -> None:
        self._successors.setdefault(node, [])
        self._predecessors.setdefault(node, [])

    def add_edge(self, source: str, target: str) -> None:
        """An edge from `source` to `target` (nodes are added as needed; a second copy is ignored)."""
        self.add_node(source)
        self.add_node(target)
        if target not in self._successors[source]:
            self._successors[source].append(target)
            self._predecessors[target].append(source)

    def __contains__(self, node: object) -> bool:
        return node in self._successors

    def __iter__(self) -> Iterator[str]:
        return iter(self._successors)

    def __len__(self) -> int:
        return len(self._successors)

    def successors(self, node: str) -> Iterator[str]:
        return iter(self._successors[node])

    def predecessors(self, node: str) -> Iterator[str]:
        return iter(self._predecessors[node])

    @property
    def edges(self) -> list[tuple[str, str]]:
        return [(source, target) for source, targets in self._successors.items() for target in targets]


def topological_order(dag: Dag) -> list[str]:
    """Every node after the nodes it depends on; of the nodes ready at once, the smallest name first
    (so the order depends on the names only, never on the file's order). ValueError on a cycle."""
    waiting = {node: sum(1 for _ in dag.predecessors(node)) for node in dag}
    ready = [node for node, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        node = heapq.heappop(ready)
        order.append(node)
        for successor in dag.successors(node):
            waiting[successor] -= 1
            if waiting[successor] == 0:
                heapq.heappush(ready, successor)
    if len(order) != len(dag):
        raise ValueError("the graph has a cycle")
    return order


def find_cycle(dag: Dag) -> list[tuple[str, str]] | None:
    """The edges of a cycle (the first a depth-first search meets, nodes and edges in insertion
    order), or None when there is none."""
    finished: set[str] = set()
    for start in dag:
        if start in finished:
            continue
        path, on_path = [start], {start}
        pending = [dag.successors(start)]
        while pending:
            target = next(pending[-1], None)
            if target is None:  # every edge out of the last node on the path is explored
                pending.pop()
                finished.add(node := path.pop())
                on_path.discard(node)
            elif target in on_path:
                loop = path[path.index(target):]
                return list(zip(loop, [*loop[1:], target], strict=True))
            elif target not in finished:
                path.append(target)
                on_path.add(target)
                pending.append(dag.successors(target))
    return None


def ancestors(dag: Dag, node: str) -> set[str]:
    """Every node with a path to `node` (not `node` itself)."""
    return _reached(node, dag.predecessors)


def descendants(dag: Dag, node: str) -> set[str]:
    """Every node `node` has a path to (not `node` itself)."""
    return _reached(node, dag.successors)


def _reached(node: str, edges: Callable[[str], Iterator[str]]) -> set[str]:
    reached: set[str] = set()
    pending = list(edges(node))
    while pending:
        other = pending.pop()
        if other not in reached:
            reached.add(other)
            pending.extend(edges(other))
    reached.discard(node)  # (on a cycle through it)
    return reached

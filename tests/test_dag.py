"""dag.py: the stage graph and its algorithms give what networkx gave (the engine used it before)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from aigc_pipeline.dag import Dag, ancestors, descendants, find_cycle, topological_order

nx = pytest.importorskip("networkx")  # (not a dependency any more; torch brings it)


def random_graph(rng: random.Random, acyclic: bool) -> tuple[Dag, Any]:
    names = [f"s{rng.randrange(1000):03d}" for _ in range(rng.randint(1, 12))]
    names = list(dict.fromkeys(names))
    rng.shuffle(names)
    ours, theirs = Dag(), nx.DiGraph()
    ours.add_nodes_from(names)
    theirs.add_nodes_from(names)
    for _ in range(rng.randint(0, 2 * len(names))):
        a, b = rng.sample(names, 2) if len(names) > 1 else (names[0], names[0])
        if acyclic and names.index(a) > names.index(b):
            a, b = b, a
        if a != b:
            ours.add_edge(a, b)
            theirs.add_edge(a, b)
    return ours, theirs


def test_orders_and_reaches_as_networkx_did() -> None:
    rng = random.Random(7)
    for _ in range(300):
        ours, theirs = random_graph(rng, acyclic=True)
        assert topological_order(ours) == list(nx.lexicographical_topological_sort(theirs))
        assert sorted(ours.edges) == sorted(theirs.edges)
        for node in ours:
            assert ancestors(ours, node) == nx.ancestors(theirs, node)
            assert descendants(ours, node) == nx.descendants(theirs, node)
            assert list(ours.predecessors(node)) == list(theirs.predecessors(node))
        assert find_cycle(ours) is None


def test_finds_the_cycle_networkx_found() -> None:
    rng = random.Random(11)
    found = 0
    for _ in range(300):
        ours, theirs = random_graph(rng, acyclic=False)
        try:
            expected = [tuple(edge[:2]) for edge in nx.find_cycle(theirs)]
        except nx.NetworkXNoCycle:
            assert find_cycle(ours) is None
            continue
        found += 1
        assert find_cycle(ours) == expected
        with pytest.raises(ValueError, match="cycle"):
            topological_order(ours)
    assert found > 50


def test_a_second_copy_of_an_edge_is_one_edge() -> None:
    dag = Dag()
    dag.add_edge("a", "b")
    dag.add_edge("a", "b")
    assert dag.edges == [("a", "b")] and list(dag.predecessors("b")) == ["a"] and "a" in dag and len(dag) == 2

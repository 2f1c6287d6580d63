"""Which traversals may write: the rule that keeps retries from applying a write twice."""

from gremlin_python.process.graph_traversal import GraphTraversalSource, __
from gremlin_python.process.traversal import Bytecode, P
from gremlin_python.structure.graph import Graph

from gremlinlb.core import bytecode_may_write

g = GraphTraversalSource(Graph(), None)  # builds bytecode only; nothing is sent


def test_plain_reads_are_read_only() -> None:
    assert not bytecode_may_write(
        g.V().has("person", "age", P.gt(30)).out("knows").limit(5).bytecode
    )


def test_add_vertex_writes() -> None:
    assert bytecode_may_write(g.add_v("person").bytecode)


def test_property_update_writes() -> None:
    assert bytecode_may_write(g.V(1).property("name", "x").bytecode)


def test_drop_writes() -> None:
    assert bytecode_may_write(g.V().drop().bytecode)


def test_merge_v_writes() -> None:
    assert bytecode_may_write(g.merge_v({"name": "x"}).bytecode)


def test_write_hidden_in_a_child_traversal_is_found() -> None:
    upsert = g.V().has("name", "x").fold().coalesce(__.unfold(), __.add_v("person"))
    assert bytecode_may_write(upsert.bytecode)


def test_write_nested_two_levels_deep_is_found() -> None:
    assert bytecode_may_write(
        g.V().map(__.union(__.identity(), __.side_effect(__.drop()))).bytecode
    )


def test_lambda_counts_as_a_write() -> None:
    assert bytecode_may_write(g.V().map(lambda: "it.get()").bytecode)


def test_transaction_commit_counts_as_a_write() -> None:
    assert bytecode_may_write(Bytecode.GraphOp.commit())


def test_child_traversal_inside_a_list_argument_is_scanned() -> None:
    assert bytecode_may_write(g.V().union(*[__.out(), __.add_e("knows")]).bytecode)

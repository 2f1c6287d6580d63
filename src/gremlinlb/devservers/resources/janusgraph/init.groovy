// Run by the gremlin-groovy engine when a gremlinlb JanusGraph test server starts, and again
// for every session (g.tx() included), hence the guard: the schema once (explicit keys and a
// Lucene mixed index named "search" over text, string and geo fields, ENABLED at once because
// its keys are new), then the traversal source "g".
mgmt = graph.openManagement()
if (mgmt.containsGraphIndex('search')) {
    mgmt.rollback()
} else {
    name = mgmt.makePropertyKey('name').dataType(String.class).make()
    description = mgmt.makePropertyKey('description').dataType(String.class).make()
    location = mgmt.makePropertyKey('location').dataType(Geoshape.class).make()
    mgmt.makePropertyKey('population').dataType(Integer.class).make()
    mgmt.makePropertyKey('km').dataType(Integer.class).make()
    mgmt.makeVertexLabel('place').make()
    mgmt.makeVertexLabel('server').make()
    mgmt.makeVertexLabel('note').make()
    mgmt.makeEdgeLabel('road').make()
    mgmt.buildIndex('search', Vertex.class)
        .addKey(name, Mapping.STRING.asParameter())
        .addKey(description, Mapping.TEXT.asParameter())
        .addKey(location)
        .buildMixedIndex('search')
    mgmt.commit()
}

def globals = [:]
globals << [g : traversal().withEmbedded(graph)]

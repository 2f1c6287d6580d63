// Init script run once by the gremlin-groovy engine at start-up of a gremlinlb dev server.
// In TinkerPop 3.x the traversal source "g" exists only if a script like this binds it.
def globals = [:]
globals << [g : traversal().withEmbedded(graph)]

// Loads TinkerPop's test graphs at start-up and binds their traversal sources, as TinkerPop's
// gremlin-server/src/test/scripts/generate-all.groovy does for its own feature tests.
def globals = [:]
globals << [hook : [
  onStartUp: { ctx ->
    TinkerFactory.generateClassic(classic)
    TinkerFactory.generateModern(modern)
    TinkerFactory.generateTheCrew(crew)
    TinkerFactory.generateGratefulDead(grateful)
    TinkerFactory.generateKitchenSink(sink)
  }
] as LifeCycleHook]
globals << [g : traversal().withEmbedded(graph)]
globals << [ggraph : traversal().withEmbedded(graph)]
globals << [gclassic : traversal().withEmbedded(classic)]
globals << [gmodern : traversal().withEmbedded(modern)]
globals << [gcrew : traversal().withEmbedded(crew)]
globals << [ggrateful : traversal().withEmbedded(grateful)]
globals << [gsink : traversal().withEmbedded(sink)]
globals

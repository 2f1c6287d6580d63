/*
 * The only code of ours in the TinkerPop feature run: it points TinkerPop's own step definitions
 * (org.apache.tinkerpop.gremlin.features.StepDefinition, from the gremlin-test jar, unchanged) at
 * one Gremlin endpoint, the sidecar or a server directly, given by the system properties
 * gremlinlb.features.host and gremlinlb.features.port (the servers run on this machine, so the
 * data files of the io() scenarios are found under gremlinlb.features.root). It does what TinkerPop's RemoteWorld and
 * GraphBinaryRemoteFeatureTest (gremlin-server's tests, not published) do: GraphBinary, the
 * traversal source named for each test graph (gmodern, gclassic, gcrew, gsink, ggrateful, ggraph
 * for the empty graph, cleared before each scenario that uses it).
 */
package gremlinlb.features;

import com.google.inject.AbstractModule;
import com.google.inject.Guice;
import com.google.inject.Stage;
import io.cucumber.guice.CucumberModules;
import java.io.File;
import org.apache.tinkerpop.gremlin.LoadGraphWith;
import org.apache.tinkerpop.gremlin.driver.Client;
import org.apache.tinkerpop.gremlin.driver.Cluster;
import org.apache.tinkerpop.gremlin.driver.remote.DriverRemoteConnection;
import org.apache.tinkerpop.gremlin.features.AbstractGuiceFactory;
import org.apache.tinkerpop.gremlin.features.World;
import org.apache.tinkerpop.gremlin.process.traversal.AnonymousTraversalSource;
import org.apache.tinkerpop.gremlin.process.traversal.dsl.graph.GraphTraversalSource;
import org.apache.tinkerpop.gremlin.util.ser.Serializers;

public final class GremlinlbWorld implements World {
    /** One cluster for the whole run (RemoteWorld makes one per scenario: slower, same traffic). */
    private static final Cluster CLUSTER = Cluster.build(System.getProperty("gremlinlb.features.host", "127.0.0.1"))
            .port(Integer.getInteger("gremlinlb.features.port", 8182))
            .serializer(Serializers.GRAPHBINARY_V1)
            .create();

    private Client client;

    @Override
    public GraphTraversalSource getGraphTraversalSource(final LoadGraphWith.GraphData graphData) {
        client = CLUSTER.connect();
        final String source;
        if (graphData == null) {
            try { // scenarios on the empty graph may write to it
                client.submit("graph.clear();").all().get();
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
            source = "ggraph";
        } else {
            source = "g" + graphData.name().toLowerCase();
        }
        return AnonymousTraversalSource.traversal().with(DriverRemoteConnection.using(client, source));
    }

    @Override
    public void afterEachScenario() {
        if (client != null) client.close();
    }

    /** The io() scenarios name "data/..."; build.sh puts those files under gremlinlb.features.root. */
    @Override
    public String changePathToDataFile(final String pathToFileFromGremlin) {
        return System.getProperty("gremlinlb.features.root", ".") + File.separator + pathToFileFromGremlin;
    }

    /** Cucumber's object factory (named with --object-factory): Guice binds World to this class. */
    public static final class Factory extends AbstractGuiceFactory {
        public Factory() {
            super(Guice.createInjector(Stage.PRODUCTION, CucumberModules.createScenarioModule(), new AbstractModule() {
                @Override
                protected void configure() {
                    bind(World.class).to(GremlinlbWorld.class);
                }
            }));
        }
    }
}

// The official Java Gremlin driver against one Gremlin endpoint (the sidecar), for the sidecar's
// integration tests (tests/integration/test_sidecar_drivers.py). Built by build.sh beside it.
//
//   java -cp <classes>:<lib>/* SidecarClient HOST PORT SERIALIZER MODE [COUNT]
//
// SERIALIZER: graphbinary | graphson (GraphSON v3). The cluster has ONE connection (pool min = max
// = 1) and lets it carry many requests at once, so every concurrent request below is multiplexed
// on that single WebSocket. Modes (each prints one JSON object on stdout; logs go to stderr):
//
//   multiplex N  N `g.inject(i)` bytecode traversals, N/4 scripts and 30 `server` name lookups,
//                each group sent all at once; prints {"values", "scripts", "names"}, then keeps the
//                connection open until a line (or EOF) arrives on stdin, so the caller can count
//                the sidecar's client connections.
//   commit       g.tx(): addV('java') then commit; prints {"inside": count seen inside the tx}.
//   rollback     g.tx(): addV('java_rolled_back') then rollback; prints {"inside": ...}.
//   load         8 threads of read-only name lookups; prints "started" after 100 answers; "mark"
//                on stdin records how many answers had arrived and ends the run 150 answers (or
//                errors) later; "stop" ends it at once; bounded by 100000 answers and 300 s;
//                prints {"names", "errors", "mark"} at the end.
import static org.apache.tinkerpop.gremlin.process.traversal.AnonymousTraversalSource.traversal;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.tinkerpop.gremlin.driver.Client;
import org.apache.tinkerpop.gremlin.driver.Cluster;
import org.apache.tinkerpop.gremlin.driver.Result;
import org.apache.tinkerpop.gremlin.driver.ResultSet;
import org.apache.tinkerpop.gremlin.driver.remote.DriverRemoteConnection;
import org.apache.tinkerpop.gremlin.process.traversal.Traversal;
import org.apache.tinkerpop.gremlin.process.traversal.dsl.graph.GraphTraversalSource;
import org.apache.tinkerpop.gremlin.structure.Transaction;
import org.apache.tinkerpop.gremlin.util.ser.Serializers;

public final class SidecarClient {
    private static final int LOAD_THREADS = 8;
    private static final int LOAD_MAX_ANSWERS = 100000;
    private static final long LOAD_MAX_MILLIS = 300_000;
    private static final int LOAD_AFTER_MARK = 150;

    public static void main(String[] args) throws Exception {
        if (args.length < 4) {
            System.err.println("usage: SidecarClient HOST PORT graphbinary|graphson MODE [COUNT]");
            System.exit(2);
        }
        String host = args[0];
        int port = Integer.parseInt(args[1]);
        Serializers serializer = switch (args[2]) {
            case "graphbinary" -> Serializers.GRAPHBINARY_V1;
            case "graphson" -> Serializers.GRAPHSON_V3;
            default -> throw new IllegalArgumentException("unknown serializer " + args[2]);
        };
        String mode = args[3];
        int count = args.length > 4 ? Integer.parseInt(args[4]) : 200;
        int inFlight = count + count / 4 + 64;
        Cluster cluster = Cluster.build(host)
                .port(port)
                .serializer(serializer)
                .minConnectionPoolSize(1)
                .maxConnectionPoolSize(1)
                .minSimultaneousUsagePerConnection(1)
                .maxSimultaneousUsagePerConnection(inFlight)
                .minInProcessPerConnection(1)
                .maxInProcessPerConnection(inFlight)
                .maxWaitForConnection(30_000)
                .create();
        try {
            Client client = cluster.connect();
            GraphTraversalSource g = traversal().with(DriverRemoteConnection.using(client, "g"));
            String json = switch (mode) {
                case "multiplex" -> multiplex(g, client, count);
                case "commit" -> transaction(g, "java", true);
                case "rollback" -> transaction(g, "java_rolled_back", false);
                case "load" -> load(g);
                default -> throw new IllegalArgumentException("unknown mode " + mode);
            };
            System.out.println(json);
            System.out.flush();
            if (mode.equals("multiplex")) {
                new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8)).readLine();
            }
        } finally {
            cluster.close();
        }
    }

    private static String multiplex(GraphTraversalSource g, Client client, int count) {
        List<CompletableFuture<List<Object>>> values = new ArrayList<>();
        for (int i = 0; i < count; i++) {
            values.add(g.inject((Object) i).promise(Traversal::toList));
        }
        List<CompletableFuture<List<Result>>> scripts = new ArrayList<>();
        for (int i = 0; i < count / 4; i++) {
            scripts.add(client.submitAsync("x + 1000", Map.of("x", i)).thenCompose(ResultSet::all));
        }
        List<Object> valueList = new ArrayList<>();
        for (CompletableFuture<List<Object>> value : values) {
            valueList.add(single(value.join()));
        }
        List<Object> scriptList = new ArrayList<>();
        for (CompletableFuture<List<Result>> script : scripts) {
            scriptList.add(single(script.join()).getLong());
        }
        List<CompletableFuture<List<Object>>> names = new ArrayList<>();
        for (int i = 0; i < 30; i++) {
            names.add(g.V().hasLabel("server").values("name").promise(Traversal::toList));
        }
        List<Object> nameList = new ArrayList<>();
        for (CompletableFuture<List<Object>> name : names) {
            nameList.add(single(name.join()));
        }
        return "{\"values\": " + json(valueList) + ", \"scripts\": " + json(scriptList)
                + ", \"names\": " + json(nameList) + "}";
    }

    private static String transaction(GraphTraversalSource g, String label, boolean commit)
            throws Exception {
        Transaction tx = g.tx();
        GraphTraversalSource gtx = tx.begin();
        gtx.addV(label).property("driver", "java").iterate();
        long inside = gtx.V().hasLabel(label).count().next();
        if (commit) {
            tx.commit();
        } else {
            tx.rollback();
        }
        return "{\"inside\": " + inside + "}";
    }

    private static String load(GraphTraversalSource g) throws Exception {
        List<Object> names = Collections.synchronizedList(new ArrayList<>());
        List<Object> errors = Collections.synchronizedList(new ArrayList<>());
        AtomicBoolean stop = new AtomicBoolean();
        AtomicInteger mark = new AtomicInteger(-1);
        // Answers and errors after which the run ends: "mark" brings it to 150 after the mark.
        AtomicInteger endAt = new AtomicInteger(LOAD_MAX_ANSWERS);
        AtomicBoolean started = new AtomicBoolean();
        long deadline = System.currentTimeMillis() + LOAD_MAX_MILLIS;
        Thread control = new Thread(() -> {
            try (BufferedReader in = new BufferedReader(
                    new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
                String line;
                while ((line = in.readLine()) != null) {
                    if (line.trim().equals("mark")) {
                        mark.set(names.size());
                        endAt.set(Math.min(endAt.get(), names.size() + errors.size() + LOAD_AFTER_MARK));
                    } else if (line.trim().equals("stop")) {
                        break;
                    }
                }
            } catch (Exception ignored) {
                // EOF or a closed stdin: stop as for "stop"
            }
            stop.set(true);
        });
        control.setDaemon(true);
        control.start();
        List<Thread> workers = new ArrayList<>();
        for (int t = 0; t < LOAD_THREADS; t++) {
            Thread worker = new Thread(() -> {
                while (!stop.get() && System.currentTimeMillis() < deadline
                        && names.size() + errors.size() < endAt.get()) {
                    try {
                        names.addAll(g.V().hasLabel("server").values("name").toList());
                    } catch (Exception error) {
                        errors.add(String.valueOf(error));
                    }
                    if (names.size() >= 100 && started.compareAndSet(false, true)) {
                        System.out.println("started");
                        System.out.flush();
                    }
                }
            });
            worker.start();
            workers.add(worker);
        }
        for (Thread worker : workers) {
            worker.join(TimeUnit.MILLISECONDS.toMillis(LOAD_MAX_MILLIS + 30_000));
        }
        synchronized (names) {
            synchronized (errors) {
                return "{\"names\": " + json(names) + ", \"errors\": " + json(errors)
                        + ", \"mark\": " + mark.get() + "}";
            }
        }
    }

    private static <T> T single(List<T> results) {
        if (results.size() != 1) {
            throw new IllegalStateException("expected one result, got " + results);
        }
        return results.get(0);
    }

    /** JSON for a list of numbers and strings (all this program prints). */
    private static String json(List<Object> items) {
        StringBuilder out = new StringBuilder("[");
        for (int i = 0; i < items.size(); i++) {
            if (i > 0) {
                out.append(", ");
            }
            Object item = items.get(i);
            if (item instanceof Number) {
                out.append(((Number) item).longValue());
            } else {
                out.append('"');
                for (char c : String.valueOf(item).toCharArray()) {
                    if (c == '"' || c == '\\') {
                        out.append('\\').append(c);
                    } else if (c < 0x20) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
                out.append('"');
            }
        }
        return out.append(']').toString();
    }
}

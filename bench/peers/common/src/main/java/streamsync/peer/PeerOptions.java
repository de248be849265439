package streamsync.peer;

import java.util.HashMap;
import java.util.Map;
import org.apache.http.HttpHost;
import org.elasticsearch.client.RestClient;

/** The command line both peers share ({@code --name value} pairs), and what it sets up. */
public final class PeerOptions {
    private final Map<String, String> options = new HashMap<>();

    public PeerOptions(String[] args) {
        for (int i = 0; i + 1 < args.length; i += 2) {
            if (!args[i].startsWith("--")) {
                throw new IllegalArgumentException("expected --name value, got " + args[i]);
            }
            options.put(args[i].substring(2), args[i + 1]);
        }
    }

    public String required(String name) {
        String value = options.get(name);
        if (value == null) {
            throw new IllegalArgumentException("--" + name + " is required");
        }
        return value;
    }

    public String get(String name, String otherwise) {
        return options.getOrDefault(name, otherwise);
    }

    /**
     * The low-level REST client with up to {@code --max-connections} (32) connections: its default
     * of 10 per host would cap 16 shards' bulk requests at 10.
     */
    public RestClient elasticsearch() {
        int connections = Integer.parseInt(get("max-connections", "32"));
        return RestClient.builder(HttpHost.create(required("elasticsearch")))
                .setHttpClientConfigCallback(http -> http.setMaxConnPerRoute(connections).setMaxConnTotal(connections))
                .build();
    }

    /** Serves /metrics and prints the line the benchmark waits for. */
    public static void announce(PeerMetrics metrics, String workerId) throws java.io.IOException {
        int port = metrics.serve();
        System.out.println("{\"message\":\"started\",\"http_port\":" + port + ",\"worker_id\":\"" + workerId + "\"}");
        System.out.flush();
    }
}

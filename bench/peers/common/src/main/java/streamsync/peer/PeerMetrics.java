package streamsync.peer;

import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.atomic.DoubleAdder;

/**
 * The peer's counters, served in Prometheus' text format so that the benchmark reads this worker
 * exactly as it reads streamsync's /metrics: documents acknowledged, leases held, and the time
 * from a change's creation to its acknowledgement by Elasticsearch, in the same buckets as
 * streamsync's histogram (so both quantiles are interpolated alike).
 */
public final class PeerMetrics {
    /** streamsync's LATENCY_BUCKETS (streamsync/observability/metrics.py). */
    private static final double[] BUCKETS = {
        0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 30, 60, 300
    };

    public final AtomicLong documentsIndexed = new AtomicLong();
    public final AtomicLong documentsFailed = new AtomicLong();
    public final AtomicLong bulkRetries = new AtomicLong();
    public final AtomicInteger leasesHeld = new AtomicInteger();
    private final AtomicLongArray lagBuckets = new AtomicLongArray(BUCKETS.length + 1);
    private final DoubleAdder lagSum = new DoubleAdder();

    public void observeLag(double seconds) {
        int i = 0;
        while (i < BUCKETS.length && seconds > BUCKETS[i]) {
            i++;
        }
        lagBuckets.incrementAndGet(i);
        lagSum.add(seconds);
    }

    /** Serves /metrics on 127.0.0.1 at a free port; returns the port. */
    public int serve() throws IOException {
        HttpServer server = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
        server.createContext("/metrics", exchange -> {
            byte[] body = render().getBytes(StandardCharsets.UTF_8);
            exchange.getResponseHeaders().set("Content-Type", "text/plain; version=0.0.4");
            exchange.sendResponseHeaders(200, body.length);
            try (OutputStream out = exchange.getResponseBody()) {
                out.write(body);
            }
        });
        server.start();
        return server.getAddress().getPort();
    }

    private String render() {
        StringBuilder text = new StringBuilder();
        counter(text, "kcl_peer_documents_indexed_total", documentsIndexed.get());
        counter(text, "kcl_peer_documents_failed_total", documentsFailed.get());
        counter(text, "kcl_peer_bulk_retries_total", bulkRetries.get());
        text.append("# TYPE kcl_peer_leases_held gauge\nkcl_peer_leases_held ")
            .append(leasesHeld.get()).append('\n');
        text.append("# TYPE kcl_peer_end_to_end_lag_seconds histogram\n");
        long cumulative = 0;
        for (int i = 0; i <= BUCKETS.length; i++) {
            cumulative += lagBuckets.get(i);
            String bound = i < BUCKETS.length ? Double.toString(BUCKETS[i]) : "+Inf";
            text.append("kcl_peer_end_to_end_lag_seconds_bucket{le=\"").append(bound).append("\"} ")
                .append(cumulative).append('\n');
        }
        text.append("kcl_peer_end_to_end_lag_seconds_count ").append(cumulative).append('\n');
        text.append("kcl_peer_end_to_end_lag_seconds_sum ").append(lagSum.sum()).append('\n');
        return text.toString();
    }

    private static void counter(StringBuilder text, String name, long value) {
        String family = name.substring(0, name.length() - "_total".length());
        text.append("# TYPE ").append(family).append(" counter\n")
            .append(name).append(' ').append(value).append('\n');
    }
}

package streamsync.peer;

import com.fasterxml.jackson.core.io.JsonStringEncoder;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.logging.Logger;
import org.apache.http.entity.ByteArrayEntity;
import org.apache.http.entity.ContentType;
import org.elasticsearch.client.Request;
import org.elasticsearch.client.Response;
import org.elasticsearch.client.ResponseException;
import org.elasticsearch.client.RestClient;

/**
 * One {@code _bulk} request per batch, as a careful team writes it: external versions (a replayed,
 * older change is refused with 409, which counts as done), the items Elasticsearch could not take
 * now (429, 5xx) or the whole request on a connection error sent again with capped exponential
 * back-off until they are taken (KCL 1.x logs an exception from processRecords and moves on, so
 * giving up would lose the batch), other item errors (a mapping error) counted and logged.
 */
public final class BulkIndexer {
    private static final Logger LOG = Logger.getLogger(BulkIndexer.class.getName());
    private static final ContentType NDJSON = ContentType.create("application/x-ndjson", StandardCharsets.UTF_8);
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final long FIRST_BACKOFF_MILLIS = 100;
    private static final long MAX_BACKOFF_MILLIS = 10_000;

    /** One change: an index (with the new image as JSON) or a delete, and when it was made. */
    public record Action(boolean delete, String id, long version, String source, long createdMillis) {}

    private final RestClient client;
    private final String index;
    private final PeerMetrics metrics;

    public BulkIndexer(RestClient client, String index, PeerMetrics metrics) {
        this.client = client;
        this.index = index;
        this.metrics = metrics;
    }

    /** Returns once every action is acknowledged (or refused for good). */
    public void index(List<Action> actions) throws InterruptedException {
        List<Action> pending = actions;
        long backoff = FIRST_BACKOFF_MILLIS;
        while (!pending.isEmpty()) {
            List<Action> again;
            try {
                again = send(pending);
            } catch (ResponseException e) {
                int status = e.getResponse().getStatusLine().getStatusCode();
                if (status != 429 && status < 500) {
                    throw new IllegalStateException("Elasticsearch refused the bulk request: " + e.getMessage(), e);
                }
                again = pending;
            } catch (IOException e) {
                LOG.warning("bulk request failed, retrying: " + e);
                again = pending;
            }
            if (!again.isEmpty()) {
                metrics.bulkRetries.incrementAndGet();
                Thread.sleep(backoff);
                backoff = Math.min(backoff * 2, MAX_BACKOFF_MILLIS);
            }
            pending = again;
        }
    }

    /** Sends one request; returns the actions to send again. */
    private List<Action> send(List<Action> actions) throws IOException {
        Request request = new Request("POST", "/_bulk");
        request.setEntity(new ByteArrayEntity(body(actions), NDJSON));
        Response response = client.performRequest(request);
        JsonNode answer;
        try (InputStream in = response.getEntity().getContent()) {
            answer = JSON.readTree(in);
        }
        long now = System.currentTimeMillis();
        if (!answer.path("errors").asBoolean(true)) {
            acknowledge(actions, now);
            return List.of();
        }
        List<Action> done = new ArrayList<>();
        List<Action> again = new ArrayList<>();
        JsonNode items = answer.path("items");
        for (int i = 0; i < actions.size(); i++) {
            Action action = actions.get(i);
            JsonNode item = items.get(i).elements().next();
            int status = item.path("status").asInt();
            if (status < 300 || status == 409 || (action.delete() && status == 404)) {
                done.add(action);
            } else if (status == 429 || status >= 500) {
                again.add(action);
            } else {
                metrics.documentsFailed.incrementAndGet();
                LOG.warning("document " + action.id() + " refused: " + item.path("error"));
            }
        }
        acknowledge(done, now);
        return again;
    }

    private void acknowledge(List<Action> actions, long now) {
        for (Action action : actions) {
            metrics.observeLag(Math.max(now - action.createdMillis(), 0) / 1000.0);
        }
        metrics.documentsIndexed.addAndGet(actions.size());
    }

    private byte[] body(List<Action> actions) {
        JsonStringEncoder quote = JsonStringEncoder.getInstance();
        String target = new String(quote.quoteAsString(index));
        StringBuilder body = new StringBuilder(actions.size() * 1024);
        for (Action action : actions) {
            body.append(action.delete() ? "{\"delete\":{\"_index\":\"" : "{\"index\":{\"_index\":\"")
                .append(target).append("\",\"_id\":\"").append(quote.quoteAsString(action.id()))
                .append("\",\"version\":").append(action.version())
                .append(",\"version_type\":\"external\"}}\n");
            if (!action.delete()) {
                body.append(action.source()).append('\n');
            }
        }
        return body.toString().getBytes(StandardCharsets.UTF_8);
    }
}

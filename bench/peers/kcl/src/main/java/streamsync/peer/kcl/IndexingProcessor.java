package streamsync.peer.kcl;

import com.amazonaws.services.dynamodbv2.document.ItemUtils;
import com.amazonaws.services.dynamodbv2.model.AttributeValue;
import com.amazonaws.services.dynamodbv2.model.StreamRecord;
import com.amazonaws.services.dynamodbv2.streamsadapter.model.RecordAdapter;
import com.amazonaws.services.kinesis.clientlibrary.exceptions.InvalidStateException;
import com.amazonaws.services.kinesis.clientlibrary.exceptions.ShutdownException;
import com.amazonaws.services.kinesis.clientlibrary.exceptions.ThrottlingException;
import com.amazonaws.services.kinesis.clientlibrary.interfaces.IRecordProcessorCheckpointer;
import com.amazonaws.services.kinesis.clientlibrary.interfaces.v2.IRecordProcessor;
import com.amazonaws.services.kinesis.clientlibrary.lib.worker.ShutdownReason;
import com.amazonaws.services.kinesis.clientlibrary.types.InitializationInput;
import com.amazonaws.services.kinesis.clientlibrary.types.ProcessRecordsInput;
import com.amazonaws.services.kinesis.clientlibrary.types.ShutdownInput;
import com.amazonaws.services.kinesis.model.Record;
import java.util.ArrayList;
import streamsync.peer.BulkIndexer;
import streamsync.peer.PeerMetrics;
import streamsync.peer.VersionClock;
import java.util.Base64;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.logging.Logger;

/**
 * The record processor of one shard: each batch KCL hands over becomes one bulk request, then the
 * shard is checkpointed at the batch's last record. The document id joins the item's key values
 * (sorted by attribute name); the external version comes from {@link VersionClock}.
 */
final class IndexingProcessor implements IRecordProcessor {
    private static final Logger LOG = Logger.getLogger(IndexingProcessor.class.getName());
    private static final int CHECKPOINT_ATTEMPTS = 5;

    private final BulkIndexer indexer;
    private final PeerMetrics metrics;
    private final VersionClock versions = new VersionClock();
    private String shardId = "";

    IndexingProcessor(BulkIndexer indexer, PeerMetrics metrics) {
        this.indexer = indexer;
        this.metrics = metrics;
    }

    @Override
    public void initialize(InitializationInput input) {
        shardId = input.getShardId();
        metrics.leasesHeld.incrementAndGet();
    }

    @Override
    public void processRecords(ProcessRecordsInput input) {
        List<BulkIndexer.Action> actions = new ArrayList<>(input.getRecords().size());
        for (Record record : input.getRecords()) {
            com.amazonaws.services.dynamodbv2.model.Record change = ((RecordAdapter) record).getInternalObject();
            StreamRecord data = change.getDynamodb();
            long created = data.getApproximateCreationDateTime().getTime();
            String id = documentId(data.getKeys());
            if ("REMOVE".equals(change.getEventName())) {
                actions.add(new BulkIndexer.Action(true, id, versions.next(created), null, created));
            } else {
                String source = ItemUtils.toItem(data.getNewImage()).toJSON();
                actions.add(new BulkIndexer.Action(false, id, versions.next(created), source, created));
            }
        }
        try {
            indexer.index(actions);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return;
        }
        checkpoint(input.getCheckpointer());
    }

    @Override
    public void shutdown(ShutdownInput input) {
        metrics.leasesHeld.decrementAndGet();
        if (input.getShutdownReason() == ShutdownReason.TERMINATE) {
            checkpoint(input.getCheckpointer()); // shard end: lets the children start
        }
    }

    static String documentId(Map<String, AttributeValue> keys) {
        StringBuilder id = new StringBuilder();
        for (AttributeValue value : new TreeMap<>(keys).values()) {
            if (id.length() > 0) {
                id.append('|');
            }
            if (value.getS() != null) {
                id.append(value.getS());
            } else if (value.getN() != null) {
                id.append(value.getN());
            } else {
                id.append(Base64.getEncoder().encodeToString(value.getB().array()));
            }
        }
        return id.toString();
    }

    private void checkpoint(IRecordProcessorCheckpointer checkpointer) {
        for (int attempt = 1; attempt <= CHECKPOINT_ATTEMPTS; attempt++) {
            try {
                checkpointer.checkpoint();
                return;
            } catch (ShutdownException e) {
                LOG.info("lease of " + shardId + " lost, not checkpointing: " + e.getMessage());
                return;
            } catch (InvalidStateException e) {
                LOG.severe("cannot checkpoint " + shardId + ": " + e.getMessage());
                return;
            } catch (ThrottlingException e) {
                try {
                    Thread.sleep(100L << attempt);
                } catch (InterruptedException stop) {
                    Thread.currentThread().interrupt();
                    return;
                }
            }
        }
        LOG.severe("checkpoint of " + shardId + " throttled " + CHECKPOINT_ATTEMPTS + " times; the next batch retries");
    }
}

package streamsync.peer.kcl3;

import com.amazonaws.services.dynamodbv2.streamsadapter.adapter.DynamoDBStreamsClientRecord;
import com.amazonaws.services.dynamodbv2.streamsadapter.model.DynamoDBStreamsProcessRecordsInput;
import com.amazonaws.services.dynamodbv2.streamsadapter.processor.DynamoDBStreamsShardRecordProcessor;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.logging.Logger;
import software.amazon.awssdk.enhanced.dynamodb.document.EnhancedDocument;
import software.amazon.awssdk.services.dynamodb.model.AttributeValue;
import software.amazon.awssdk.services.dynamodb.model.OperationType;
import software.amazon.awssdk.services.dynamodb.model.Record;
import software.amazon.awssdk.services.dynamodb.model.StreamRecord;
import software.amazon.kinesis.exceptions.InvalidStateException;
import software.amazon.kinesis.exceptions.KinesisClientLibDependencyException;
import software.amazon.kinesis.exceptions.ShutdownException;
import software.amazon.kinesis.exceptions.ThrottlingException;
import software.amazon.kinesis.lifecycle.events.InitializationInput;
import software.amazon.kinesis.lifecycle.events.LeaseLostInput;
import software.amazon.kinesis.lifecycle.events.ShardEndedInput;
import software.amazon.kinesis.lifecycle.events.ShutdownRequestedInput;
import software.amazon.kinesis.processor.RecordProcessorCheckpointer;
import streamsync.peer.BulkIndexer;
import streamsync.peer.PeerMetrics;
import streamsync.peer.VersionClock;

/**
 * The KCL 3.x record processor of one shard, doing what the KCL 1.x peer's does: one bulk request
 * per batch, then a checkpoint; at shard end a checkpoint so that the children start, and before
 * a graceful hand-off one so that the next owner starts where this one stopped.
 */
final class IndexingProcessor implements DynamoDBStreamsShardRecordProcessor {
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
        shardId = input.shardId();
        metrics.leasesHeld.incrementAndGet();
    }

    @Override
    public void processRecords(DynamoDBStreamsProcessRecordsInput input) {
        List<BulkIndexer.Action> actions = new ArrayList<>(input.records().size());
        for (DynamoDBStreamsClientRecord record : input.records()) {
            Record change = record.getRecord();
            StreamRecord data = change.dynamodb();
            long created = data.approximateCreationDateTime().toEpochMilli();
            String id = documentId(data.keys());
            if (change.eventName() == OperationType.REMOVE) {
                actions.add(new BulkIndexer.Action(true, id, versions.next(created), null, created));
            } else {
                String source = EnhancedDocument.fromAttributeValueMap(data.newImage()).toJson();
                actions.add(new BulkIndexer.Action(false, id, versions.next(created), source, created));
            }
        }
        try {
            indexer.index(actions);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return;
        }
        checkpoint(input.checkpointer());
    }

    @Override
    public void leaseLost(LeaseLostInput input) {
        metrics.leasesHeld.decrementAndGet();
    }

    @Override
    public void shardEnded(ShardEndedInput input) {
        metrics.leasesHeld.decrementAndGet();
        checkpoint(input.checkpointer());
    }

    @Override
    public void shutdownRequested(ShutdownRequestedInput input) {
        checkpoint(input.checkpointer());
    }

    static String documentId(Map<String, AttributeValue> keys) {
        StringBuilder id = new StringBuilder();
        for (AttributeValue value : new TreeMap<>(keys).values()) {
            if (id.length() > 0) {
                id.append('|');
            }
            if (value.s() != null) {
                id.append(value.s());
            } else if (value.n() != null) {
                id.append(value.n());
            } else {
                id.append(Base64.getEncoder().encodeToString(value.b().asByteArray()));
            }
        }
        return id.toString();
    }

    private void checkpoint(RecordProcessorCheckpointer checkpointer) {
        for (int attempt = 1; attempt <= CHECKPOINT_ATTEMPTS; attempt++) {
            try {
                checkpointer.checkpoint();
                return;
            } catch (ShutdownException e) {
                LOG.info("lease of " + shardId + " lost, not checkpointing: " + e.getMessage());
                return;
            } catch (InvalidStateException | KinesisClientLibDependencyException e) {
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

package streamsync.peer.kcl;

import com.amazonaws.auth.AWSCredentialsProvider;
import com.amazonaws.auth.AWSStaticCredentialsProvider;
import com.amazonaws.auth.BasicAWSCredentials;
import com.amazonaws.client.builder.AwsClientBuilder.EndpointConfiguration;
import com.amazonaws.services.dynamodbv2.AmazonDynamoDB;
import com.amazonaws.services.dynamodbv2.AmazonDynamoDBClientBuilder;
import com.amazonaws.services.dynamodbv2.AmazonDynamoDBStreams;
import com.amazonaws.services.dynamodbv2.AmazonDynamoDBStreamsClientBuilder;
import com.amazonaws.services.dynamodbv2.streamsadapter.AmazonDynamoDBStreamsAdapterClient;
import com.amazonaws.services.dynamodbv2.streamsadapter.StreamsWorkerFactory;
import com.amazonaws.services.kinesis.clientlibrary.lib.worker.InitialPositionInStream;
import com.amazonaws.services.kinesis.clientlibrary.lib.worker.KinesisClientLibConfiguration;
import com.amazonaws.services.kinesis.clientlibrary.lib.worker.ParentsFirstShardPrioritization;
import com.amazonaws.services.kinesis.clientlibrary.lib.worker.Worker;
import com.amazonaws.services.kinesis.metrics.impl.NullMetricsFactory;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import org.elasticsearch.client.RestClient;
import streamsync.peer.BulkIndexer;
import streamsync.peer.PeerMetrics;
import streamsync.peer.PeerOptions;

/**
 * A KCL 1.x worker with the DynamoDB Streams Kinesis Adapter that indexes a table's stream into
 * Elasticsearch: the approach streamsync replaces, written as a careful team would, for
 * bench/run_peers.py to run side by side with streamsync on the same stream, lease table and node.
 *
 * <pre>
 * java -cp 'kcl-peer.jar:lib/*' streamsync.peer.kcl.KclPeer --stream-arn ARN --streams-endpoint URL
 *     --dynamodb-endpoint URL --elasticsearch URL --index NAME --application NAME
 *     [--idle-millis 1000] [--failover-millis 10000] [--worker-id ID] [--max-connections 32]
 * </pre>
 *
 * Prints {"message":"started","http_port":N} once its /metrics (see PeerMetrics) listens.
 */
public final class KclPeer {
    private KclPeer() {}

    public static void main(String[] args) throws Exception {
        PeerOptions options = new PeerOptions(args);
        String region = "us-east-1";
        AWSCredentialsProvider credentials =
                new AWSStaticCredentialsProvider(new BasicAWSCredentials("bench", "bench"));
        AmazonDynamoDBStreams streams = AmazonDynamoDBStreamsClientBuilder.standard()
                .withCredentials(credentials)
                .withEndpointConfiguration(new EndpointConfiguration(options.required("streams-endpoint"), region))
                .build();
        AmazonDynamoDBStreamsAdapterClient adapter = new AmazonDynamoDBStreamsAdapterClient(streams);
        // The records are read through getInternalObject(); their JSON copy would only feed
        // KCL's byte metrics, which NullMetricsFactory drops (the adapter's own advice).
        adapter.setGenerateRecordBytes(false);
        AmazonDynamoDB leases = AmazonDynamoDBClientBuilder.standard()
                .withCredentials(credentials)
                .withEndpointConfiguration(new EndpointConfiguration(options.required("dynamodb-endpoint"), region))
                .build();

        String workerId = options.get("worker-id", "kcl-peer-" + UUID.randomUUID());
        KinesisClientLibConfiguration config = new KinesisClientLibConfiguration(
                        options.required("application"), options.required("stream-arn"), credentials, workerId)
                .withRegionName(region)
                .withInitialPositionInStream(InitialPositionInStream.TRIM_HORIZON)
                .withMaxRecords(1000)
                .withIdleTimeBetweenReadsInMillis(Long.parseLong(options.get("idle-millis", "1000")))
                .withFailoverTimeMillis(Long.parseLong(options.get("failover-millis", "10000")))
                .withShardPrioritizationStrategy(new ParentsFirstShardPrioritization(1));

        RestClient elasticsearch = options.elasticsearch();
        PeerMetrics metrics = new PeerMetrics();
        BulkIndexer indexer = new BulkIndexer(elasticsearch, options.required("index"), metrics);

        Worker worker = StreamsWorkerFactory.createDynamoDbStreamsWorker(
                () -> new IndexingProcessor(indexer, metrics), config, adapter, leases, new NullMetricsFactory(), null);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                worker.startGracefulShutdown().get(20, TimeUnit.SECONDS);
            } catch (Exception e) {
                worker.shutdown();
            }
        }));
        PeerOptions.announce(metrics, workerId);
        worker.run();
        elasticsearch.close();
    }
}

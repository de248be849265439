package streamsync.peer.kcl3;

import com.amazonaws.services.dynamodbv2.streamsadapter.AmazonDynamoDBStreamsAdapterClient;
import com.amazonaws.services.dynamodbv2.streamsadapter.StreamsSchedulerFactory;
import com.amazonaws.services.dynamodbv2.streamsadapter.polling.DynamoDBStreamsPollingConfig;
import java.net.URI;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import org.elasticsearch.client.RestClient;
import software.amazon.awssdk.auth.credentials.AwsBasicCredentials;
import software.amazon.awssdk.auth.credentials.StaticCredentialsProvider;
import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.services.cloudwatch.CloudWatchAsyncClient;
import software.amazon.awssdk.services.dynamodb.DynamoDbAsyncClient;
import software.amazon.awssdk.services.dynamodb.streams.DynamoDbStreamsClient;
import software.amazon.kinesis.common.ConfigsBuilder;
import software.amazon.kinesis.common.InitialPositionInStream;
import software.amazon.kinesis.common.InitialPositionInStreamExtended;
import software.amazon.kinesis.coordinator.CoordinatorConfig;
import software.amazon.kinesis.coordinator.Scheduler;
import software.amazon.kinesis.leases.ParentsFirstShardPrioritization;
import software.amazon.kinesis.metrics.NullMetricsFactory;
import software.amazon.kinesis.processor.StreamTracker;
import streamsync.peer.BulkIndexer;
import streamsync.peer.PeerMetrics;
import streamsync.peer.PeerOptions;

/**
 * The KCL 3.x worker with the DynamoDB Streams Kinesis Adapter 2.x, configured as the KCL 1.x
 * peer is (same options, same record processing): maxRecords 1000, idle time from --idle-millis,
 * parents first, TRIM_HORIZON, failover time from --failover-millis, NullMetricsFactory, static
 * test credentials, every client at the given endpoints.
 */
public final class Kcl3Peer {
    private Kcl3Peer() {}

    public static void main(String[] args) throws Exception {
        PeerOptions options = new PeerOptions(args);
        Region region = Region.US_EAST_1;
        StaticCredentialsProvider credentials =
                StaticCredentialsProvider.create(AwsBasicCredentials.create("bench", "bench"));
        DynamoDbStreamsClient streams = DynamoDbStreamsClient.builder()
                .region(region)
                .credentialsProvider(credentials)
                .endpointOverride(URI.create(options.required("streams-endpoint")))
                .build();
        AmazonDynamoDBStreamsAdapterClient adapter = new AmazonDynamoDBStreamsAdapterClient(streams, region);
        URI leaseEndpoint = URI.create(options.required("dynamodb-endpoint"));
        DynamoDbAsyncClient leases = DynamoDbAsyncClient.builder()
                .region(region).credentialsProvider(credentials).endpointOverride(leaseEndpoint).build();
        // Required by ConfigsBuilder; never called with NullMetricsFactory.
        CloudWatchAsyncClient cloudWatch = CloudWatchAsyncClient.builder()
                .region(region).credentialsProvider(credentials).endpointOverride(leaseEndpoint).build();

        RestClient elasticsearch = options.elasticsearch();
        PeerMetrics metrics = new PeerMetrics();
        BulkIndexer indexer = new BulkIndexer(elasticsearch, options.required("index"), metrics);

        String workerId = options.get("worker-id", "kcl3-peer-" + UUID.randomUUID());
        StreamTracker stream = StreamsSchedulerFactory.createSingleStreamTracker(
                options.required("stream-arn"),
                InitialPositionInStreamExtended.newInitialPosition(InitialPositionInStream.TRIM_HORIZON));
        ConfigsBuilder configs = new ConfigsBuilder(stream, options.required("application"), adapter, leases,
                cloudWatch, workerId, () -> new IndexingProcessor(indexer, metrics));
        DynamoDBStreamsPollingConfig polling = new DynamoDBStreamsPollingConfig(adapter);
        polling.maxRecords(1000);
        polling.idleTimeBetweenReadsInMillis(Long.parseLong(options.get("idle-millis", "1000")));
        CoordinatorConfig coordinator =
                configs.coordinatorConfig().shardPrioritization(new ParentsFirstShardPrioritization(1));
        if (Boolean.parseBoolean(options.get("compatible-with-2x", "false"))) {
            // KCL 3.x's documented migration mode: KCL 2.x's lease assignment instead of the
            // worker-utilization-aware one (which assigns nothing without worker metrics).
            coordinator.clientVersionConfig(
                    CoordinatorConfig.ClientVersionConfig.CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X);
        }
        Scheduler scheduler = StreamsSchedulerFactory.createScheduler(
                configs.checkpointConfig(),
                coordinator,
                configs.leaseManagementConfig()
                        .failoverTimeMillis(Long.parseLong(options.get("failover-millis", "10000"))),
                configs.lifecycleConfig(),
                configs.metricsConfig().metricsFactory(new NullMetricsFactory()),
                configs.processorConfig(),
                configs.retrievalConfig().retrievalSpecificConfig(polling),
                adapter);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                scheduler.startGracefulShutdown().get(20, TimeUnit.SECONDS);
            } catch (Exception e) {
                scheduler.shutdown();
            }
        }));
        PeerOptions.announce(metrics, workerId);
        scheduler.run();
        elasticsearch.close();
    }
}

package io.receiptflow.kstreams;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.state.Stores;

/**
 * Runs the Kafka Streams peer of the exactly-once router until it is terminated.
 *
 * <p>Options are {@code --name value} pairs (see {@link #USAGE}); the analytics key comes from the
 * environment variable RECEIPTFLOW_ANALYTICS_KEY, as the router's does, so it never shows in a
 * process list. Exit status 2 on a usage error, 1 when the streams client dies.
 */
public final class PeerMain {
    private static final String USAGE = "usage: java -jar receiptflow-kstreams-peer.jar --bootstrap HOST:PORT"
            + " --app-id ID --state-dir DIR --schemas DIR --policy FILE --checkouts T --consents T"
            + " --customer T --marketing T --analytics T --dlq T [--processor NAME] [--threads N]"
            + " [--order-wait-ms MS] [--commit-interval-ms MS] [--dedup-days D]"
            + " [--default-product-data true|false] [--default-electronic true|false]";

    private PeerMain() {}

    public static void main(String[] args) throws Exception {
        Map<String, String> opt = new HashMap<>();
        for (int i = 0; i + 1 < args.length; i += 2) {
            if (!args[i].startsWith("--")) {
                usage("unexpected argument " + args[i]);
            }
            opt.put(args[i].substring(2), args[i + 1]);
        }
        String key = System.getenv("RECEIPTFLOW_ANALYTICS_KEY");
        if (key == null || key.length() < 16) {
            usage("RECEIPTFLOW_ANALYTICS_KEY must hold the install's analytics key (16 characters at least)");
        }
        RouteProcessor.Config config = new RouteProcessor.Config(
                required(opt, "consents"),
                opt.getOrDefault("processor", required(opt, "app-id")),
                new Consent.State(Boolean.parseBoolean(opt.getOrDefault("default-product-data", "false")),
                        Boolean.parseBoolean(opt.getOrDefault("default-electronic", "false")), false),
                Long.parseLong(opt.getOrDefault("dedup-days", "14")) * 86_400_000L,
                Path.of(required(opt, "schemas")),
                Path.of(required(opt, "policy")),
                key.getBytes(StandardCharsets.UTF_8));
        Topology topology = topology(opt, config);
        KafkaStreams streams = new KafkaStreams(topology, properties(opt));
        CountDownLatch stopped = new CountDownLatch(1);
        int[] status = {0};
        streams.setStateListener((now, before) -> {
            if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
                if (now == KafkaStreams.State.ERROR) {
                    status[0] = 1;
                }
                stopped.countDown();
            }
        });
        // SIGTERM from the benchmark: close cleanly, so the open transaction is committed or aborted.
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close();
            stopped.countDown();
        }));
        streams.start();
        stopped.await();
        streams.close();
        System.exit(status[0]);
    }

    static Topology topology(Map<String, String> opt, RouteProcessor.Config config) {
        Topology t = new Topology();
        // Both inputs feed one processor: partition p of each is one task (see RouteProcessor).
        t.addSource("checkouts", required(opt, "checkouts"));
        t.addSource("consents", config.consentsTopic());
        t.addProcessor("route", () -> new RouteProcessor(config), "checkouts", "consents");
        t.addStateStore(Stores.keyValueStoreBuilder(
                Stores.persistentKeyValueStore(RouteProcessor.SEEN_STORE), Serdes.String(), Serdes.Long()), "route");
        t.addStateStore(Stores.keyValueStoreBuilder(
                Stores.persistentKeyValueStore(RouteProcessor.CONSENT_STORE), Serdes.String(), Serdes.ByteArray()),
                "route");
        t.addSink(RouteProcessor.CUSTOMER, required(opt, "customer"), "route");
        t.addSink(RouteProcessor.MARKETING, required(opt, "marketing"), "route");
        t.addSink(RouteProcessor.ANALYTICS, required(opt, "analytics"), "route");
        t.addSink(RouteProcessor.DLQ, required(opt, "dlq"), "route");
        return t;
    }

    static Properties properties(Map<String, String> opt) {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, required(opt, "app-id"));
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, required(opt, "bootstrap"));
        p.put(StreamsConfig.STATE_DIR_CONFIG, required(opt, "state-dir"));
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, opt.getOrDefault("threads", "1"));
        p.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
        p.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
        // The router holds a partition's records up to processor_order_wait_ms for its other input
        // when that one is not read to its end; max.task.idle.ms is Kafka Streams' same wait.
        p.put(StreamsConfig.MAX_TASK_IDLE_MS_CONFIG, opt.getOrDefault("order-wait-ms", "2000"));
        // Kafka Streams' default under exactly-once (100 ms): how often the transaction commits.
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, opt.getOrDefault("commit-interval-ms", "100"));
        p.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");
        // The router's producer settings: a commit flushes regardless of linger, lz4 as on every topic.
        p.put(StreamsConfig.producerPrefix(ProducerConfig.LINGER_MS_CONFIG), "100");
        p.put(StreamsConfig.producerPrefix(ProducerConfig.COMPRESSION_TYPE_CONFIG), "lz4");
        p.put(StreamsConfig.producerPrefix(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG), "30000");
        return p;
    }

    private static String required(Map<String, String> opt, String name) {
        String value = opt.get(name);
        if (value == null) {
            usage("--" + name + " is required");
        }
        return value;
    }

    private static void usage(String problem) {
        System.err.println("receiptflow-kstreams-peer: " + problem + "\n" + USAGE);
        System.exit(2);
    }
}

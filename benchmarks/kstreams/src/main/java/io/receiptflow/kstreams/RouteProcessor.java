package io.receiptflow.kstreams;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.processor.PunctuationType;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.processor.api.RecordMetadata;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * The router's step (receiptflow.processors.route_step) as one Kafka Streams processor fed by both
 * inputs of a partition number.
 *
 * <p>Both input topics are sources of this one processor, so partition p of {@code checkouts} and
 * of {@code consents} form one task: a card's consent changes and its receipts meet in the same
 * task, and Kafka Streams hands the task's records over in timestamp order across the two
 * partitions (both topics stamp broker append time), which is the order the router's merge
 * restores. Its state lives in two RocksDB stores with changelogs; under exactly_once_v2 the
 * outputs, the store changelogs and the consumed offsets commit in one transaction.
 */
final class RouteProcessor implements Processor<byte[], byte[], byte[], byte[]> {
    static final String SEEN_STORE = "receipts-seen";
    static final String CONSENT_STORE = "consent-history";
    static final String CUSTOMER = "customer";
    static final String MARKETING = "marketing";
    static final String ANALYTICS = "analytics";
    static final String DLQ = "dlq";

    /** What the processor is told at start; the defaults are the router's settings' defaults. */
    record Config(String consentsTopic, String processorName, Consent.State defaultConsent, long dedupMs,
            Path schemas, Path policy, byte[] analyticsKey) {}

    private final Config config;
    private ProcessorContext<byte[], byte[]> context;
    private KeyValueStore<String, Long> seen;
    private KeyValueStore<String, byte[]> consents;
    private WireFormat wire;
    private Policy policy;
    private Route route;

    RouteProcessor(Config config) {
        this.config = config;
    }

    @Override
    public void init(ProcessorContext<byte[], byte[]> context) {
        this.context = context;
        seen = context.getStateStore(SEEN_STORE);
        consents = context.getStateStore(CONSENT_STORE);
        try {
            // One per task: the Avro readers and writers are not thread-safe.
            wire = new WireFormat(config.schemas());
            policy = new Policy(config.policy());
        } catch (IOException e) {
            throw new IllegalStateException("cannot read the schemas or the policy: " + e.getMessage(), e);
        }
        route = new Route(wire, config.analyticsKey());
        // The router forgets receipt ids older than the dedup window (event time); so does this.
        context.schedule(Duration.ofMinutes(10), PunctuationType.WALL_CLOCK_TIME, this::prune);
    }

    @Override
    public void process(Record<byte[], byte[]> record) {
        RecordMetadata where = context.recordMetadata().orElseThrow();
        long now = System.currentTimeMillis();
        try {
            if (where.topic().equals(config.consentsTopic())) {
                consent(record);
            } else {
                checkout(record, now);
            }
        } catch (Rejected r) {
            deadLetter(r, record, where, now);
        }
    }

    private void consent(Record<byte[], byte[]> record) throws Rejected {
        if (record.value() == null) { // tombstone: the card was erased; its history goes with it
            if (record.key() != null) {
                consents.delete(new String(record.key(), StandardCharsets.UTF_8));
            }
            return;
        }
        GenericRecord r = wire.decode(record.value(), "consent_change");
        String card = r.get("card_id").toString();
        long at = (Long) r.get("event_time");
        if (!Checkout.representable(at)) {
            throw new Rejected("undecodable", "cannot decode 'consent_change' body: event_time out of range");
        }
        Validation.validateConsent(card, r.get("source").toString());
        Consent.Change change = new Consent.Change(at,
                (Boolean) r.get("product_data_marketing"), (Boolean) r.get("electronic_marketing"));
        Consent.History history = Consent.History.fromBytes(consents.get(card));
        consents.put(card, history.withChange(change, record.timestamp()).toBytes());
    }

    private void checkout(Record<byte[], byte[]> record, long now) throws Rejected {
        Checkout c = Checkout.from(wire.decode(record.value(), "checkout"));
        Validation.validate(c, now);
        if (seen.get(c.receiptId()) != null) {
            return; // a duplicate from the registers' at-least-once outbox
        }
        Policy.Decision decision = policy.versionAt(c.chain(), c.localDate());
        Consent.State state = c.cardId() == null
                ? config.defaultConsent()
                : Consent.History.fromBytes(consents.get(c.cardId()))
                        .effective(c.eventTimeMs(), record.timestamp(), config.defaultConsent());
        Route.Routed routed = route.route(c, decision, state, now);
        byte[] key = (c.cardId() != null ? c.cardId() : c.storeId()).getBytes(StandardCharsets.UTF_8);
        // The card-linked records keep the checkout's append time (the record's timestamp), as the router's do.
        byte[] customer = wire.encode("purchase", routed.customer());
        context.forward(record.withKey(key).withValue(customer), CUSTOMER);
        if (routed.marketing() != null) {
            byte[] marketing = routed.marketing() == routed.customer() ? customer : wire.encode("purchase", routed.marketing());
            context.forward(record.withKey(key).withValue(marketing), MARKETING);
        }
        if (routed.analytics() != null) {
            // The anonymous basket gets the time of sending, not the checkout's: as the router sends it.
            byte[] value = wire.encode("analytics_basket", routed.analytics());
            // Keyed by chain, as the router keys it: the aggregator's window (chain, local day) on one partition.
            context.forward(new Record<>(c.chain().getBytes(StandardCharsets.UTF_8), value, now), ANALYTICS);
        }
        seen.put(c.receiptId(), c.eventTimeMs());
    }

    private void deadLetter(Rejected r, Record<byte[], byte[]> record, RecordMetadata where, long now) {
        GenericRecord d = new GenericData.Record(wire.schema("dead_letter"));
        d.put("reason", r.reason);
        d.put("message", r.getMessage());
        d.put("field", r.field);
        d.put("source_topic", where.topic());
        d.put("source_partition", where.partition());
        d.put("source_offset", where.offset());
        d.put("original_key", record.key() == null ? null : ByteBuffer.wrap(record.key()));
        d.put("original_value", record.value() == null ? null : ByteBuffer.wrap(record.value()));
        d.put("failed_at", now);
        d.put("processor", config.processorName());
        context.forward(new Record<>(record.key(), wire.encode("dead_letter", d), now), DLQ);
    }

    private void prune(long now) {
        long horizon = now - config.dedupMs();
        List<String> old = new ArrayList<>();
        try (KeyValueIterator<String, Long> all = seen.all()) {
            while (all.hasNext()) {
                KeyValue<String, Long> entry = all.next();
                if (entry.value < horizon) {
                    old.add(entry.key);
                }
            }
        }
        old.forEach(seen::delete);
    }
}

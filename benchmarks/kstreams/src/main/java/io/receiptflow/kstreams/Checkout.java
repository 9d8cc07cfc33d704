package io.receiptflow.kstreams;

import java.time.Instant;
import java.time.LocalDate;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.List;
import org.apache.avro.generic.GenericRecord;

/**
 * A decoded checkout (schema checkout v2; v1 records arrive with the v2 defaults filled in).
 *
 * <p>The event time is kept as the UTC instant in ms plus the register's UTC offset, as on the wire:
 * the policy decides by the local date, the analytics basket by the UTC hour and month.
 */
record Checkout(
        String receiptId,
        String chain,
        String storeId,
        String registerId,
        String cardId,
        long eventTimeMs,
        int offsetMinutes,
        String paymentMethod,
        String currency,
        long totalCents,
        String receiptKind,
        String originalReceiptId,
        List<Adjustment> adjustments,
        List<Long> payments,
        List<Line> lines) {

    record Line(int lineNo, String sku, String productGroup, double quantity, long unitPriceCents, long amountCents,
            String kind, String unit, Integer refLineNo) {}

    record Adjustment(String kind, String code, long amountCents) {}

    // The range of Python's datetime (years 1 to 9999): the router's decoder fails outside it.
    private static final long MIN_MS = LocalDate.of(1, 1, 1).atStartOfDay(ZoneOffset.UTC).toInstant().toEpochMilli();
    private static final long MAX_MS = Instant.parse("9999-12-31T23:59:59.999Z").toEpochMilli();

    static Checkout from(GenericRecord r) throws Rejected {
        long eventTime = (Long) r.get("event_time");
        if (!representable(eventTime)) {
            throw new Rejected("undecodable", "cannot decode 'checkout' body: event_time out of range");
        }
        int offset = (Integer) r.get("event_tz_offset_minutes");
        // Real offsets lie within +-18 h; anything else is a broken register, not a time zone.
        if (offset < -18 * 60 || offset > 18 * 60) {
            throw new Rejected("out_of_range", "UTC offset of " + offset + " minutes is not a time zone",
                    "event_tz_offset_minutes");
        }
        long local = eventTime + offset * 60_000L;
        if (!representable(local)) {
            throw new Rejected("out_of_range", "event time is out of range", "event_time");
        }
        List<Adjustment> adjustments = new ArrayList<>();
        for (Object o : (List<?>) r.get("adjustments")) {
            GenericRecord a = (GenericRecord) o;
            adjustments.add(new Adjustment(str(a.get("kind")), str(a.get("code")), (Long) a.get("amount_cents")));
        }
        List<Long> payments = new ArrayList<>();
        for (Object o : (List<?>) r.get("payments")) {
            payments.add((Long) ((GenericRecord) o).get("amount_cents"));
        }
        List<Line> lines = new ArrayList<>();
        for (Object o : (List<?>) r.get("lines")) {
            GenericRecord l = (GenericRecord) o;
            lines.add(new Line((Integer) l.get("line_no"), str(l.get("sku")), str(l.get("product_group")),
                    (Double) l.get("quantity"), (Long) l.get("unit_price_cents"), (Long) l.get("amount_cents"),
                    str(l.get("kind")), str(l.get("unit")), (Integer) l.get("ref_line_no")));
        }
        return new Checkout(str(r.get("receipt_id")), str(r.get("chain")), str(r.get("store_id")),
                str(r.get("register_id")), str(r.get("card_id")), eventTime, offset, str(r.get("payment_method")),
                str(r.get("currency")), (Long) r.get("total_cents"), str(r.get("receipt_kind")),
                str(r.get("original_receipt_id")), adjustments, payments, lines);
    }

    /** Whether the router can hold this instant (ms) as a time at all; it fails to decode others. */
    static boolean representable(long ms) {
        return ms >= MIN_MS && ms <= MAX_MS;
    }

    /** The local date printed on the receipt: the day the policy version is chosen by. */
    LocalDate localDate() {
        return Instant.ofEpochMilli(eventTimeMs).atOffset(ZoneOffset.ofTotalSeconds(offsetMinutes * 60)).toLocalDate();
    }

    private static String str(Object o) {
        // Avro hands out Utf8 for strings and EnumSymbol for enums; the rest of the code wants String.
        return o == null ? null : o.toString();
    }
}

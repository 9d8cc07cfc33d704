package io.receiptflow.kstreams;

import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.ZonedDateTime;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;

/**
 * The router's pure core (receiptflow.processors.core and policy): a valid checkout, the policy
 * decision and the consent state in, the Avro records for the three purchase topics out.
 *
 * <p>Nothing here touches Kafka or a store; the processor passes the time in.
 */
final class Route {
    /** What one checkout becomes; a null marketing or analytics record means nothing for that topic. */
    record Routed(GenericRecord customer, GenericRecord marketing, GenericRecord analytics) {}

    private record Group(String name, double quantity, long amountCents, int lines) {}

    /** A checkout line bound for the basket, with its share of the receipt-level adjustments. */
    private record BasketLine(Checkout.Line line, long adjustmentCents) {}

    // Python compares strings by code point; String.compareTo by UTF-16 unit. They differ only
    // beyond the BMP, where a code point comparison keeps the router's order.
    static final Comparator<String> CODE_POINTS = (a, b) -> {
        int i = 0;
        int j = 0;
        while (i < a.length() && j < b.length()) {
            int ca = a.codePointAt(i);
            int cb = b.codePointAt(j);
            if (ca != cb) {
                return Integer.compare(ca, cb);
            }
            i += Character.charCount(ca);
            j += Character.charCount(cb);
        }
        return Integer.compare(a.length() - i, b.length() - j);
    };
    // Python's float order: -0.0 equals 0.0 (Double.compare would order them).
    private static final Comparator<Double> FLOATS = (a, b) -> a < b ? -1 : (a > b ? 1 : 0);
    // The canonical order of a basket's lines: the register's scanning order is not the basket's.
    // Kinds and units are string enums in the router, so they sort by name.
    private static final Comparator<BasketLine> BASKET_ORDER = Comparator
            .comparing((BasketLine b) -> b.line.productGroup(), CODE_POINTS)
            .thenComparing(b -> b.line.sku(), CODE_POINTS)
            .thenComparingLong(b -> b.line.amountCents())
            .thenComparing(b -> b.line.quantity(), FLOATS)
            .thenComparingLong(b -> b.line.unitPriceCents())
            .thenComparing(b -> b.line.kind())
            .thenComparing(b -> b.line.unit())
            .thenComparingLong(BasketLine::adjustmentCents);

    private final Schema purchase;
    private final Schema item;
    private final Schema groupTotal;
    private final Schema consent;
    private final Schema basket;
    private final Schema basketLine;
    private final byte[] analyticsKey;
    private final Map<String, byte[]> periodKeys = new HashMap<>();

    Route(WireFormat wire, byte[] analyticsKey) {
        purchase = wire.schema("purchase");
        item = purchase.getField("items").schema().getElementType();
        groupTotal = purchase.getField("groups").schema().getElementType();
        consent = purchase.getField("consent").schema();
        basket = wire.schema("analytics_basket");
        basketLine = basket.getField("lines").schema().getElementType();
        this.analyticsKey = analyticsKey;
    }

    Routed route(Checkout c, Policy.Decision decision, Consent.State state, long nowMs) {
        Map<Integer, Long> shares = c.adjustments().isEmpty()
                ? Map.of() : AdjustmentSplit.lineShares(c.lines(), c.adjustments());
        List<Group> groups = c.lines().isEmpty() ? List.of() : groupTotals(c.lines(), shares);
        GenericRecord customer = purchase(c, decision.level(), groups, decision.versionId(), state, nowMs);
        GenericRecord marketing = null;
        if (c.cardId() != null && (state.productData() || state.electronic())) {
            // Without product-data consent, marketing sees product groups at most.
            Policy.Level level = state.productData()
                    ? decision.level() : decision.level().coarsest(Policy.Level.PRODUCT_GROUP);
            marketing = level == decision.level()
                    ? customer : purchase(c, level, groups, decision.versionId(), state, nowMs);
        }
        GenericRecord analytics = c.lines().isEmpty() ? null : basket(c, shares);
        return new Routed(customer, marketing, analytics);
    }

    private GenericRecord purchase(Checkout c, Policy.Level level, List<Group> groups, String version,
            Consent.State state, long nowMs) {
        GenericRecord p = new GenericData.Record(purchase);
        p.put("receipt_id", c.receiptId());
        p.put("chain", c.chain());
        p.put("store_id", c.storeId());
        p.put("register_id", c.registerId());
        p.put("card_id", c.cardId());
        p.put("event_time", c.eventTimeMs());
        p.put("event_tz_offset_minutes", c.offsetMinutes());
        p.put("payment_method", c.paymentMethod());
        p.put("currency", c.currency());
        p.put("total_cents", c.totalCents());
        p.put("receipt_kind", symbol("receipt_kind", c.receiptKind()));
        p.put("original_receipt_id", c.originalReceiptId());
        p.put("deposit_cents", depositCents(c));
        p.put("adjustment_cents", adjustmentCents(c));
        p.put("granularity", symbol("granularity", level.name()));
        List<GenericRecord> items = new ArrayList<>();
        if (level == Policy.Level.ITEM) {
            for (Checkout.Line l : c.lines()) {
                items.add(item(l));
            }
        }
        List<GenericRecord> groupRecords = new ArrayList<>();
        if (level != Policy.Level.RECEIPT) {
            for (Group g : groups) {
                GenericRecord r = new GenericData.Record(groupTotal);
                r.put("product_group", g.name);
                r.put("quantity", g.quantity);
                r.put("amount_cents", g.amountCents);
                r.put("lines", g.lines);
                groupRecords.add(r);
            }
        }
        p.put("items", items);
        p.put("groups", groupRecords);
        p.put("policy_version", version);
        GenericRecord cs = new GenericData.Record(consent);
        cs.put("product_data_marketing", state.productData());
        cs.put("electronic_marketing", state.electronic());
        cs.put("known", state.known());
        p.put("consent", cs);
        p.put("processed_at", nowMs);
        return p;
    }

    private GenericRecord item(Checkout.Line l) {
        GenericRecord r = new GenericData.Record(item);
        r.put("line_no", l.lineNo());
        r.put("sku", l.sku());
        r.put("product_group", l.productGroup());
        r.put("quantity", l.quantity());
        r.put("unit_price_cents", l.unitPriceCents());
        r.put("amount_cents", l.amountCents());
        r.put("kind", new GenericData.EnumSymbol(item.getField("kind").schema(), l.kind()));
        r.put("unit", new GenericData.EnumSymbol(item.getField("unit").schema(), l.unit()));
        r.put("ref_line_no", l.refLineNo());
        return r;
    }

    /**
     * Net totals by product group, sorted by name; deposits are in no group, only goods count quantity,
     * and each goods line counts with its share of the receipt-level adjustments.
     */
    private static List<Group> groupTotals(List<Checkout.Line> lines, Map<Integer, Long> shares) {
        Map<String, double[]> quantities = new TreeMap<>(CODE_POINTS);
        Map<String, long[]> amounts = new HashMap<>();
        for (Checkout.Line l : lines) {
            if (isDeposit(l.kind())) {
                continue;
            }
            double qty = isGoods(l.kind()) ? l.quantity() : 0.0;
            long amount = l.amountCents() + shares.getOrDefault(l.lineNo(), 0L);
            double[] q = quantities.get(l.productGroup());
            if (q == null) {
                // Starts at the first value, not 0.0 + it, so sums are the router's to the last bit.
                quantities.put(l.productGroup(), new double[] {qty});
                amounts.put(l.productGroup(), new long[] {amount, 1});
            } else {
                q[0] += qty;
                long[] a = amounts.get(l.productGroup());
                a[0] += amount;
                a[1] += 1;
            }
        }
        List<Group> out = new ArrayList<>();
        quantities.forEach((name, q) -> {
            long[] a = amounts.get(name);
            out.add(new Group(name, q[0], a[0], (int) a[1]));
        });
        return out;
    }

    /** The anonymous analytics record: a keyed basket id, the UTC hour, lines in canonical order. */
    private GenericRecord basket(Checkout c, Map<Integer, Long> shares) {
        ZonedDateTime utc = Instant.ofEpochMilli(c.eventTimeMs()).atZone(ZoneOffset.UTC);
        String period = String.format("%04d-%02d", utc.getYear(), utc.getMonthValue());
        GenericRecord b = new GenericData.Record(basket);
        b.put("basket_id", basketId(c.receiptId(), period));
        b.put("key_period", period);
        b.put("chain", c.chain());
        b.put("store_id", c.storeId());
        b.put("event_hour", Math.floorDiv(c.eventTimeMs(), 3_600_000L) * 3_600_000L);
        b.put("event_tz_offset_minutes", c.offsetMinutes());
        b.put("payment_method", c.paymentMethod());
        b.put("currency", c.currency());
        b.put("total_cents", c.totalCents());
        // The kind, but not the original receipt: that link would join two visits of one shopper.
        b.put("receipt_kind", new GenericData.EnumSymbol(basket.getField("receipt_kind").schema(), c.receiptKind()));
        b.put("deposit_cents", depositCents(c));
        b.put("adjustment_cents", adjustmentCents(c));
        // The share is looked up by line number before the sort: the basket keeps no line numbers.
        List<BasketLine> sorted = new ArrayList<>(c.lines().size());
        for (Checkout.Line l : c.lines()) {
            sorted.add(new BasketLine(l, shares.getOrDefault(l.lineNo(), 0L)));
        }
        sorted.sort(BASKET_ORDER); // stable, as Python's sort
        Schema kind = basketLine.getField("kind").schema();
        Schema unit = basketLine.getField("unit").schema();
        List<GenericRecord> lines = new ArrayList<>();
        for (BasketLine bl : sorted) {
            Checkout.Line l = bl.line;
            GenericRecord r = new GenericData.Record(basketLine);
            r.put("sku", l.sku());
            r.put("product_group", l.productGroup());
            r.put("quantity", l.quantity());
            r.put("unit_price_cents", l.unitPriceCents());
            r.put("amount_cents", l.amountCents());
            r.put("kind", new GenericData.EnumSymbol(kind, l.kind()));
            r.put("unit", new GenericData.EnumSymbol(unit, l.unit()));
            r.put("adjustment_cents", bl.adjustmentCents);
            lines.add(r);
        }
        b.put("lines", lines);
        return b;
    }

    /** HMAC(HMAC(key, period), receipt id), 32 hex characters: the router's basket pseudonym. */
    String basketId(String receiptId, String period) {
        byte[] periodKey = periodKeys.computeIfAbsent(period, p -> hmac(analyticsKey, p));
        return HexFormat.of().formatHex(hmac(periodKey, receiptId)).substring(0, 32);
    }

    private static byte[] hmac(byte[] key, String message) {
        try {
            Mac mac = Mac.getInstance("HmacSHA256");
            mac.init(new SecretKeySpec(key, "HmacSHA256"));
            return mac.doFinal(message.getBytes(StandardCharsets.UTF_8));
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("HmacSHA256 is not available: " + e.getMessage(), e);
        }
    }

    private GenericData.EnumSymbol symbol(String field, String value) {
        return new GenericData.EnumSymbol(purchase.getField(field).schema(), value);
    }

    private static long depositCents(Checkout c) {
        long deposits = 0;
        for (Checkout.Line l : c.lines()) {
            if (isDeposit(l.kind())) {
                deposits += l.amountCents();
            }
        }
        return deposits;
    }

    private static long adjustmentCents(Checkout c) {
        long adjustments = 0;
        for (Checkout.Adjustment a : c.adjustments()) {
            adjustments += a.amountCents();
        }
        return adjustments;
    }

    private static boolean isDeposit(String kind) {
        return kind.equals("DEPOSIT") || kind.equals("DEPOSIT_REFUND");
    }

    static boolean isGoods(String kind) {
        return kind.equals("SALE") || kind.equals("RETURN") || kind.equals("VOID");
    }
}

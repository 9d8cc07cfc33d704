package io.receiptflow.kstreams;

import java.text.Normalizer;
import java.time.Instant;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.HashSet;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * The router's validation rules (receiptflow.validation), with the same reason codes and fields.
 *
 * <p>The messages are the router's text: the equality check compares them, with only the times in
 * them masked (the router's "now" is not the peer's).
 */
final class Validation {
    static final long MAX_TOTAL_CENTS = 10_000_000L;
    static final int MAX_LINES = 2_000;
    static final double MAX_QUANTITY = 100_000;
    static final long MAX_FUTURE_MS = 10 * 60_000L;
    static final long EARLIEST_EVENT_MS = 946_684_800_000L; // 2000-01-01T00:00:00Z
    static final int MAX_STRING_CHARS = 128;
    // Python's re.match with "$" also accepts one trailing newline; so does this, to agree with it.
    private static final Pattern CURRENCY = Pattern.compile("[A-Z]{3}\n?");
    private static final DateTimeFormatter SECONDS = DateTimeFormatter.ofPattern("uuuu-MM-dd'T'HH:mm:ss");

    private Validation() {}

    static void checkText(String value, String field, boolean required) throws Rejected {
        if (required && isBlank(value)) {
            throw new Rejected("missing_id", field + " is empty", field);
        }
        int chars = value.codePointCount(0, value.length()); // Python counts code points
        if (chars > MAX_STRING_CHARS) {
            throw new Rejected("too_long", field + " has " + chars + " characters (at most " + MAX_STRING_CHARS + ")", field);
        }
        boolean ascii = value.chars().allMatch(c -> c < 0x80);
        if (!ascii) {
            for (int cp : value.codePoints().toArray()) {
                if (invisible(cp)) {
                    throw new Rejected("invalid_characters", field + " contains " + uplus(cp), field);
                }
            }
            if (!Normalizer.isNormalized(value, Normalizer.Form.NFC)) {
                throw new Rejected("not_normalized", field + " is not in Unicode NFC", field);
            }
        } else {
            for (int cp : value.codePoints().toArray()) {
                if (cp < 0x20 || cp == 0x7f) {
                    throw new Rejected("invalid_characters", field + " contains " + uplus(cp), field);
                }
            }
        }
    }

    static void validateConsent(String cardId, String source) throws Rejected {
        checkText(cardId, "card_id", true);
        checkText(source, "source", false);
    }

    static void validate(Checkout c, long nowMs) throws Rejected {
        checkText(c.receiptId(), "receipt_id", true);
        checkText(c.chain(), "chain", true);
        checkText(c.storeId(), "store_id", true);
        checkText(c.registerId(), "register_id", true);
        if (c.cardId() != null) {
            if (isBlank(c.cardId())) {
                throw new Rejected("missing_id", "card_id is an empty string (use null for anonymous)", "card_id");
            }
            checkText(c.cardId(), "card_id", true);
        }
        if (!CURRENCY.matcher(c.currency()).matches()) {
            throw new Rejected("schema", "currency '" + c.currency() + "' is not an ISO 4217 code", "currency");
        }
        checkKind(c);
        if (Math.abs(c.totalCents()) > MAX_TOTAL_CENTS) {
            throw new Rejected("absurd_amount", "total_cents " + c.totalCents() + " exceeds " + MAX_TOTAL_CENTS, "total_cents");
        }
        if (c.eventTimeMs() > nowMs + MAX_FUTURE_MS) {
            // Both times in the register's offset, as the router says them.
            throw new Rejected("future_event_time", "event_time " + isoformat(c.eventTimeMs(), c.offsetMinutes())
                    + " is after " + isoformat(nowMs, c.offsetMinutes()) + " (now, plus "
                    + MAX_FUTURE_MS / 60_000 + " min of clock drift allowed)", "event_time");
        }
        if (c.eventTimeMs() < EARLIEST_EVENT_MS) {
            throw new Rejected("absurd_event_time",
                    "event_time " + isoformat(c.eventTimeMs(), c.offsetMinutes()) + " is too old", "event_time");
        }
        if (c.lines().size() > MAX_LINES) {
            throw new Rejected("absurd_amount", c.lines().size() + " lines on one receipt", "lines");
        }
        Set<Integer> seen = new HashSet<>();
        long lineSum = 0;
        for (int i = 0; i < c.lines().size(); i++) {
            Checkout.Line line = c.lines().get(i);
            String where = "lines[" + i + "]";
            if (line.lineNo() <= 0) { // an Avro int cannot exceed 2^31 - 1
                throw new Rejected("out_of_range", "line_no " + line.lineNo() + " is not in 1..2147483647", where + ".line_no");
            }
            if (!seen.add(line.lineNo())) {
                throw new Rejected("duplicate_line", "line_no " + line.lineNo() + " appears twice", where + ".line_no");
            }
            checkText(line.sku(), where + ".sku", true);
            checkText(line.productGroup(), where + ".product_group", true);
            checkLine(line, where);
            lineSum += line.amountCents();
        }
        long adjusted = 0;
        for (int i = 0; i < c.adjustments().size(); i++) {
            Checkout.Adjustment adj = c.adjustments().get(i);
            checkText(adj.code(), "adjustments[" + i + "].code", false);
            if (adj.amountCents() > 0) {
                throw new Rejected("wrong_sign", "a " + adj.kind() + " of +" + adj.amountCents() + " cents", "adjustments[" + i + "]");
            }
            if (adj.amountCents() < -MAX_TOTAL_CENTS) {
                throw new Rejected("absurd_amount", "a " + adj.kind() + " of " + adj.amountCents() + " cents", "adjustments[" + i + "]");
            }
            adjusted += adj.amountCents();
        }
        if (!c.lines().isEmpty() && lineSum + adjusted != c.totalCents()) {
            throw new Rejected("totals_mismatch", "lines add up to " + lineSum + " cents, total_cents is " + c.totalCents(), "total_cents");
        }
        if (!c.payments().isEmpty()) {
            long paid = 0;
            boolean absurd = false;
            for (long p : c.payments()) {
                paid += p;
                absurd |= Math.abs(p) > MAX_TOTAL_CENTS;
            }
            if (paid != c.totalCents() || absurd) {
                throw new Rejected("totals_mismatch", "payments add up to " + paid + " cents, total is " + c.totalCents(), "payments");
            }
        }
    }

    private static void checkKind(Checkout c) throws Rejected {
        if (c.receiptKind().equals("REFUND")) {
            String original = c.originalReceiptId();
            if (original == null || original.equals(c.receiptId())) {
                throw new Rejected("missing_original", "a refund must name the receipt it refunds (not itself)", "original_receipt_id");
            }
            checkText(original, "original_receipt_id", true);
            if (c.totalCents() > 0) {
                throw new Rejected("wrong_sign", "a refund pays back, total_cents is +" + c.totalCents(), "total_cents");
            }
            return;
        }
        if (c.originalReceiptId() != null) {
            throw new Rejected("schema", "a " + c.receiptKind() + " receipt names an original receipt", "original_receipt_id");
        }
        if (c.receiptKind().equals("CANCEL") && c.totalCents() != 0) {
            throw new Rejected("totals_mismatch", "a cancelled receipt totals 0, not " + c.totalCents(), "total_cents");
        }
        if (c.totalCents() < 0 && c.lines().isEmpty()) {
            throw new Rejected("negative_amount", "total_cents is " + c.totalCents(), "total_cents");
        }
    }

    private static void checkLine(Checkout.Line line, String where) throws Rejected {
        long amount = line.amountCents();
        double qty = line.quantity();
        String kind = line.kind();
        if (line.unitPriceCents() < 0) {
            throw new Rejected("negative_amount", "line " + line.lineNo() + " has a negative unit price", where);
        }
        if (Math.abs(amount) > MAX_TOTAL_CENTS || line.unitPriceCents() > MAX_TOTAL_CENTS) {
            throw new Rejected("absurd_amount", "line " + line.lineNo() + " amount " + amount + ", unit " + line.unitPriceCents(), where);
        }
        if (!(Math.abs(qty) <= MAX_QUANTITY)) { // also NaN
            throw new Rejected("absurd_amount", "line " + line.lineNo() + " quantity " + qty, where);
        }
        if (line.refLineNo() != null && line.refLineNo() <= 0) {
            throw new Rejected("out_of_range", "ref_line_no " + line.refLineNo() + " is not in 1..2147483647", where);
        }
        boolean ok;
        switch (kind) {
            case "SALE" -> {
                if (amount < 0) {
                    throw new Rejected("negative_amount", "line " + line.lineNo() + " has a negative amount", where);
                }
                // Quantity 0 with nothing charged is a line voided in place.
                if (!(qty > 0 || (qty == 0 && amount == 0))) {
                    throw new Rejected("absurd_amount", "line " + line.lineNo() + " quantity " + qty, where);
                }
                return;
            }
            case "DEPOSIT" -> ok = amount >= 0 && qty > 0;
            case "DISCOUNT", "BENEFIT" -> ok = amount <= 0 && qty >= 0;
            case "VOID" -> ok = amount <= 0 && qty <= 0;
            default -> ok = amount <= 0 && qty < 0; // RETURN, DEPOSIT_REFUND: goods or deposit going back
        }
        if (!ok) {
            throw new Rejected("wrong_sign", "a " + kind + " line " + line.lineNo() + " with amount " + amount + ", quantity " + qty, where);
        }
    }

    /** Python's str.strip() leaves nothing: every character is whitespace in its sense. */
    private static boolean isBlank(String s) {
        return s.codePoints().allMatch(cp -> Character.isWhitespace(cp) || Character.isSpaceChar(cp)
                || (cp >= 0x1c && cp <= 0x1f) || cp == 0x85);
    }

    /** Control, format, surrogate, private-use, unassigned and line/paragraph separators (the router's list). */
    private static boolean invisible(int cp) {
        return switch (Character.getType(cp)) {
            case Character.CONTROL, Character.FORMAT, Character.SURROGATE, Character.PRIVATE_USE,
                    Character.UNASSIGNED, Character.LINE_SEPARATOR, Character.PARAGRAPH_SEPARATOR -> true;
            default -> false;
        };
    }

    /** Python's datetime.isoformat() of an aware time: a fraction only if there is one, "+00:00" for UTC. */
    static String isoformat(long ms, int offsetMinutes) {
        OffsetDateTime t = Instant.ofEpochMilli(ms).atOffset(ZoneOffset.ofTotalSeconds(offsetMinutes * 60));
        int micros = t.getNano() / 1_000;
        int abs = Math.abs(offsetMinutes);
        return t.format(SECONDS) + (micros == 0 ? "" : String.format(".%06d", micros))
                + String.format("%s%02d:%02d", offsetMinutes < 0 ? "-" : "+", abs / 60, abs % 60);
    }

    private static String uplus(int cp) {
        return String.format("U+%04X", cp);
    }
}

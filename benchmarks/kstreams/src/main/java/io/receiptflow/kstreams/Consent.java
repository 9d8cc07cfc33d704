package io.receiptflow.kstreams;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

/**
 * Consent as the router sees it (receiptflow.processors.consent): a short history of full consent
 * states per card, and the rule that picks the state a receipt is routed under.
 *
 * <p>For a receipt the more restrictive of the state in force at its event time (a change at
 * exactly that instant counts only where it is stricter) and the newest state known applies; where
 * either is unknown, the configured default. Histories are kept in the consent store as bytes.
 */
final class Consent {
    /** Changes kept per card, as the router keeps them. */
    static final int MAX_CHANGES_PER_CARD = 32;

    record State(boolean productData, boolean electronic, boolean known) {
        State strictest(State o) {
            return new State(productData && o.productData, electronic && o.electronic, known && o.known);
        }
    }

    record Change(long atMs, boolean productData, boolean electronic) {}

    /**
     * A card's changes, the broker's append time of the newest record applied ({@code -1}: none
     * known) and the changes before the records of that millisecond ({@code null}: none known), as
     * the router's ConsentHistory keeps them: a checkout appended in that millisecond is a tie of the
     * write order and takes the stricter of the two.
     */
    record History(List<Change> changes, long writtenMs, List<Change> beforeWritten) {
        static final History EMPTY = new History(List.of(), -1, null);

        History withChange(Change change, long appendedMs) {
            if (changes.contains(change)) {
                return this;
            }
            List<Change> before = appendedMs == writtenMs ? beforeWritten : changes;
            return new History(Consent.withChange(changes, change), appendedMs, before);
        }

        /** The consent a receipt made at {@code eventMs}, its checkout appended at {@code appendedMs}. */
        State effective(long eventMs, long appendedMs, State fallback) {
            State state = Consent.effective(changes, eventMs, fallback);
            if (appendedMs == writtenMs && beforeWritten != null) {
                state = state.strictest(Consent.effective(beforeWritten, eventMs, fallback));
            }
            return state;
        }

        byte[] toBytes() {
            byte[] now = Consent.toBytes(changes);
            byte[] before = beforeWritten == null ? new byte[0] : Consent.toBytes(beforeWritten);
            ByteBuffer buf = ByteBuffer.allocate(12 + before.length + now.length);
            buf.putLong(writtenMs).putInt(beforeWritten == null ? -1 : beforeWritten.size()).put(before).put(now);
            return buf.array();
        }

        static History fromBytes(byte[] bytes) {
            if (bytes == null) {
                return EMPTY;
            }
            ByteBuffer buf = ByteBuffer.wrap(bytes);
            long written = buf.getLong();
            int nBefore = buf.getInt();
            List<Change> before = null;
            if (nBefore >= 0) {
                byte[] raw = new byte[nBefore * 9];
                buf.get(raw);
                before = Consent.fromBytes(raw);
            }
            byte[] rest = new byte[buf.remaining()];
            buf.get(rest);
            return new History(Consent.fromBytes(rest), written, before);
        }
    }

    // The router's order of changes: by time, then false before true (a dataclass with order=True).
    private static final Comparator<Change> ORDER = Comparator.comparingLong(Change::atMs)
            .thenComparing(Change::productData).thenComparing(Change::electronic);

    private Consent() {}

    /** {@code history} with {@code change} added in time order; the same change twice is a no-op. */
    static List<Change> withChange(List<Change> history, Change change) {
        if (history.contains(change)) {
            return history;
        }
        List<Change> out = new ArrayList<>(history);
        int at = 0;
        while (at < out.size() && ORDER.compare(out.get(at), change) <= 0) {
            at++;
        }
        out.add(at, change);
        return out.size() > MAX_CHANGES_PER_CARD ? out.subList(out.size() - MAX_CHANGES_PER_CARD, out.size()) : out;
    }

    /** The consent a receipt made at {@code eventMs} is processed under. */
    static State effective(List<Change> history, long eventMs, State fallback) {
        if (history == null || history.isEmpty()) {
            return fallback;
        }
        State before = null;
        for (Change c : history) {
            if (c.atMs < eventMs) {
                before = combined(history, c.atMs);
            }
        }
        State atEvent = before == null ? fallback : before;
        State atInstant = combined(history, eventMs);
        if (atInstant != null) {
            atEvent = atEvent.strictest(atInstant);
        }
        State latest = combined(history, history.get(history.size() - 1).atMs);
        return atEvent.strictest(latest);
    }

    /** Changes at one instant count as their most restrictive combination (arrival order is no tie-break). */
    private static State combined(List<Change> history, long instant) {
        State out = null;
        for (Change c : history) {
            if (c.atMs == instant) {
                State s = new State(c.productData, c.electronic, true);
                out = out == null ? s : out.strictest(s);
            }
        }
        return out;
    }

    static byte[] toBytes(List<Change> history) {
        ByteBuffer buf = ByteBuffer.allocate(history.size() * 9);
        for (Change c : history) {
            buf.putLong(c.atMs).put((byte) ((c.productData ? 1 : 0) | (c.electronic ? 2 : 0)));
        }
        return buf.array();
    }

    static List<Change> fromBytes(byte[] bytes) {
        List<Change> out = new ArrayList<>();
        if (bytes == null) {
            return out;
        }
        ByteBuffer buf = ByteBuffer.wrap(bytes);
        while (buf.remaining() >= 9) {
            long at = buf.getLong();
            byte flags = buf.get();
            out.add(new Change(at, (flags & 1) != 0, (flags & 2) != 0));
        }
        return out;
    }
}

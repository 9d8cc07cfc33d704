package io.receiptflow.kstreams;

import java.math.BigInteger;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Receipt-level discounts and benefits split over a receipt's goods lines, in whole cents
 * (receiptflow.adjustment_split): each goods line's share, pro rata to its net amount, by the
 * largest remainder method with ties to the lower line number.
 *
 * <p>The shares feed both the purchase group totals and the analytics basket lines, so they must
 * be the router's to the cent: the same weights, the same remainders, the same tie order.
 */
final class AdjustmentSplit {
    private AdjustmentSplit() {}

    /**
     * The receipt-level adjustments' share of each goods line, by line number; only non-zero shares
     * are in the map (a line not in it takes none).
     */
    static Map<Integer, Long> lineShares(List<Checkout.Line> lines, List<Checkout.Adjustment> adjustments) {
        long amount = 0;
        for (Checkout.Adjustment a : adjustments) {
            amount += a.amountCents();
        }
        if (amount == 0) {
            return Map.of();
        }
        Map<Integer, Long> shares = largestRemainder(amount, netAmounts(lines));
        shares.values().removeIf(v -> v == 0);
        return shares;
    }

    /**
     * Each goods line's net amount: its own amount plus the discount, benefit and void lines that
     * name it. Deposits are no goods, and discount or benefit lines carry no share themselves.
     */
    static Map<Integer, Long> netAmounts(List<Checkout.Line> lines) {
        Map<Integer, Long> net = new HashMap<>();
        for (Checkout.Line l : lines) {
            if (Route.isGoods(l.kind())) {
                net.put(l.lineNo(), l.amountCents());
            }
        }
        for (Checkout.Line l : lines) {
            Integer ref = l.refLineNo();
            // A RETURN's ref names a line of the sold receipt, not this one: it reduces nothing here.
            if (ref != null && ref != l.lineNo() && net.containsKey(ref) && isReducing(l.kind())) {
                net.merge(ref, l.amountCents(), Long::sum);
            }
        }
        return net;
    }

    /**
     * {@code amount} split over the keys of {@code weights} pro rata to them (weights below 0 count as
     * 0); the shares have its sign and add up to it, or are all 0 when every weight is 0.
     */
    static Map<Integer, Long> largestRemainder(long amount, Map<Integer, Long> weights) {
        Map<Integer, Long> out = new HashMap<>();
        long total = 0;
        for (long v : weights.values()) {
            total += Math.max(v, 0);
        }
        if (total == 0 || amount == 0) {
            weights.keySet().forEach(k -> out.put(k, 0L));
            return out;
        }
        long sign = amount < 0 ? -1 : 1;
        long size = Math.abs(amount);
        // The remainders stay exact integers (size * w mod total), as the router's, never fractions
        // that could tie or order differently in floating point.
        record Part(int key, long floor, long remainder) {}
        List<Part> parts = new ArrayList<>(weights.size());
        long left = size;
        for (Map.Entry<Integer, Long> e : weights.entrySet()) {
            long[] qr = mulDivMod(size, Math.max(e.getValue(), 0), total);
            parts.add(new Part(e.getKey(), qr[0], qr[1]));
            left -= qr[0];
        }
        parts.sort((a, b) -> a.remainder != b.remainder
                ? Long.compare(b.remainder, a.remainder) : Integer.compare(a.key, b.key));
        for (int i = 0; i < parts.size(); i++) {
            Part p = parts.get(i);
            out.put(p.key, sign * (p.floor + (i < left ? 1 : 0)));
        }
        return out;
    }

    /** floor(a * b / c) and (a * b) mod c for non-negative a, b and positive c, without overflow. */
    private static long[] mulDivMod(long a, long b, long c) {
        long high = Math.multiplyHigh(a, b);
        if (high == 0 && a * b >= 0) {
            long product = a * b;
            return new long[] {product / c, product % c};
        }
        // Validation bounds amounts, not their products: a huge receipt can go past 63 bits here.
        BigInteger[] qr = BigInteger.valueOf(a).multiply(BigInteger.valueOf(b)).divideAndRemainder(BigInteger.valueOf(c));
        return new long[] {qr[0].longValueExact(), qr[1].longValueExact()};
    }

    private static boolean isReducing(String kind) {
        return kind.equals("DISCOUNT") || kind.equals("BENEFIT") || kind.equals("VOID");
    }
}

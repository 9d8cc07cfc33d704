//! Receipt-level discounts and benefits split over a receipt's goods lines, in whole cents
//! (`receiptflow.adjustment_split`, whose docstring states the rule): pro rata to each goods line's
//! net amount, by the largest remainder method, ties to the lower line number.

use crate::checkout::{Line, BENEFIT, DISCOUNT, RETURN, SALE, VOID};

fn goods(kind: u8) -> bool {
    matches!(kind, SALE | RETURN | VOID)
}

/// Each line's share of the receipt's adjustments (amounts in cents), aligned with `lines`
/// (0 for the lines that take none). Line numbers are unique (validation refuses duplicates).
pub fn line_shares(lines: &[Line<'_>], adjustments: &[(u8, &str, i64)]) -> Vec<i64> {
    let mut shares = vec![0i64; lines.len()];
    let amount: i128 = adjustments.iter().map(|a| i128::from(a.2)).sum();
    if amount == 0 {
        return shares;
    }
    // Net amounts of the goods lines: their own amount plus the discount, benefit and void lines naming them.
    let mut net: Vec<(usize, i32, i128)> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| goods(l.kind))
        .map(|(i, l)| (i, l.line_no, i128::from(l.amount_cents)))
        .collect();
    for l in lines {
        if let Some(r) = l.ref_line_no {
            if r != l.line_no && matches!(l.kind, DISCOUNT | BENEFIT | VOID) {
                if let Some(target) = net.iter_mut().find(|n| n.1 == r) {
                    target.2 += i128::from(l.amount_cents);
                }
            }
        }
    }
    let weights: Vec<i128> = net.iter().map(|n| n.2.max(0)).collect();
    let total: i128 = weights.iter().sum();
    if total == 0 {
        return shares;
    }
    let (sign, size) = (amount.signum(), amount.abs());
    let mut floors: Vec<i128> = weights.iter().map(|w| size * w / total).collect();
    let left = size - floors.iter().sum::<i128>();
    let mut order: Vec<usize> = (0..net.len()).collect();
    order.sort_by_key(|&k| (-(size * weights[k] % total), net[k].1));
    for &k in order.iter().take(usize::try_from(left).unwrap_or(0)) {
        floors[k] += 1;
    }
    for (k, n) in net.iter().enumerate() {
        // At most the receipt's adjustments, which validation bounds far inside i64.
        shares[n.0] = i64::try_from(sign * floors[k]).unwrap_or(0);
    }
    shares
}

//! The seat-recovery rule of a drop (rules.md §2.2 and §5.3).
//!
//! `recover = is_early ∧ seat exists ∧ ¬previously_dropped ∧ amount_ok`, where
//! `amount_ok = depleted_amount ≥ credits_per_seat + extra_credits − margin ∨ prior_in_doubt`.
//! Amounts are exact decimals: the comparison must never go through binary floats
//! (integrations.md §3.1).

use rust_decimal::Decimal;

/// Everything the settlement (D3) knows when it decides a seat's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryInputs {
    /// `requested_at < course.last_drop_date`, fixed at the first request.
    pub is_early: bool,
    /// The enrolment still has a seat linked to it.
    pub seat_exists: bool,
    /// The seat was recovered once already.
    pub previously_dropped: bool,
    /// What the deplete moved back (what the student had left).
    pub depleted_amount: Decimal,
    /// `course.credits_per_seat`.
    pub credits_per_seat: i32,
    /// `enrolment.extra_credits`: the granted top-ups (in-doubt ones are not counted, so a
    /// doubt favours recovery).
    pub extra_credits: i32,
    /// `DROP_RECOVERY_MARGIN_CREDITS`.
    pub margin_credits: i32,
    /// An earlier attempt may have depleted without recording its amount.
    pub prior_in_doubt: bool,
}

/// `credits_per_seat + extra_credits − margin`: the least a student may have left for the seat
/// to come back. Without top-ups a student who spent more than the margin of the extra credits
/// would still give the seat back.
pub fn threshold(credits_per_seat: i32, extra_credits: i32, margin_credits: i32) -> Decimal {
    Decimal::from(
        i64::from(credits_per_seat) + i64::from(extra_credits) - i64::from(margin_credits),
    )
}

/// The amount condition, with the in-doubt rule: an attempt after a possibly unrecorded
/// deplete finds the project near 0, so the condition counts as met.
pub fn amount_ok(inputs: &RecoveryInputs) -> bool {
    inputs.prior_in_doubt
        || inputs.depleted_amount
            >= threshold(
                inputs.credits_per_seat,
                inputs.extra_credits,
                inputs.margin_credits,
            )
}

/// Whether the seat goes back to the pool (`true`) or is consumed (`false`).
pub fn recover(inputs: &RecoveryInputs) -> bool {
    inputs.is_early && inputs.seat_exists && !inputs.previously_dropped && amount_ok(inputs)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    /// An early first drop of a student who spent nothing, with the defaults (200, margin 50).
    fn early(amount: &str) -> RecoveryInputs {
        RecoveryInputs {
            is_early: true,
            seat_exists: true,
            previously_dropped: false,
            depleted_amount: dec(amount),
            credits_per_seat: 200,
            extra_credits: 0,
            margin_credits: 50,
            prior_in_doubt: false,
        }
    }

    #[test]
    fn the_default_threshold_is_150() {
        assert_eq!(threshold(200, 0, 50), dec("150"));
        assert_eq!(threshold(0, 0, 50), dec("-50"));
    }

    #[test]
    fn spending_at_most_the_margin_recovers_the_seat() {
        assert!(recover(&early("200.00")));
        assert!(recover(&early("150.01")));
        // Exactly the margin spent: the threshold itself is enough.
        assert!(recover(&early("150.00")));
        assert!(recover(&early("150")));
    }

    #[test]
    fn spending_more_than_the_margin_consumes_the_seat() {
        assert!(!recover(&early("149.99")));
        assert!(!recover(&early("0.00")));
        // A balance driven negative by usage.
        assert!(!recover(&early("-10.00")));
    }

    #[test]
    fn amounts_are_compared_exactly_not_as_floats() {
        // 0.1 + 0.2 style noise must not matter: 149.995 is below 150.
        assert!(!recover(&early("149.995")));
        assert!(recover(&early("150.0000000001")));
    }

    #[test]
    fn a_late_drop_never_recovers() {
        let inputs = RecoveryInputs {
            is_early: false,
            ..early("200.00")
        };
        assert!(!recover(&inputs));
        let in_doubt = RecoveryInputs {
            prior_in_doubt: true,
            ..inputs
        };
        assert!(!recover(&in_doubt));
    }

    #[test]
    fn a_seat_is_recovered_at_most_once() {
        let inputs = RecoveryInputs {
            previously_dropped: true,
            ..early("200.00")
        };
        assert!(!recover(&inputs));
        let in_doubt = RecoveryInputs {
            prior_in_doubt: true,
            ..inputs
        };
        assert!(!recover(&in_doubt));
    }

    #[test]
    fn an_enrolment_without_a_seat_recovers_nothing() {
        let inputs = RecoveryInputs {
            seat_exists: false,
            ..early("200.00")
        };
        assert!(!recover(&inputs));
    }

    #[test]
    fn a_prior_uncertain_deplete_counts_the_amount_as_met() {
        let retry = RecoveryInputs {
            prior_in_doubt: true,
            ..early("0.00")
        };
        assert!(amount_ok(&retry));
        assert!(recover(&retry));
    }

    #[test]
    fn top_ups_raise_the_threshold() {
        assert_eq!(threshold(200, 100, 50), dec("250"));
        let topped_up = |amount| RecoveryInputs {
            extra_credits: 100,
            ..early(amount)
        };
        // 300 granted, 60 spent: more than the margin, although 240 passes the old 150.
        assert!(!recover(&topped_up("240.00")));
        // 40 spent: within the margin.
        assert!(recover(&topped_up("260.00")));
        assert!(recover(&topped_up("250.00")));
        // A doubt still counts the amount as met.
        let in_doubt = RecoveryInputs {
            prior_in_doubt: true,
            ..topped_up("0.00")
        };
        assert!(recover(&in_doubt));
    }

    #[test]
    fn a_margin_above_the_seat_value_recovers_any_amount() {
        let inputs = RecoveryInputs {
            credits_per_seat: 20,
            ..early("-5.00")
        };
        assert!(recover(&inputs));
    }
}

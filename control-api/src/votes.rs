//! Gifts as votes: the weight of one gift and the decayed score of a room.
//! Sans-IO: amounts and times come in as arguments; no clock, no database.
//!
//! # The formula
//!
//! Let `T` be what one sender gave one streamer (channel owner) on one UTC
//! day, in WE (micro-WE / 10^6), and
//!
//! ```text
//! f(T) = min(sqrt(T), cap)
//! ```
//!
//! A gift that raises that day's total from `T0` to `T1` carries the weight
//!
//! ```text
//! weight = trust * (f(T1) - f(T0))
//! ```
//!
//! The weights of a sender's gifts to a streamer in one day telescope to
//! `trust * f(total)`: splitting a gift into many small ones gains nothing,
//! and past `cap^2` WE a whale adds nothing more that day. `trust` is 0 for a
//! self-gift, for an account younger than `min_account_age_ms` and for one
//! with fewer than `min_activity_events` chat messages, share links or
//! tickets; 1 otherwise. A zero-weight gift still pays.
//!
//! A room's score decays with half-life `H`:
//!
//! ```text
//! score(t) = sum_i weight_i * 2^(-(t - t_i) / H)
//! ```
//!
//! It is stored at a fixed reference time (the unix epoch) in log space,
//! `L = log2(sum_i weight_i * 2^(t_i / H))`, so that a new vote updates one
//! number (`L' = log2(2^L + w * 2^(t / H))`, computed stably) and every room
//! decays by the same factor: ordering rooms by `L` is the ranking at any
//! instant, read from an index. `score(t) = 2^(L - t / H)`.
//!
//! Worked examples (`cap = 100`, trust 1, `H` = 1 day):
//!
//! | gifts in one day | weight |
//! |---|---|
//! | one of 1 WE | 1 |
//! | one of 4 WE | 2 |
//! | four of 1 WE | 1 + 0.414 + 0.318 + 0.268 = 2 |
//! | one of 1000 WE | 31.62 |
//! | 1000 of 1 WE | 31.62 |
//! | one of 40000 WE | 100 (capped) |
//!
//! A weight of 4 cast 2 days ago is worth 1 now.

/// Milliseconds in a UTC day.
pub const DAY_MS: i64 = 86_400_000;

/// Micro-WE in one WE.
pub const MICRO_PER_WE: f64 = 1_000_000.0;

/// Log2 of a zero score (no votes yet).
pub const EMPTY_LOG2: f64 = f64::NEG_INFINITY;

/// The UTC day number of a unix time in ms.
pub fn utc_day(t_ms: i64) -> i64 {
    t_ms.div_euclid(DAY_MS)
}

/// `f(T) = min(sqrt(T), cap)` with `T` in micro-WE.
pub fn concave(total_micro: i64, cap: f64) -> f64 {
    let we = total_micro.max(0) as f64 / MICRO_PER_WE;
    we.sqrt().min(cap)
}

/// The weight of a gift that raises the day's total from `before_micro` to
/// `after_micro`: `trust * (f(after) - f(before))`.
pub fn gift_weight(trust: f64, before_micro: i64, after_micro: i64, cap: f64) -> f64 {
    let w = trust * (concave(after_micro, cap) - concave(before_micro, cap));
    w.max(0.0)
}

/// Who may vote: the trust factor of one gift.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Eligibility {
    /// The sender owns the channel.
    pub self_gift: bool,
    /// Sender account age at the gift, ms.
    pub account_age_ms: i64,
    /// Sender's recorded activity events before the gift.
    pub activity_events: i64,
}

/// The rules `trust` is computed from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VoteRules {
    /// Accounts younger than this carry no weight.
    pub min_account_age_ms: i64,
    /// Accounts with fewer activity events carry no weight.
    pub min_activity_events: i64,
    /// Cap of `f`.
    pub cap: f64,
    /// Half-life of the decay, ms.
    pub half_life_ms: i64,
}

impl VoteRules {
    /// 1 for an eligible sender, 0 otherwise.
    pub fn trust(&self, e: &Eligibility) -> f64 {
        if e.self_gift
            || e.account_age_ms < self.min_account_age_ms
            || e.activity_events < self.min_activity_events
        {
            0.0
        } else {
            1.0
        }
    }

    /// `log2(2^log2_score + weight * 2^(t / H))`: the stored score after a
    /// vote of `weight` at `t_ms`. A zero weight leaves it unchanged.
    pub fn add_vote(&self, log2_score: f64, weight: f64, t_ms: i64) -> f64 {
        if weight <= 0.0 || weight.is_nan() {
            return log2_score;
        }
        let term = weight.log2() + t_ms as f64 / self.half_life_ms as f64;
        log2_add(log2_score, term)
    }

    /// The score at `now_ms` of a stored `log2_score`.
    pub fn score_at(&self, log2_score: f64, now_ms: i64) -> f64 {
        if log2_score == EMPTY_LOG2 {
            return 0.0;
        }
        (log2_score - now_ms as f64 / self.half_life_ms as f64).exp2()
    }
}

/// `log2(2^a + 2^b)` without overflow.
pub fn log2_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp2().ln_1p() / std::f64::consts::LN_2
}

#[cfg(test)]
mod tests {
    use super::*;

    const WE: i64 = 1_000_000;

    fn rules() -> VoteRules {
        VoteRules {
            min_account_age_ms: 3 * DAY_MS,
            min_activity_events: 1,
            cap: 100.0,
            half_life_ms: DAY_MS,
        }
    }

    /// Sum of the weights of `gifts` (micro-WE each) sent one after another.
    fn day_weight(gifts: &[i64]) -> f64 {
        let mut total = 0;
        let mut w = 0.0;
        for g in gifts {
            w += gift_weight(1.0, total, total + g, 100.0);
            total += g;
        }
        w
    }

    #[test]
    fn worked_examples_of_the_doc_table_hold() {
        let thousand_ones = vec![WE; 1000];
        let cases: &[(&str, Vec<i64>, f64)] = &[
            ("one of 1 WE", vec![WE], 1.0),
            ("one of 4 WE", vec![4 * WE], 2.0),
            ("four of 1 WE", vec![WE; 4], 2.0),
            ("one of 1000 WE", vec![1000 * WE], 1000f64.sqrt()),
            ("1000 of 1 WE", thousand_ones, 1000f64.sqrt()),
            ("one of 40000 WE", vec![40_000 * WE], 100.0),
            ("10000 WE then 1 WE more", vec![10_000 * WE, WE], 100.0),
        ];
        for (name, gifts, want) in cases {
            let got = day_weight(gifts);
            assert!((got - want).abs() < 1e-9, "{name}: {got} != {want}");
        }
    }

    #[test]
    fn splitting_never_beats_one_gift() {
        for parts in [2, 3, 7, 50] {
            let split = day_weight(&vec![12 * WE; parts]);
            let whole = day_weight(&[12 * WE * parts as i64]);
            assert!((split - whole).abs() < 1e-9, "{parts} parts");
        }
    }

    #[test]
    fn self_gifts_young_and_idle_accounts_have_no_trust() {
        let r = rules();
        let ok = Eligibility {
            self_gift: false,
            account_age_ms: 4 * DAY_MS,
            activity_events: 1,
        };
        assert_eq!(r.trust(&ok), 1.0);
        assert_eq!(r.trust(&Eligibility { self_gift: true, ..ok }), 0.0);
        assert_eq!(r.trust(&Eligibility { account_age_ms: DAY_MS, ..ok }), 0.0);
        assert_eq!(r.trust(&Eligibility { activity_events: 0, ..ok }), 0.0);
    }

    #[test]
    fn scores_halve_every_half_life_and_keep_their_order() {
        let r = rules();
        let t0 = 20_000 * DAY_MS; // a realistic unix time: L is ~20000
        let a = r.add_vote(EMPTY_LOG2, 4.0, t0);
        assert!((r.score_at(a, t0) - 4.0).abs() < 1e-9);
        assert!((r.score_at(a, t0 + DAY_MS) - 2.0).abs() < 1e-9);
        assert!((r.score_at(a, t0 + 2 * DAY_MS) - 1.0).abs() < 1e-9);
        // Older but bigger vs newer but smaller: (name, weight, age in days)
        // -> expected score now = weight / 2^age.
        let now = t0 + 10 * DAY_MS;
        let table: &[(&str, f64, i64, f64)] = &[
            ("old whale", 64.0, 5, 2.0),
            ("yesterday", 5.0, 1, 2.5),
            ("today", 1.5, 0, 1.5),
            ("last week", 1000.0, 7, 7.8125),
        ];
        let mut scored: Vec<(&str, f64)> = table
            .iter()
            .map(|(name, w, age, want)| {
                let l = r.add_vote(EMPTY_LOG2, *w, now - age * DAY_MS);
                let s = r.score_at(l, now);
                assert!((s - want).abs() < 1e-9, "{name}: {s}");
                (*name, l)
            })
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        let order: Vec<&str> = scored.iter().map(|s| s.0).collect();
        assert_eq!(order, ["last week", "yesterday", "old whale", "today"]);
    }

    #[test]
    fn votes_add_in_log_space() {
        let r = rules();
        let t = 19_000 * DAY_MS;
        let mut l = EMPTY_LOG2;
        for _ in 0..1000 {
            l = r.add_vote(l, 0.5, t);
        }
        assert!((r.score_at(l, t) - 500.0).abs() < 1e-6);
        assert_eq!(r.add_vote(l, 0.0, t), l, "zero weight changes nothing");
        assert_eq!(r.score_at(EMPTY_LOG2, t), 0.0);
    }

    #[test]
    fn utc_days_split_at_midnight() {
        assert_eq!(utc_day(0), 0);
        assert_eq!(utc_day(DAY_MS - 1), 0);
        assert_eq!(utc_day(DAY_MS), 1);
        assert_eq!(utc_day(-1), -1);
    }
}

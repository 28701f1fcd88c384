//! One epoch's allocations from its frozen inputs (sans-IO, deterministic).
//!
//! The store freezes an epoch's inputs when it closes it (activity tallied
//! into it, the creators' decayed scores at its end, the withdrawals
//! requested while it was open); [`plan`] turns them into what each account
//! earns and its new cumulative amount. The same inputs always give the
//! same plan, so a crash between closing and committing reruns to the same
//! Merkle root.
//!
//! - **Users** (Proof of Activity): every account with activity; `trust` is
//!   0 for an account younger than `control.rewards.min_account_age_ms` at
//!   the epoch's end, 1 otherwise; effort by [`super::effort`].
//! - **Creators** (Proof of Contribution): score = the decayed gift-vote
//!   score of the account's channels at the epoch's end + its creator
//!   engagement (the effort of its broadcast minutes, peak viewers and gifts
//!   received alone, [`creator_engagement`]).
//! - **Withdrawals**: gift earnings a streamer moved out of the wallet; they
//!   are added to the cumulative amount as they are (the ledger already
//!   moved them to the payable account).

use std::collections::BTreeMap;

use super::{effort, split, CreatorInput, EpochPayouts, Indicators, IndicatorRules, RewardsConfig, UserInput};
use crate::store::AccountId;

/// Everything an epoch is computed from, frozen at close.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EpochInputs {
    /// Balance of the ledger's incentive fund before the epoch, micro-WE.
    pub fund_micro: i64,
    /// Mean total effort of the previous `trailing_epochs` epochs.
    pub trailing_mean: Option<f64>,
    /// Activity tallied into the epoch, per account, with the account's
    /// creation time (unix ms).
    pub activity: Vec<(AccountId, i64, Indicators)>,
    /// Decayed gift-vote score per channel owner at the epoch's end.
    pub vote_scores: Vec<(AccountId, f64)>,
    /// Withdrawals requested while the epoch was open, per account, micro-WE.
    pub withdrawals: Vec<(AccountId, i64)>,
    /// Cumulative amount of every account before this epoch, micro-WE.
    pub prior_cumulative: BTreeMap<AccountId, i64>,
    /// The epoch's end (unix ms): account age is measured there.
    pub end_ms: i64,
}

/// What one account earns in one epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allocation {
    /// Proof of Activity, micro-WE.
    pub activity_micro: i64,
    /// Proof of Contribution, micro-WE.
    pub contribution_micro: i64,
    /// Gift earnings withdrawn, micro-WE.
    pub withdrawal_micro: i64,
    /// Everything owed to the account up to and including this epoch.
    pub cumulative_micro: i64,
}

impl Allocation {
    /// What this epoch adds.
    pub fn added_micro(&self) -> i64 {
        self.activity_micro + self.contribution_micro + self.withdrawal_micro
    }
}

/// The computed epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochPlan {
    /// Total effort (the activity of the elasticity formula).
    pub activity: f64,
    /// `V = Σ sqrt(effort)`.
    pub v: f64,
    /// Pool, release, the two levels' payouts, the remainder.
    pub payouts: EpochPayouts,
    /// Sum of the withdrawals.
    pub withdrawals_micro: i64,
    /// Accounts that earned something this epoch.
    pub allocations: BTreeMap<AccountId, Allocation>,
    /// Every account's cumulative amount after this epoch (those that
    /// earned nothing keep their prior amount).
    pub cumulative: BTreeMap<AccountId, i64>,
}

/// The effort of the indicators a creator earns by broadcasting: broadcast
/// minutes, peak viewers, gifts received.
pub fn creator_engagement(ind: &Indicators, rules: &IndicatorRules) -> f64 {
    let creator_side = Indicators {
        broadcast_minutes: ind.broadcast_minutes,
        peak_viewers: ind.peak_viewers,
        gifts_received_micro: ind.gifts_received_micro,
        ..Indicators::default()
    };
    effort(&creator_side, rules)
}

/// Computes an epoch from its inputs.
pub fn plan(inputs: &EpochInputs, config: &RewardsConfig) -> EpochPlan {
    let rules = &config.indicators;
    let users: Vec<UserInput> = inputs
        .activity
        .iter()
        .map(|&(account, created_ms, ref ind)| UserInput {
            account,
            trust: if inputs.end_ms.saturating_sub(created_ms) >= config.min_account_age_ms { 1.0 } else { 0.0 },
            effort: effort(ind, rules),
        })
        .collect();
    let mut scores: BTreeMap<AccountId, f64> = BTreeMap::new();
    for &(account, score) in &inputs.vote_scores {
        if score.is_finite() && score > 0.0 {
            *scores.entry(account).or_default() += score;
        }
    }
    for (account, _, ind) in &inputs.activity {
        let engagement = creator_engagement(ind, rules);
        if engagement > 0.0 {
            *scores.entry(*account).or_default() += engagement;
        }
    }
    let creators: Vec<CreatorInput> = scores.into_iter().map(|(account, score)| CreatorInput { account, score }).collect();
    let payouts = split(inputs.fund_micro, inputs.trailing_mean, &users, &creators, config);

    let mut allocations: BTreeMap<AccountId, Allocation> = BTreeMap::new();
    for &(account, paid) in &payouts.activity {
        allocations.entry(account).or_default().activity_micro += paid;
    }
    for &(account, paid) in &payouts.contribution {
        allocations.entry(account).or_default().contribution_micro += paid;
    }
    let mut withdrawals_micro = 0;
    for &(account, amount) in inputs.withdrawals.iter().filter(|w| w.1 > 0) {
        allocations.entry(account).or_default().withdrawal_micro += amount;
        withdrawals_micro += amount;
    }
    let mut cumulative = inputs.prior_cumulative.clone();
    for (account, a) in allocations.iter_mut() {
        let total = cumulative.entry(*account).or_default();
        *total += a.added_micro();
        a.cumulative_micro = *total;
    }
    EpochPlan {
        activity: users.iter().map(|u| u.effort.max(0.0)).sum(),
        v: users.iter().map(|u| u.effort.max(0.0).sqrt()).sum(),
        payouts,
        withdrawals_micro,
        allocations,
        cumulative,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(n: u64) -> Indicators {
        Indicators { chat_messages: n, ..Indicators::default() }
    }

    fn config() -> RewardsConfig {
        RewardsConfig { v_target: 1.0, min_account_age_ms: 1_000, ..RewardsConfig::default() }
    }

    #[test]
    fn cumulative_amounts_add_this_epoch_to_the_prior_ones_and_keep_the_idle() {
        let inputs = EpochInputs {
            fund_micro: 1_000_000_000_000,
            activity: vec![(1, 0, chat(4)), (2, 0, chat(16))],
            withdrawals: vec![(3, 250)],
            prior_cumulative: BTreeMap::from([(1, 10), (9, 77)]),
            end_ms: 10_000,
            ..EpochInputs::default()
        };
        let p = plan(&inputs, &config());
        // Effort: 0.5 * 4 = 2 and 0.5 * 16 = 8; weights sqrt: 1.414 : 2.828.
        let a1 = p.allocations[&1].activity_micro;
        let a2 = p.allocations[&2].activity_micro;
        assert!(a1 > 0 && (a2 - 2 * a1).abs() <= 2, "{a1} {a2}");
        assert_eq!(p.allocations[&1].cumulative_micro, 10 + a1);
        assert_eq!(p.allocations[&3], Allocation { withdrawal_micro: 250, cumulative_micro: 250, ..Allocation::default() });
        assert_eq!(p.cumulative[&9], 77, "an idle account keeps what it had");
        assert_eq!(p.withdrawals_micro, 250);
        assert_eq!(p.payouts.paid_micro() + p.payouts.remainder_micro, p.payouts.released_micro);
    }

    #[test]
    fn an_account_younger_than_the_minimum_age_earns_no_activity_share() {
        let inputs = EpochInputs {
            fund_micro: 1_000_000_000_000,
            activity: vec![(1, 0, chat(10)), (2, 9_500, chat(10))],
            end_ms: 10_000,
            ..EpochInputs::default()
        };
        let p = plan(&inputs, &config());
        assert!(p.allocations[&1].activity_micro > 0);
        assert!(!p.allocations.contains_key(&2), "{:?}", p.allocations);
    }

    #[test]
    fn creators_share_by_vote_score_plus_engagement() {
        let streamer = Indicators { broadcast_minutes: 30, ..Indicators::default() };
        let inputs = EpochInputs {
            fund_micro: 1_000_000_000_000,
            activity: vec![(1, 0, chat(10)), (5, 0, streamer)],
            vote_scores: vec![(6, 30.0)],
            end_ms: 10_000,
            ..EpochInputs::default()
        };
        let p = plan(&inputs, &config());
        // Engagement of 5: 30 broadcast minutes * 1.0 = 30, the same as 6's votes.
        let c5 = p.allocations[&5].contribution_micro;
        let c6 = p.allocations[&6].contribution_micro;
        assert!(c5 > 0 && (c5 - c6).abs() <= 1, "{c5} {c6}");
    }

    #[test]
    fn the_same_inputs_always_give_the_same_plan() {
        let inputs = EpochInputs {
            fund_micro: 123_456_789_000,
            trailing_mean: Some(3.0),
            activity: (1..200).map(|a| (a, 0, chat(a as u64 % 37))).collect(),
            vote_scores: (1..50).map(|a| (a, a as f64 / 7.0)).collect(),
            withdrawals: vec![(4, 1), (5, 2)],
            end_ms: 10_000,
            ..EpochInputs::default()
        };
        assert_eq!(plan(&inputs, &config()), plan(&inputs, &config()));
    }

    proptest::proptest! {
        #[test]
        fn an_epoch_never_pays_more_than_it_releases_and_no_cumulative_amount_shrinks(
            fund in 0i64..1_000_000_000_000_000,
            chats in proptest::collection::vec(0u64..500, 0..40),
            scores in proptest::collection::vec(0.0f64..1e6, 0..20),
            withdrawals in proptest::collection::vec((0i64..60, 1i64..1_000_000_000), 0..10),
            prior in proptest::collection::btree_map(0i64..60, 0i64..1_000_000_000_000, 0..30),
            trailing in proptest::option::of(0.0f64..1e5),
        ) {
            let inputs = EpochInputs {
                fund_micro: fund,
                trailing_mean: trailing,
                activity: chats.iter().enumerate().map(|(a, &n)| (a as AccountId, 0, chat(n))).collect(),
                vote_scores: scores.iter().enumerate().map(|(a, &s)| (a as AccountId, s)).collect(),
                withdrawals: withdrawals.clone(),
                prior_cumulative: prior.clone(),
                end_ms: 10_000,
            };
            let p = plan(&inputs, &config());
            proptest::prop_assert!(p.payouts.released_micro <= p.payouts.pool_micro);
            proptest::prop_assert!(p.payouts.pool_micro <= fund.max(0));
            proptest::prop_assert!(p.payouts.paid_micro() <= p.payouts.released_micro);
            proptest::prop_assert!(p.payouts.remainder_micro >= 0);
            for (account, before) in &prior {
                proptest::prop_assert!(p.cumulative[account] >= *before);
            }
            let added: i64 = p.allocations.values().map(Allocation::added_micro).sum();
            let total_before: i64 = prior.values().sum();
            let total_after: i64 = p.cumulative.values().sum();
            proptest::prop_assert_eq!(total_after - total_before, added);
            proptest::prop_assert_eq!(added, p.payouts.paid_micro() + p.withdrawals_micro);
        }
    }
}

//! Daily rewards: the formulas of one epoch (DESIGN.md §6, issue #8).
//! Sans-IO and deterministic: the same inputs always give the same payouts,
//! so an epoch that crashed half way reruns to the same result.
//!
//! # The epoch, step by step
//! 1. **Effort** of a user: the sum over activity indicators of
//!    `weight_i * min(value_i, cap_i)` ([`effort`]). Caps stop any single
//!    indicator (ten hours of idle watching, a chat flood) from dominating.
//! 2. **Pool** refilled from the incentive fund by the elasticity
//!    coefficient ([`refill`]):
//!    `pool = clamp(rate * fund * (activity / trailing_mean_activity)^elasticity, 0, max_rate * fund)`
//!    where `activity` is this epoch's total effort and the trailing mean is
//!    over the previous epochs (ratio 1 when there is no history).
//! 3. **Target gate** ([`release`]): `released = pool * min(1, V / V_target)`
//!    with `V = Σ_users sqrt(effort)`. A community that free-rides (few
//!    active users, little effort) releases less; the rest stays in the fund.
//! 4. **Proof of Activity**: `theta` of the released amount over users in
//!    proportion to `trust * sqrt(effort)`. **Proof of Contribution**: the
//!    rest over creators in proportion to their decayed gift-vote and
//!    engagement score ([`split`]).
//! 5. Integer micro-WE throughout the payouts: weights become fixed-point
//!    integers (`WEIGHT_SCALE`), each payout is `floor(amount * w / Σw)` in
//!    128-bit arithmetic, and whatever the floors leave goes back to the fund.
//!
//! # Worked example (the first table test)
//! fund 1,000,000 WE, rate 1% (10,000 ppm), max rate 2%, elasticity 0.5,
//! activity 400 vs a trailing mean of 100: `1,000,000 * 0.01 * sqrt(4) =
//! 20,000 WE`, which is the 2% cap, so the pool is 20,000 WE. With
//! `V = 30` and `V_target = 60` half is released: 10,000 WE. `theta = 60%`:
//! 6,000 WE to users, 4,000 WE to creators.

pub mod activity;
pub mod epoch;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::store::AccountId;

/// Fixed-point scale of payout weights: 10^9 keeps nine decimal digits of
/// `trust * sqrt(effort)` exact enough and still fits any sum in u128.
pub const WEIGHT_SCALE: f64 = 1e9;

/// The indicators of one account in one epoch (day). Watch time counts only
/// valid sessions (see the collection rules where they are recorded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Indicators {
    /// Seconds watched over RTMP, HTTP-FLV and HLS.
    pub watch_seconds: [u64; 3],
    /// Plays started that fetched media.
    pub plays: u64,
    /// Publishes (going live).
    pub publishes: u64,
    /// Minutes broadcast.
    pub broadcast_minutes: u64,
    /// Chat messages accepted.
    pub chat_messages: u64,
    /// Likes given.
    pub likes: u64,
    /// Share links created or used.
    pub shares: u64,
    /// Gifts sent, micro-WE.
    pub gifts_sent_micro: u64,
    /// Gifts received, micro-WE.
    pub gifts_received_micro: u64,
    /// Peak concurrent viewers of the account's channel.
    pub peak_viewers: u64,
}

/// How one indicator counts towards effort: `weight * min(value, cap)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndicatorRule {
    /// Effort per unit.
    pub weight: f64,
    /// Units beyond this count nothing.
    pub cap: u64,
}

/// The weights and caps of every indicator (`[control.rewards.indicators]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndicatorRules {
    /// Per second watched (all protocols together), capped per day.
    pub watch_seconds: IndicatorRule,
    /// Per valid play.
    pub plays: IndicatorRule,
    /// Per publish.
    pub publishes: IndicatorRule,
    /// Per minute broadcast.
    pub broadcast_minutes: IndicatorRule,
    /// Per chat message.
    pub chat_messages: IndicatorRule,
    /// Per like.
    pub likes: IndicatorRule,
    /// Per share.
    pub shares: IndicatorRule,
    /// Per WE of gifts sent (the cap is in WE).
    pub gifts_sent_we: IndicatorRule,
    /// Per WE of gifts received (the cap is in WE).
    pub gifts_received_we: IndicatorRule,
    /// Per peak concurrent viewer.
    pub peak_viewers: IndicatorRule,
}

impl Default for IndicatorRules {
    fn default() -> Self {
        let r = |weight, cap| IndicatorRule { weight, cap };
        IndicatorRules {
            watch_seconds: r(1.0 / 60.0, 4 * 3600),
            plays: r(1.0, 20),
            publishes: r(2.0, 5),
            broadcast_minutes: r(1.0, 8 * 60),
            chat_messages: r(0.5, 100),
            likes: r(0.2, 100),
            shares: r(2.0, 10),
            gifts_sent_we: r(1.0, 1_000),
            gifts_received_we: r(0.5, 10_000),
            peak_viewers: r(0.1, 10_000),
        }
    }
}

/// `[control.rewards]`: every parameter of an epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardsConfig {
    /// Run epochs at all.
    pub enabled: bool,
    /// Epoch length (86,400,000 = a day in production; seconds in dev).
    pub epoch_ms: u64,
    /// Base refill rate of the pool, parts per million of the fund per epoch.
    pub rate_ppm: u32,
    /// Ceiling of the refill, parts per million of the fund per epoch.
    pub max_rate_ppm: u32,
    /// How strongly activity above (below) its trailing mean grows (shrinks)
    /// the pool.
    pub elasticity: f64,
    /// Epochs in the trailing mean of activity.
    pub trailing_epochs: u32,
    /// `V_target`: the `Σ sqrt(effort)` at which the whole pool is released.
    pub v_target: f64,
    /// `theta`: share of the released amount paid by Proof of Activity,
    /// basis points; the rest goes to Proof of Contribution.
    pub theta_bps: u32,
    /// A watch session shorter than this does not count.
    pub min_watch_session_ms: u64,
    /// How often the in-memory activity tally is written to the database.
    pub flush_interval_ms: u64,
    /// Weights and caps of the indicators.
    pub indicators: IndicatorRules,
    /// Accounts younger than this at an epoch's end carry no Proof of
    /// Activity weight (they still count in the activity totals).
    pub min_account_age_ms: i64,
    /// What the ledger's incentive fund is credited with once, at first
    /// start (0: nothing, so no rewards are paid). It should mirror the
    /// token's ecological incentive fund (10% of 1,250,000,000 WE =
    /// 125,000,000,000,000 micro-WE), which pays every claim on chain;
    /// `configs/dev.toml` sets exactly that.
    pub incentive_fund_micro_we: i64,
}

impl Default for RewardsConfig {
    fn default() -> Self {
        RewardsConfig {
            enabled: true,
            epoch_ms: 86_400_000,
            rate_ppm: 10_000,
            max_rate_ppm: 20_000,
            elasticity: 0.5,
            trailing_epochs: 7,
            v_target: 1_000.0,
            theta_bps: 6_000,
            min_watch_session_ms: 30_000,
            flush_interval_ms: 10_000,
            indicators: IndicatorRules::default(),
            min_account_age_ms: 86_400_000,
            incentive_fund_micro_we: 0,
        }
    }
}

impl RewardsConfig {
    /// Checks every value; keys are named from `control.rewards`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |k: &str, m: &str| Err(ConfigError { key: format!("control.rewards.{k}"), message: m.to_string() });
        if self.epoch_ms < 1_000 {
            return err("epoch_ms", "must be at least 1000");
        }
        if self.rate_ppm > self.max_rate_ppm || self.max_rate_ppm > 1_000_000 {
            return err("max_rate_ppm", "must be between rate_ppm and 1000000 (the whole fund)");
        }
        if !(self.elasticity.is_finite() && (0.0..=4.0).contains(&self.elasticity)) {
            return err("elasticity", "must be between 0 and 4");
        }
        if self.trailing_epochs == 0 || self.trailing_epochs > 365 {
            return err("trailing_epochs", "must be between 1 and 365");
        }
        if !(self.v_target.is_finite() && self.v_target > 0.0) {
            return err("v_target", "must be a positive number");
        }
        if !(100..=3_600_000).contains(&self.flush_interval_ms) {
            return err("flush_interval_ms", "must be between 100 and 3600000");
        }
        if self.min_account_age_ms < 0 {
            return err("min_account_age_ms", "must not be negative");
        }
        if self.incentive_fund_micro_we < 0 {
            return err("incentive_fund_micro_we", "must not be negative");
        }
        if self.theta_bps > 10_000 {
            return err("theta_bps", "must be at most 10000 (100%)");
        }
        let i = &self.indicators;
        for (name, rule) in [
            ("watch_seconds", i.watch_seconds),
            ("plays", i.plays),
            ("publishes", i.publishes),
            ("broadcast_minutes", i.broadcast_minutes),
            ("chat_messages", i.chat_messages),
            ("likes", i.likes),
            ("shares", i.shares),
            ("gifts_sent_we", i.gifts_sent_we),
            ("gifts_received_we", i.gifts_received_we),
            ("peak_viewers", i.peak_viewers),
        ] {
            if !(rule.weight.is_finite() && rule.weight >= 0.0 && rule.weight <= 1e6) {
                return err(&format!("indicators.{name}.weight"), "must be between 0 and 1000000");
            }
        }
        Ok(())
    }
}

/// A user's effort: `Σ weight_i * min(value_i, cap_i)` (gift amounts in WE).
pub fn effort(ind: &Indicators, rules: &IndicatorRules) -> f64 {
    let term = |value: u64, rule: IndicatorRule| rule.weight * value.min(rule.cap) as f64;
    let watched: u64 = ind.watch_seconds.iter().sum();
    term(watched, rules.watch_seconds)
        + term(ind.plays, rules.plays)
        + term(ind.publishes, rules.publishes)
        + term(ind.broadcast_minutes, rules.broadcast_minutes)
        + term(ind.chat_messages, rules.chat_messages)
        + term(ind.likes, rules.likes)
        + term(ind.shares, rules.shares)
        + term(ind.gifts_sent_micro / 1_000_000, rules.gifts_sent_we)
        + term(ind.gifts_received_micro / 1_000_000, rules.gifts_received_we)
        + term(ind.peak_viewers, rules.peak_viewers)
}

/// The pool refilled from a fund of `fund_micro` for an epoch with total
/// effort `activity`, against the trailing mean of earlier epochs (`None`:
/// no history, ratio 1). Floored to the micro-WE, never above the fund.
pub fn refill(fund_micro: i64, activity: f64, trailing_mean: Option<f64>, c: &RewardsConfig) -> i64 {
    if fund_micro <= 0 || !(activity.is_finite() && activity > 0.0) {
        return 0;
    }
    let ratio = match trailing_mean {
        Some(mean) if mean.is_finite() && mean > 0.0 => activity / mean,
        _ => 1.0,
    };
    let fund = fund_micro as f64;
    let wanted = f64::from(c.rate_ppm) / 1e6 * fund * ratio.powf(c.elasticity);
    let ceiling = f64::from(c.max_rate_ppm) / 1e6 * fund;
    (wanted.clamp(0.0, ceiling).floor() as i64).clamp(0, fund_micro)
}

/// The target gate: `floor(pool * min(1, V / V_target))`.
pub fn release(pool_micro: i64, v: f64, v_target: f64) -> i64 {
    if pool_micro <= 0 || !(v.is_finite() && v > 0.0) {
        return 0;
    }
    let share = (v / v_target).min(1.0);
    ((pool_micro as f64 * share).floor() as i64).clamp(0, pool_micro)
}

/// One user's input to Proof of Activity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UserInput {
    /// The account.
    pub account: AccountId,
    /// 0..=1: 0 for accounts that carry no weight (too new, flagged).
    pub trust: f64,
    /// Its effort this epoch ([`effort`]).
    pub effort: f64,
}

/// One creator's input to Proof of Contribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CreatorInput {
    /// The account.
    pub account: AccountId,
    /// Decayed gift-vote and engagement score at the epoch's end.
    pub score: f64,
}

/// What an epoch pays.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EpochPayouts {
    /// The pool refilled from the fund.
    pub pool_micro: i64,
    /// What the target gate released of it.
    pub released_micro: i64,
    /// Proof of Activity payouts (accounts with nothing are left out).
    pub activity: Vec<(AccountId, i64)>,
    /// Proof of Contribution payouts.
    pub contribution: Vec<(AccountId, i64)>,
    /// Released but not paid (floors, nobody eligible): back to the fund.
    pub remainder_micro: i64,
}

impl EpochPayouts {
    /// Everything paid out.
    pub fn paid_micro(&self) -> i64 {
        self.activity.iter().chain(&self.contribution).map(|(_, a)| a).sum()
    }
}

/// `floor(amount * w_i / Σw)` for each weight, in 128-bit integers.
fn pro_rata(amount: i64, weights: &[(AccountId, f64)]) -> Vec<(AccountId, i64)> {
    let fixed: Vec<(AccountId, u128)> = weights
        .iter()
        .filter(|(_, w)| w.is_finite() && *w > 0.0)
        .map(|(a, w)| (*a, (w * WEIGHT_SCALE).round() as u128))
        .filter(|(_, w)| *w > 0)
        .collect();
    let total: u128 = fixed.iter().map(|(_, w)| w).sum();
    if amount <= 0 || total == 0 {
        return Vec::new();
    }
    fixed
        .into_iter()
        .map(|(a, w)| (a, (amount as u128 * w / total) as i64))
        .filter(|(_, paid)| *paid > 0)
        .collect()
}

/// The whole epoch from its inputs: refill, gate, split, floors.
pub fn split(
    fund_micro: i64,
    trailing_mean: Option<f64>,
    users: &[UserInput],
    creators: &[CreatorInput],
    c: &RewardsConfig,
) -> EpochPayouts {
    let activity: f64 = users.iter().map(|u| u.effort.max(0.0)).sum();
    let v: f64 = users.iter().map(|u| u.effort.max(0.0).sqrt()).sum();
    let pool_micro = refill(fund_micro, activity, trailing_mean, c);
    let released_micro = release(pool_micro, v, c.v_target);
    let activity_share = (i128::from(released_micro) * i128::from(c.theta_bps) / 10_000) as i64;
    let contribution_share = released_micro - activity_share;
    let user_weights: Vec<(AccountId, f64)> =
        users.iter().map(|u| (u.account, u.trust.clamp(0.0, 1.0) * u.effort.max(0.0).sqrt())).collect();
    let creator_weights: Vec<(AccountId, f64)> = creators.iter().map(|c| (c.account, c.score)).collect();
    let activity = pro_rata(activity_share, &user_weights);
    let contribution = pro_rata(contribution_share, &creator_weights);
    let mut out = EpochPayouts { pool_micro, released_micro, activity, contribution, remainder_micro: 0 };
    out.remainder_micro = released_micro - out.paid_micro();
    out
}

#[cfg(test)]
mod tests;

//! Worked examples of every formula as tables, and the invariants as
//! property tests.

use proptest::prelude::*;

use super::*;

const WE: i64 = 1_000_000;

fn config() -> RewardsConfig {
    RewardsConfig { v_target: 60.0, ..RewardsConfig::default() }
}

#[test]
fn refill_follows_activity_with_elasticity_and_stays_under_the_ceiling() {
    // (activity, trailing mean, elasticity, expected pool in WE) for a
    // 1,000,000 WE fund at rate 1% and max rate 2%.
    let table: &[(f64, Option<f64>, f64, i64)] = &[
        (100.0, Some(100.0), 0.5, 10_000),  // on the mean: the base rate
        (25.0, Some(100.0), 0.5, 5_000),    // a quarter of the mean: sqrt(1/4) = half
        (400.0, Some(100.0), 0.5, 20_000),  // 4x: sqrt(4) = 2x, exactly the ceiling
        (900.0, Some(100.0), 0.5, 20_000),  // 9x: 3x, capped at 2%
        (400.0, Some(100.0), 0.0, 10_000),  // no elasticity: always the base rate
        (400.0, Some(100.0), 1.0, 20_000),  // linear, capped
        (50.0, Some(100.0), 1.0, 5_000),    // linear: half
        (123.0, None, 0.5, 10_000),         // no history: ratio 1
        (0.0, Some(100.0), 0.5, 0),         // nobody did anything
    ];
    for &(activity, mean, elasticity, want_we) in table {
        let c = RewardsConfig { elasticity, ..config() };
        let got = refill(1_000_000 * WE, activity, mean, &c);
        assert_eq!(got, want_we * WE, "activity {activity} mean {mean:?} elasticity {elasticity}");
    }
    assert_eq!(refill(0, 100.0, None, &config()), 0, "an empty fund pays nothing");
    // Floors to the micro-WE: 1% of 333 micro-WE is 3.33.
    assert_eq!(refill(333, 1.0, None, &config()), 3);
}

#[test]
fn the_target_gate_releases_in_proportion_to_participation() {
    // (pool, V, V_target, released)
    let table: &[(i64, f64, f64, i64)] = &[
        (20_000 * WE, 30.0, 60.0, 10_000 * WE),
        (20_000 * WE, 60.0, 60.0, 20_000 * WE),
        (20_000 * WE, 600.0, 60.0, 20_000 * WE), // never more than the pool
        (20_000 * WE, 0.0, 60.0, 0),
        (10, 1.0, 3.0, 3),                       // floored
    ];
    for &(pool, v, target, want) in table {
        assert_eq!(release(pool, v, target), want, "pool {pool} V {v} target {target}");
    }
}

#[test]
fn effort_weights_and_caps_each_indicator() {
    let rules = IndicatorRules::default();
    let idle_marathon = Indicators { watch_seconds: [10 * 3600, 0, 0], ..Indicators::default() };
    // Capped at 4 h, one unit per minute: 240.
    assert!((effort(&idle_marathon, &rules) - 240.0).abs() < 1e-9);
    let split_protocols = Indicators { watch_seconds: [1800, 1800, 0], ..Indicators::default() };
    assert!((effort(&split_protocols, &rules) - 60.0).abs() < 1e-9, "watch time adds up across protocols");
    let chatty = Indicators { chat_messages: 5_000, plays: 3, ..Indicators::default() };
    // 100 messages count (0.5 each) + 3 plays.
    assert!((effort(&chatty, &rules) - 53.0).abs() < 1e-9);
    let gifter = Indicators { gifts_sent_micro: 2_500_000, ..Indicators::default() };
    assert!((effort(&gifter, &rules) - 2.0).abs() < 1e-9, "whole WE only");
    assert_eq!(effort(&Indicators::default(), &rules), 0.0);
}

#[test]
fn the_worked_example_of_the_module_docs() {
    // Three users of effort 100 each: activity 300, V = 3 * 10 = 30.
    // Trailing mean 75: activity ratio 4, sqrt -> 2x the base 10,000 WE,
    // = the 20,000 WE ceiling. V / V_target = 1/2: 10,000 WE released.
    let users: Vec<UserInput> = (1..=3).map(|a| UserInput { account: a, trust: 1.0, effort: 100.0 }).collect();
    let creators = [CreatorInput { account: 10, score: 3.0 }, CreatorInput { account: 11, score: 1.0 }];
    let p = split(1_000_000 * WE, Some(75.0), &users, &creators, &config());
    assert_eq!(p.pool_micro, 20_000 * WE);
    assert_eq!(p.released_micro, 10_000 * WE);
    assert_eq!(p.activity, vec![(1, 2_000 * WE), (2, 2_000 * WE), (3, 2_000 * WE)], "theta 60%: 6,000 WE in equal parts");
    assert_eq!(p.contribution, vec![(10, 3_000 * WE), (11, 1_000 * WE)], "4,000 WE by score 3:1");
    assert_eq!(p.remainder_micro, 0);
}

#[test]
fn untrusted_users_earn_nothing_and_their_share_goes_to_the_others() {
    let users = [
        UserInput { account: 1, trust: 1.0, effort: 100.0 },
        UserInput { account: 2, trust: 0.0, effort: 100.0 },
        UserInput { account: 3, trust: 1.0, effort: 400.0 },
    ];
    let c = RewardsConfig { theta_bps: 10_000, ..config() };
    let p = split(1_000_000 * WE, None, &users, &[], &c);
    // Weights sqrt(100) = 10 and sqrt(400) = 20: one third and two thirds.
    let third = p.released_micro / 3;
    assert_eq!(p.activity.len(), 2, "{:?}", p.activity);
    assert_eq!(p.activity[0], (1, third));
    assert_eq!(p.activity[1], (3, p.released_micro * 2 / 3));
    assert!(p.remainder_micro <= 2, "only the floors are left: {}", p.remainder_micro);
}

#[test]
fn floors_leave_a_remainder_for_the_fund_and_nobody_eligible_returns_everything() {
    let users: Vec<UserInput> = (1..=3).map(|a| UserInput { account: a, trust: 1.0, effort: 1.0 }).collect();
    let c = RewardsConfig { theta_bps: 10_000, v_target: 3.0, rate_ppm: 1_000_000, max_rate_ppm: 1_000_000, ..config() };
    let p = split(10, None, &users, &[], &c);
    assert_eq!((p.pool_micro, p.released_micro), (10, 10));
    assert_eq!(p.activity, vec![(1, 3), (2, 3), (3, 3)]);
    assert_eq!(p.remainder_micro, 1);
    // Contribution share with no creators: all of it is remainder.
    let c = RewardsConfig { theta_bps: 0, ..c };
    let p = split(10, None, &users, &[], &c);
    assert_eq!((p.paid_micro(), p.remainder_micro), (0, 10));
}

#[test]
fn the_same_inputs_give_the_same_payouts() {
    let users: Vec<UserInput> =
        (1..200).map(|a| UserInput { account: a, trust: (a % 7) as f64 / 6.0, effort: (a * 37 % 101) as f64 }).collect();
    let creators: Vec<CreatorInput> = (500..520).map(|a| CreatorInput { account: a, score: (a % 13) as f64 * 1.5 }).collect();
    let a = split(7_777_777 * WE, Some(3_000.0), &users, &creators, &config());
    let b = split(7_777_777 * WE, Some(3_000.0), &users, &creators, &config());
    assert_eq!(a, b);
}

#[test]
fn bad_reward_config_keys_are_named() {
    let cases: &[(RewardsConfig, &str)] = &[
        (RewardsConfig { rate_ppm: 30_000, ..RewardsConfig::default() }, "control.rewards.max_rate_ppm"),
        (RewardsConfig { theta_bps: 10_001, ..RewardsConfig::default() }, "control.rewards.theta_bps"),
        (RewardsConfig { v_target: 0.0, ..RewardsConfig::default() }, "control.rewards.v_target"),
        (RewardsConfig { elasticity: f64::NAN, ..RewardsConfig::default() }, "control.rewards.elasticity"),
        (RewardsConfig { epoch_ms: 10, ..RewardsConfig::default() }, "control.rewards.epoch_ms"),
    ];
    for (c, key) in cases {
        assert_eq!(c.validate().unwrap_err().key, *key);
    }
    RewardsConfig::default().validate().unwrap();
}

proptest! {
    #[test]
    fn payouts_never_exceed_what_was_released_nor_the_fund(
        fund in 0i64..=1_000_000_000_000_000,
        mean in proptest::option::of(0.0f64..1e7),
        users in proptest::collection::vec((0.0f64..=1.0, 0.0f64..1e5), 0..40),
        creators in proptest::collection::vec(0.0f64..1e6, 0..10),
        theta in 0u32..=10_000,
        elasticity in 0.0f64..=4.0,
    ) {
        let c = RewardsConfig { theta_bps: theta, elasticity, ..config() };
        let users: Vec<UserInput> =
            users.iter().enumerate().map(|(i, (t, e))| UserInput { account: i as i64 + 1, trust: *t, effort: *e }).collect();
        let creators: Vec<CreatorInput> =
            creators.iter().enumerate().map(|(i, s)| CreatorInput { account: i as i64 + 1000, score: *s }).collect();
        let p = split(fund, mean, &users, &creators, &c);
        prop_assert!(p.pool_micro >= 0 && p.pool_micro <= fund);
        prop_assert!(p.released_micro >= 0 && p.released_micro <= p.pool_micro);
        prop_assert!(p.activity.iter().chain(&p.contribution).all(|(_, a)| *a > 0));
        prop_assert_eq!(p.paid_micro() + p.remainder_micro, p.released_micro);
        prop_assert!(p.remainder_micro >= 0);
    }
}

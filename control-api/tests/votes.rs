//! Gifts as votes over the real API with an injected clock: the concave
//! per-day weight (no gain from splitting), zero weight for self-gifts,
//! young and idle accounts, and the decayed ranking read from the index.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

const DAY: i64 = 86_400_000;

async fn weight(s: &TestServer, token: &str, channel: &str, gift: &str, count: u32) -> f64 {
    let r = s.gift(token, channel, json!({"gift": gift, "count": count})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["vote_weight"].as_f64().expect("weight")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

async fn rankings(s: &TestServer) -> Vec<(String, f64)> {
    let r = s.get("/v1/rankings", None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["rankings"]
        .as_array()
        .expect("rankings")
        .iter()
        .map(|x: &Value| (x["channel"].as_str().unwrap_or("").to_string(), x["score"].as_f64().unwrap_or(-1.0)))
        .collect()
}

#[tokio::test]
async fn a_thousand_one_we_gifts_weigh_the_same_as_one_thousand_we_gift() {
    let (s, _clock) = start_clocked(open_rooms_config()).await;
    s.streamer("small").await;
    s.streamer("big").await;
    let (fan, _) = s.account("fan", 2_000 * WE).await;
    let mut split = 0.0;
    for chunk in 0..50 {
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (client, base, fan) = (s.client.clone(), s.base.clone(), fan.clone());
            tasks.push(tokio::spawn(async move {
                let r = client
                    .post(format!("{base}/v1/rooms/small/gifts"))
                    .bearer_auth(fan)
                    .header("Idempotency-Key", key())
                    .json(&json!({"gift": "flower"}))
                    .send()
                    .await
                    .expect("send");
                assert_eq!(r.status(), StatusCode::OK, "chunk {chunk}");
                r.json::<Value>().await.expect("json")["vote_weight"].as_f64().expect("weight")
            }));
        }
        for t in tasks {
            split += t.await.expect("join");
        }
    }
    let whole = weight(&s, &fan, "big", "rocket", 1).await;
    assert!(close(whole, 1000f64.sqrt()), "{whole}");
    assert!(close(split, whole), "1000 x 1 WE = {split}, 1 x 1000 WE = {whole}");
    let ranks = rankings(&s).await;
    assert_eq!(ranks.len(), 2);
    assert!(close(ranks[0].1, ranks[1].1), "equal scores: {ranks:?}");
    assert_eq!(s.balance(&fan).await, 0, "both paid in full");
    s.audit().await;
}

#[tokio::test]
async fn self_gifts_young_and_idle_accounts_pay_but_carry_no_weight() {
    let mut cfg = open_rooms_config();
    cfg.rooms.min_account_age_ms = 3 * DAY as u64;
    cfg.rooms.min_activity_events = 1;
    let (s, clock) = start_clocked(cfg).await;
    let (star, _) = s.streamer("star").await;
    let (young, _) = s.account("young", 10 * WE).await;
    let (idle, _) = s.account("idle", 10 * WE).await;
    let activate = |t: String| {
        let s = &s;
        async move {
            let r = s.post("/v1/rooms/star/shares", Some(&t), json!(null)).await;
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        }
    };
    activate(young.clone()).await;
    activate(star.clone()).await;

    // A day-old account with activity: weight 0, still pays.
    clock.advance(DAY);
    assert_eq!(weight(&s, &young, "star", "flower", 1).await, 0.0);
    assert_eq!(s.balance(&young).await, 9 * WE);

    clock.advance(3 * DAY);
    // Old enough but never active (gifts do not count as activity).
    assert_eq!(weight(&s, &idle, "star", "flower", 1).await, 0.0);
    assert_eq!(weight(&s, &idle, "star", "flower", 1).await, 0.0);
    assert_eq!(s.balance(&idle).await, 8 * WE);
    // A self-gift: the owner pays the fee and votes nothing.
    s.fund(&star, 10 * WE).await;
    assert_eq!(weight(&s, &star, "star", "flower", 1).await, 0.0);
    assert_eq!(s.balance(&star).await, 10 * WE - 100_000 + 2 * 900_000 + 900_000);
    assert!(rankings(&s).await.is_empty(), "no vote counted yet");

    // Now old and active: a flower is worth sqrt(1) = 1.
    assert_eq!(weight(&s, &young, "star", "flower", 1).await, 1.0);
    activate(idle.clone()).await;
    // `idle` already gave 2 WE today, so its next WE adds sqrt(3) - sqrt(2).
    let w = weight(&s, &idle, "star", "flower", 1).await;
    assert!(close(w, 3f64.sqrt() - 2f64.sqrt()), "{w}");
    let ranks = rankings(&s).await;
    assert_eq!(ranks[0].0, "star");
    assert!(close(ranks[0].1, 1.0 + w));
    s.audit().await;
}

/// One gift of the table: (day, sender, channel, gift, count). Each sender's
/// gifts are sent as separate requests of one each when `count` > 1 and the
/// gift is a flower, to show that splitting changes nothing.
type Row = (i64, &'static str, &'static str, &'static str, u32);

#[tokio::test]
async fn the_ranking_after_decay_follows_the_formula() {
    let (s, clock) = start_clocked(open_rooms_config()).await;
    let t0 = 20_000 * DAY;
    clock.set(t0);
    for ch in ["aaa", "bbb", "ccc", "ddd"] {
        s.streamer(ch).await;
    }
    let mut tokens = std::collections::HashMap::new();
    for who in ["sn1", "sn2", "sn3"] {
        tokens.insert(who, s.account(who, 2_000 * WE).await.0);
    }
    let price = |g: &str| match g {
        "flower" => 1.0,
        "heart" => 5.0,
        "sports_car" => 100.0,
        "rocket" => 1000.0,
        _ => panic!("{g}"),
    };
    let table: &[Row] = &[
        (0, "sn1", "aaa", "rocket", 1),
        (0, "sn2", "bbb", "heart", 4),
        (2, "sn1", "bbb", "sports_car", 1),
        (3, "sn2", "ccc", "flower", 9),
        (3, "sn3", "ccc", "flower", 16),
        (4, "sn3", "ddd", "heart", 1),
    ];
    // The formula, independently: per (sender, channel owner, day) total T,
    // weight = sqrt(T) (below the cap), decayed by 2^-(age / 1 day).
    let now_day = 4;
    let mut totals: std::collections::HashMap<(&str, &str, i64), f64> = Default::default();
    let mut expected: std::collections::BTreeMap<&str, f64> = Default::default();
    for &(day, sender, ch, gift, count) in table {
        clock.set(t0 + day * DAY);
        let t = totals.entry((sender, ch, day)).or_insert(0.0);
        let add = price(gift) * f64::from(count);
        let w = (*t + add).sqrt() - t.sqrt();
        *t += add;
        *expected.entry(ch).or_insert(0.0) += w * 2f64.powi(-((now_day - day) as i32));
        if gift == "flower" {
            for _ in 0..count {
                weight(&s, &tokens[sender], ch, gift, 1).await;
            }
        } else {
            weight(&s, &tokens[sender], ch, gift, count).await;
        }
    }
    clock.set(t0 + now_day * DAY);
    let mut want: Vec<(&str, f64)> = expected.into_iter().collect();
    want.sort_by(|x, y| y.1.total_cmp(&x.1));
    let got = rankings(&s).await;
    let order: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    assert_eq!(order, ["ccc", "bbb", "ddd", "aaa"]);
    for ((ch, w), (gch, g)) in want.iter().zip(&got) {
        assert_eq!(ch, gch);
        assert!(close(*w, *g), "{ch}: want {w}, got {g}");
    }
    // c: 3 + 4 = 7, one day old -> 3.5.
    assert!(close(got[0].1, 3.5));
    let room = s.get("/v1/rooms/ccc", None).await;
    assert!(close(room.body["score"].as_f64().expect("score"), 3.5));

    // Three half-lives later: same order, every score divided by 8.
    clock.advance(3 * DAY);
    let later = rankings(&s).await;
    for (a, b) in got.iter().zip(&later) {
        assert_eq!(a.0, b.0);
        assert!(close(a.1 / 8.0, b.1), "{a:?} -> {b:?}");
    }
    // A new vote lands in the same index: d jumps ahead with a rocket.
    let w = weight(&s, &tokens["sn2"], "ddd", "rocket", 1).await;
    assert!(close(w, 1000f64.sqrt()));
    assert_eq!(rankings(&s).await[0].0, "ddd");
}

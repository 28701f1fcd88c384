//! Property: any sequence of ledger operations (valid or not, retried or
//! not) keeps the sum of all accounts at zero, every wallet non-negative,
//! and every balance equal to a simple model's.

use proptest::prelude::*;
use westream_control::store::{Caller, CreateAccount, IdemKey, SqliteStore, Store};
use westream_control::{ProductConfig, SqliteSync};

#[derive(Debug, Clone)]
enum Op {
    Faucet {
        to: usize,
        amount: i64,
    },
    Transfer {
        from: usize,
        to: usize,
        amount: i64,
    },
    Purchase {
        who: usize,
        product: usize,
    },
    /// Re-send the n-th earlier operation with its idempotency key.
    Retry {
        nth: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize, 1..5_000_000i64).prop_map(|(to, amount)| Op::Faucet { to, amount }),
        (0..3usize, 0..3usize, -10..3_000_000i64).prop_map(|(from, to, amount)| Op::Transfer {
            from,
            to,
            amount
        }),
        (0..3usize, 0..2usize).prop_map(|(who, product)| Op::Purchase { who, product }),
        (0..64usize).prop_map(|nth| Op::Retry { nth }),
    ]
}

fn products() -> Vec<ProductConfig> {
    vec![
        ProductConfig {
            id: "p1".into(),
            description: String::new(),
            bandwidth_bytes: 10,
            validity_days: 1,
            price_micro_we: 1_000_000,
        },
        ProductConfig {
            id: "p2".into(),
            description: String::new(),
            bandwidth_bytes: 10,
            validity_days: 1,
            price_micro_we: 2_500_000,
        },
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn ledger_stays_balanced_and_wallets_non_negative(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("p.sqlite"), SqliteSync::Normal, 1).expect("open");
        let now = 1_700_000_000_000;
        let mut callers = Vec::new();
        for h in ["ann", "ben", "cat"] {
            let idem = IdemKey::new("signup", h, "signup", &h);
            let acct = store
                .create_account(&idem, &CreateAccount { handle: h.into(), phone: None, email: None }, now)
                .expect("account").value.account;
            callers.push(Caller { account_id: acct.id, handle: acct.handle });
        }
        let products = products();
        let mut model = [0i64; 3];
        let mut done: Vec<(Op, String)> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let (op, key, retry) = match op {
                Op::Retry { nth } if !done.is_empty() => {
                    let (o, k) = done[nth % done.len()].clone();
                    (o, k, true)
                }
                Op::Retry { .. } => continue,
                other => (other.clone(), format!("op-{i}"), false),
            };
            let applied = match &op {
                Op::Faucet { to, amount } => {
                    let idem = IdemKey::new(format!("acct:{}", callers[*to].account_id), &key, "faucet", amount);
                    store.faucet(&callers[*to], &idem, *amount, now).map(|r| {
                        if !r.replayed { model[*to] += amount; }
                    })
                }
                Op::Transfer { from, to, amount } => {
                    let idem = IdemKey::new(format!("acct:{}", callers[*from].account_id), &key, "transfer", &(to, amount));
                    store.transfer(&callers[*from], &idem, &callers[*to].handle, *amount, None, now).map(|r| {
                        if !r.replayed { model[*from] -= amount; model[*to] += amount; }
                    })
                }
                Op::Purchase { who, product } => {
                    let p = &products[*product];
                    let idem = IdemKey::new(format!("acct:{}", callers[*who].account_id), &key, "purchase", &p.id);
                    store.purchase(&callers[*who], &idem, p, now).map(|r| {
                        if !r.replayed { model[*who] -= p.price_micro_we; }
                    })
                }
                Op::Retry { .. } => unreachable!(),
            };
            if applied.is_ok() && !retry {
                done.push((op.clone(), key));
            }
            let audit = store.audit().expect("audit");
            prop_assert!(audit.ok, "audit failed after {:?}: {:?}", op, audit);
            prop_assert_eq!(audit.sum_of_balances, 0);
            for (j, c) in callers.iter().enumerate() {
                let b = store.balance(c.account_id).expect("balance");
                prop_assert!(b >= 0);
                prop_assert_eq!(b, model[j], "wallet {} after {:?}", j, op);
            }
        }
    }
}

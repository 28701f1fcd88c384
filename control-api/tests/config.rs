//! The `[control]` table: the dev snippet parses, validates, opens and seeds
//! idempotently; production configs without their own admin token refuse.

use serde::Deserialize;
use westream_control::hooks::PublishRequest;
use westream_control::{ControlConfig, ControlError, ControlPlane};

#[derive(Deserialize)]
struct File {
    control: ControlConfig,
}

fn dev() -> ControlConfig {
    let text = include_str!("data/dev-control.toml");
    toml::from_str::<File>(text)
        .expect("dev snippet parses")
        .control
}

#[tokio::test]
async fn the_dev_snippet_seeds_demo_once_across_restarts() {
    let cfg = dev();
    cfg.validate().expect("valid");
    let dir = tempfile::tempdir().expect("tempdir");
    for _ in 0..2 {
        let plane = ControlPlane::open(cfg.clone(), dir.path()).expect("open");
        let grant = plane
            .hooks()
            .authorize_publish(&PublishRequest {
                app: "live".into(),
                stream_key: "demo-key".into(),
                client_addr: None,
            })
            .await
            .expect("demo-key publishes");
        assert_eq!(grant.channel, "demo");
        let store = plane.store();
        let caller = store
            .authenticate("demo-api-token")
            .expect("auth")
            .expect("demo token works");
        assert_eq!(
            store.balance(caller.account_id).expect("balance"),
            992_000_000,
            "funded and bought once"
        );
        let packages = store.packages(caller.account_id).expect("packages");
        assert_eq!(packages.len(), 1);
        assert_eq!(packages[0].bytes_total, 10_000_000_000);
        assert!(store.audit().expect("audit").ok);
    }
}

#[test]
fn production_without_its_own_admin_token_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = ControlConfig::default();
    let err = cfg.validate().expect_err("no admin token");
    assert_eq!(err.key, "control.admin_token");
    assert!(matches!(
        ControlPlane::open(cfg, dir.path()),
        Err(ControlError::Config(_))
    ));

    let mut cfg = dev();
    cfg.dev_mode = false;
    cfg.seed.clear();
    cfg.faucet_enabled = false;
    assert_eq!(
        cfg.validate().expect_err("dev token").key,
        "control.admin_token"
    );
    cfg.admin_token = "a-long-random-production-token".into();
    cfg.node_tokens = vec!["another-long-node-token".into()];
    cfg.validate().expect("own token is fine");
    cfg.faucet_enabled = true;
    assert_eq!(
        cfg.validate().expect_err("faucet").key,
        "control.faucet_enabled"
    );
}

#[test]
fn bad_values_name_their_key() {
    let mut cfg = dev();
    cfg.products[1].price_micro_we = -1;
    assert_eq!(
        cfg.validate().expect_err("price").key,
        "control.products[1].price_micro_we"
    );
    let mut cfg = dev();
    cfg.seed[0].packages = vec!["nope".into()];
    assert_eq!(
        cfg.validate().expect_err("product").key,
        "control.seed[0].packages"
    );
    let mut cfg = dev();
    cfg.database_file = "../escape.sqlite".into();
    assert_eq!(
        cfg.validate().expect_err("path").key,
        "control.database_file"
    );
    let unknown = "[control]\ndev_mode = true\nadmin_tokn = \"x\"\n";
    let err = toml::from_str::<File>(unknown)
        .err()
        .expect("unknown key refused")
        .to_string();
    assert!(err.contains("admin_tokn"), "{err}");
}

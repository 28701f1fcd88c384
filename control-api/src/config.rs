//! `[control]` configuration: documented field by field, a default for every
//! field, validated on load with an error that names the key.
//!
//! Dev vs production: `dev_mode = true` is what `configs/dev.toml` sets. Only
//! then may the admin token be the well-known `dev-admin-token` (or short),
//! and only then may the test-WE faucet be enabled. A config without
//! `dev_mode` and without its own admin token refuses to start.

use serde::{Deserialize, Serialize};

/// The admin token `configs/dev.toml` uses; refused outside dev mode.
pub const DEV_ADMIN_TOKEN: &str = "dev-admin-token";

/// Minimum length of a production admin or node token.
const MIN_PRODUCTION_TOKEN_LEN: usize = 16;

/// Why a `[control]` table is not acceptable. `key` is the dotted TOML key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config key `{key}`: {message}")]
pub struct ConfigError {
    /// The offending key, e.g. `control.admin_token`.
    pub key: String,
    /// What is wrong with it and how to fix it.
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// How hard SQLite syncs on commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    /// WAL + `synchronous=NORMAL`: a commit survives a process crash (the WAL
    /// is written before commit returns) but the last commits may be lost on
    /// power failure. Fast; the default.
    #[default]
    Normal,
    /// `synchronous=FULL`: fsync on every commit; survives power loss.
    Full,
}

/// The control plane's settings (`[control]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Development conveniences allowed: the well-known admin token and the
    /// faucet. Never set it on a server that holds real value.
    pub dev_mode: bool,
    /// Bearer token for operator endpoints (`/v1/admin/...`). Required (at
    /// least 16 characters, not `dev-admin-token`) unless `dev_mode`.
    pub admin_token: String,
    /// Bearer tokens media nodes use for `/v1/hooks/*`, `/v1/usage` and
    /// `/v1/stop-orders`. The admin token is accepted there too.
    pub node_tokens: Vec<String>,
    /// SQLite file name, relative to `--data-dir`.
    pub database_file: String,
    /// Commit durability, `normal` or `full` (see [`SqliteSync`]).
    pub sqlite_synchronous: SqliteSync,
    /// Read-only connections kept open next to the single writer.
    pub sqlite_read_connections: usize,
    /// How long the in-process and HTTP hooks cache a publish or play
    /// answer, so a burst of viewers does not reach the database.
    pub hook_cache_ttl_ms: u64,
    /// RTMP application names the server accepts for publish and play.
    pub apps: Vec<String>,
    /// Enables `POST /v1/wallet/faucet` (test WE from nowhere). Dev only.
    pub faucet_enabled: bool,
    /// Largest single faucet credit.
    pub faucet_max_micro_we: i64,
    /// Largest amount any request may carry (transfers, faucet); larger is
    /// a 400, so arithmetic stays far from i64 overflow.
    pub max_amount_micro_we: i64,
    /// Time between a package running dry and the stream being stopped.
    pub stop_grace_ms: u64,
    /// Whether ingest (publisher) bytes drain packages; they are always
    /// metered and shown in the usage history.
    pub charge_ingest_bytes: bool,
    /// Bound on the `channel` label of the bytes-remaining gauge: at most
    /// this many channels, the most recently reported ones.
    pub metrics_max_channels: usize,
    /// The bandwidth products for sale.
    pub products: Vec<ProductConfig>,
    /// Accounts created on start if missing (idempotent; dev and demos).
    pub seed: Vec<SeedAccountConfig>,
    /// Edge registry and selection (`[control.edges]`).
    pub edges: crate::edges::EdgesConfig,
    /// Rooms, chat limits, gift fees, vote formula and tickets
    /// (`[control.rooms]`, see [`crate::rooms::RoomsConfig`]).
    pub rooms: crate::rooms::RoomsConfig,
    /// The gift catalogue (`[[control.gifts]]`); defaults to kiss, flower,
    /// heart, sports_car, plane and rocket.
    pub gifts: Vec<crate::rooms::GiftConfig>,
    /// `[control.rewards]`: the daily reward epochs (see `crate::rewards`).
    pub rewards: crate::rewards::RewardsConfig,
    /// `[control.settlement]`: the chain the epochs are anchored on (the
    /// embedded EVM under the data dir by default; see
    /// `crate::settlement::SettlementConfig`).
    pub settlement: crate::settlement::SettlementConfig,
    /// Secret that signs play tokens (tickets), 16+ characters. When unset,
    /// 32 random bytes are generated once and kept in `play_token.secret`
    /// under the data dir. Every node that verifies tokens needs the same one.
    pub play_token_secret: Option<String>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            dev_mode: false,
            admin_token: String::new(),
            node_tokens: Vec::new(),
            database_file: "control.sqlite".to_string(),
            sqlite_synchronous: SqliteSync::Normal,
            sqlite_read_connections: 4,
            hook_cache_ttl_ms: 2_000,
            apps: vec!["live".to_string()],
            faucet_enabled: false,
            faucet_max_micro_we: 1_000 * 1_000_000,
            max_amount_micro_we: 1_000_000_000 * 1_000_000,
            stop_grace_ms: 30_000,
            charge_ingest_bytes: false,
            metrics_max_channels: 100,
            products: Vec::new(),
            seed: Vec::new(),
            edges: crate::edges::EdgesConfig::default(),
            rooms: crate::rooms::RoomsConfig::default(),
            gifts: crate::rooms::default_gifts(),
            rewards: crate::rewards::RewardsConfig::default(),
            settlement: crate::settlement::SettlementConfig::default(),
            play_token_secret: None,
        }
    }
}

/// One product of the bandwidth catalogue (`[[control.products]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductConfig {
    /// Stable id used in purchases, e.g. `bw-10gb`.
    pub id: String,
    /// Human description for the catalogue.
    #[serde(default)]
    pub description: String,
    /// Bytes of viewer traffic the package pays for.
    pub bandwidth_bytes: i64,
    /// How long after purchase the package can be used.
    pub validity_days: u32,
    /// Price in micro-WE (1 WE = 1_000_000).
    pub price_micro_we: i64,
}

/// An account created on start when missing (`[[control.seed]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedAccountConfig {
    /// Account handle.
    pub handle: String,
    /// A fixed API token for this account (scripts, tests). Dev only.
    #[serde(default)]
    pub api_token: Option<String>,
    /// Wallet credit from the issuance account, once.
    #[serde(default)]
    pub fund_micro_we: i64,
    /// Channels owned by the account.
    #[serde(default)]
    pub channels: Vec<SeedChannelConfig>,
    /// Product ids bought once from the wallet (after funding).
    #[serde(default)]
    pub packages: Vec<String>,
}

/// A seeded channel and its fixed stream keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedChannelConfig {
    /// Public channel name.
    pub name: String,
    /// Stream keys accepted for this channel.
    #[serde(default)]
    pub stream_keys: Vec<String>,
}

impl ControlConfig {
    /// Checks every rule a running server relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.edges.validate()?;
        self.rooms.validate()?;
        self.rewards.validate()?;
        self.settlement
            .validate()
            .map_err(|e| ConfigError::new(format!("control.settlement.{}", e.key), e.reason))?;
        crate::rooms::validate_gifts(&self.gifts, self.max_amount_micro_we)?;
        if self
            .play_token_secret
            .as_deref()
            .is_some_and(|s| s.len() < MIN_PRODUCTION_TOKEN_LEN)
        {
            return Err(ConfigError::new(
                "control.play_token_secret",
                "must have 16+ characters (or leave it out to generate one under the data dir)",
            ));
        }
        if !self.dev_mode {
            if self.admin_token.is_empty() {
                return Err(ConfigError::new(
                    "control.admin_token",
                    "required outside dev mode: set a random token of 16+ characters (or dev_mode = true for a dev box)",
                ));
            }
            if self.admin_token == DEV_ADMIN_TOKEN
                || self.admin_token.len() < MIN_PRODUCTION_TOKEN_LEN
            {
                return Err(ConfigError::new(
                    "control.admin_token",
                    "must be your own token of 16+ characters outside dev mode",
                ));
            }
            if self
                .node_tokens
                .iter()
                .any(|t| t.len() < MIN_PRODUCTION_TOKEN_LEN)
            {
                return Err(ConfigError::new(
                    "control.node_tokens",
                    "every node token must have 16+ characters outside dev mode",
                ));
            }
            if self.faucet_enabled {
                return Err(ConfigError::new(
                    "control.faucet_enabled",
                    "the faucet creates WE from nothing and is allowed only with dev_mode = true",
                ));
            }
            if self.seed.iter().any(|s| s.api_token.is_some()) {
                return Err(ConfigError::new(
                    "control.seed.api_token",
                    "fixed API tokens are allowed only with dev_mode = true",
                ));
            }
        }
        if self.node_tokens.iter().any(|t| t.is_empty()) {
            return Err(ConfigError::new("control.node_tokens", "empty token"));
        }
        if self.database_file.is_empty()
            || self.database_file.contains("..")
            || std::path::Path::new(&self.database_file).is_absolute()
        {
            return Err(ConfigError::new(
                "control.database_file",
                "must be a plain file name relative to --data-dir",
            ));
        }
        if self.sqlite_read_connections == 0 || self.sqlite_read_connections > 64 {
            return Err(ConfigError::new(
                "control.sqlite_read_connections",
                "must be 1..=64",
            ));
        }
        if self.hook_cache_ttl_ms > 60_000 {
            return Err(ConfigError::new(
                "control.hook_cache_ttl_ms",
                "at most 60000: a revoked key must stop working quickly",
            ));
        }
        if self.apps.is_empty() || self.apps.iter().any(|a| a.is_empty()) {
            return Err(ConfigError::new(
                "control.apps",
                "list at least one non-empty application",
            ));
        }
        if self.max_amount_micro_we <= 0 || self.max_amount_micro_we > i64::MAX / 1024 {
            return Err(ConfigError::new(
                "control.max_amount_micro_we",
                "must be positive and at most i64::MAX / 1024",
            ));
        }
        if self.faucet_max_micro_we <= 0 || self.faucet_max_micro_we > self.max_amount_micro_we {
            return Err(ConfigError::new(
                "control.faucet_max_micro_we",
                "must be positive and at most max_amount_micro_we",
            ));
        }
        if self.stop_grace_ms > 3_600_000 {
            return Err(ConfigError::new(
                "control.stop_grace_ms",
                "at most one hour",
            ));
        }
        if self.metrics_max_channels > 10_000 {
            return Err(ConfigError::new(
                "control.metrics_max_channels",
                "at most 10000",
            ));
        }
        let mut ids = std::collections::HashSet::new();
        for (i, p) in self.products.iter().enumerate() {
            let key = |f: &str| format!("control.products[{i}].{f}");
            if p.id.is_empty() || !ids.insert(p.id.as_str()) {
                return Err(ConfigError::new(key("id"), "must be non-empty and unique"));
            }
            if p.bandwidth_bytes <= 0 {
                return Err(ConfigError::new(key("bandwidth_bytes"), "must be positive"));
            }
            if p.validity_days == 0 || p.validity_days > 3_660 {
                return Err(ConfigError::new(key("validity_days"), "must be 1..=3660"));
            }
            if p.price_micro_we < 0 || p.price_micro_we > self.max_amount_micro_we {
                return Err(ConfigError::new(
                    key("price_micro_we"),
                    "must be 0..=max_amount_micro_we",
                ));
            }
        }
        let mut handles = std::collections::HashSet::new();
        for (i, s) in self.seed.iter().enumerate() {
            let key = |f: &str| format!("control.seed[{i}].{f}");
            if let Err(m) = crate::store::validate_handle(&s.handle) {
                return Err(ConfigError::new(key("handle"), m));
            }
            if !handles.insert(s.handle.as_str()) {
                return Err(ConfigError::new(key("handle"), "duplicate handle"));
            }
            if s.api_token.as_deref().is_some_and(str::is_empty) {
                return Err(ConfigError::new(key("api_token"), "empty token"));
            }
            if s.fund_micro_we < 0 || s.fund_micro_we > self.max_amount_micro_we {
                return Err(ConfigError::new(
                    key("fund_micro_we"),
                    "must be 0..=max_amount_micro_we",
                ));
            }
            for p in &s.packages {
                if !self.products.iter().any(|x| &x.id == p) {
                    return Err(ConfigError::new(
                        key("packages"),
                        format!("unknown product '{p}'"),
                    ));
                }
            }
            for (j, c) in s.channels.iter().enumerate() {
                if let Err(m) = crate::store::validate_channel_name(&c.name) {
                    return Err(ConfigError::new(
                        format!("control.seed[{i}].channels[{j}].name"),
                        m,
                    ));
                }
                if c.stream_keys.iter().any(|k| k.len() < 4) {
                    return Err(ConfigError::new(
                        format!("control.seed[{i}].channels[{j}].stream_keys"),
                        "every key needs at least 4 characters",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The admin token in force: the configured one, or the well-known dev
    /// token in dev mode when none is set.
    pub fn effective_admin_token(&self) -> &str {
        if self.admin_token.is_empty() && self.dev_mode {
            DEV_ADMIN_TOKEN
        } else {
            &self.admin_token
        }
    }

    /// Looks a gift up by id.
    pub fn gift(&self, id: &str) -> Option<&crate::rooms::GiftConfig> {
        self.gifts.iter().find(|g| g.id == id)
    }

    /// Looks a product up by id.
    pub fn product(&self, id: &str) -> Option<&ProductConfig> {
        self.products.iter().find(|p| p.id == id)
    }
}

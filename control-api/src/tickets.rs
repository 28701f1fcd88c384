//! Paid streams: signed, expiring play tokens and the in-memory gate the
//! play hooks consult, so a ticket check never touches the database.
//!
//! Token format (URL-safe, no padding, 76 characters):
//!
//! ```text
//! base64url(payload) "." base64url(HMAC-SHA256(secret, payload))
//! payload = sha256(channel)[0..8] || account_id (i64 BE) || expires_ms (i64 BE)
//! ```
//!
//! The token names the channel only through a hash, so it cannot be moved
//! to another channel, and expires with the ticket. The secret is
//! `control.play_token_secret`, or 32 random bytes generated once and kept in
//! `play_token.secret` under the data dir (mode 0600).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;

use crate::hooks::Denied;
use crate::store::AccountId;

/// File under the data dir holding the generated secret (hex).
pub const SECRET_FILE: &str = "play_token.secret";

const PAYLOAD_LEN: usize = 24;
const BLOCK: usize = 64;

/// Why a play token was refused. The text is shown to the viewer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token in the URL.
    #[error("a ticket is required: buy one and play with ?token=...")]
    Missing,
    /// Not a token we issued (bad encoding or signature).
    #[error("the play token is invalid")]
    Invalid,
    /// Issued for another channel.
    #[error("the play token is for another channel")]
    WrongChannel,
    /// Its ticket has expired.
    #[error("the play token has expired: buy a new ticket")]
    Expired,
}

/// What a valid token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayTokenClaims {
    /// The ticket holder.
    pub account_id: AccountId,
    /// When the token stops working (unix ms).
    pub expires_ms: i64,
}

/// HMAC-SHA256 (RFC 2104) over sha2.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

fn channel_hash(channel: &str) -> [u8; 8] {
    let d = Sha256::digest(channel.as_bytes());
    let mut h = [0u8; 8];
    h.copy_from_slice(&d[..8]);
    h
}

/// What viewer tokens are signed for in place of a channel.
const VIEWER_SCOPE: &str = "westream:viewer";

/// Signs a play token for `channel`, held by `account_id`, until `expires_ms`.
pub fn mint_play_token(secret: &[u8], channel: &str, account_id: AccountId, expires_ms: i64) -> String {
    let mut payload = [0u8; PAYLOAD_LEN];
    payload[..8].copy_from_slice(&channel_hash(channel));
    payload[8..16].copy_from_slice(&account_id.to_be_bytes());
    payload[16..].copy_from_slice(&expires_ms.to_be_bytes());
    let mac = hmac_sha256(secret, &payload);
    format!("{}.{}", URL_SAFE_NO_PAD.encode(payload), URL_SAFE_NO_PAD.encode(mac))
}

/// Checks a play token for `channel` at `now_ms`; no database involved.
pub fn verify_play_token(
    secret: &[u8],
    channel: &str,
    token: &str,
    now_ms: i64,
) -> Result<PlayTokenClaims, TokenError> {
    if token.len() > 128 {
        return Err(TokenError::Invalid);
    }
    let (p, m) = token.split_once('.').ok_or(TokenError::Invalid)?;
    let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| TokenError::Invalid)?;
    let mac = URL_SAFE_NO_PAD.decode(m).map_err(|_| TokenError::Invalid)?;
    if payload.len() != PAYLOAD_LEN || mac.len() != 32 {
        return Err(TokenError::Invalid);
    }
    let want = hmac_sha256(secret, &payload);
    // Constant time: the comparison does not stop at the first difference.
    if want.iter().zip(&mac).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0 {
        return Err(TokenError::Invalid);
    }
    if payload[..8] != channel_hash(channel) {
        return Err(TokenError::WrongChannel);
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&payload[8..16]);
    let account_id = i64::from_be_bytes(n);
    n.copy_from_slice(&payload[16..]);
    let expires_ms = i64::from_be_bytes(n);
    if expires_ms <= now_ms {
        return Err(TokenError::Expired);
    }
    Ok(PlayTokenClaims {
        account_id,
        expires_ms,
    })
}

/// The configured secret, or the one kept under `data_dir` (created on
/// first use), or, without a data dir, a random one for this process.
pub fn load_or_create_secret(
    configured: Option<&str>,
    data_dir: Option<&Path>,
) -> std::io::Result<Vec<u8>> {
    if let Some(s) = configured {
        return Ok(s.as_bytes().to_vec());
    }
    let fresh = || crate::store::random_secret("").into_bytes();
    let Some(dir) = data_dir else {
        return Ok(fresh());
    };
    let path = dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => return Ok(s.trim().as_bytes().to_vec()),
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is too short; delete it to generate a new one", path.display()),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let secret = fresh();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    use std::io::Write;
    opts.open(&path)?.write_all(&secret)?;
    Ok(secret)
}

/// Ticketed channels, their prices and the token secret, in memory: what
/// `authorize_play` needs for a ticket check without a database hit.
/// Refreshed when a streamer changes the price.
pub struct TicketGate {
    secret: Vec<u8>,
    prices: parking_lot::RwLock<HashMap<String, i64>>,
}

impl std::fmt::Debug for TicketGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketGate")
            .field("ticketed", &self.prices.read().len())
            .finish_non_exhaustive()
    }
}

impl TicketGate {
    /// A gate with no ticketed channel.
    pub fn new(secret: Vec<u8>) -> Self {
        TicketGate {
            secret,
            prices: parking_lot::RwLock::new(HashMap::new()),
        }
    }

    /// Sets a channel's ticket price; 0 makes it free.
    pub fn set_price(&self, channel: &str, price_micro: i64) {
        let mut p = self.prices.write();
        if price_micro > 0 {
            p.insert(channel.to_string(), price_micro);
        } else {
            p.remove(channel);
        }
    }

    /// The ticket price of a channel, if it is ticketed.
    pub fn price(&self, channel: &str) -> Option<i64> {
        self.prices.read().get(channel).copied()
    }

    /// Signs a token for a ticket.
    pub fn mint(&self, channel: &str, account_id: AccountId, expires_ms: i64) -> String {
        mint_play_token(&self.secret, channel, account_id, expires_ms)
    }

    /// Signs a viewer token: who is watching, for watch-time rewards. Not a
    /// ticket: it is bound to no channel (`westream:viewer` cannot be a
    /// channel name) and grants nothing.
    pub fn mint_viewer(&self, account_id: AccountId, expires_ms: i64) -> String {
        mint_play_token(&self.secret, VIEWER_SCOPE, account_id, expires_ms)
    }

    /// The account a viewer token names, if it is genuine and unexpired.
    pub fn verify_viewer(&self, token: &str, now_ms: i64) -> Option<AccountId> {
        verify_play_token(&self.secret, VIEWER_SCOPE, token, now_ms).ok().map(|c| c.account_id)
    }

    /// Allows a play of `channel` (already resolved from a rendition to its
    /// source) when it is free or `token` is valid for it.
    pub fn check(&self, channel: &str, token: Option<&str>, now_ms: i64) -> Result<(), Denied> {
        if self.price(channel).is_none() {
            return Ok(());
        }
        let refuse = |e: TokenError| Denied::Forbidden(format!("this broadcast is ticketed: {e}"));
        let token = token.filter(|t| !t.is_empty()).ok_or(TokenError::Missing).map_err(refuse)?;
        verify_play_token(&self.secret, channel, token, now_ms)
            .map(|_| ())
            .map_err(refuse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn tokens_verify_for_their_channel_until_they_expire() {
        let s = b"0123456789abcdef0123";
        let t = mint_play_token(s, "show", 42, 10_000);
        assert_eq!(t.len(), 76);
        assert_eq!(
            verify_play_token(s, "show", &t, 9_999),
            Ok(PlayTokenClaims { account_id: 42, expires_ms: 10_000 })
        );
        assert_eq!(verify_play_token(s, "show", &t, 10_000), Err(TokenError::Expired));
        assert_eq!(verify_play_token(s, "other", &t, 0), Err(TokenError::WrongChannel));
        assert_eq!(verify_play_token(b"another secret!!", "show", &t, 0), Err(TokenError::Invalid));
        let mut forged = t.clone().into_bytes();
        forged[3] = if forged[3] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap_or_default();
        assert_eq!(verify_play_token(s, "show", &forged, 0), Err(TokenError::Invalid));
        for junk in ["", ".", "a.b", "!!!.???", &"x".repeat(500)] {
            assert_eq!(verify_play_token(s, "show", junk, 0), Err(TokenError::Invalid), "{junk:?}");
        }
    }

    #[test]
    fn the_gate_lets_free_channels_through_and_checks_ticketed_ones() {
        let g = TicketGate::new(b"0123456789abcdef".to_vec());
        assert_eq!(g.check("show", None, 0), Ok(()));
        g.set_price("show", 5);
        assert!(matches!(g.check("show", None, 0), Err(Denied::Forbidden(m)) if m.contains("ticketed")));
        let t = g.mint("show", 1, 100);
        assert_eq!(g.check("show", Some(&t), 50), Ok(()));
        assert!(g.check("show", Some(&t), 100).is_err());
        g.set_price("show", 0);
        assert_eq!(g.check("show", None, 0), Ok(()));
    }

    #[test]
    fn a_generated_secret_is_kept_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = load_or_create_secret(None, Some(dir.path())).expect("create");
        let b = load_or_create_secret(None, Some(dir.path())).expect("load");
        assert_eq!(a, b);
        assert!(a.len() >= 32);
        assert_eq!(load_or_create_secret(Some("configured-secret"), Some(dir.path())).expect("cfg"), b"configured-secret");
    }
}

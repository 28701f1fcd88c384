//! WeStream processes started by the bench: `westream serve` (an origin with
//! the embedded control plane) and `westream edge`, on loopback ports of the
//! bench's choosing, each with a fresh data dir in the temp dir, run from the
//! repository root so relative paths in `configs/` resolve.
//!
//! Contract: a [`WestreamNode`] owns its process ([`ChildGuard`]) and stops
//! it by PID when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::procs::{fresh_dir, ChildGuard};

/// The repository root (the bench's crate is `bench/` in it).
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The `westream` binary built next to this one (same target dir and profile).
pub(crate) fn default_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("westream")))
        .unwrap_or_else(|| PathBuf::from("westream"))
}

/// One running `westream` process.
pub(crate) struct WestreamNode {
    pub(crate) child: ChildGuard,
    pub(crate) dir: PathBuf,
    pub(crate) rtmp: SocketAddr,
    pub(crate) http: SocketAddr,
    /// The QUIC relay's UDP address, when this is an origin started with one.
    pub(crate) relay: Option<SocketAddr>,
}

impl WestreamNode {
    pub(crate) fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// `westream serve --config CONFIG` with the listen addresses, the data
    /// dir and (when given) the relay's UDP address overridden.
    pub(crate) fn serve(
        binary: &Path,
        config: &Path,
        name: &str,
        rtmp: SocketAddr,
        http: SocketAddr,
        relay: Option<SocketAddr>,
    ) -> anyhow::Result<Self> {
        let mut extra = Vec::new();
        if let Some(relay) = relay {
            extra = vec!["--relay-listen".to_string(), relay.to_string()];
        }
        let mut node = Self::start(binary, "serve", config, name, rtmp, http, &extra)?;
        node.relay = relay;
        Ok(node)
    }

    /// `westream edge --config CONFIG --control URL`.
    pub(crate) fn edge(
        binary: &Path,
        config: &Path,
        name: &str,
        rtmp: SocketAddr,
        http: SocketAddr,
        control: &str,
    ) -> anyhow::Result<Self> {
        let extra = vec!["--control".to_string(), control.to_string()];
        Self::start(binary, "edge", config, name, rtmp, http, &extra)
    }

    fn start(
        binary: &Path,
        role: &str,
        config: &Path,
        name: &str,
        rtmp: SocketAddr,
        http: SocketAddr,
        extra: &[String],
    ) -> anyhow::Result<Self> {
        let dir = fresh_dir(name)?;
        let mut cmd = Command::new(binary);
        cmd.current_dir(repo_root())
            .arg(role)
            .arg("--config")
            .arg(config)
            .args(["--rtmp-listen", &rtmp.to_string(), "--http-listen", &http.to_string()])
            .arg("--data-dir")
            .arg(&dir)
            .args(extra)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()));
        let mut child = ChildGuard::spawn(&format!("westream {role} ({name})"), cmd, dir.join("stderr.log"))
            .with_context(|| format!("start {}", binary.display()))?;
        child.wait_listening(http, Duration::from_secs(30))?;
        Ok(Self { child, dir, rtmp, http, relay: None })
    }

    /// The relay certificate's fingerprint the origin writes under its data
    /// dir, waited for (bounded).
    pub(crate) fn relay_fingerprint(&mut self) -> anyhow::Result<String> {
        let file = self.dir.join("relay-cert.pem.sha256");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(s) = std::fs::read_to_string(&file) {
                if s.trim().len() == 64 {
                    return Ok(s.trim().to_string());
                }
            }
            self.child.check_running()?;
            if Instant::now() > deadline {
                bail!("no relay certificate fingerprint at {}", file.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

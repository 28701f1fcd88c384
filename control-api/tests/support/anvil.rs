//! Foundry's `anvil` as a test chain: a child process on a free loopback
//! port, from `control-api/contracts/node_modules` (installed by `npm ci`).
//! Shared by the chain tests of control-api and media-server (`#[path]`).
//! Without anvil a test skips loudly, unless `WESTREAM_REQUIRE_CHAIN=1` (CI),
//! where it fails.
#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// anvil's first two well-known dev keys (public test keys, funded on anvil only).
pub const ANVIL_KEY_0: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
pub const ANVIL_KEY_1: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
/// The address of [`ANVIL_KEY_0`].
pub const ANVIL_ADDRESS_0: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

/// An `anvil` child process on a free loopback port, killed on drop (also
/// when the test panics).
pub struct Anvil {
    child: Child,
    pub url: String,
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn anvil_binary() -> PathBuf {
    // Works from any crate of the workspace: control-api/../control-api/...
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../control-api/contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
}

fn chain_required() -> bool {
    std::env::var("WESTREAM_REQUIRE_CHAIN").is_ok_and(|v| v == "1")
}

pub fn start_anvil() -> Option<Anvil> {
    let bin = anvil_binary();
    if !bin.exists() {
        let msg = format!(
            "anvil not found at {} (run `npm ci --prefix control-api/contracts`)",
            bin.display()
        );
        assert!(!chain_required(), "WESTREAM_REQUIRE_CHAIN=1: {msg}");
        eprintln!("\n!!!!!!!! SKIPPED the JSON-RPC chain test: {msg} !!!!!!!!\n");
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&bin)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--silent",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
    let anvil = Anvil {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "anvil did not listen on 127.0.0.1:{port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(anvil)
}


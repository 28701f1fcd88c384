//! The `westream` binary: config errors name the key; SIGTERM stops it
//! cleanly with exit code 0.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn westream() -> Command {
    Command::new(env!("CARGO_BIN_EXE_westream"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn unknown_key_fails_startup_naming_the_key() {
    let dir = common::scratch_dir("badcfg");
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[rtmp]\nchunk_sise = 4096\n").unwrap();
    let out = westream().args(["serve", "--config"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chunk_sise"), "{err}");
}

#[test]
fn bad_address_flag_fails_startup_naming_the_key() {
    let out = westream().args(["serve", "--rtmp-listen", "nowhere:99999"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.rtmp_listen"), "{err}");
}

#[test]
fn sigterm_stops_the_server_cleanly_with_exit_code_zero() {
    let dir = common::scratch_dir("sigterm");
    let http = free_port();
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/dev.toml");
    let mut child = westream()
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--rtmp-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--http-listen", &format!("127.0.0.1:{http}")])
        .args(["--relay-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", http)).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "server did not come up: {}", log());
        if let Some(status) = child.try_wait().unwrap() {
            panic!("server exited with {status}: {}", log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("server did not exit within 5 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(exit.code(), Some(0));
}

//! The side-by-side run: nginx with Debian's `libnginx-mod-rtmp`, started
//! from `bench/nginx/nginx-rtmp.conf` on its own ports with its files in a
//! temporary directory, then the same scenario against a WeStream server the
//! caller started. nginx is stopped by its PID when its run ends, also on
//! error (the guard's `Drop`).

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::fanout::{rows, FanoutReport};

/// A running nginx; stopped (SIGTERM, then SIGKILL) when dropped.
pub(crate) struct NginxGuard {
    child: Child,
    dir: PathBuf,
}

impl NginxGuard {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Renders `template` into a fresh temp dir and starts nginx on it,
    /// waiting until the RTMP port accepts connections.
    pub(crate) fn start(
        nginx_bin: &Path,
        template: &Path,
        rtmp_port: u16,
        http_port: u16,
    ) -> anyhow::Result<Self> {
        let text = fs::read_to_string(template)
            .with_context(|| format!("read nginx config template {}", template.display()))?;
        let dir = std::env::temp_dir().join(format!(
            "westream-bench-nginx-{}-{}",
            std::process::id(),
            rtmp_port
        ));
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let conf = render_config(&text, &dir, rtmp_port, http_port);
        let conf_path = dir.join("nginx.conf");
        fs::write(&conf_path, conf)?;
        let log = fs::File::create(dir.join("stderr.log"))?;
        let child = Command::new(nginx_bin)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", nginx_bin.display()))?;
        let mut guard = Self { child, dir };
        let addr = SocketAddr::from(([127, 0, 0, 1], rtmp_port));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = guard.child.try_wait()? {
                let log = fs::read_to_string(guard.dir.join("stderr.log")).unwrap_or_default();
                bail!("nginx exited at start ({status}): {log}");
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("nginx did not listen on {addr} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(guard)
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self.child.id().to_string();
        // SIGTERM: nginx's fast shutdown, master stops its workers.
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NginxGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Substitutes the template's placeholders.
pub(crate) fn render_config(template: &str, dir: &Path, rtmp_port: u16, http_port: u16) -> String {
    template
        .replace("@PREFIX@", &dir.display().to_string())
        .replace("@RTMP_PORT@", &rtmp_port.to_string())
        .replace("@HTTP_PORT@", &http_port.to_string())
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() {
        format!("{:.2}x", a / b)
    } else {
        "-".to_string()
    }
}

/// Prints reports side by side, with `later / first` ratios on the key
/// figures when there are two.
pub(crate) fn print_side_by_side(reports: &[FanoutReport]) {
    if reports.is_empty() {
        return;
    }
    let columns: Vec<Vec<(&'static str, String)>> = reports.iter().map(rows).collect();
    print!("{:<28}", "metric");
    for r in reports {
        print!(" | {:<34}", r.label);
    }
    println!();
    for (i, (name, _)) in columns[0].iter().enumerate() {
        if *name == "publish url" || *name == "play url" || *name == "error samples" {
            continue;
        }
        print!("{name:<28}");
        for col in &columns {
            let value = col.get(i).map_or("", |(_, v)| v.as_str());
            print!(" | {value:<34}");
        }
        println!();
    }
    if let [base, other] = reports {
        println!();
        println!(
            "ratios {} / {} (lower is better for all):",
            other.label, base.label
        );
        let pairs: Vec<(&str, f64, f64)> = vec![
            ("startup p50", other.startup_ms.p50, base.startup_ms.p50),
            ("startup p99", other.startup_ms.p99, base.startup_ms.p99),
            ("latency p50", other.latency_ms.p50, base.latency_ms.p50),
            ("latency p99", other.latency_ms.p99, base.latency_ms.p99),
        ];
        for (name, a, b) in pairs {
            println!("  {name:<24} {}", ratio(a, b));
        }
        if let (Some(a), Some(b)) = (&other.server, &base.server) {
            println!(
                "  {:<24} {}",
                "cpu s per GB",
                ratio(a.cpu_seconds_per_gb, b.cpu_seconds_per_gb)
            );
            println!(
                "  {:<24} {}",
                "KB per viewer",
                ratio(a.kb_per_viewer, b.kb_per_viewer)
            );
            println!(
                "  {:<24} {}",
                "peak rss",
                ratio(a.rss_peak_kb as f64, b.rss_peak_kb as f64)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_renders_with_no_placeholder_left() {
        let template = include_str!("../nginx/nginx-rtmp.conf");
        let out = render_config(template, Path::new("/tmp/x"), 19350, 18080);
        assert!(!out.contains('@'), "placeholder left in:\n{out}");
        assert!(out.contains("listen 127.0.0.1:19350;"));
        assert!(out.contains("listen 127.0.0.1:18080;"));
        assert!(out.contains("load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;"));
        assert!(out.contains("pid /tmp/x/nginx.pid;"));
    }

    #[test]
    fn ratios_guard_against_zero() {
        assert_eq!(ratio(2.0, 4.0), "0.50x");
        assert_eq!(ratio(2.0, 0.0), "-");
    }
}

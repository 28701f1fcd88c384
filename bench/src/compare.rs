//! The side-by-side run: nginx with Debian's `libnginx-mod-rtmp`, started
//! from `bench/nginx/nginx-rtmp.conf` on its own ports with its files in a
//! temporary directory, then the same scenario against a WeStream server the
//! caller started. nginx is stopped by its PID when its run ends, also on
//! error (the guard's `Drop`).

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::fanout::{rows, FanoutReport};
use crate::procs::{fresh_dir, render, ChildGuard};

/// A running nginx; stopped (SIGTERM, then SIGKILL) when dropped.
pub(crate) struct NginxGuard {
    child: ChildGuard,
    dir: PathBuf,
}

impl NginxGuard {
    pub(crate) fn pid(&self) -> u32 {
        self.child.pid()
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Renders `template` into a fresh temp dir (with an `hls/` dir for
    /// templates that write HLS there) and starts nginx on it, waiting until
    /// the RTMP port accepts connections.
    pub(crate) fn start(
        nginx_bin: &Path,
        template: &Path,
        rtmp_port: u16,
        http_port: u16,
    ) -> anyhow::Result<Self> {
        let text = fs::read_to_string(template)
            .with_context(|| format!("read nginx config template {}", template.display()))?;
        let dir = fresh_dir(&format!("nginx-{rtmp_port}"))?;
        fs::create_dir_all(dir.join("hls"))?;
        let conf_path = dir.join("nginx.conf");
        fs::write(&conf_path, render_config(&text, &dir, rtmp_port, http_port))?;
        let mut cmd = Command::new(nginx_bin);
        cmd.arg("-p").arg(&dir).arg("-c").arg(&conf_path);
        let mut child = ChildGuard::spawn("nginx", cmd, dir.join("stderr.log"))?;
        for port in [rtmp_port, http_port] {
            child.wait_listening(SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(10))?;
        }
        Ok(Self { child, dir })
    }
}

/// Substitutes the template's placeholders.
pub(crate) fn render_config(template: &str, dir: &Path, rtmp_port: u16, http_port: u16) -> String {
    render(
        template,
        &[
            ("PREFIX", dir.display().to_string()),
            ("RTMP_PORT", rtmp_port.to_string()),
            ("HTTP_PORT", http_port.to_string()),
        ],
    )
}

pub(crate) fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() {
        format!("{:.2}x", a / b)
    } else {
        "-".to_string()
    }
}

/// Prints report columns side by side (rows named in `skip` left out).
pub(crate) fn print_columns(labels: &[&str], columns: &[Vec<(&'static str, String)>], skip: &[&str]) {
    let Some(first) = columns.first() else {
        return;
    };
    print!("{:<28}", "metric");
    for label in labels {
        print!(" | {label:<34}");
    }
    println!();
    for (i, (name, _)) in first.iter().enumerate() {
        if skip.contains(name) {
            continue;
        }
        print!("{name:<28}");
        for col in columns {
            let value = col.get(i).map_or("", |(_, v)| v.as_str());
            print!(" | {value:<34}");
        }
        println!();
    }
}

/// Prints `(name, later, first)` pairs as `later / first` ratios.
pub(crate) fn print_ratios(later: &str, first: &str, pairs: &[(&str, f64, f64)]) {
    println!();
    println!("ratios {later} / {first} (lower is better for all):");
    for (name, a, b) in pairs {
        println!("  {name:<28} {}", ratio(*a, *b));
    }
}

/// Prints fan-out reports side by side, with `later / first` ratios on the
/// key figures when there are two.
pub(crate) fn print_side_by_side(reports: &[FanoutReport]) {
    let labels: Vec<&str> = reports.iter().map(|r| r.label.as_str()).collect();
    let columns: Vec<Vec<(&'static str, String)>> = reports.iter().map(rows).collect();
    print_columns(&labels, &columns, &["publish url", "play url", "error samples"]);
    if let [base, other] = reports {
        let mut pairs: Vec<(&str, f64, f64)> = vec![
            ("startup p50", other.startup_ms.p50, base.startup_ms.p50),
            ("startup p99", other.startup_ms.p99, base.startup_ms.p99),
            ("latency p50", other.latency_ms.p50, base.latency_ms.p50),
            ("latency p99", other.latency_ms.p99, base.latency_ms.p99),
        ];
        if let (Some(a), Some(b)) = (&other.server, &base.server) {
            pairs.extend([
                ("cpu s per GB", a.cpu_seconds_per_gb, b.cpu_seconds_per_gb),
                ("KB per viewer", a.kb_per_viewer, b.kb_per_viewer),
                ("peak rss", a.rss_peak_kb as f64, b.rss_peak_kb as f64),
            ]);
        }
        print_ratios(&other.label, &base.label, &pairs);
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
    fn the_hls_config_renders_with_its_hls_path_under_the_prefix() {
        let template = include_str!("../nginx/nginx-rtmp-hls.conf");
        let out = render_config(template, Path::new("/tmp/x"), 19350, 18080);
        assert!(!out.contains('@'), "placeholder left in:\n{out}");
        assert!(out.contains("hls_path /tmp/x/hls;"));
        assert!(out.contains("hls_fragment 2s;"));
        assert!(out.contains("root /tmp/x;"), "/hls/... must map to the hls_path");
    }

    #[test]
    fn ratios_guard_against_zero() {
        assert_eq!(ratio(2.0, 4.0), "0.50x");
        assert_eq!(ratio(2.0, 0.0), "-");
    }
}

//! CPU time and memory of the server under test, read from `/proc`.
//!
//! Contract: a sample covers the given PID and all its descendants (nginx
//! runs a master and workers), summing CPU ticks and resident memory. The
//! parsers are pure and tested on captured text; [`sample_tree`] does the IO.

use std::collections::BTreeSet;
use std::fs;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// CPU and memory of a process tree at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ProcSample {
    /// utime + stime of every process in the tree, in clock ticks.
    pub(crate) cpu_ticks: u64,
    /// Sum of VmRSS, KiB.
    pub(crate) rss_kb: u64,
    /// Sum of VmHWM (each process's own peak RSS), KiB.
    pub(crate) hwm_kb: u64,
    /// Processes found.
    pub(crate) processes: usize,
}

/// utime + stime in ticks from the text of `/proc/PID/stat`.
pub(crate) fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name is in parentheses and may itself contain spaces and
    // parentheses, so fields are counted from the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is the state (field 3); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `Vm*:` value in KiB from the text of `/proc/PID/status`.
pub(crate) fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Clock ticks per second (`getconf CLK_TCK`), 100 when it cannot be asked.
pub(crate) fn clock_ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// The PID and its descendants, through `/proc/PID/task/TID/children`.
fn process_tree(root: u32) -> BTreeSet<u32> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![root];
    // A process tree of a server is small; the bound guards against /proc
    // weirdness, not against real trees.
    while let Some(pid) = stack.pop() {
        if seen.len() >= 4096 || !seen.insert(pid) {
            continue;
        }
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(children) = fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            stack.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    seen
}

/// Samples the tree rooted at `pid`; `None` when the PID is gone.
pub(crate) fn sample_tree(pid: u32) -> Option<ProcSample> {
    let mut sample = ProcSample::default();
    for p in process_tree(pid) {
        let (Ok(stat), Ok(status)) = (
            fs::read_to_string(format!("/proc/{p}/stat")),
            fs::read_to_string(format!("/proc/{p}/status")),
        ) else {
            continue;
        };
        sample.cpu_ticks += parse_stat_cpu_ticks(&stat).unwrap_or(0);
        sample.rss_kb += parse_status_kb(&status, "VmRSS").unwrap_or(0);
        sample.hwm_kb += parse_status_kb(&status, "VmHWM").unwrap_or(0);
        sample.processes += 1;
    }
    (sample.processes > 0).then_some(sample)
}

/// A server tree's cost over a measured window.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct ServerUsage {
    pub(crate) pid: u32,
    pub(crate) processes: usize,
    pub(crate) cpu_seconds: f64,
    pub(crate) rss_before_kb: u64,
    /// Highest RSS sampled during the window (every 250 ms), or at its end.
    pub(crate) rss_peak_kb: u64,
    /// Sum of VmHWM at the end (peak since the process started).
    pub(crate) hwm_end_kb: u64,
}

/// Measures a server's process tree from [`ServerMeter::start`] to
/// [`ServerMeter::finish`]: CPU ticks in between, RSS sampled every 250 ms.
pub(crate) struct ServerMeter {
    pid: u32,
    before: ProcSample,
    ticks_per_sec: u64,
    stop: watch::Sender<bool>,
    sampler: JoinHandle<u64>,
}

impl ServerMeter {
    /// `None` (with a warning) when the PID is not in `/proc`.
    pub(crate) fn start(pid: u32) -> Option<Self> {
        let Some(before) = sample_tree(pid) else {
            eprintln!("warning: server pid {pid} not found in /proc");
            return None;
        };
        let (stop, mut stopped) = watch::channel(false);
        let sampler = tokio::spawn(async move {
            let mut peak = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Some(s) = sample_tree(pid) {
                            peak = peak.max(s.rss_kb);
                        }
                    }
                    _ = stopped.wait_for(|s| *s) => return peak,
                }
            }
        });
        Some(Self {
            pid,
            before,
            ticks_per_sec: clock_ticks_per_sec(),
            stop,
            sampler,
        })
    }

    /// Ends the window; `None` when the server is gone.
    pub(crate) async fn finish(self) -> Option<ServerUsage> {
        let after = sample_tree(self.pid);
        let _ = self.stop.send(true);
        let peak = tokio::time::timeout(Duration::from_secs(2), self.sampler)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0);
        let after = after?;
        Some(ServerUsage {
            pid: self.pid,
            processes: after.processes,
            cpu_seconds: after.cpu_ticks.saturating_sub(self.before.cpu_ticks) as f64
                / self.ticks_per_sec as f64,
            rss_before_kb: self.before.rss_kb,
            rss_peak_kb: peak.max(after.rss_kb),
            hwm_end_kb: after.hwm_kb,
        })
    }
}

/// CPU seconds a process tree used between two samples.
pub(crate) fn cpu_seconds_between(
    before: Option<ProcSample>,
    after: Option<ProcSample>,
    ticks_per_sec: u64,
) -> f64 {
    match (before, after) {
        (Some(b), Some(a)) => a.cpu_ticks.saturating_sub(b.cpu_ticks) as f64 / ticks_per_sec as f64,
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_come_from_utime_and_stime_even_with_odd_names() {
        let stat = "4242 (nginx: worker (x) ) S 4241 4241 4241 0 -1 4194624 1200 0 0 0 \
                    350 125 0 0 20 0 1 0 123456 12345678 2048 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(475));
        assert_eq!(parse_stat_cpu_ticks("1 (init) S 0"), None);
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn status_values_are_read_by_key() {
        let status =
            "Name:\tnginx\nVmPeak:\t  20000 kB\nVmHWM:\t    9000 kB\nVmRSS:\t    8123 kB\n";
        assert_eq!(parse_status_kb(status, "VmRSS"), Some(8123));
        assert_eq!(parse_status_kb(status, "VmHWM"), Some(9000));
        assert_eq!(parse_status_kb(status, "VmSwap"), None);
    }

    #[test]
    fn our_own_process_can_be_sampled() {
        let sample = sample_tree(std::process::id()).expect("own pid exists");
        assert!(sample.processes >= 1);
        assert!(sample.rss_kb > 0);
    }
}

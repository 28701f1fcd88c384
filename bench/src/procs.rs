//! Processes the bench starts: servers under test (nginx, `westream serve`,
//! `westream edge`) and ffmpeg (the generated clip, the HLS publisher).
//!
//! Contract: every child is held by a [`ChildGuard`] and stopped by its own
//! PID when the guard drops (SIGTERM, then SIGKILL after 5 s), so an error,
//! a panic or Ctrl-C in the bench stops what it started and nothing else.
//! Each child's stderr goes to a log file in its own temp dir, quoted when it
//! fails to start.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A running child process; stopped when dropped.
pub(crate) struct ChildGuard {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin closed, stdout discarded and stderr to `log`.
    pub(crate) fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> anyhow::Result<Self> {
        let file = fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .with_context(|| format!("start {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_string(),
            child,
            log,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of the child's stderr.
    pub(crate) fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// An error if the child has exited.
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}): {}", self.name, self.log_tail());
        }
        Ok(())
    }

    /// Waits until `addr` accepts TCP connections, failing early if the
    /// child exits.
    pub(crate) fn wait_listening(&mut self, addr: SocketAddr, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            self.check_running()?;
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} did not listen on {addr} within {within:?}: {}", self.name, self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits up to `within` for the child to exit by itself.
    fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self.child.id().to_string();
        // SIGTERM first: nginx's master stops its workers, westream shuts
        // down cleanly, ffmpeg finishes its output.
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        if self.wait_exit(Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback TCP port: `wanted` if it is free, else an error; with no
/// wish, one the kernel picks. Other people's servers run on this machine
/// too, so a port is never assumed free.
pub(crate) fn tcp_port(wanted: Option<u16>) -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", wanted.unwrap_or(0)))
        .with_context(|| format!("TCP port {} on 127.0.0.1 is in use", wanted.unwrap_or(0)))?;
    Ok(listener.local_addr()?.port())
}

/// The same for a UDP port (the QUIC relay).
pub(crate) fn udp_port(wanted: Option<u16>) -> anyhow::Result<u16> {
    let socket = std::net::UdpSocket::bind(("127.0.0.1", wanted.unwrap_or(0)))
        .with_context(|| format!("UDP port {} on 127.0.0.1 is in use", wanted.unwrap_or(0)))?;
    Ok(socket.local_addr()?.port())
}

/// A fresh, empty temp dir for one child (`westream-bench-{what}-{our pid}`).
pub(crate) fn fresh_dir(what: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("westream-bench-{what}-{}", std::process::id()));
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("clear {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// Fills `@NAME@` placeholders of a config template.
pub(crate) fn render(template: &str, values: &[(&str, String)]) -> String {
    values
        .iter()
        .fold(template.to_string(), |text, (name, value)| text.replace(&format!("@{name}@"), value))
}

/// The generated clip every HLS run publishes: H.264 with a keyframe every
/// `gop_frames`, constant bitrate (filler data, so every server gets the
/// same bytes per segment), AAC-LC 44.1 kHz stereo at 128 kb/s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClipSpec {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) fps: u32,
    pub(crate) gop_frames: u32,
    /// Video plus audio.
    pub(crate) bitrate_kbps: u64,
    pub(crate) seconds: u32,
}

impl ClipSpec {
    fn file_name(&self) -> String {
        format!(
            "clip-{}x{}-{}fps-g{}-{}k-{}s.flv",
            self.width, self.height, self.fps, self.gop_frames, self.bitrate_kbps, self.seconds
        )
    }

    /// ffmpeg arguments that encode the clip into `out`.
    pub(crate) fn encode_args(&self, out: &Path) -> Vec<String> {
        let video_kbps = self.bitrate_kbps.saturating_sub(128).max(100);
        let mut args: Vec<String> = [
            "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        args.push(format!("testsrc2=size={}x{}:rate={}", self.width, self.height, self.fps));
        args.extend(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"].map(String::from));
        args.extend(["-t".to_string(), self.seconds.to_string()]);
        args.extend(
            [
                "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-sc_threshold", "0",
                "-x264-params", "nal-hrd=cbr:force-cfr=1",
            ]
            .map(String::from),
        );
        args.extend([
            "-g".to_string(),
            self.gop_frames.to_string(),
            "-keyint_min".to_string(),
            self.gop_frames.to_string(),
            "-b:v".to_string(),
            format!("{video_kbps}k"),
            "-maxrate".to_string(),
            format!("{video_kbps}k"),
            "-bufsize".to_string(),
            format!("{video_kbps}k"),
        ]);
        args.extend(["-c:a", "aac", "-b:a", "128k", "-ac", "2", "-f", "flv"].map(String::from));
        args.push(out.display().to_string());
        args
    }
}

/// The clip's path, encoding it first unless a previous run left it.
pub(crate) fn ensure_clip(spec: &ClipSpec, ffmpeg: &Path) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join("westream-bench-clips");
    fs::create_dir_all(&dir)?;
    let path = dir.join(spec.file_name());
    if fs::metadata(&path).is_ok_and(|m| m.len() > 0) {
        return Ok(path);
    }
    let partial = dir.join(format!("{}.{}.part", spec.file_name(), std::process::id()));
    eprintln!("encoding the bench clip {} ...", path.display());
    let mut cmd = Command::new(ffmpeg);
    cmd.args(spec.encode_args(&partial));
    let mut guard = ChildGuard::spawn("ffmpeg (clip)", cmd, dir.join("encode.log"))?;
    let status = guard
        .wait_exit(Duration::from_secs(300))
        .ok_or_else(|| anyhow::anyhow!("encoding the clip took over 300 s"))?;
    if !status.success() {
        bail!("ffmpeg could not encode the clip ({status}): {}", guard.log_tail());
    }
    fs::rename(&partial, &path)?;
    Ok(path)
}

/// ffmpeg publishing `clip` in a loop, in real time, to `rtmp_url` for at
/// most `seconds`.
pub(crate) fn spawn_publisher(
    ffmpeg: &Path,
    clip: &Path,
    rtmp_url: &str,
    seconds: u64,
    log_dir: &Path,
) -> anyhow::Result<ChildGuard> {
    let mut cmd = Command::new(ffmpeg);
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i"])
        .arg(clip)
        .args(["-t", &seconds.to_string(), "-c", "copy", "-f", "flv", rtmp_url]);
    ChildGuard::spawn("ffmpeg (publisher)", cmd, log_dir.join("publisher.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled() {
        let out = render("listen @A@:@B@; @A@", &[("A", "127.0.0.1".into()), ("B", "80".into())]);
        assert_eq!(out, "listen 127.0.0.1:80; 127.0.0.1");
    }

    #[test]
    fn the_clip_is_encoded_at_a_constant_rate_with_fixed_keyframes() {
        let spec = ClipSpec {
            width: 1280,
            height: 720,
            fps: 30,
            gop_frames: 60,
            bitrate_kbps: 2500,
            seconds: 20,
        };
        let args = spec.encode_args(Path::new("/tmp/c.flv")).join(" ");
        assert!(args.contains("testsrc2=size=1280x720:rate=30"), "{args}");
        assert!(args.contains("-g 60 -keyint_min 60"), "{args}");
        assert!(args.contains("-b:v 2372k -maxrate 2372k"), "{args}");
        assert!(args.contains("nal-hrd=cbr"), "{args}");
        assert!(args.ends_with("-f flv /tmp/c.flv"), "{args}");
        assert_eq!(spec.file_name(), "clip-1280x720-30fps-g60-2500k-20s.flv");
    }

    #[test]
    fn a_guard_stops_its_child_when_dropped() {
        let dir = fresh_dir("guard-test").expect("temp dir");
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let mut guard = ChildGuard::spawn("sleep", cmd, dir.join("log")).expect("spawn");
        let pid = guard.pid();
        assert!(guard.check_running().is_ok());
        drop(guard);
        assert!(!Path::new(&format!("/proc/{pid}")).exists() || {
            // A zombie reaped by wait() is gone; anything else is a leak.
            fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z"))
        });
        let _ = fs::remove_dir_all(dir);
    }
}

//! Is there a usable ffmpeg? Asked once at startup so the server can say,
//! once and clearly, why transcoding is off.

use std::io::ErrorKind;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::errors::ProbeError;

const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `path -version` and `path -encoders`; returns the version when it is
/// ffmpeg with libx264 and aac.
pub(crate) async fn probe_ffmpeg(path: &str) -> Result<String, ProbeError> {
    let version_out = run(path, &["-hide_banner", "-version"]).await?;
    let text = String::from_utf8_lossy(&version_out.stdout);
    let version = text.lines().find_map(ffmpeg_sidecar::log_parser::try_parse_version).ok_or_else(|| ProbeError::NotFfmpeg {
        path: path.to_owned(),
        status: version_out.status.to_string(),
    })?;
    let encoders_out = run(path, &["-hide_banner", "-encoders"]).await?;
    let encoders = String::from_utf8_lossy(&encoders_out.stdout);
    for encoder in ["libx264", "aac"] {
        if !has_encoder(&encoders, encoder) {
            return Err(ProbeError::MissingEncoder { path: path.to_owned(), version, encoder });
        }
    }
    Ok(version)
}

async fn run(path: &str, args: &[&str]) -> Result<std::process::Output, ProbeError> {
    let child = Command::new(path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| match source.kind() {
            ErrorKind::NotFound => ProbeError::NotFound { path: path.to_owned() },
            _ => ProbeError::Spawn { path: path.to_owned(), source },
        })?;
    match tokio::time::timeout(PROBE_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(source)) => Err(ProbeError::Spawn { path: path.to_owned(), source }),
        Err(_) => Err(ProbeError::Timeout { path: path.to_owned(), timeout_ms: PROBE_TIMEOUT.as_millis() as u64 }),
    }
}

/// `-encoders` lines look like ` V....D libx264   libx264 H.264 / AVC ...`.
fn has_encoder(listing: &str, name: &str) -> bool {
    listing.lines().any(|l| l.split_whitespace().nth(1) == Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoder_listing_is_matched_by_name_not_substring() {
        let listing = " V....D libx264rgb   libx264 H.264 RGB\n A....D aac_at  AudioToolbox\n";
        assert!(!has_encoder(listing, "libx264"));
        assert!(!has_encoder(listing, "aac"));
        assert!(has_encoder(" V....D libx264   libx264 H.264\n A....D aac   AAC\n", "aac"));
    }
}

//! The edge registry and proximity selection (DESIGN.md §5).
//!
//! Edges register (id, public URLs, region, location, capacity) and
//! heartbeat their load; an edge whose last heartbeat is older than
//! `control.edges.heartbeat_timeout_ms` is out of rotation. Registrations
//! are kept in SQLite (they survive a restart, as unhealthy until the edge
//! beats again); heartbeats and health live in memory.
//!
//! `GET /v1/play/{channel}` locates the client (explicit `lat`/`lon`, else
//! the CIDR table, else a GeoLite2 City database when one is configured,
//! else the default region), and [`select::Selector`]
//! picks an edge. The wire types here are shared with the edge's client.

pub mod geoip;
pub mod select;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use select::{Candidate, Cidr, Location, Policy, Selector};

/// `[control.edges]`: selection and health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgesConfig {
    /// Tie-break among equally near edges: `round_robin`, `random`,
    /// `consistent_hash`, `least_connections` or `fastest_response`.
    pub policy: Policy,
    /// Edges within this many km of the nearest count as equally near.
    pub tolerance_km: f64,
    /// An edge without a heartbeat for this long is out of rotation.
    pub heartbeat_timeout_ms: u64,
    /// Where a client with no explicit location and no CIDR match is
    /// assumed to be: the centre of this region's edges when any are
    /// registered, else `default_latitude`/`default_longitude`.
    pub default_region: String,
    /// Fallback client latitude.
    pub default_latitude: f64,
    /// Fallback client longitude.
    pub default_longitude: f64,
    /// Client networks and where they are (`[[control.edges.locations]]`);
    /// the longest matching prefix wins.
    pub locations: Vec<CidrLocation>,
    /// A MaxMind GeoLite2/GeoIP2 City database (`.mmdb`), consulted for
    /// clients the CIDR table does not place. Optional; read at start.
    pub geoip_database: Option<std::path::PathBuf>,
    /// The origin's URLs, answered when no edge is healthy. Empty: derived
    /// from the request's Host header (`http://HOST`, `rtmp://HOSTNAME:1935/live`).
    pub origin_urls: EdgeUrls,
}

impl Default for EdgesConfig {
    fn default() -> Self {
        EdgesConfig {
            policy: Policy::RoundRobin,
            tolerance_km: 100.0,
            heartbeat_timeout_ms: 6_000,
            default_region: String::new(),
            default_latitude: 0.0,
            default_longitude: 0.0,
            locations: Vec::new(),
            geoip_database: None,
            origin_urls: EdgeUrls::default(),
        }
    }
}

/// One row of the CIDR table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CidrLocation {
    /// `10.0.0.0/8`, `2001:db8::/32`.
    pub cidr: String,
    /// Latitude of clients in it.
    pub latitude: f64,
    /// Longitude of clients in it.
    pub longitude: f64,
    /// A label for logs and answers.
    #[serde(default)]
    pub region: String,
}

impl EdgesConfig {
    /// Checks every value; keys are named from `control.edges`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |k: &str, m: &str| Err(ConfigError { key: format!("control.edges.{k}"), message: m.to_string() });
        if !(self.tolerance_km >= 0.0 && self.tolerance_km <= 20_100.0) {
            return err("tolerance_km", "must be between 0 and 20100 (half the Earth)");
        }
        if !(100..=600_000).contains(&self.heartbeat_timeout_ms) {
            return err("heartbeat_timeout_ms", "must be between 100 and 600000");
        }
        check_location(self.default_latitude, self.default_longitude)
            .map_err(|m| ConfigError { key: "control.edges.default_latitude".into(), message: m })?;
        for (i, l) in self.locations.iter().enumerate() {
            if Cidr::parse(&l.cidr).is_none() {
                return Err(ConfigError { key: format!("control.edges.locations[{i}].cidr"), message: "not a network like 10.0.0.0/8".into() });
            }
            check_location(l.latitude, l.longitude).map_err(|m| ConfigError { key: format!("control.edges.locations[{i}].latitude"), message: m })?;
        }
        if let Some(path) = &self.geoip_database {
            if !path.is_file() {
                return err("geoip_database", &format!("{} is not a readable file (a GeoLite2-City.mmdb)", path.display()));
            }
        }
        Ok(())
    }
}

fn check_location(lat: f64, lon: f64) -> Result<(), String> {
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return Err("latitude must be -90..=90 and longitude -180..=180".into());
    }
    Ok(())
}

/// Public URLs of a node per protocol (bases, without the channel).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeUrls {
    /// `rtmp://host:1935/live`
    pub rtmp: String,
    /// `http://host:8080` (HTTP-FLV at `/live/{channel}.flv`)
    pub flv: String,
    /// `http://host:8080` (HLS at `/live/{channel}/index.m3u8`)
    pub hls: String,
}

/// `POST /v1/edges/register`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeRegistration {
    /// Edge id.
    pub id: String,
    /// Region label.
    pub region: String,
    /// Degrees.
    pub latitude: f64,
    /// Degrees.
    pub longitude: f64,
    /// Most viewers to send here.
    pub capacity_viewers: u64,
    /// Most egress, Mb/s.
    pub capacity_mbps: u64,
    /// Where viewers reach it.
    pub urls: EdgeUrls,
}

impl EdgeRegistration {
    /// Checks the fields a registration must have right.
    pub fn validate(&self) -> Result<(), String> {
        let id_ok = !self.id.is_empty() && self.id.len() <= 64 && self.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !id_ok {
            return Err("id must be 1-64 of [A-Za-z0-9_-]".into());
        }
        if self.region.len() > 64 {
            return Err("region is at most 64 bytes".into());
        }
        check_location(self.latitude, self.longitude)?;
        if self.capacity_viewers == 0 || self.capacity_mbps == 0 {
            return Err("capacities must be positive".into());
        }
        let u = &self.urls;
        if !u.rtmp.starts_with("rtmp://") || !(u.flv.starts_with("http://") || u.flv.starts_with("https://")) || !(u.hls.starts_with("http://") || u.hls.starts_with("https://")) {
            return Err("urls.rtmp must be rtmp://..., urls.flv and urls.hls http(s)://...".into());
        }
        if [&u.rtmp, &u.flv, &u.hls].iter().any(|s| s.len() > 512) {
            return Err("urls are at most 512 bytes".into());
        }
        Ok(())
    }
}

/// `POST /v1/edges/{id}/heartbeat`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeHeartbeat {
    /// Viewers connected now (all protocols).
    pub viewers: u64,
    /// Egress over the last interval, Mb/s.
    pub mbps: f64,
    /// Round trip of the edge's previous heartbeat, ms.
    pub rtt_ms: f64,
    /// Channels pulled from origins now.
    pub channels: Vec<String>,
}

/// One edge in `GET /v1/edges`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeStatus {
    /// Edge id.
    pub id: String,
    /// Public URLs.
    pub urls: EdgeUrls,
    /// Region label.
    pub region: String,
    /// Degrees.
    pub latitude: f64,
    /// Degrees.
    pub longitude: f64,
    /// In rotation: heartbeats arrive.
    pub healthy: bool,
    /// Load from the last heartbeat.
    pub load: EdgeHeartbeat,
    /// Capacity in viewers.
    pub capacity_viewers: u64,
    /// Capacity in Mb/s.
    pub capacity_mbps: u64,
    /// Milliseconds since the last heartbeat; `None` before the first.
    pub last_heartbeat_age_ms: Option<u64>,
}

struct Entry {
    reg: EdgeRegistration,
    last_heartbeat: Option<Instant>,
    load: EdgeHeartbeat,
}

/// Registered edges and the selector.
pub struct EdgeRegistry {
    config: EdgesConfig,
    networks: Vec<(Cidr, Location, String)>,
    geoip: Option<geoip::GeoIp>,
    selector: Selector,
    edges: RwLock<BTreeMap<String, Entry>>,
}

/// Where the client was placed and how.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientLocation {
    /// Where.
    #[serde(flatten)]
    pub location: Location,
    /// `explicit`, `cidr`, `geoip`, `default_region` or `default`.
    pub source: &'static str,
    /// The CIDR row's or default region's label, or the GeoIP country code.
    pub region: String,
}

impl EdgeRegistry {
    /// An empty registry for a validated config.
    pub fn new(config: EdgesConfig) -> EdgeRegistry {
        let mut networks: Vec<(Cidr, Location, String)> = config
            .locations
            .iter()
            .filter_map(|l| Some((Cidr::parse(&l.cidr)?, Location { latitude: l.latitude, longitude: l.longitude }, l.region.clone())))
            .collect();
        // Longest prefix first: the first match is the most specific.
        networks.sort_by_key(|n| std::cmp::Reverse(n.0.prefix()));
        let geoip = config.geoip_database.as_deref().and_then(|path| match geoip::GeoIp::open(path) {
            Ok(db) => {
                tracing::info!(path = %path.display(), db = ?db, "edge selection: GeoIP database loaded");
                Some(db)
            }
            Err(e) => {
                tracing::error!(error = %e, "control.edges.geoip_database unusable: clients are placed without it");
                None
            }
        });
        EdgeRegistry {
            selector: Selector::new(config.policy, config.tolerance_km),
            config,
            networks,
            geoip,
            edges: RwLock::new(BTreeMap::new()),
        }
    }

    /// The config in force.
    pub fn config(&self) -> &EdgesConfig {
        &self.config
    }

    /// Adds registrations recorded before a restart; out of rotation until
    /// they heartbeat.
    pub fn restore(&self, regs: impl IntoIterator<Item = EdgeRegistration>) {
        let mut edges = self.edges.write();
        for reg in regs {
            edges.entry(reg.id.clone()).or_insert(Entry { reg, last_heartbeat: None, load: EdgeHeartbeat::default() });
        }
    }

    /// Adds or replaces an edge; a registration counts as a heartbeat.
    pub fn register(&self, reg: EdgeRegistration, now: Instant) {
        let id = reg.id.clone();
        let mut edges = self.edges.write();
        let load = edges.remove(&id).map(|e| e.load).unwrap_or_default();
        edges.insert(id, Entry { reg, last_heartbeat: Some(now), load });
    }

    /// Records a heartbeat; `false` for an unknown edge (it must register).
    pub fn heartbeat(&self, id: &str, beat: EdgeHeartbeat, now: Instant) -> bool {
        match self.edges.write().get_mut(id) {
            Some(e) => {
                e.last_heartbeat = Some(now);
                e.load = beat;
                true
            }
            None => false,
        }
    }

    fn healthy(&self, e: &Entry, now: Instant) -> bool {
        e.last_heartbeat.is_some_and(|t| now.saturating_duration_since(t) <= Duration::from_millis(self.config.heartbeat_timeout_ms))
    }

    /// Every edge with health and load.
    pub fn list(&self, now: Instant) -> Vec<EdgeStatus> {
        self.edges.read().values().map(|e| self.status(e, now)).collect()
    }

    fn status(&self, e: &Entry, now: Instant) -> EdgeStatus {
        EdgeStatus {
            id: e.reg.id.clone(),
            urls: e.reg.urls.clone(),
            region: e.reg.region.clone(),
            latitude: e.reg.latitude,
            longitude: e.reg.longitude,
            healthy: self.healthy(e, now),
            load: e.load.clone(),
            capacity_viewers: e.reg.capacity_viewers,
            capacity_mbps: e.reg.capacity_mbps,
            last_heartbeat_age_ms: e.last_heartbeat.map(|t| now.saturating_duration_since(t).as_millis() as u64),
        }
    }

    /// Places a client: explicit location, else the CIDR table, else the
    /// GeoIP database, else the default region, else the default point.
    pub fn locate(&self, explicit: Option<Location>, ip: Option<IpAddr>) -> ClientLocation {
        if let Some(location) = explicit {
            return ClientLocation { location, source: "explicit", region: String::new() };
        }
        if let Some(ip) = ip {
            if let Some((_, location, region)) = self.networks.iter().find(|(c, _, _)| c.contains(ip)) {
                return ClientLocation { location: *location, source: "cidr", region: region.clone() };
            }
            if let Some((location, country)) = self.geoip.as_ref().and_then(|g| g.locate(ip)) {
                return ClientLocation { location, source: "geoip", region: country };
            }
        }
        let region = &self.config.default_region;
        if !region.is_empty() {
            let edges = self.edges.read();
            let points: Vec<(f64, f64)> = edges.values().filter(|e| &e.reg.region == region).map(|e| (e.reg.latitude, e.reg.longitude)).collect();
            if !points.is_empty() {
                let n = points.len() as f64;
                let location = Location {
                    latitude: points.iter().map(|p| p.0).sum::<f64>() / n,
                    longitude: points.iter().map(|p| p.1).sum::<f64>() / n,
                };
                return ClientLocation { location, source: "default_region", region: region.clone() };
            }
        }
        let location = Location { latitude: self.config.default_latitude, longitude: self.config.default_longitude };
        ClientLocation { location, source: "default", region: region.clone() }
    }

    /// The edge for a client, `None` when no edge is healthy with room.
    pub fn select(&self, client: Location, client_key: &str, random: f64, now: Instant) -> Option<EdgeStatus> {
        let edges = self.edges.read();
        let entries: Vec<&Entry> = edges.values().collect();
        let candidates: Vec<Candidate> = entries
            .iter()
            .map(|e| Candidate {
                id: e.reg.id.clone(),
                location: Location { latitude: e.reg.latitude, longitude: e.reg.longitude },
                healthy: self.healthy(e, now),
                viewers: e.load.viewers,
                capacity_viewers: e.reg.capacity_viewers,
                mbps: e.load.mbps,
                capacity_mbps: e.reg.capacity_mbps,
                rtt_ms: e.load.rtt_ms,
            })
            .collect();
        let i = self.selector.select(&candidates, client, client_key, random)?;
        Some(self.status(entries[i], now))
    }
}

#[cfg(test)]
mod tests;

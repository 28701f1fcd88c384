//! Edge selection, sans-IO: locate the client, keep healthy edges with spare
//! capacity, take the nearest distance band, break ties by policy. Time and
//! randomness come in as arguments.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How an edge is picked among equally near ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Each in turn.
    #[default]
    RoundRobin,
    /// Uniformly at random.
    Random,
    /// Rendezvous hashing of the client address: a client keeps its edge,
    /// and a new edge takes only its share of clients.
    ConsistentHash,
    /// The lowest load relative to capacity.
    LeastConnections,
    /// The lowest heartbeat round-trip time.
    FastestResponse,
}

/// A point on Earth, degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Location {
    /// Latitude.
    pub latitude: f64,
    /// Longitude.
    pub longitude: f64,
}

/// Mean Earth radius, km.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Great-circle distance in km (haversine).
pub fn distance_km(a: Location, b: Location) -> f64 {
    let (la1, la2) = (a.latitude.to_radians(), b.latitude.to_radians());
    let dlat = la2 - la1;
    let dlon = (b.longitude - a.longitude).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// What selection needs to know about one edge.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Edge id.
    pub id: String,
    /// Where it is.
    pub location: Location,
    /// Heartbeats arrive.
    pub healthy: bool,
    /// Viewers now.
    pub viewers: u64,
    /// Capacity in viewers.
    pub capacity_viewers: u64,
    /// Egress now, Mb/s.
    pub mbps: f64,
    /// Capacity, Mb/s.
    pub capacity_mbps: u64,
    /// Heartbeat round trip, ms.
    pub rtt_ms: f64,
}

impl Candidate {
    fn has_room(&self) -> bool {
        self.viewers < self.capacity_viewers && self.mbps < self.capacity_mbps as f64
    }

    fn load(&self) -> f64 {
        self.viewers as f64 / self.capacity_viewers.max(1) as f64
    }
}

/// The selector: policy, tolerance and the round-robin cursor.
#[derive(Debug)]
pub struct Selector {
    policy: Policy,
    tolerance_km: f64,
    cursor: AtomicU64,
}

impl Selector {
    /// A selector; edges within `tolerance_km` of the nearest count as
    /// equally near.
    pub fn new(policy: Policy, tolerance_km: f64) -> Selector {
        Selector { policy, tolerance_km, cursor: AtomicU64::new(0) }
    }

    /// The policy in force.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Index into `edges` of the chosen edge, `None` when no edge is healthy
    /// with room. `client_key` identifies the client for consistent hashing;
    /// `random` in `[0, 1)` serves the random policy.
    pub fn select(&self, edges: &[Candidate], client: Location, client_key: &str, random: f64) -> Option<usize> {
        let usable: Vec<(usize, f64)> = edges
            .iter()
            .enumerate()
            .filter(|(_, e)| e.healthy && e.has_room())
            .map(|(i, e)| (i, distance_km(client, e.location)))
            .collect();
        let nearest = usable.iter().map(|(_, d)| *d).fold(f64::INFINITY, f64::min);
        let mut band: Vec<usize> = usable.iter().filter(|(_, d)| *d <= nearest + self.tolerance_km).map(|(i, _)| *i).collect();
        if band.is_empty() {
            return None;
        }
        // A stable order, so round robin and ties do not depend on the map.
        band.sort_by(|a, b| edges[*a].id.cmp(&edges[*b].id));
        let by = |f: &dyn Fn(&Candidate) -> f64| {
            band.iter()
                .copied()
                .min_by(|a, b| f(&edges[*a]).total_cmp(&f(&edges[*b])))
        };
        match self.policy {
            Policy::RoundRobin => {
                let n = self.cursor.fetch_add(1, Ordering::Relaxed);
                Some(band[(n % band.len() as u64) as usize])
            }
            Policy::Random => {
                let i = ((random.clamp(0.0, 1.0) * band.len() as f64) as usize).min(band.len() - 1);
                Some(band[i])
            }
            Policy::ConsistentHash => band.iter().copied().max_by_key(|i| rendezvous(client_key, &edges[*i].id)),
            Policy::LeastConnections => by(&|e| e.load()),
            Policy::FastestResponse => by(&|e| e.rtt_ms),
        }
    }
}

/// The rendezvous weight of `edge` for `client`.
fn rendezvous(client: &str, edge: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(client.as_bytes());
    h.update([0]);
    h.update(edge.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// An IPv4 or IPv6 network, `addr/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8` or `2001:db8::/32`; a bare address is a /32 or /128.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Cidr { addr, prefix })
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => masked(u128::from(u32::from(n)), u128::from(u32::from(a)), self.prefix, 32),
            (IpAddr::V6(n), IpAddr::V6(a)) => masked(u128::from(n), u128::from(a), self.prefix, 128),
            _ => false,
        }
    }
}

fn masked(net: u128, addr: u128, prefix: u8, bits: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = u32::from(bits - prefix);
    (net >> shift) == (addr >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(id: &str, lat: f64, lon: f64) -> Candidate {
        Candidate {
            id: id.into(),
            location: Location { latitude: lat, longitude: lon },
            healthy: true,
            viewers: 0,
            capacity_viewers: 100,
            mbps: 0.0,
            capacity_mbps: 1000,
            rtt_ms: 10.0,
        }
    }

    const PARIS: Location = Location { latitude: 48.8566, longitude: 2.3522 };

    #[test]
    fn paris_to_new_york_is_about_5840_km() {
        let ny = Location { latitude: 40.7128, longitude: -74.0060 };
        let d = distance_km(PARIS, ny);
        assert!((d - 5837.0).abs() < 30.0, "{d}");
        assert_eq!(distance_km(PARIS, PARIS), 0.0);
    }

    #[test]
    fn the_nearest_healthy_edge_with_room_wins() {
        let mut edges = vec![edge("paris", 48.85, 2.35), edge("tokyo", 35.68, 139.69), edge("nyc", 40.71, -74.0)];
        let s = Selector::new(Policy::RoundRobin, 50.0);
        assert_eq!(s.select(&edges, PARIS, "c", 0.0), Some(0));
        edges[0].healthy = false;
        assert_eq!(s.select(&edges, PARIS, "c", 0.0), Some(2), "New York is nearer to Paris than Tokyo");
        edges[2].viewers = 100;
        assert_eq!(s.select(&edges, PARIS, "c", 0.0), Some(1), "full edges are skipped");
        edges[1].mbps = 1000.0;
        assert_eq!(s.select(&edges, PARIS, "c", 0.0), None);
    }

    #[test]
    fn cidrs_match_by_prefix() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("2001:db8::/32").unwrap().contains("2001:db8:1::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("banana").is_none());
    }
}

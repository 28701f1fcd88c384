//! Optional client placement from a MaxMind GeoIP2/GeoLite2 City database
//! (`control.edges.geoip_database`), tried after the CIDR table and before
//! the default region. The whole file is read into memory at start; a
//! lookup is a walk down a binary tree (no I/O, no allocation beyond the
//! decoded country code).

use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;

use super::select::Location;

/// An opened City database.
pub struct GeoIp {
    reader: maxminddb::Reader<Vec<u8>>,
}

#[derive(Deserialize, Default)]
struct Record {
    #[serde(default)]
    location: RecordLocation,
    #[serde(default)]
    country: RecordCountry,
}

#[derive(Deserialize, Default)]
struct RecordLocation {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

#[derive(Deserialize, Default)]
struct RecordCountry {
    iso_code: Option<String>,
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoIp").field("database_type", &self.reader.metadata().database_type).finish()
    }
}

impl GeoIp {
    /// Reads the database; the error says what is wrong with the file.
    pub fn open(path: &Path) -> Result<GeoIp, String> {
        let reader = maxminddb::Reader::open_readfile(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Ok(GeoIp { reader })
    }

    /// Where the database puts `ip`, and its country code (empty when the
    /// record has none); `None` without a location for it.
    pub fn locate(&self, ip: IpAddr) -> Option<(Location, String)> {
        let found = self.reader.lookup(ip).ok()?;
        let record: Record = found.decode().ok()??;
        let (latitude, longitude) = (record.location.latitude?, record.location.longitude?);
        let valid = (-90.0..=90.0).contains(&latitude) && (-180.0..=180.0).contains(&longitude);
        valid.then(|| (Location { latitude, longitude }, record.country.iso_code.unwrap_or_default()))
    }
}

/// A tiny MaxMind DB writer (IPv4 tree, 24-bit records) for tests: the real
/// reader must place clients from a real file in the real format.
#[cfg(test)]
pub(crate) mod writer {
    use std::net::Ipv4Addr;

    #[derive(Clone, Copy)]
    enum Rec {
        Empty,
        Node(u32),
        Data(u32),
    }

    fn ctrl(out: &mut Vec<u8>, kind: u8, size: usize) {
        assert!(size < 29);
        if kind <= 7 {
            out.push((kind << 5) | size as u8);
        } else {
            out.push(size as u8);
            out.push(kind - 7);
        }
    }

    fn string(out: &mut Vec<u8>, s: &str) {
        ctrl(out, 2, s.len());
        out.extend_from_slice(s.as_bytes());
    }

    fn double(out: &mut Vec<u8>, v: f64) {
        ctrl(out, 3, 8);
        out.extend_from_slice(&v.to_be_bytes());
    }

    fn uint(out: &mut Vec<u8>, kind: u8, bytes: &[u8]) {
        ctrl(out, kind, bytes.len());
        out.extend_from_slice(bytes);
    }

    /// A City-like database: each network gets `{country: {iso_code},
    /// location: {latitude, longitude}}`.
    pub(crate) fn city_db(networks: &[(Ipv4Addr, u8, f64, f64, &str)]) -> Vec<u8> {
        let mut data = Vec::new();
        let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty; 2]];
        for &(net, prefix, lat, lon, iso) in networks {
            let offset = data.len() as u32;
            ctrl(&mut data, 7, 2);
            string(&mut data, "country");
            ctrl(&mut data, 7, 1);
            string(&mut data, "iso_code");
            string(&mut data, iso);
            string(&mut data, "location");
            ctrl(&mut data, 7, 2);
            string(&mut data, "latitude");
            double(&mut data, lat);
            string(&mut data, "longitude");
            double(&mut data, lon);

            let bits = u32::from(net);
            let mut node = 0usize;
            for i in 0..prefix {
                let side = ((bits >> (31 - i)) & 1) as usize;
                if i + 1 == prefix {
                    nodes[node][side] = Rec::Data(offset);
                } else {
                    node = match nodes[node][side] {
                        Rec::Node(n) => n as usize,
                        _ => {
                            nodes.push([Rec::Empty; 2]);
                            let n = nodes.len() - 1;
                            nodes[node][side] = Rec::Node(n as u32);
                            n
                        }
                    };
                }
            }
        }
        let count = nodes.len() as u32;
        let mut out = Vec::new();
        for pair in &nodes {
            for rec in pair {
                let v = match *rec {
                    Rec::Empty => count,
                    Rec::Node(n) => n,
                    Rec::Data(off) => count + 16 + off,
                };
                out.extend_from_slice(&v.to_be_bytes()[1..]);
            }
        }
        out.extend_from_slice(&[0u8; 16]);
        out.extend_from_slice(&data);
        out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
        let mut meta = Vec::new();
        ctrl(&mut meta, 7, 9);
        string(&mut meta, "node_count");
        uint(&mut meta, 6, &count.to_be_bytes());
        string(&mut meta, "record_size");
        uint(&mut meta, 5, &24u16.to_be_bytes());
        string(&mut meta, "ip_version");
        uint(&mut meta, 5, &4u16.to_be_bytes());
        string(&mut meta, "database_type");
        string(&mut meta, "WeStream-Test-City");
        string(&mut meta, "languages");
        ctrl(&mut meta, 11, 1);
        string(&mut meta, "en");
        string(&mut meta, "binary_format_major_version");
        uint(&mut meta, 5, &2u16.to_be_bytes());
        string(&mut meta, "binary_format_minor_version");
        uint(&mut meta, 5, &0u16.to_be_bytes());
        string(&mut meta, "build_epoch");
        uint(&mut meta, 9, &1_764_000_000u64.to_be_bytes());
        string(&mut meta, "description");
        ctrl(&mut meta, 7, 1);
        string(&mut meta, "en");
        string(&mut meta, "test networks");
        out.extend_from_slice(&meta);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_city_database_places_addresses_in_its_networks_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("city.mmdb");
        let db = writer::city_db(&[
            ("81.2.69.0".parse().unwrap(), 24, 51.5142, -0.0931, "GB"),
            ("89.160.0.0".parse().unwrap(), 17, 58.4167, 15.6167, "SE"),
        ]);
        std::fs::write(&path, db).unwrap();
        let geo = GeoIp::open(&path).unwrap();
        let (at, iso) = geo.locate("81.2.69.142".parse().unwrap()).unwrap();
        assert_eq!((at.latitude, at.longitude, iso.as_str()), (51.5142, -0.0931, "GB"));
        let (at, iso) = geo.locate("89.160.20.1".parse().unwrap()).unwrap();
        assert_eq!((at.latitude, at.longitude, iso.as_str()), (58.4167, 15.6167, "SE"));
        assert!(geo.locate("81.2.70.1".parse().unwrap()).is_none(), "outside every network");
        assert!(geo.locate("2001:db8::1".parse().unwrap()).is_none(), "IPv6 in an IPv4 database");
    }

    #[test]
    fn a_missing_or_corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = GeoIp::open(&dir.path().join("nope.mmdb")).unwrap_err();
        assert!(err.contains("nope.mmdb"), "{err}");
        let bad = dir.path().join("bad.mmdb");
        std::fs::write(&bad, b"not a database").unwrap();
        assert!(GeoIp::open(&bad).unwrap_err().contains("bad.mmdb"));
    }
}

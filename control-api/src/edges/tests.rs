use super::*;

fn reg(id: &str, lat: f64, lon: f64) -> EdgeRegistration {
    EdgeRegistration {
        id: id.into(),
        region: "eu".into(),
        latitude: lat,
        longitude: lon,
        capacity_viewers: 1000,
        capacity_mbps: 10_000,
        urls: EdgeUrls { rtmp: format!("rtmp://{id}/live"), flv: format!("http://{id}"), hls: format!("http://{id}") },
    }
}

fn registry(policy: Policy) -> (EdgeRegistry, Instant) {
    let r = EdgeRegistry::new(EdgesConfig { policy, tolerance_km: 50.0, ..EdgesConfig::default() });
    let now = Instant::now();
    // Three edges within a few km of each other in Paris.
    for (id, lat, lon) in [("paris-a", 48.85, 2.35), ("paris-b", 48.86, 2.34), ("paris-c", 48.84, 2.36)] {
        r.register(reg(id, lat, lon), now);
    }
    (r, now)
}

const PARIS: Location = Location { latitude: 48.8566, longitude: 2.3522 };

fn counts(picks: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for p in picks {
        *m.entry(p.clone()).or_insert(0) += 1;
    }
    m
}

#[test]
fn round_robin_cycles_through_equally_near_edges() {
    let (r, now) = registry(Policy::RoundRobin);
    let picks: Vec<String> = (0..300).map(|i| r.select(PARIS, &format!("c{i}"), 0.5, now).unwrap().id).collect();
    for w in picks.chunks(3) {
        let mut w = w.to_vec();
        w.sort();
        assert_eq!(w, vec!["paris-a", "paris-b", "paris-c"]);
    }
}

#[test]
fn random_spreads_over_equally_near_edges() {
    let (r, now) = registry(Policy::Random);
    let picks: Vec<String> = (0..300).map(|i| r.select(PARIS, "c", (i as f64) / 300.0, now).unwrap().id).collect();
    let c = counts(&picks);
    assert_eq!(c.len(), 3);
    assert!(c.values().all(|n| *n == 100), "{c:?}");
}

#[test]
fn least_connections_picks_the_emptiest() {
    let (r, now) = registry(Policy::LeastConnections);
    for (id, viewers) in [("paris-a", 50), ("paris-b", 10), ("paris-c", 30)] {
        assert!(r.heartbeat(id, EdgeHeartbeat { viewers, ..EdgeHeartbeat::default() }, now));
    }
    for i in 0..300 {
        assert_eq!(r.select(PARIS, &format!("c{i}"), 0.3, now).unwrap().id, "paris-b");
    }
}

#[test]
fn fastest_response_picks_the_lowest_heartbeat_rtt() {
    let (r, now) = registry(Policy::FastestResponse);
    for (id, rtt_ms) in [("paris-a", 9.0), ("paris-b", 20.0), ("paris-c", 3.5)] {
        r.heartbeat(id, EdgeHeartbeat { rtt_ms, ..EdgeHeartbeat::default() }, now);
    }
    assert!((0..300).all(|i| r.select(PARIS, &format!("c{i}"), 0.1, now).unwrap().id == "paris-c"));
}

#[test]
fn consistent_hash_is_stable_and_a_fourth_edge_takes_about_a_quarter_of_clients() {
    let (r, now) = registry(Policy::ConsistentHash);
    let clients: Vec<String> = (0..300).map(|i| format!("10.0.{}.{}", i / 200, i % 200)).collect();
    let before: Vec<String> = clients.iter().map(|c| r.select(PARIS, c, 0.0, now).unwrap().id).collect();
    let again: Vec<String> = clients.iter().map(|c| r.select(PARIS, c, 0.9, now).unwrap().id).collect();
    assert_eq!(before, again, "a client keeps its edge");
    let c = counts(&before);
    assert!(c.values().all(|n| (60..=140).contains(n)), "uneven: {c:?}");
    r.register(reg("paris-d", 48.855, 2.35), now);
    let after: Vec<String> = clients.iter().map(|c| r.select(PARIS, c, 0.0, now).unwrap().id).collect();
    let moved: Vec<usize> = (0..clients.len()).filter(|i| before[*i] != after[*i]).collect();
    // Only clients that moved to the new edge moved at all.
    assert!(moved.iter().all(|i| after[*i] == "paris-d"));
    // Rendezvous hashing moves ~1/4 of clients to the 4th edge.
    assert!((45..=105).contains(&moved.len()), "moved {}", moved.len());
}

#[test]
fn an_edge_without_heartbeats_leaves_rotation_and_returns_when_it_beats() {
    let (r, now) = registry(Policy::RoundRobin);
    let later = now + Duration::from_millis(r.config().heartbeat_timeout_ms + 1);
    r.heartbeat("paris-a", EdgeHeartbeat::default(), later);
    r.heartbeat("paris-b", EdgeHeartbeat::default(), later);
    let picks: Vec<String> = (0..30).map(|_| r.select(PARIS, "c", 0.0, later).unwrap().id).collect();
    assert!(!picks.contains(&"paris-c".to_string()));
    assert!(!r.list(later).iter().find(|e| e.id == "paris-c").unwrap().healthy);
    r.heartbeat("paris-c", EdgeHeartbeat::default(), later);
    assert!(r.list(later).iter().all(|e| e.healthy));
    assert!(!r.heartbeat("nobody", EdgeHeartbeat::default(), later));
}

#[test]
fn clients_are_located_explicitly_then_by_cidr_then_by_default_region() {
    let cfg = EdgesConfig {
        default_region: "eu".into(),
        locations: vec![
            CidrLocation { cidr: "10.0.0.0/8".into(), latitude: 1.0, longitude: 1.0, region: "ten".into() },
            CidrLocation { cidr: "10.9.0.0/16".into(), latitude: 2.0, longitude: 2.0, region: "ten-nine".into() },
        ],
        ..EdgesConfig::default()
    };
    cfg.validate().unwrap();
    let r = EdgeRegistry::new(cfg);
    let explicit = Location { latitude: 5.0, longitude: 6.0 };
    assert_eq!(r.locate(Some(explicit), "10.9.1.1".parse().ok()).source, "explicit");
    let l = r.locate(None, "10.9.1.1".parse().ok());
    assert_eq!((l.source, l.region.as_str()), ("cidr", "ten-nine"), "longest prefix wins");
    assert_eq!(r.locate(None, "10.1.1.1".parse().ok()).region, "ten");
    assert_eq!(r.locate(None, "192.0.2.1".parse().ok()).source, "default");
    r.register(reg("paris-a", 48.0, 2.0), Instant::now());
    let l = r.locate(None, "192.0.2.1".parse().ok());
    assert_eq!((l.source, l.location.latitude), ("default_region", 48.0));
}

#[test]
fn a_geoip_database_places_clients_the_cidr_table_does_not_and_picks_their_nearest_edge() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("GeoLite2-City.mmdb");
    std::fs::write(
        &db,
        super::geoip::writer::city_db(&[
            ("81.2.69.0".parse().unwrap(), 24, 51.51, -0.09, "GB"),
            ("133.0.0.0".parse().unwrap(), 8, 35.68, 139.69, "JP"),
            ("10.0.0.0".parse().unwrap(), 8, -33.9, 151.2, "AU"),
        ]),
    )
    .unwrap();
    let cfg = EdgesConfig {
        locations: vec![CidrLocation { cidr: "10.0.0.0/8".into(), latitude: 1.0, longitude: 1.0, region: "ten".into() }],
        geoip_database: Some(db),
        ..EdgesConfig::default()
    };
    cfg.validate().unwrap();
    let r = EdgeRegistry::new(cfg);
    let now = Instant::now();
    r.register(reg("london", 51.5, -0.1), now);
    r.register(reg("tokyo", 35.7, 139.7), now);
    let l = r.locate(None, "81.2.69.160".parse().ok());
    assert_eq!((l.source, l.region.as_str(), l.location.latitude), ("geoip", "GB", 51.51));
    assert_eq!(r.select(l.location, "81.2.69.160", 0.5, now).unwrap().id, "london");
    let l = r.locate(None, "133.1.2.3".parse().ok());
    assert_eq!(r.select(l.location, "133.1.2.3", 0.5, now).unwrap().id, "tokyo");
    // The CIDR table comes first; outside both, the default.
    assert_eq!(r.locate(None, "10.1.1.1".parse().ok()).source, "cidr");
    assert_eq!(r.locate(None, "192.0.2.1".parse().ok()).source, "default");
}

#[test]
fn bad_edge_config_keys_are_named() {
    let cfg = EdgesConfig { geoip_database: Some("/nonexistent/GeoLite2-City.mmdb".into()), ..EdgesConfig::default() };
    let e = cfg.validate().unwrap_err();
    assert_eq!(e.key, "control.edges.geoip_database");
    assert!(e.message.contains("/nonexistent/GeoLite2-City.mmdb"), "{}", e.message);
    let cfg = EdgesConfig { locations: vec![CidrLocation { cidr: "x".into(), latitude: 0.0, longitude: 0.0, region: String::new() }], ..EdgesConfig::default() };
    assert_eq!(cfg.validate().unwrap_err().key, "control.edges.locations[0].cidr");
    let cfg = EdgesConfig { heartbeat_timeout_ms: 1, ..EdgesConfig::default() };
    assert_eq!(cfg.validate().unwrap_err().key, "control.edges.heartbeat_timeout_ms");
}

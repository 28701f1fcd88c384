use super::*;

const LADDERS_TOML: &str = include_str!("../../../configs/ladders.toml");

fn default_ladder() -> LadderConfig {
    LaddersConfig::from_toml_str(LADDERS_TOML).unwrap().ladder("default").unwrap().clone()
}

fn sizes(planned: &[PlannedRendition]) -> Vec<(String, u32, u32)> {
    planned.iter().map(|p| (p.rendition.name.clone(), p.width, p.height)).collect()
}

#[test]
fn the_shipped_ladders_file_parses_and_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/ladders.toml");
    let ladders = LaddersConfig::load(&path).unwrap();
    assert!(ladders.ladder(PASSTHROUGH).unwrap().is_passthrough());
    let default = ladders.ladder("default").unwrap();
    let names: Vec<&str> = default.renditions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["720p", "480p", "360p"]);
    assert_eq!(default.renditions[0].preset, X264Preset::Veryfast);
    assert_eq!(default.renditions[0].profile, H264Profile::Main);
    assert!(ladders.ladder("full").is_some());
    assert!(ladders.ladder("nope").is_none());
}

#[test]
fn a_720p_source_gets_the_whole_default_ladder() {
    let planned = plan_renditions(&default_ladder(), 1280, 720);
    assert_eq!(sizes(&planned), [("720p".into(), 1280, 720), ("480p".into(), 854, 480), ("360p".into(), 640, 360)]);
}

#[test]
fn renditions_above_the_source_are_skipped() {
    let planned = plan_renditions(&default_ladder(), 854, 480);
    assert_eq!(sizes(&planned), [("480p".into(), 854, 480), ("360p".into(), 640, 360)]);
    assert!(plan_renditions(&default_ladder(), 320, 240).is_empty());
    assert!(plan_renditions(&default_ladder(), 0, 0).is_empty());
}

#[test]
fn widths_follow_the_aspect_ratio_and_are_even() {
    // 4:3
    assert_eq!(sizes(&plan_renditions(&default_ladder(), 1024, 768))[0], ("720p".into(), 960, 720));
    // Portrait phone: 720x1280 -> 720p by height.
    assert_eq!(sizes(&plan_renditions(&default_ladder(), 720, 1280))[0], ("720p".into(), 406, 720));
    // Odd source sizes.
    for (w, h) in [(1279, 719), (1366, 768), (1921, 1081), (3, 2000)] {
        for p in plan_renditions(&default_ladder(), w, h) {
            assert_eq!(p.width % 2, 0, "{w}x{h} -> {p}");
            assert!(p.width >= 2);
            let exact = f64::from(w) * f64::from(p.height) / f64::from(h);
            assert!(p.width == 2 || (f64::from(p.width) - exact).abs() <= 1.0, "{w}x{h} -> {p}");
        }
    }
}

#[test]
fn renditions_come_out_highest_first_whatever_the_file_order() {
    let text = r#"
        [ladders.x]
        renditions = [
            { name = "low", height = 240, video_bitrate_kbps = 300, maxrate_kbps = 300, bufsize_kbps = 600 },
            { name = "high", height = 720, video_bitrate_kbps = 2000, maxrate_kbps = 2200, bufsize_kbps = 4000 },
        ]
    "#;
    let ladders = LaddersConfig::from_toml_str(text).unwrap();
    let x = ladders.ladder("x").unwrap();
    assert_eq!(x.renditions[0].name, "high");
    assert_eq!(x.renditions[1].audio_bitrate_kbps, 96, "default");
    assert_eq!(x.renditions[1].preset, X264Preset::Veryfast, "default");
}

fn error_of(text: &str) -> String {
    LaddersConfig::from_toml_str(text).unwrap_err().to_string()
}

#[test]
fn invalid_values_are_refused_with_the_key_named() {
    let r = |extra: &str| {
        format!(
            "[ladders.d]\nrenditions = [ {{ name = \"a\", height = 360, video_bitrate_kbps = 700, maxrate_kbps = 750, bufsize_kbps = 1400 }}, {extra} ]"
        )
    };
    let e = error_of(&r("{ name = \"b\", height = 361, video_bitrate_kbps = 700, maxrate_kbps = 750, bufsize_kbps = 1400 }"));
    assert!(e.starts_with("ladders.d.renditions[1].height:"), "{e}");
    let e = error_of(&r("{ name = \"a\", height = 240, video_bitrate_kbps = 300, maxrate_kbps = 300, bufsize_kbps = 600 }"));
    assert!(e.starts_with("ladders.d.renditions[1].name:") && e.contains("duplicate"), "{e}");
    let e = error_of(&r("{ name = \"b_x\", height = 240, video_bitrate_kbps = 300, maxrate_kbps = 300, bufsize_kbps = 600 }"));
    assert!(e.starts_with("ladders.d.renditions[1].name:"), "{e}");
    let e = error_of(&r("{ name = \"b\", height = 240, video_bitrate_kbps = 300, maxrate_kbps = 200, bufsize_kbps = 600 }"));
    assert!(e.starts_with("ladders.d.renditions[1].maxrate_kbps:"), "{e}");
    let e = error_of(&r("{ name = \"b\", height = 360, video_bitrate_kbps = 300, maxrate_kbps = 300, bufsize_kbps = 600 }"));
    assert!(e.starts_with("ladders.d.renditions[1].height:"), "{e}");
    let e = error_of("[ladders.passthrough]\nrenditions = [ { name = \"a\", height = 360, video_bitrate_kbps = 700, maxrate_kbps = 750, bufsize_kbps = 1400 } ]");
    assert!(e.starts_with("ladders.passthrough:"), "{e}");
}

#[test]
fn unknown_keys_and_values_are_parse_errors() {
    let e = error_of("[ladders.d]\nrenditions = [ { name = \"a\", height = 360, video_bitrate_kbps = 700, maxrate_kbps = 750, bufsize_kbps = 1400, crf = 23 } ]");
    assert!(e.contains("crf"), "{e}");
    let e = error_of("[ladders.d]\nrenditions = [ { name = \"a\", height = 360, video_bitrate_kbps = 700, maxrate_kbps = 750, bufsize_kbps = 1400, preset = \"placebo\" } ]");
    assert!(e.contains("placebo"), "{e}");
    assert!(error_of("[ladder.d]").contains("ladder"));
}

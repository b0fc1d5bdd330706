//! `podroute lab --report FILE.html`, rendered by a real browser: a
//! `--compare` run writes the page, headless Chromium renders it, and the
//! numbers in the rendered DOM must be the JSON output's (every total, phase
//! and pod pair, nothing left over), the screenshot must not be blank, and
//! the naive run's losses must be drawn in the loss colour.
//!
//! The browser is Debian's `chromium` (.ci/run installs it). Without it the
//! test skips with a message, unless `PODROUTE_REQUIRE_BROWSER=1` (CI).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::lab_runs::{assert_nothing_left, one_lab, run_lab};
use crate::support::have_root;

const CHROMIUM: &str = "/usr/bin/chromium";

fn chromium_or_skip() -> Option<PathBuf> {
    let path = PathBuf::from(CHROMIUM);
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("PODROUTE_REQUIRE_BROWSER").is_none(),
        "PODROUTE_REQUIRE_BROWSER is set but {CHROMIUM} is missing (apt-get install chromium)"
    );
    eprintln!("skipping: no {CHROMIUM} to render the lab report");
    None
}

/// Headless Chromium on a local file, with nothing that reaches out (the
/// page itself must not either).
fn chromium(browser: &Path, profile: &Path, args: &[&str], page: &Path) -> std::process::Output {
    Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--host-resolver-rules=MAP * ~NOTFOUND",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium")
}

/// Every `data-key="K">V<` of the page.
fn keyed_numbers(dom: &str) -> BTreeMap<String, u64> {
    let mut found = BTreeMap::new();
    for part in dom.split("data-key=\"").skip(1) {
        let (key, rest) = part.split_once('"').expect("key end");
        let text = rest.split_once('>').expect("tag end").1;
        let value = text.split_once('<').expect("text end").0;
        let number = value
            .parse()
            .unwrap_or_else(|_| panic!("{key}: {value:?} is not a number"));
        assert!(
            found.insert(key.to_string(), number).is_none(),
            "{key} twice"
        );
    }
    found
}

/// What the page must show, from the JSON output, under the page's keys.
fn expected_numbers(json: &Value) -> BTreeMap<String, u64> {
    let mut want = BTreeMap::new();
    for run in [json, &json["naive"]] {
        let name = run["rollout"].as_str().expect("rollout");
        let n = |v: &Value| v.as_u64().expect("number");
        want.insert(format!("{name}.sent"), n(&run["sent"]));
        want.insert(format!("{name}.lost"), n(&run["lost"]));
        for (i, phase) in run["phases"].as_array().expect("phases").iter().enumerate() {
            want.insert(format!("{name}.phase.{i}.sent"), n(&phase["sent"]));
            want.insert(format!("{name}.phase.{i}.lost"), n(&phase["lost"]));
        }
        for pair in run["pairs"].as_array().expect("pairs") {
            let key = format!(
                "{name}.pair.{}.{}.{}",
                pair["family"].as_str().expect("family"),
                pair["from"].as_str().expect("from"),
                pair["to"].as_str().expect("to")
            );
            want.insert(format!("{key}.sent"), n(&pair["sent"]));
            want.insert(format!("{key}.lost"), n(&pair["lost"]));
        }
    }
    want
}

/// Every probe is in exactly one pair and one time bucket: both add up to
/// the run's totals.
fn assert_counts_add_up(run: &Value) {
    let total = |key: &str| run[key].as_u64().expect("total");
    let sum = |values: &Value, key: &str| -> u64 {
        values
            .as_array()
            .expect("array")
            .iter()
            .map(|v| v[key].as_u64().expect("count"))
            .sum()
    };
    let series = |key: &str| -> u64 {
        run["timeline"][key]
            .as_array()
            .expect("series")
            .iter()
            .map(|v| v.as_u64().expect("count"))
            .sum()
    };
    let name = &run["rollout"];
    for key in ["sent", "lost"] {
        assert_eq!(sum(&run["pairs"], key), total(key), "{name}: pairs' {key}");
        assert_eq!(series(key), total(key), "{name}: timeline's {key}");
        assert_eq!(
            sum(&run["phases"], key),
            total(key),
            "{name}: phases' {key}"
        );
    }
}

/// (share of pixels that are not the page's white, pixels in the loss red).
fn screenshot_colours(png_file: &Path) -> (f64, usize) {
    let decoder = png::Decoder::new(std::fs::File::open(png_file).expect("screenshot"));
    let mut reader = decoder.read_info().expect("PNG header");
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).expect("PNG frame");
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    let pixels = &pixels[..info.buffer_size()];
    let (mut inked, mut red, mut total) = (0usize, 0usize, 0usize);
    for px in pixels.chunks_exact(channels) {
        total += 1;
        if px[..3] != [255, 255, 255] {
            inked += 1;
        }
        // The loss colour, #dc2626.
        if px[0] > 200 && px[1] < 60 && px[2] < 60 {
            red += 1;
        }
    }
    (inked as f64 / total as f64, red)
}

#[test]
fn the_lab_report_renders_in_a_browser_with_the_json_numbers() {
    if !have_root() {
        return;
    }
    let Some(browser) = chromium_or_skip() else {
        return;
    };
    let _turn = one_lab();
    let work = tempfile::tempdir().expect("temp dir");
    let page = work.path().join("lab.html");
    let page_arg = page.to_string_lossy().into_owned();
    let (out, pid) = run_lab(&[
        "--nodes",
        "3",
        "--ip-family",
        "ipv4",
        "--from",
        "vxlan",
        "--settle-ms",
        "300",
        "--step-ms",
        "100",
        "--compare",
        "--report",
        &page_arg,
        "-o",
        "json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_nothing_left(pid);
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert!(
        json["naive"]["lost"].as_u64() > Some(0),
        "the naive run lost nothing: {json}"
    );
    for run in [&json, &json["naive"]] {
        assert_counts_add_up(run);
    }

    let profile = work.path().join("profile");
    let dom = chromium(&browser, &profile, &["--dump-dom"], &page);
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let shown = keyed_numbers(&String::from_utf8_lossy(&dom.stdout));
    assert_eq!(
        shown,
        expected_numbers(&json),
        "the page's numbers against the JSON"
    );

    let shot = work.path().join("lab.png");
    let screenshot_arg = format!("--screenshot={}", shot.display());
    let out = chromium(
        &browser,
        &profile,
        &[&screenshot_arg, "--window-size=1400,1300"],
        &page,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (inked, red) = screenshot_colours(&shot);
    assert!(
        inked > 0.05,
        "the screenshot is nearly blank: {:.1}% inked",
        inked * 100.0
    );
    assert!(
        red > 100,
        "the naive run's losses are not drawn: {red} red pixels"
    );
}

//! The monitoring component (manifests/components/monitoring): its alerts
//! pass the real promtool's checks and their unit tests (alerts_test.yaml),
//! every alert has a test that fires it and one that does not, the
//! dashboard's and the alerts' queries name only metrics the agent and the
//! coordinator export (read from their registries), the dashboard's queries
//! parse as PromQL, and the component renders with kustomize.
//!
//! promtool comes from testenv/promtool.sh (`PODROUTE_PROMTOOL`, else its
//! cache path). Without it the promtool tests skip with a message, unless
//! `PODROUTE_REQUIRE_PROMTOOL=1` (CI) makes that a failure.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use podroute::agent::metrics::Metrics;
use podroute::coordinator::metrics::CoordinatorMetrics;
use podroute::http::Endpoints;
use serde_yaml::Value;

mod kube_env;

fn component() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/components/monitoring")
}

fn rule_groups() -> Value {
    let text = std::fs::read_to_string(component().join("prometheusrule.yaml")).expect("read");
    let rule: Value = serde_yaml::from_str(&text).expect("prometheusrule.yaml");
    assert_eq!(rule["kind"], "PrometheusRule");
    rule["spec"].clone()
}

fn rules() -> Vec<Value> {
    rule_groups()["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").clone())
        .collect()
}

fn alert_tests() -> Value {
    let text = std::fs::read_to_string(component().join("alerts_test.yaml")).expect("read");
    serde_yaml::from_str(&text).expect("alerts_test.yaml")
}

fn dashboard() -> serde_json::Value {
    let text = std::fs::read_to_string(component().join("dashboard.json")).expect("read");
    serde_json::from_str(&text).expect("dashboard.json")
}

fn dashboard_exprs() -> Vec<String> {
    let dashboard = dashboard();
    let panels = dashboard["panels"].as_array().expect("panels");
    panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("target expr").to_string())
        .collect()
}

fn promtool_or_skip() -> Option<PathBuf> {
    let path = std::env::var_os("PODROUTE_PROMTOOL")
        .map(PathBuf::from)
        .or_else(|| {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("testenv/promtool.sh");
            let text = std::fs::read_to_string(script).ok()?;
            let version = text.lines().find_map(|l| l.strip_prefix("version="))?;
            let cache = std::env::var("PODROUTE_TESTENV_CACHE")
                .unwrap_or_else(|_| "/var/cache/podroute-testenv".into());
            Some(Path::new(&cache).join(format!("promtool-{version}/promtool")))
        })
        .filter(|p| p.is_file());
    if path.is_none() {
        assert!(
            std::env::var_os("PODROUTE_REQUIRE_PROMTOOL").is_none(),
            "PODROUTE_REQUIRE_PROMTOOL is set but there is no promtool: run testenv/promtool.sh"
        );
        eprintln!("skipping: no promtool (build it with testenv/promtool.sh)");
    }
    path
}

fn promtool(promtool: &Path, dir: &Path, args: &[&str]) {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alerts_pass_promtool_check_and_their_unit_tests() {
    let Some(promtool_bin) = promtool_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = serde_yaml::to_string(&rule_groups()).expect("YAML");
    std::fs::write(dir.path().join("rules.yaml"), rules).expect("write rules");
    std::fs::copy(
        component().join("alerts_test.yaml"),
        dir.path().join("alerts_test.yaml"),
    )
    .expect("copy tests");
    promtool(&promtool_bin, dir.path(), &["check", "rules", "rules.yaml"]);
    promtool(
        &promtool_bin,
        dir.path(),
        &["test", "rules", "alerts_test.yaml"],
    );
}

#[test]
fn dashboard_queries_parse_as_promql() {
    let Some(promtool_bin) = promtool_or_skip() else {
        return;
    };
    // Grafana's interval variable is not PromQL: a duration in its place.
    let rules: Vec<serde_json::Value> = dashboard_exprs()
        .iter()
        .enumerate()
        .map(|(i, e)| {
            serde_json::json!({
                "record": format!("dashboard:query_{i}"),
                "expr": e.replace("$__rate_interval", "5m"),
            })
        })
        .collect();
    let groups = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("dashboard-rules.yaml");
    std::fs::write(&file, serde_yaml::to_string(&groups).expect("YAML")).expect("write");
    promtool(
        &promtool_bin,
        dir.path(),
        &["check", "rules", "dashboard-rules.yaml"],
    );
}

#[test]
fn every_alert_has_a_test_that_fires_it_and_one_that_does_not() {
    let tests = alert_tests();
    let cases: Vec<&Value> = tests["tests"]
        .as_sequence()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().expect("alert_rule_test"))
        .collect();
    let alerts: Vec<String> = rules()
        .iter()
        .filter_map(|r| r["alert"].as_str().map(String::from))
        .collect();
    assert!(!alerts.is_empty(), "no alerts in prometheusrule.yaml");
    for alert in &alerts {
        let of_alert = || cases.iter().filter(|c| c["alertname"] == alert.as_str());
        let fires =
            of_alert().any(|c| c["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty()));
        let quiet = of_alert().any(|c| c["exp_alerts"].as_sequence().is_some_and(|a| a.is_empty()));
        assert!(
            fires,
            "{alert}: no test in alerts_test.yaml expects it to fire"
        );
        assert!(
            quiet,
            "{alert}: no test in alerts_test.yaml expects it quiet"
        );
    }
}

/// The sample names a registry's text exposition can hold: a gauge's name,
/// a counter's with `_total`, a histogram's `_bucket`, `_sum` and `_count`.
fn exported_names() -> BTreeSet<String> {
    let text = Metrics::default().render() + &CoordinatorMetrics::default().render();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if (words.next(), words.next()) != (Some("#"), Some("TYPE")) {
            continue;
        }
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
    }
    names
}

fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("podroute_") {
        let start = i + at;
        let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
        if start > 0 && ident(bytes[start - 1]) {
            i = start + 1;
            continue;
        }
        let end = expr[start..]
            .bytes()
            .position(|b| !ident(b))
            .map_or(expr.len(), |n| start + n);
        names.push(expr[start..end].to_string());
        i = end;
    }
    names
}

#[test]
fn dashboard_and_alerts_query_only_exported_metrics() {
    let exported = exported_names();
    assert!(
        exported.contains("podroute_reconciles_total")
            && exported.contains("podroute_coordinator_leader"),
        "the registries' exposition did not parse: {exported:?}"
    );
    let alert_exprs = rules()
        .iter()
        .map(|r| r["expr"].as_str().expect("expr").to_string())
        .collect::<Vec<_>>();
    for (source, exprs) in [
        ("dashboard.json", dashboard_exprs()),
        ("prometheusrule.yaml", alert_exprs),
    ] {
        assert!(!exprs.is_empty(), "{source}: no queries");
        for expr in &exprs {
            let names = metric_names(expr);
            assert!(
                !names.is_empty(),
                "{source}: `{expr}` names no podroute metric"
            );
            for name in names {
                assert!(
                    exported.contains(&name),
                    "{source}: `{expr}` queries {name}, which no binary exports; exported: {exported:?}"
                );
            }
        }
    }
}

#[test]
fn metric_names_are_read_whole() {
    assert_eq!(
        metric_names("sum(rate(podroute_reconciles_total[5m])) - max(podroute_coordinator_leader)"),
        ["podroute_reconciles_total", "podroute_coordinator_leader"]
    );
    assert!(metric_names("my_podroute_x").is_empty());
}

#[test]
fn the_component_renders_the_rule_and_the_dashboard() {
    let Some(kubectl) = kube_env::kubectl_or_skip() else {
        return;
    };
    // A user's overlay: kustomize takes relative paths only.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    let overlay = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {}\ncomponents:\n  - {}\n",
        relative(dir.path(), &manifests.join("restricted")).display(),
        relative(dir.path(), &component()).display()
    );
    std::fs::write(dir.path().join("kustomization.yaml"), overlay).expect("write");
    let out = Command::new(kubectl)
        .args(["kustomize", "--load-restrictor", "LoadRestrictionsNone"])
        .arg(dir.path())
        .output()
        .expect("kubectl kustomize");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let objects: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .collect();
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
    };
    assert_eq!(find("PrometheusRule", "podroute")["spec"], rule_groups());
    let config_map = find("ConfigMap", "podroute-dashboard");
    assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1");
    let json = config_map["data"]["podroute.json"]
        .as_str()
        .expect("podroute.json");
    let rendered: serde_json::Value = serde_json::from_str(json).expect("dashboard JSON");
    assert_eq!(rendered, dashboard());
    assert!(
        objects.iter().any(|o| o["kind"] == "DaemonSet"),
        "the overlay lost the agent"
    );
}

/// `to` as a path relative to directory `from`.
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from = from.canonicalize().expect("canonical");
    let to = to.canonicalize().expect("canonical");
    let common = from
        .components()
        .zip(to.components())
        .take_while(|(a, b)| a == b)
        .count();
    let up = from.components().skip(common).map(|_| Path::new(".."));
    up.chain(
        to.components()
            .skip(common)
            .map(|c| Path::new(c.as_os_str())),
    )
    .collect()
}

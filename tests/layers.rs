//! The layers only point down (docs/architecture.md). Cargo enforces it
//! between the crates: podroute-api uses no other podroute crate, and
//! podroute-core only the api; here, neither may depend on a runtime, a
//! netlink or an API-server client. Inside the podroute crate every
//! `crate::` and `super::` path in src/ is resolved to the module it names;
//! a module may use its own top-level module or a lower layer, never a
//! higher one.

use std::fs;
use std::path::{Path, PathBuf};

/// Lowest first. The longest matching prefix of a module path wins. Layers
/// 0-4 are the api and core crates, reached through the podroute crate's
/// re-exports.
const LAYERS: &[(&str, u8)] = &[
    ("api", 0),
    ("error", 1),
    ("input", 1),
    ("model", 2),
    ("plan", 3),
    ("coordinator::machine", 4),
    ("coordinator::phases", 4),
    ("store", 5),
    ("dataplane", 5),
    ("engine", 6),
    ("http", 6),
    ("privilege", 6),
    ("check", 6),
    ("agent", 7),
    ("coordinator", 8),
    ("lab", 9),
    ("bench", 10),
    ("cli", 11),
];

/// What the api and core crates must not depend on, even indirectly.
const IO_CRATES: &[&str] = &[
    "tokio",
    "kube",
    "k8s-openapi",
    "rtnetlink",
    "netlink-packet-route",
    "netlink-sys",
    "hyper",
    "nix",
];

fn layer_of(module: &str) -> Option<(u8, &'static str)> {
    LAYERS
        .iter()
        .filter(|(prefix, _)| module == *prefix || module.starts_with(&format!("{prefix}::")))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(prefix, layer)| (*layer, *prefix))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src/").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`; lib.rs and main.rs are the root.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file
        .strip_prefix(src)
        .expect("under src/")
        .with_extension("");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn without_comments(line: &str) -> &str {
    line.find("//").map_or(line, |at| &line[..at])
}

fn ident_at(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The first two segments of each path after `crate::` (brace groups split).
fn targets_after(rest: &str) -> Vec<String> {
    let first = ident_at(rest);
    if !first.is_empty() {
        let after = &rest[first.len()..];
        return match after.strip_prefix("::") {
            Some(inner) if inner.starts_with('{') => targets_after(inner)
                .into_iter()
                .map(|t| format!("{first}::{}", t.split("::").next().unwrap_or_default()))
                .collect(),
            Some(inner) if !ident_at(inner).is_empty() => {
                vec![format!("{first}::{}", ident_at(inner))]
            }
            _ => vec![first.to_string()],
        };
    }
    let Some(group) = rest.strip_prefix('{') else {
        return Vec::new();
    };
    let mut depth = 0;
    let mut items = vec![String::new()];
    for c in group.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => items.push(String::new()),
            _ => {}
        }
        if let Some(item) = items.last_mut() {
            item.push(c);
        }
    }
    items
        .iter()
        .map(|i| i.trim_start_matches(',').trim())
        .filter(|i| !i.is_empty() && *i != "self")
        .flat_map(targets_after)
        .collect()
}

#[test]
fn every_use_in_the_podroute_crate_points_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        let name = module.join("::");
        let Some((own, own_prefix)) = layer_of(&name) else {
            continue; // the crate root may use everything
        };
        let text = fs::read_to_string(file).expect("read a source file");
        // Multi-line `use crate::{...}` groups: join the file, drop comments.
        let code: String = text
            .lines()
            .map(without_comments)
            .collect::<Vec<_>>()
            .join(" ");
        let in_tests = code.find("mod tests {").unwrap_or(usize::MAX);
        let mut check = |at: usize, target: String| {
            let (layer, prefix) = match layer_of(&target) {
                Some(found) => found,
                None => return,
            };
            let same_top = target.split("::").next() == module.first().map(String::as_str);
            if layer > own && !same_top {
                violations.push(format!(
                    "{name} (layer {own}, {own_prefix}) uses {target} (layer {layer}, {prefix}) at byte {at}"
                ));
            }
        };
        for (at, _) in code.match_indices("crate::") {
            let before = code[..at].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // `podroute_crate::` or similar, not ours
            }
            for target in targets_after(&code[at + "crate::".len()..]) {
                check(at, target);
            }
        }
        for (at, _) in code.match_indices("super::") {
            // `super::` in a file's `mod tests` is the file's module itself.
            let base = if at > in_tests {
                module.len()
            } else {
                module.len().saturating_sub(1)
            };
            if code[..at].ends_with("::") {
                continue; // the second `super::` of `super::super::`
            }
            let mut path: Vec<String> = module[..base].to_vec();
            let mut rest = &code[at + "super::".len()..];
            while let Some(more) = rest.strip_prefix("super::") {
                rest = more;
                path.pop();
            }
            for target in targets_after(rest) {
                let mut full = path.clone();
                full.extend(target.split("::").map(str::to_string));
                check(at, full.join("::"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layer violations:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_api_and_the_core_do_no_io() {
    for krate in ["podroute-api", "podroute-core"] {
        let out = std::process::Command::new(env!("CARGO"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "tree",
                "--offline",
                "--locked",
                "-e",
                "normal",
                "--prefix",
                "none",
            ])
            .args(["--format", "{p}", "-p", krate])
            .output()
            .expect("run cargo tree");
        assert!(out.status.success(), "cargo tree -p {krate}: {out:?}");
        let tree = String::from_utf8_lossy(&out.stdout);
        let names: Vec<&str> = tree.lines().filter_map(|l| l.split(' ').next()).collect();
        assert!(
            names.contains(&krate),
            "{krate} not in its own tree: {tree}"
        );
        let io: Vec<&&str> = names.iter().filter(|n| IO_CRATES.contains(n)).collect();
        assert!(io.is_empty(), "{krate} depends on {io:?}");
    }
}

#[test]
fn the_check_finds_an_upward_use() {
    assert_eq!(targets_after("agent::Metrics;"), ["agent::Metrics"]);
    assert_eq!(
        targets_after("{model::Mode, store::{types::Snapshot, x}, Error};"),
        ["model::Mode", "store::types", "store::x", "Error"]
    );
    assert_eq!(
        layer_of("coordinator::machine"),
        Some((4, "coordinator::machine"))
    );
    assert_eq!(layer_of("coordinator::kube"), Some((8, "coordinator")));
    assert_eq!(layer_of("plan::diff"), Some((3, "plan")));
}

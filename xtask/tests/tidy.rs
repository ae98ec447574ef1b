//! House rules that are checked, not remembered (STYLE.md): every `.rs` file
//! opens with a `//!` line; only the kafka crate (and the test harness) depend
//! on rdkafka; only the schema crate touches Avro and the registry; only the
//! proto crate and the services that own a gRPC API touch tonic/prost (in
//! sources, tests and benches alike); xtask stays light enough to compile in
//! seconds on a fresh machine; every member inherits the workspace lints and
//! is unpublished. Manifests are read with a TOML parser, so no spelling of a
//! dependency (`[dependencies.rdkafka]`, a renamed package, a target table)
//! escapes.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if name.starts_with('.') || name.starts_with("target") || name == "node_modules" {
                continue;
            }
            files(&path, ext, out);
        } else if name.ends_with(ext) {
            out.push(path);
        }
    }
}

fn members() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for group in ["crates", "services"] {
        for entry in std::fs::read_dir(root().join(group)).unwrap().flatten() {
            if entry.path().join("Cargo.toml").exists() {
                out.push(entry.path());
            }
        }
    }
    out.push(root().join("xtask"));
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let mut rs = Vec::new();
    for dir in ["crates", "services", "xtask", "fuzz"] {
        files(&root().join(dir), ".rs", &mut rs);
    }
    assert!(rs.len() > 10, "found only {} .rs files", rs.len());
    let offenders: Vec<String> = rs
        .iter()
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            !text.lines().find(|l| !l.trim().is_empty()).is_some_and(|l| l.starts_with("//!"))
        })
        .map(|p| rel(p))
        .collect();
    assert!(offenders.is_empty(), "files without a leading `//!` line: {offenders:#?}");
}

/// The layer a dependency belongs to, if it is layered.
fn layer(dep: &str) -> Option<&'static str> {
    match dep {
        "rdkafka" | "rdkafka-sys" => Some("rdkafka"),
        "apache-avro" | "schema_registry_converter" => Some("avro"),
        _ if dep.starts_with("tonic") || dep.starts_with("prost") || dep == "protox" => Some("grpc"),
        _ => None,
    }
}

/// Which members may depend on a layer's crates.
fn allowed(layer: &str) -> &'static [&'static str] {
    match layer {
        "rdkafka" => &["crates/kafka", "crates/testkit"],
        "avro" => &["crates/schema"],
        "grpc" => &["crates/proto", "crates/auth", "services/agent-gateway", "services/report-ingest"],
        _ => &[],
    }
}

/// Every dependency a manifest declares, in any table (`dependencies`,
/// `dev-dependencies`, `build-dependencies`, and their `target.*` forms), by
/// package name (a renamed dependency counts under the package it names).
fn declared_dependencies(manifest: &toml::Table) -> Vec<(String, String)> {
    const KINDS: [&str; 3] = ["dependencies", "dev-dependencies", "build-dependencies"];
    let mut tables: Vec<(String, &toml::Table)> = Vec::new();
    for kind in KINDS {
        if let Some(t) = manifest.get(kind).and_then(toml::Value::as_table) {
            tables.push((kind.to_string(), t));
        }
    }
    if let Some(targets) = manifest.get("target").and_then(toml::Value::as_table) {
        for (cfg, target) in targets {
            for kind in KINDS {
                if let Some(t) = target.get(kind).and_then(toml::Value::as_table) {
                    tables.push((format!("target.{cfg}.{kind}"), t));
                }
            }
        }
    }
    let mut out = Vec::new();
    for (kind, table) in tables {
        for (key, spec) in table {
            let package = spec.get("package").and_then(toml::Value::as_str).unwrap_or(key);
            out.push((kind.clone(), package.to_string()));
        }
    }
    out
}

fn manifest(dir: &Path) -> toml::Table {
    let path = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    text.parse().unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn layering_dependencies_stay_inside_their_crates() {
    let mut offenders = Vec::new();
    for member in members() {
        let name = rel(&member);
        for (kind, dep) in declared_dependencies(&manifest(&member)) {
            if let Some(layer) = layer(&dep) {
                if !allowed(layer).contains(&name.as_str()) {
                    offenders.push(format!("{name} depends on {dep} ({kind})"));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "layering violations (see ARCHITECTURE.md): {offenders:#?}");
}

#[test]
fn the_manifest_check_sees_every_spelling_of_a_dependency() {
    let text = r#"
        [dependencies.rdkafka]
        version = "0.39"
        [dev-dependencies]
        kafka = { package = "rdkafka", version = "0.39" }
        [target.'cfg(unix)'.build-dependencies]
        tonic-prost-build = "0.14"
    "#;
    let deps = declared_dependencies(&text.parse().unwrap());
    let layered: Vec<_> = deps.iter().filter_map(|(_, d)| layer(d)).collect();
    assert_eq!(layered, ["rdkafka", "rdkafka", "grpc"], "{deps:?}");
}

#[test]
fn no_source_uses_crates_outside_its_layer() {
    // Belt and braces for the manifest check: a re-export could smuggle a
    // layered crate into a member that does not declare it.
    let mut offenders = Vec::new();
    for member in members() {
        let name = rel(&member);
        let mut rs = Vec::new();
        for dir in ["src", "tests", "benches", "examples"] {
            files(&member.join(dir), ".rs", &mut rs);
        }
        // This file names every needle.
        rs.retain(|f| !f.ends_with("xtask/tests/tidy.rs"));
        for file in rs {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            for (needle, layer) in [
                ("rdkafka::", "rdkafka"),
                ("apache_avro::", "avro"),
                ("schema_registry_converter::", "avro"),
                ("tonic::", "grpc"),
                ("tonic_health::", "grpc"),
                ("tonic_reflection::", "grpc"),
                ("prost::", "grpc"),
                ("prost_types::", "grpc"),
            ] {
                let via_reexport = ["dora_kafka::", "dora_schema::", "dora_proto::", "dora_testkit::"]
                    .iter()
                    .any(|krate| text.contains(&format!("{krate}{needle}")));
                let used = text.lines().any(|l| !l.trim_start().starts_with("//") && l.contains(needle));
                if (used || via_reexport) && !allowed(layer).contains(&name.as_str()) {
                    offenders.push(format!("{} uses {needle}", rel(&file)));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "layering violations (see ARCHITECTURE.md): {offenders:#?}");
}

/// What `cargo xtask` may compile before it prints its first line.
const XTASK_MAY_DEPEND_ON: &[&str] = &["anyhow"];

/// Every package `names` pull in, following Cargo.lock (which lists each
/// package's dependencies; the closure over-approximates, never misses).
fn closure(lock: &toml::Table, names: &[String]) -> std::collections::BTreeSet<String> {
    let packages = lock["package"].as_array().expect("Cargo.lock packages");
    let mut seen = std::collections::BTreeSet::new();
    let mut todo: Vec<String> = names.to_vec();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        for p in packages.iter().filter(|p| p["name"].as_str() == Some(name.as_str())) {
            for dep in p.get("dependencies").and_then(toml::Value::as_array).into_iter().flatten() {
                let dep = dep.as_str().unwrap_or_default();
                todo.push(dep.split(' ').next().unwrap_or(dep).to_string());
            }
        }
    }
    seen
}

#[test]
fn xtask_compiles_in_seconds_on_a_fresh_machine() {
    // `cargo xtask` (cargo run --quiet) prints nothing until xtask is built, and
    // runs deploy/local/prereqs.sh, which installs what librdkafka's build
    // needs: xtask itself must build without any of it, and fast.
    let direct: Vec<String> = declared_dependencies(&manifest(&root().join("xtask")))
        .into_iter()
        .filter(|(kind, _)| !kind.ends_with("dev-dependencies"))
        .map(|(_, dep)| dep)
        .collect();
    let lock: toml::Table = std::fs::read_to_string(root().join("Cargo.lock")).unwrap().parse().unwrap();
    let pulled = closure(&lock, &direct);
    let heavy: Vec<&String> = pulled.iter().filter(|d| !XTASK_MAY_DEPEND_ON.contains(&d.as_str())).collect();
    assert!(
        heavy.is_empty(),
        "xtask must compile in seconds before it can print anything: it may depend only on \
         {XTASK_MAY_DEPEND_ON:?}, but pulls in {heavy:?}; put the work in a binary xtask runs"
    );
}

#[test]
fn the_xtask_check_follows_dependencies_through_the_lock_file() {
    let lock: toml::Table = r#"
        [[package]]
        name = "dora-kafka"
        dependencies = ["rdkafka", "tokio 1.0.0"]
        [[package]]
        name = "rdkafka"
        dependencies = ["rdkafka-sys"]
        [[package]]
        name = "rdkafka-sys"
        [[package]]
        name = "tokio"
        version = "1.0.0"
    "#
    .parse()
    .unwrap();
    let pulled = closure(&lock, &["dora-kafka".to_string()]);
    assert_eq!(pulled.into_iter().collect::<Vec<_>>(), ["dora-kafka", "rdkafka", "rdkafka-sys", "tokio"]);
}

#[test]
fn every_member_inherits_workspace_lints_and_is_unpublished() {
    let workspace = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    assert!(workspace.contains("unsafe_code = \"forbid\""), "workspace must forbid unsafe code");
    for member in members() {
        let manifest = std::fs::read_to_string(member.join("Cargo.toml")).unwrap();
        let name = rel(&member);
        assert!(manifest.contains("[lints]\nworkspace = true"), "{name}: missing `[lints] workspace = true`");
        assert!(manifest.contains("publish.workspace = true"), "{name}: missing `publish.workspace = true`");
        assert!(workspace.contains(&format!("\"{name}\"")), "{name} is not listed in the workspace members");
    }
}

/// The runtime crate's limits (STYLE.md): a file a newcomer can read, a
/// function that fits on a screen.
const MAX_FILE_LINES: usize = 500;
const MAX_FN_LINES: usize = 60;

/// Each function of `text` (rustfmt layout: a body closes with a `}` at the
/// indentation of its `fn` line) as (name, first line, line count).
fn function_lengths(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let code = line.trim_start();
        let indent = &line[..line.len() - code.len()];
        let after_fn = ["fn ", "async fn ", "const fn "]
            .iter()
            .find_map(|head| {
                let rest = code
                    .strip_prefix("pub(crate) ")
                    .or_else(|| code.strip_prefix("pub(super) "))
                    .or_else(|| code.strip_prefix("pub "))
                    .unwrap_or(code);
                rest.strip_prefix(head)
            });
        let Some(after_fn) = after_fn else { continue };
        let name: String = after_fn.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if name.is_empty() || code.ends_with(';') {
            continue; // a declaration without a body
        }
        let close = format!("{indent}}}");
        if let Some(end) = lines[i..].iter().position(|l| l.trim_end() == close || l.trim_end() == format!("{close};")) {
            out.push((name, i + 1, end + 1));
        }
    }
    out
}

#[test]
fn the_function_measure_finds_bodies_and_their_length() {
    let text = "fn a() {\n    x();\n}\n\nimpl T {\n    pub async fn b(\n        y: u8,\n    ) -> u8 {\n        y\n    }\n    fn c();\n}\n";
    assert_eq!(function_lengths(text), [("a".to_string(), 1, 3), ("b".to_string(), 6, 5)]);
}

#[test]
fn the_runtime_crate_keeps_files_and_functions_small() {
    let mut rs = Vec::new();
    files(&root().join("crates/kafka/src"), ".rs", &mut rs);
    assert!(rs.len() > 20, "found only {} files in crates/kafka/src", rs.len());
    let mut offenders = Vec::new();
    for file in &rs {
        let text = std::fs::read_to_string(file).unwrap();
        let lines = text.lines().count();
        if lines > MAX_FILE_LINES {
            offenders.push(format!("{}: {lines} lines (at most {MAX_FILE_LINES})", rel(file)));
        }
        for (name, at, length) in function_lengths(&text) {
            if length > MAX_FN_LINES {
                offenders.push(format!("{}:{at}: fn {name} has {length} lines (at most {MAX_FN_LINES})", rel(file)));
            }
        }
    }
    assert!(offenders.is_empty(), "split these by concern: {offenders:#?}");
}

#[test]
fn the_runtime_blocks_only_through_its_one_helper() {
    // Every blocking librdkafka call runs via `blocking::off_worker`; nothing
    // else in the crate reaches for the blocking pool or blocks a worker.
    let mut rs = Vec::new();
    files(&root().join("crates/kafka/src"), ".rs", &mut rs);
    let offenders: Vec<String> = rs
        .iter()
        .filter(|f| !f.ends_with("crates/kafka/src/blocking.rs"))
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            ["spawn_blocking", "block_in_place", "std::thread::spawn", "block_on("]
                .into_iter()
                .filter(move |needle| text.lines().any(|l| !l.trim_start().starts_with("//") && l.contains(needle)))
                .map(move |needle| format!("{} uses {needle}", rel(f)))
        })
        .collect();
    assert!(offenders.is_empty(), "use crate::blocking::off_worker: {offenders:#?}");
}

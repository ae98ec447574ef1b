//! House rules that are checked, not remembered (STYLE.md): every `.rs` file
//! opens with a `//!` line; only the kafka crate (and the test harness) depend
//! on rdkafka; only the schema crate touches Avro and the registry; only the
//! proto crate and the services that own a gRPC API touch tonic/prost; every
//! member inherits the workspace lints and is unpublished.

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

/// Which members may declare a dependency on a crate.
fn allowed(dep: &str) -> &'static [&'static str] {
    match dep {
        "rdkafka" => &["crates/kafka", "crates/testkit"],
        "apache-avro" | "schema_registry_converter" => &["crates/schema"],
        "tonic" | "prost" | "tonic-prost" | "tonic-prost-build" => {
            &["crates/proto", "crates/auth", "services/agent-gateway", "services/report-ingest"]
        }
        _ => &[],
    }
}

#[test]
fn layering_dependencies_stay_inside_their_crates() {
    let mut offenders = Vec::new();
    for member in members() {
        let manifest = std::fs::read_to_string(member.join("Cargo.toml")).unwrap();
        let name = rel(&member);
        for dep in ["rdkafka", "apache-avro", "schema_registry_converter", "tonic", "prost", "tonic-prost", "tonic-prost-build"] {
            let declared = manifest.lines().any(|l| {
                let l = l.trim_start();
                l.starts_with(&format!("{dep} ")) || l.starts_with(&format!("{dep}.")) || l.starts_with(&format!("{dep}="))
            });
            if declared && !allowed(dep).contains(&name.as_str()) {
                offenders.push(format!("{name} depends on {dep}"));
            }
        }
    }
    assert!(offenders.is_empty(), "layering violations (see ARCHITECTURE.md): {offenders:#?}");
}

#[test]
fn no_source_uses_crates_outside_its_layer() {
    // Belt and braces for the manifest check: a `use rdkafka` in a service would
    // also need the dependency, but re-exports could smuggle it in.
    let mut offenders = Vec::new();
    for member in members() {
        let name = rel(&member);
        let mut rs = Vec::new();
        files(&member.join("src"), ".rs", &mut rs);
        for file in rs {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            for (needle, dep) in [("rdkafka::", "rdkafka"), ("apache_avro::", "apache-avro"), ("schema_registry_converter::", "schema_registry_converter")] {
                let via_reexport = text.contains(&format!("dora_kafka::{needle}")) || text.contains(&format!("dora_schema::{needle}"));
                if (text.contains(needle) || via_reexport) && !allowed(dep).contains(&name.as_str()) {
                    offenders.push(format!("{} uses {dep}", rel(&file)));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "layering violations (see ARCHITECTURE.md): {offenders:#?}");
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

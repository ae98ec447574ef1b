//! Keeps the deployment files equal to the topic catalog in code (DESIGN.md §2):
//! `deploy/k8s/topics.yaml` (Strimzi `KafkaTopic`s) and the `topic-init`
//! container of `docker-compose.yml` must define exactly the topics of
//! [`dora_kafka::topics::catalog`], with the same partitions and configs.
//!
//! Deploy-only keys, allowed in the Kubernetes file and nowhere else:
//! - `spec.replicas` (must be 3): replication is a property of the cluster, not of
//!   the catalog;
//! - `min.insync.replicas` in `spec.config` (must be 2): with 3 replicas and
//!   `acks=all`, a write survives the loss of one broker.
//!
//! docker-compose runs a single broker, so its `create` lines carry the catalog's
//! configs only (replication factor 1 is a flag of the script, not a config).
//!
//! Needs no broker. The files are read with a small line-based reader written
//! for the plain block-mapping YAML they use; anything else in them (lists,
//! flow style, anchors, block scalars) fails the test loudly rather than being
//! skipped.

use std::collections::BTreeMap;
use std::path::PathBuf;

use dora_kafka::topics::{catalog, TopicSpec};

/// Replicas every `KafkaTopic` must ask for.
const K8S_REPLICAS: &str = "3";
/// Config keys `topics.yaml` may add to the catalog's, with their required value.
const K8S_ONLY_CONFIGS: &[(&str, &str)] = &[("min.insync.replicas", "2")];

/// One topic as a deployment file defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DeployedTopic {
    partitions: i32,
    configs: BTreeMap<String, String>,
}

fn repo_file(relative: &str) -> (PathBuf, String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    (path, text)
}

/// The catalog as name -> (partitions, configs).
fn catalog_map() -> BTreeMap<String, DeployedTopic> {
    catalog()
        .into_iter()
        .map(
            |TopicSpec {
                 name,
                 partitions,
                 configs,
             }| {
                let configs: BTreeMap<_, _> = configs.into_iter().collect();
                (
                    name,
                    DeployedTopic {
                        partitions,
                        configs,
                    },
                )
            },
        )
        .collect()
}

// ---------------------------------------------------------------- YAML subset

/// A scalar with its quotes removed and a trailing ` # comment` dropped.
fn scalar(raw: &str, line_no: usize) -> String {
    let raw = raw.trim();
    for q in ['"', '\''] {
        if let Some(inner) = raw.strip_prefix(q) {
            let end = inner
                .find(q)
                .unwrap_or_else(|| panic!("line {line_no}: unterminated quote in {raw:?}"));
            let rest = inner[end + 1..].trim();
            assert!(
                rest.is_empty() || rest.starts_with('#'),
                "line {line_no}: text after quoted value: {raw:?}"
            );
            return inner[..end].to_string();
        }
    }
    let value = match raw.find(" #") {
        Some(i) => raw[..i].trim_end(),
        None => raw,
    };
    let first = value.chars().next();
    assert!(
        !matches!(first, Some('{' | '[' | '&' | '*' | '|' | '>' | '!')),
        "line {line_no}: unsupported YAML value {value:?} (flow style, anchor, tag or block scalar)"
    );
    value.to_string()
}

/// The documents of a multi-document YAML file made only of nested block
/// mappings, each as a list of (key path, scalar value).
fn mapping_documents(text: &str) -> Vec<Vec<(Vec<String>, String)>> {
    let mut docs = vec![Vec::new()];
    let mut stack: Vec<(usize, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let content = line.trim_end();
        if content.trim_start().is_empty() || content.trim_start().starts_with('#') {
            continue;
        }
        if content == "---" {
            docs.push(Vec::new());
            stack.clear();
            continue;
        }
        assert!(
            !content.contains('\t'),
            "line {line_no}: tab in indentation"
        );
        let indent = content.len() - content.trim_start().len();
        let body = content.trim_start();
        assert!(
            !body.starts_with("- "),
            "line {line_no}: lists are not expected here: {body:?}"
        );
        let (key, value) = body
            .split_once(':')
            .unwrap_or_else(|| panic!("line {line_no}: expected `key: value`, found {body:?}"));
        assert!(
            value.is_empty() || value.starts_with(' '),
            "line {line_no}: expected `key: value`, found {body:?}"
        );
        while stack.last().is_some_and(|(level, _)| *level >= indent) {
            stack.pop();
        }
        let key = scalar(key, line_no);
        let value = value.trim();
        if value.is_empty() || value.starts_with('#') {
            stack.push((indent, key));
        } else {
            let mut path: Vec<String> = stack.iter().map(|(_, k)| k.clone()).collect();
            path.push(key);
            docs.last_mut()
                .expect("at least one document")
                .push((path, scalar(value, line_no)));
        }
    }
    docs.retain(|d| !d.is_empty());
    docs
}

// ---------------------------------------------------------------- the two files

/// Topics of `topics.yaml` with the deploy-only keys checked and removed.
fn k8s_topics(text: &str) -> Result<BTreeMap<String, DeployedTopic>, Vec<String>> {
    let mut topics = BTreeMap::new();
    let mut errors = Vec::new();
    for doc in mapping_documents(text) {
        let get = |path: &[&str]| {
            doc.iter()
                .find(|(p, _)| p.iter().map(String::as_str).eq(path.iter().copied()))
        };
        let kind = get(&["kind"]).map(|(_, v)| v.as_str());
        if kind != Some("KafkaTopic") {
            errors.push(format!(
                "topics.yaml holds a {kind:?}, expected only KafkaTopic documents"
            ));
            continue;
        }
        let Some((_, meta_name)) = get(&["metadata", "name"]) else {
            errors.push("a KafkaTopic without metadata.name".into());
            continue;
        };
        // Strimzi uses spec.topicName over metadata.name when it is set.
        let name = get(&["spec", "topicName"])
            .map(|(_, v)| v)
            .unwrap_or(meta_name)
            .clone();
        let partitions = match get(&["spec", "partitions"]).map(|(_, v)| v.parse::<i32>()) {
            Some(Ok(p)) => p,
            other => {
                errors.push(format!(
                    "{name}: spec.partitions missing or not a number ({other:?})"
                ));
                continue;
            }
        };
        match get(&["spec", "replicas"]) {
            Some((_, r)) if r == K8S_REPLICAS => {}
            other => errors.push(format!(
                "{name}: spec.replicas must be {K8S_REPLICAS}, found {other:?}"
            )),
        }
        let mut configs = BTreeMap::new();
        for (path, value) in &doc {
            if let [spec, config, key] = path.as_slice() {
                if spec == "spec" && config == "config" {
                    configs.insert(key.clone(), value.clone());
                }
            }
        }
        for (key, required) in K8S_ONLY_CONFIGS {
            match configs.remove(*key) {
                Some(v) if v == *required => {}
                other => errors.push(format!(
                    "{name}: config {key} must be {required}, found {other:?}"
                )),
            }
        }
        if topics
            .insert(
                name.clone(),
                DeployedTopic {
                    partitions,
                    configs,
                },
            )
            .is_some()
        {
            errors.push(format!("{name}: defined twice"));
        }
    }
    if errors.is_empty() {
        Ok(topics)
    } else {
        Err(errors)
    }
}

/// Topics of the `create <name> <partitions> <key=value>...` lines of the
/// `topic-init` service in `docker-compose.yml`.
fn compose_topics(text: &str) -> Result<BTreeMap<String, DeployedTopic>, Vec<String>> {
    let mut lines = text
        .lines()
        .enumerate()
        .skip_while(|(_, l)| l.trim_end() != "  topic-init:");
    if lines.next().is_none() {
        return Err(vec!["docker-compose.yml has no `topic-init` service".into()]);
    }
    let mut topics = BTreeMap::new();
    let mut errors = Vec::new();
    for (i, line) in lines {
        let indent = line.len() - line.trim_start().len();
        if !line.trim().is_empty() && indent <= 2 {
            break; // the next service, or the end of `services`
        }
        let mut words = line.split_whitespace();
        if words.next() != Some("create") {
            continue;
        }
        let (Some(name), Some(partitions)) = (words.next(), words.next()) else {
            errors.push(format!(
                "line {}: `create` needs a name and a partition count",
                i + 1
            ));
            continue;
        };
        let Ok(partitions) = partitions.parse::<i32>() else {
            errors.push(format!(
                "line {}: partition count {partitions:?} is not a number",
                i + 1
            ));
            continue;
        };
        let mut configs = BTreeMap::new();
        for word in words {
            match word.split_once('=') {
                Some((k, v)) => {
                    configs.insert(k.to_string(), v.to_string());
                }
                None => errors.push(format!("line {}: config {word:?} is not key=value", i + 1)),
            }
        }
        if topics
            .insert(
                name.to_string(),
                DeployedTopic {
                    partitions,
                    configs,
                },
            )
            .is_some()
        {
            errors.push(format!("{name}: created twice"));
        }
    }
    if errors.is_empty() {
        Ok(topics)
    } else {
        Err(errors)
    }
}

/// Every difference between the catalog and a deployment file's topics.
fn differences(
    expected: &BTreeMap<String, DeployedTopic>,
    found: &BTreeMap<String, DeployedTopic>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (name, want) in expected {
        match found.get(name) {
            None => out.push(format!("{name}: in the catalog, missing from the file")),
            Some(got) => {
                if got.partitions != want.partitions {
                    out.push(format!(
                        "{name}: partitions {} in the file, {} in the catalog",
                        got.partitions, want.partitions
                    ));
                }
                if got.configs != want.configs {
                    out.push(format!(
                        "{name}: configs {:?} in the file, {:?} in the catalog",
                        got.configs, want.configs
                    ));
                }
            }
        }
    }
    for name in found.keys().filter(|n| !expected.contains_key(*n)) {
        out.push(format!("{name}: in the file, not in the catalog"));
    }
    out
}

fn assert_mirrors(file: &str, parsed: Result<BTreeMap<String, DeployedTopic>, Vec<String>>) {
    let found =
        parsed.unwrap_or_else(|errors| panic!("{file} is malformed:\n  {}", errors.join("\n  ")));
    let diffs = differences(&catalog_map(), &found);
    assert!(
        diffs.is_empty(),
        "{file} differs from dora_kafka::topics::catalog() (crates/kafka/src/topics.rs); change both together:\n  {}",
        diffs.join("\n  ")
    );
}

// ---------------------------------------------------------------- tests

#[test]
fn k8s_topics_mirror_the_catalog() {
    let (path, text) = repo_file("deploy/k8s/topics.yaml");
    assert_mirrors(&path.display().to_string(), k8s_topics(&text));
}

#[test]
fn compose_topic_init_creates_the_catalog() {
    let (path, text) = repo_file("docker-compose.yml");
    assert_mirrors(&path.display().to_string(), compose_topics(&text));
}

/// The check itself: a rename, a partition change, a config change, a missing
/// deploy-only key or an extra topic on the file's side is reported.
#[test]
fn drift_on_either_file_is_detected() {
    let cat = catalog_map();
    let (_, k8s) = repo_file("deploy/k8s/topics.yaml");
    let (_, compose) = repo_file("docker-compose.yml");

    let renamed = k8s.replacen("  name: risk-alerts\n", "  name: risk-alarms\n", 1);
    assert_ne!(
        renamed, k8s,
        "fixture: risk-alerts not found in topics.yaml"
    );
    let diffs = differences(&cat, &k8s_topics(&renamed).unwrap());
    assert!(
        diffs
            .iter()
            .any(|d| d.starts_with("risk-alerts: in the catalog")),
        "{diffs:?}"
    );
    assert!(
        diffs
            .iter()
            .any(|d| d.starts_with("risk-alarms: in the file")),
        "{diffs:?}"
    );

    let repartitioned = k8s.replacen("  partitions: 6\n", "  partitions: 12\n", 1);
    assert_ne!(
        repartitioned, k8s,
        "fixture: no 6-partition topic in topics.yaml"
    );
    let diffs = differences(&cat, &k8s_topics(&repartitioned).unwrap());
    assert!(
        diffs
            .iter()
            .any(|d| d.contains("partitions 12 in the file, 6 in the catalog")),
        "{diffs:?}"
    );

    let no_min_isr = k8s.replacen("    min.insync.replicas: 2\n", "", 1);
    assert!(
        k8s_topics(&no_min_isr).is_err(),
        "a KafkaTopic without min.insync.replicas must be rejected"
    );

    let compose_changed = compose.replacen("create agent-health 3 ", "create agent-health 1 ", 1);
    assert_ne!(
        compose_changed, compose,
        "fixture: agent-health not found in docker-compose.yml"
    );
    let diffs = differences(&cat, &compose_topics(&compose_changed).unwrap());
    assert!(
        diffs
            .iter()
            .any(|d| d.starts_with("agent-health: partitions 1")),
        "{diffs:?}"
    );

    let compose_config = compose.replacen("retention.ms=7776000000", "retention.ms=1", 1);
    assert_ne!(
        compose_config, compose,
        "fixture: user-activities retention not found in docker-compose.yml"
    );
    let diffs = differences(&cat, &compose_topics(&compose_config).unwrap());
    assert!(
        diffs
            .iter()
            .any(|d| d.starts_with("user-activities: configs")),
        "{diffs:?}"
    );

    let mut extra = cat.clone();
    extra.insert(
        "extra-topic".into(),
        DeployedTopic {
            partitions: 1,
            configs: BTreeMap::new(),
        },
    );
    assert_eq!(
        differences(&cat, &extra),
        vec!["extra-topic: in the file, not in the catalog".to_string()]
    );
}

/// The reader refuses YAML it does not understand instead of skipping it.
#[test]
fn reader_rejects_unsupported_yaml() {
    for text in [
        "kind: KafkaTopic\nspec:\n  config: {retention.ms: 1}\n",
        "kind: KafkaTopic\nspec:\n  - partitions: 1\n",
        "kind: KafkaTopic\nspec:\n  config: &shared\n",
    ] {
        assert!(
            std::panic::catch_unwind(|| mapping_documents(text)).is_err(),
            "accepted: {text:?}"
        );
    }
}

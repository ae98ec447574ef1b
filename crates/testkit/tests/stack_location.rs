//! The local stack works from any checkout location: with its state in a
//! private (0700) folder whose name has a space, as root too (PostgreSQL then
//! keeps its files where the postgres user can reach them, and `status` says
//! where), and `down` leaves no process behind. On its fresh broker, the
//! platform's topics are usable as soon as provisioning returns.
//!
//! A second stack on private ports (`DORA_TEST_STACK_PORT_BASE`, default
//! 29100, six ports from there), never the shared one; runs on this machine
//! are serialised by a lock file, so two test runs never fight over the ports.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use dora_testkit as tk;

fn stack(state: &Path, base: u16, command: &str) -> Output {
    let ports = [
        ("DORA_STACK_KAFKA_PORT", base),
        ("DORA_STACK_KAFKA_SASL_PORT", base + 1),
        ("DORA_STACK_KAFKA_CONTROLLER_PORT", base + 2),
        ("DORA_STACK_REGISTRY_PORT", base + 3),
        ("DORA_STACK_REGISTRY_MGMT_PORT", base + 4),
        ("DORA_STACK_PG_PORT", base + 5),
    ];
    let mut cmd = Command::new("bash");
    cmd.arg(tk::repo_root().join("deploy/local/stack.sh")).arg(command).env("DORA_STACK_DIR", state);
    for (k, v) in ports {
        cmd.env(k, v.to_string());
    }
    cmd.output().expect("running stack.sh")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Processes whose command line names `path`.
fn processes_naming(path: &str) -> Vec<String> {
    let out = Command::new("ps").args(["-eo", "pid=,args="]).output().expect("ps");
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(path)).map(str::to_string).collect()
}

#[test]
fn the_stack_runs_with_its_state_in_a_private_folder_and_down_leaves_nothing() {
    let lock = std::fs::File::create(std::env::temp_dir().join("dora-private-stack-test.lock")).unwrap();
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e).unwrap();
    let base: u16 = std::env::var("DORA_TEST_STACK_PORT_BASE").ok().and_then(|v| v.parse().ok()).unwrap_or(29100);

    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let state = private.path().join("my stack");

    let up = stack(&state, base, "up");
    let guard = Down { state: state.clone(), base };
    assert!(up.status.success(), "stack.sh up failed:\n{}", text(&up));

    let status = stack(&state, base, "status");
    let report = text(&status);
    assert!(status.status.success(), "not every part answers:\n{report}");
    let pg_line = report.lines().find(|l| l.starts_with("postgres")).expect("a postgres line");
    let pg_home = pg_line.split("files in ").nth(1).expect("status says where PostgreSQL's files are").trim();
    if nix::unistd::Uid::effective().is_root() {
        // The postgres user cannot traverse a root-owned 0700 folder.
        assert!(pg_home.starts_with("/var/lib/dora-stack/"), "{pg_line}");
    }

    // PostgreSQL answers SQL over TCP with the generated password.
    let psql = glob_one("/usr/lib/postgresql", "bin/psql").expect("psql");
    let password = std::fs::read_to_string(state.join("secrets/postgres-password")).unwrap();
    let sql = Command::new(psql)
        .args(["-h", "127.0.0.1", "-p", &(base + 5).to_string(), "-U", "dora", "-d", "dora", "-tAc", "select 40 + 2"])
        .env("PGPASSWORD", password.trim_end())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&sql.stdout).trim(), "42", "{}", text(&sql));

    // A fresh broker: creation returns before the partitions have leaders
    // that answer; provisioning must not (the demo's first read failed so).
    let kafka = dora_kafka::KafkaSettings {
        bootstrap_servers: format!("127.0.0.1:{base}"),
        ..Default::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let catalog = dora_kafka::topics::catalog();
        let created = dora_kafka::topics::provision(&kafka, &catalog, 1, std::time::Duration::from_secs(60)).await.unwrap();
        assert_eq!(created.len(), catalog.len(), "a fresh broker has none of them");
        for spec in &catalog {
            let marks = dora_kafka::topics::watermarks(&kafka, &spec.name, std::time::Duration::from_secs(5)).await;
            let marks = marks.unwrap_or_else(|e| panic!("{} not usable right after provisioning: {e}", spec.name));
            assert_eq!(marks.len(), spec.partitions as usize, "{}", spec.name);
        }
    });

    drop(guard);
    assert!(processes_naming(&state.to_string_lossy()).is_empty(), "left behind: {:?}", processes_naming(&state.to_string_lossy()));
    assert!(processes_naming(pg_home).is_empty(), "left behind: {:?}", processes_naming(pg_home));
    if pg_home.starts_with("/var/lib/dora-stack/") {
        std::fs::remove_dir_all(pg_home).unwrap();
    }
}

/// Takes the stack down even when an assertion failed, and checks that `down` succeeded.
struct Down {
    state: std::path::PathBuf,
    base: u16,
}

impl Drop for Down {
    fn drop(&mut self) {
        let down = stack(&self.state, self.base, "down");
        if !std::thread::panicking() {
            assert!(down.status.success(), "stack.sh down failed:\n{}", text(&down));
        }
    }
}

/// The first `<dir>/*/<tail>` that exists.
fn glob_one(dir: &str, tail: &str) -> Option<std::path::PathBuf> {
    std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path().join(tail)).find(|p| p.exists())
}

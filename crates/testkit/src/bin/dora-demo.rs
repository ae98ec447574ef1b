//! `dora-demo`, the last step of `cargo xtask demo`: the pipeline end to end on
//! the local stack (up, topics provisioned). Starts every service binary built
//! next to it as a real process, drives agent-gateway with the agent simulator
//! with a few undecodable records among the agents' events, shows how
//! `dlq-replayer` lists, inspects and parks their dead letters, then prints
//! what reached each topic (read_committed) and the risk alerts the simulated
//! organisations raised and cleared, stops the services with SIGTERM, shows
//! the rows audit-sink stored per table and runs `audit-sink verify`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use dora_kafka::KafkaSettings;
use dora_schema::{Codec, RegistrySettings, RiskAlert, RiskAlertState};
use dora_testkit as tk;

/// The deployables, in start order.
const SERVICES: &[&str] = &["agent-gateway", "report-ingest", "audit-sink", "risk-streamer", "dlq-replayer"];

/// Random bytes from the OS (the demo's token key; no extra dependency).
fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    use std::io::Read;
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b)
}

/// What a demo secret holds.
enum SecretKind {
    /// 32 random bytes, as `head -c 32 /dev/urandom > key` makes a key.
    Key,
    /// 32 random bytes as hex text (a password).
    Password,
}

/// A secret of the demo in the stack's secrets folder, made once, mode 0600;
/// returns its path.
fn demo_secret(name: &str, kind: SecretKind) -> Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = tk::stack_dir().join("secrets").join(format!("demo-{name}"));
    if !file.exists() {
        let random = random_bytes::<32>()?;
        let value = match kind {
            SecretKind::Key => random.to_vec(),
            SecretKind::Password => random.iter().map(|b| format!("{b:02x}")).collect::<String>().into_bytes(),
        };
        std::fs::create_dir_all(file.parent().context("secrets folder")?)?;
        let mut out = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&file)?;
        std::io::Write::write_all(&mut out, &value)?;
    }
    Ok(file.to_string_lossy().into_owned())
}

/// The folder this binary was built into, where cargo put the services too.
fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating dora-demo")?;
    Ok(exe.parent().context("dora-demo has no folder")?.to_path_buf())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dora-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the demo against an already running stack with provisioned topics.
async fn run() -> Result<()> {
    let bins = bin_dir()?;
    let settings = tk::kafka();
    let topics: Vec<String> = dora_kafka::topics::catalog().into_iter().map(|t| t.name).collect();
    let mut before = Vec::new();
    for t in &topics {
        before.push(tk::end_offsets(&settings, t).await?);
    }

    // Callers authenticate with tokens signed by this key (a secret file, never in git).
    let key_path = demo_secret("token-key", SecretKind::Key)?;
    // audit-sink writes as its own login, which it creates as the stack's
    // database owner on start (`postgres.admin_user`).
    let owner = tk::postgres();
    // Every listener on port 0: the demo runs beside anything else on the machine.
    let env = [
        ("DORA_GATEWAY__TOKEN_KEY_FILE", key_path.clone()),
        ("DORA_INGEST__TOKEN_KEY_FILE", key_path.clone()),
        ("DORA_GATEWAY__GRPC_LISTEN", "127.0.0.1:0".to_string()),
        ("DORA_INGEST__GRPC_LISTEN", "127.0.0.1:0".to_string()),
        ("DORA_POSTGRES__ADMIN_USER", owner.user.clone()),
        ("DORA_POSTGRES__ADMIN_PASSWORD_FILE", owner.password_file.display().to_string()),
        ("DORA_POSTGRES__USER", "audit_sink".to_string()),
        ("DORA_POSTGRES__PASSWORD_FILE", demo_secret("audit-sink-password", SecretKind::Password)?),
        // risk-streamer: a 10 s window instead of 5 min, so the high-risk
        // organisations' alerts are raised and, once the simulator stops, cleared within the run
        ("DORA_RISK__WINDOW_MS", "10000".to_string()),
        ("DORA_RISK__ALLOWED_LATENESS_MS", "1000".to_string()),
        ("DORA_RISK__TICK_MS", "500".to_string()),
    ];
    let started_ms = now_ms();

    let mut running = Vec::new();
    let mut gateway = None;
    for name in SERVICES {
        let mut process = tk::ServiceProcess::spawn(bins.join(name), &env)
            .await
            .with_context(|| format!("starting {name}"))?;
        println!("started {name:<14} admin http://{}/readyz", process.admin()?);
        if *name == "agent-gateway" {
            gateway = Some(process.wait_announced("grpc", tk::DEADLINE).await?);
        }
        running.push((name, process));
    }
    let gateway = gateway.context("agent-gateway announced no gRPC address")?;

    // Undecodable bytes among the agents' events: their consumers dead-letter them.
    let poison_key = format!("demo-undecodable-{}", std::process::id());
    let producer = tk::producer(&settings)?;
    for n in 1..=3 {
        let value = format!("not an agent event #{n}");
        tk::produce(&producer, dora_kafka::topics::AGENT_EVENTS, Some(poison_key.as_bytes()), value.as_bytes(), &[]).await?;
    }

    let simulator = bins.join("agent-simulator");
    let simulated = simulator.exists();
    if simulated {
        println!("\nrunning the agent simulator against agent-gateway ...");
        let status = tokio::process::Command::new(&simulator)
            .args(["--agents", "8", "--duration-secs", "15", "--rate", "20", "--print-health"])
            .args(["--key-file", &key_path])
            .args(["--gateway", &format!("http://{gateway}")])
            .status()
            .await
            .context("running agent-simulator")?;
        anyhow::ensure!(status.success(), "agent-simulator failed: {status}");
    } else {
        println!("\n(no agent-simulator binary yet: services started and stopped only)");
    }

    dead_letters(&bins.join("dlq-replayer"), &poison_key, &env).await?;

    // Records as a read_committed consumer sees them: offsets would also
    // count the transaction markers of the transactional writers.
    println!("\n{:<28} {:>10}", "topic", "new records");
    for (t, b) in topics.iter().zip(before) {
        let new = tk::read_committed_since(&settings, t, &b).await?.len();
        println!("{t:<28} {new:>10}");
    }
    if simulated {
        print_risk_alerts(&settings, started_ms).await?;
    }

    println!();
    let mut failed = false;
    for (name, mut process) in running.into_iter().rev() {
        let status = process.terminate(Duration::from_secs(30)).await?;
        println!("stopped {name:<14} {status}");
        failed |= !status.success();
    }
    anyhow::ensure!(!failed, "a service did not stop cleanly");

    // What audit-sink stored (after its SIGTERM stored the open batch), and its chains checked.
    let db = owner.connect(&owner.database).await?;
    println!("\n{:<28} {:>10}", "PostgreSQL table", "rows");
    for table in ["audit.audit_events", "audit.compliance_reports", "audit.chain"] {
        let rows: i64 = db.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await?.get(0);
        println!("{table:<28} {rows:>10}");
    }
    let (status, out, err) = tk::run_with_args(bins.join("audit-sink"), &["verify"], &env, tk::DEADLINE)
        .await
        .context("running audit-sink verify")?;
    println!("\naudit-sink verify: {}{}", out.trim_end(), err.trim_end());
    anyhow::ensure!(status.success(), "audit-sink verify failed: {status}");
    Ok(())
}

/// Now, epoch ms.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Waits until every organisation this run raised an alert for is cleared
/// again (quiet once the simulator stopped), then prints the run's alerts as
/// a read_committed consumer sees them.
async fn print_risk_alerts(settings: &KafkaSettings, since_ms: i64) -> Result<()> {
    let codec = Codec::new(&RegistrySettings {
        url: tk::registry_url(),
        ..Default::default()
    })?;
    println!("\nwaiting for risk-streamer to clear the organisations that went quiet ...");
    let read = || async {
        let mut alerts = Vec::new();
        for r in tk::read_committed(settings, "risk-alerts").await.ok()? {
            let payload = r.payload.as_deref()?;
            let alert: RiskAlert = codec.decode("risk-alerts", payload).await.ok()?;
            if alert.window_end >= since_ms {
                alerts.push(alert);
            }
        }
        alerts.sort_by_key(|a| (a.timestamp, a.organization_id.clone()));
        let mut raised = std::collections::BTreeMap::new();
        for a in &alerts {
            raised.insert(a.organization_id.clone(), a.state == RiskAlertState::Raised);
        }
        (!raised.values().any(|r| *r)).then_some(alerts)
    };
    let alerts = tk::eventually(Duration::from_secs(60), read).await.context("risk alerts still raised")?;
    println!("\n{:<10} {:<8} {:>8} {:>6} {:>8}  reports", "org", "state", "average", "peak", "samples");
    for a in &alerts {
        println!(
            "{:<10} {:<8} {:>8.3} {:>6.3} {:>8}  {}",
            a.organization_id,
            a.state.to_string(),
            a.average_risk_score,
            a.peak_risk_score.unwrap_or_default(),
            a.sample_count,
            a.top_report_ids.join(",")
        );
    }
    if alerts.is_empty() {
        println!("(no risk alert in this run)");
    }
    Ok(())
}

/// The dead letters of the undecodable records written under `key`: waits
/// until they are on agent-events-dlq, then runs `dlq-replayer list`,
/// `inspect` and `park` (each parking an audit event on user-activities) and
/// `list` again, printing what each says.
async fn dead_letters(dlq_replayer: &Path, key: &str, env: &[(&str, String)]) -> Result<()> {
    let selected = ["--topic", "agent-events", "--key", key];
    tk::eventually(tk::DEADLINE, || async {
        let args = [&["inspect", "--json"][..], &selected].concat();
        let (_, out) = dlq_command(dlq_replayer, &args, env).await.ok()?;
        (out.lines().count() >= 3).then_some(())
    })
    .await
    .context("the undecodable records were not dead-lettered on agent-events-dlq")?;
    let reason = "demo: bytes that are no agent event";
    for args in [
        vec!["list", "--topic", "agent-events"],
        [&["inspect"][..], &selected, &["--limit", "1"]].concat(),
        [&["park"][..], &selected, &["--reason", reason, "--as", "dora-demo"]].concat(),
        vec!["list", "--topic", "agent-events"],
    ] {
        let (shown, out) = dlq_command(dlq_replayer, &args, env).await?;
        println!("\n$ {shown}\n{}", out.trim_end());
    }
    Ok(())
}

/// Runs `dlq-replayer <args>`; the command as shown and what it printed.
async fn dlq_command(dlq_replayer: &Path, args: &[&str], env: &[(&str, String)]) -> Result<(String, String)> {
    let words: Vec<String> = args.iter().map(|a| if a.contains(' ') { format!("{a:?}") } else { a.to_string() }).collect();
    let shown = format!("dlq-replayer {}", words.join(" "));
    let (status, out, err) =
        tk::run_with_args(dlq_replayer, args, env, tk::DEADLINE).await.with_context(|| format!("running {shown}"))?;
    anyhow::ensure!(status.success(), "{shown} failed ({status}): {}", err.trim_end());
    Ok((shown, out))
}

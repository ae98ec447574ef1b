//! The boot sequence through a real process (`idle-service`): services bind
//! port 0 and announce what they got, so many started at once never collide;
//! SIGTERM exits 0.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use dora_testkit as tk;

const IDLE: &str = env!("CARGO_BIN_EXE_idle-service");

#[tokio::test]
async fn services_started_at_once_never_collide_on_ports() -> Result<()> {
    // All started before any is awaited: with ports picked by the harness, two
    // of them could be handed the same number; bound by the service, never.
    let mut running = Vec::new();
    for _ in 0..12 {
        running.push(tk::ServiceProcess::start(
            IDLE,
            &[("DORA_TELEMETRY__LOG_FILTER", "warn".into())],
        )?);
    }
    let mut addresses = BTreeSet::new();
    for process in &mut running {
        if let Err(e) = process.wait_ready(tk::DEADLINE).await {
            panic!("{e:#}\n--- process log ---\n{}", process.log());
        }
        let admin = process.admin()?;
        let extra = process.wait_announced("extra", tk::DEADLINE).await?;
        assert!(
            addresses.insert(admin),
            "admin address {admin} announced twice"
        );
        assert!(
            addresses.insert(extra),
            "extra address {extra} announced twice"
        );
        let (status, body) = process.admin_get("/readyz").await?;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(addresses.len(), 24);
    for mut process in running {
        let status = process.terminate(Duration::from_secs(20)).await?;
        assert!(status.success(), "exit status {status}\n{}", process.log());
    }
    Ok(())
}

#[tokio::test]
async fn an_admin_address_in_use_exits_78_naming_it() -> Result<()> {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?;
    let (status, _stdout, stderr) = tk::run_to_exit(
        IDLE,
        &[
            ("DORA_ADMIN__LISTEN", addr.to_string()),
            (
                "DORA_KAFKA__BOOTSTRAP_SERVERS",
                tk::kafka().bootstrap_servers,
            ),
            ("DORA_TELEMETRY__LOG_FILTER", "off".into()),
        ],
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!(status.code(), Some(78), "stderr: {stderr}");
    assert!(stderr.contains(&addr.to_string()), "{stderr}");
    Ok(())
}

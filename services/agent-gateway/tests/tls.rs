//! Server TLS with client certificates: an agent whose certificate names it
//! (subject CN) writes without a token; writing for another agent is
//! PERMISSION_DENIED and produces nothing; a certificate naming two CNs is
//! UNAUTHENTICATED for both; a plaintext client gets nowhere.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::{heartbeat, Scenario};
use dora_proto::agent::v1::agent_gateway_client::AgentGatewayClient;
use dora_testkit as tk;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running openssl")?;
    ensure!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A CA, a server certificate for localhost/127.0.0.1 and a client
/// certificate `client.pem` with CN `agent`.
fn certificates(dir: &Path, agent: &str) -> Result<()> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    )?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )?;
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")?;
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    )?;
    client_certificate(dir, "client", &format!("/O=dora/CN={agent}"))
}

/// A client certificate `<name>.pem` / `<name>.key` for `subject`, signed by the CA.
fn client_certificate(dir: &Path, name: &str, subject: &str) -> Result<()> {
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", &key, "-out", &csr,
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "client.ext",
            "-out",
            &pem,
        ],
    )?;
    Ok(())
}

/// A TLS client of the gateway at `https` presenting `<name>.pem`.
async fn tls_client(
    dir: &Path,
    https: &str,
    name: &str,
) -> Result<AgentGatewayClient<tonic::transport::Channel>> {
    let tls = ClientTlsConfig::new()
        .domain_name("localhost")
        .ca_certificate(Certificate::from_pem(std::fs::read(dir.join("ca.pem"))?))
        .identity(Identity::from_pem(
            std::fs::read(dir.join(format!("{name}.pem")))?,
            std::fs::read(dir.join(format!("{name}.key")))?,
        ));
    let channel = Endpoint::from_shared(https.to_string())?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(AgentGatewayClient::new(channel))
}

#[tokio::test]
async fn a_client_certificate_authenticates_its_agent_only() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let agent = tk::unique("cert-agent");
    certificates(dir.path(), &agent)?;
    let file = |n: &str| dir.path().join(n).display().to_string();

    let mut scenario = Scenario::new().await?;
    scenario.env = vec![
        ("DORA_GATEWAY__TLS_CERT", file("server.pem")),
        ("DORA_GATEWAY__TLS_KEY", file("server.key")),
        ("DORA_GATEWAY__TLS_CLIENT_CA", file("ca.pem")),
    ];
    let gw = scenario.start().await?;
    let https = gw.url.replace("http://127.0.0.1", "https://localhost");

    let mut client = tls_client(dir.path(), &https, "client").await?;

    client
        .heartbeat(heartbeat(&agent))
        .await
        .context("heartbeat as the certificate's agent")?;
    let err = client
        .heartbeat(heartbeat("someone-else"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // A certificate whose subject names two CNs names nobody.
    let (first, second) = (tk::unique("cn-a"), tk::unique("cn-b"));
    client_certificate(dir.path(), "two-cns", &format!("/CN={first}/CN={second}"))?;
    let mut two = tls_client(dir.path(), &https, "two-cns").await?;
    for cn in [&first, &second] {
        let err = two.heartbeat(heartbeat(cn)).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "as {cn}: {err:?}");
        assert!(err.message().contains("exactly one CN"), "{err:?}");
    }

    // Plaintext to a TLS port does not get a gRPC answer.
    let plain = Endpoint::from_shared(gw.url.clone())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(ch) = plain {
        assert!(AgentGatewayClient::new(ch)
            .heartbeat(heartbeat(&agent))
            .await
            .is_err());
    }

    assert_eq!(
        scenario.events().await?,
        1,
        "only the certificate agent's own heartbeat is on the topic"
    );
    Ok(())
}

//! Running one benchmark command: its output shown as it comes (indented, so
//! progress is visible), its stdout kept for the result line, a deadline.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// How many of the last output lines a failure shows.
const TAIL: usize = 25;

/// Runs `cmd` to completion within `deadline`; returns its stdout. Every line
/// it prints (stdout and stderr) is echoed indented as it arrives. Fails with
/// the last lines of output when it exits non-zero or runs out of time.
pub async fn run(mut cmd: Command, what: &str, deadline: Duration) -> Result<String> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    let stdout = child.stdout.take().context("stdout")?;
    let stderr = child.stderr.take().context("stderr")?;
    let echo_err = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut tail = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            println!("      | {line}");
            tail.push(line);
            if tail.len() > TAIL {
                tail.remove(0);
            }
        }
        tail
    });
    let collect_out = async {
        let mut lines = BufReader::new(stdout).lines();
        let mut all = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.trim_start().starts_with('{') {
                println!("      | (result line, {} bytes)", line.len());
            } else {
                println!("      | {line}");
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    };
    let finished = tokio::time::timeout(deadline, async {
        let out = collect_out.await;
        let status = child.wait().await;
        (out, status)
    })
    .await;
    let Ok((out, status)) = finished else {
        let _ = child.kill().await;
        bail!("{what} did not finish within {deadline:?}");
    };
    let status = status?;
    let tail = echo_err.await.unwrap_or_default();
    if !status.success() {
        let out_tail: Vec<&str> = out.lines().rev().take(TAIL).collect::<Vec<_>>().into_iter().rev().collect();
        bail!("{what} failed ({status}):\n{}\n{}", out_tail.join("\n"), tail.join("\n"));
    }
    Ok(out)
}

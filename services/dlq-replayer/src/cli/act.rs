//! `replay` and `park` on the command line: plan the order, refuse what may
//! not be replayed (nothing is written then), print the plan (and stop there
//! with `--dry-run`), carry it out ([`crate::operator`]) and say what
//! happened.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Result};
use dora_schema::Codec;

use super::{Act, EXIT_INCOMPLETE};
use crate::letter::{Action, Letter};
use crate::operator::{carry_out, plan, Order, Outcome};
use crate::outbound::{self, Actor};
use crate::snapshot::dlq_topic_named;
use crate::Settings;

/// `replay`.
pub async fn replay(
    settings: &Settings,
    codec: Codec,
    act: &Act,
    rate: Option<f64>,
) -> Result<ExitCode> {
    if rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        bail!("--rate must be a positive number of records per second");
    }
    execute(
        settings,
        codec,
        act,
        Action::Replayed,
        rate,
        "replayed by an operator",
    )
    .await
}

/// `park`.
pub async fn park(settings: &Settings, codec: Codec, act: &Act, reason: &str) -> Result<ExitCode> {
    execute(settings, codec, act, Action::Parked, None, reason).await
}

async fn execute(
    settings: &Settings,
    codec: Codec,
    act: &Act,
    action: Action,
    rate: Option<f64>,
    reason: &str,
) -> Result<ExitCode> {
    let topic = dlq_topic_named(&act.topic);
    let plan = plan(settings, &codec, &topic, &act.select.filter(), action).await?;
    if !plan.refused.is_empty() {
        for (position, why) in &plan.refused {
            eprintln!("{position}: cannot replay: {why}");
        }
        eprintln!(
            "dlq-replayer: nothing replayed: {} of the {} selected letters cannot be replayed; narrow the selection or park them",
            plan.refused.len(),
            plan.selected.len()
        );
        return Ok(ExitCode::from(EXIT_INCOMPLETE));
    }
    if act.dry_run {
        print_plan(&topic, &plan.selected, action, act.json);
        return Ok(ExitCode::SUCCESS);
    }
    let order = Order {
        action,
        rate,
        reason: reason.to_string(),
        actor: Actor {
            name: operator_name(act)?,
            automatic: false,
        },
    };
    let verb = match action {
        Action::Replayed => "replaying",
        Action::Parked => "parking",
    };
    println!("{verb} {} letter(s) of {topic}", plan.selected.len());
    let selected = plan.selected.len();
    let outcome = carry_out(settings, &codec, plan, &order).await?;
    Ok(report(action, selected, outcome))
}

fn operator_name(act: &Act) -> Result<String> {
    act.operator
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| anyhow::anyhow!("who acts is not known: pass --as <name> (no $USER)"))
}

fn print_plan(topic: &str, selected: &[Arc<Letter>], action: Action, json: bool) {
    let verb = match action {
        Action::Replayed => "would replay",
        Action::Parked => "would park",
    };
    for letter in selected {
        let target = match action {
            Action::Replayed => letter
                .dead_letter
                .as_ref()
                .map(|d| format!("{}/{}", d.original_topic, d.original_partition))
                .unwrap_or_default(),
            Action::Parked => outbound::parking_topic(topic),
        };
        if json {
            let line = serde_json::json!({
                "plan": verb, "position": letter.position.to_string(), "target": target,
                "errorType": letter.error_type(), "key": letter.original_key_text(),
            });
            println!("{line}");
        } else {
            println!(
                "{verb} {} -> {target}  [{}] key {}",
                letter.position,
                letter.error_type(),
                letter.original_key_text().unwrap_or_else(|| "-".into())
            );
        }
    }
    if !json {
        println!("{verb} {} letter(s) of {topic}", selected.len());
    }
}

/// Says what happened; the exit code.
fn report(action: Action, selected: usize, o: Outcome) -> ExitCode {
    println!(
        "{} {} of {selected} letter(s); {} resolved by someone else meanwhile; {} still waiting",
        action.as_str(),
        o.done,
        o.by_others,
        o.waiting,
    );
    if o.waiting == 0 {
        return ExitCode::SUCCESS;
    }
    if o.interrupted {
        println!("stopped on request: run the same command again to resume");
        return ExitCode::SUCCESS;
    }
    println!("not finished: run the same command again to resume");
    ExitCode::from(EXIT_INCOMPLETE)
}

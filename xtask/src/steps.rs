//! The steps the tasks are made of, each announced with its number and timed:
//! the prerequisites script, the local stack, cargo commands with the stack's
//! addresses in their environment, and topic provisioning.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// cargo's output folder (`CARGO_TARGET_DIR`, relative to the root, default `target`).
pub fn target_dir() -> PathBuf {
    root().join(std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into()))
}

/// `deploy/local/stack.sh`.
pub fn stack_script() -> PathBuf {
    root().join("deploy/local/stack.sh")
}

/// The environment `stack.sh env` prints: the addresses of the stack that is
/// up (following `DORA_STACK_*_PORT` and `DORA_STACK_DIR`).
pub struct StackEnv(Vec<(String, String)>);

impl StackEnv {
    /// Parses `export NAME='value'` lines (single quotes, `'\''` for a quote).
    fn parse(text: &str) -> Result<Self> {
        let mut vars = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (name, value) = line
                .strip_prefix("export ")
                .and_then(|l| l.split_once('='))
                .with_context(|| format!("unexpected line from stack.sh env: {line}"))?;
            let value = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .with_context(|| format!("unquoted value from stack.sh env: {line}"))?;
            vars.push((name.to_string(), value.replace(r"'\''", "'")));
        }
        Ok(Self(vars))
    }

    fn vars(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

/// Numbered, timed steps of one task, printed as they start.
pub struct Steps {
    task: &'static str,
    total: usize,
    current: usize,
    started: Instant,
}

impl Steps {
    /// Announces the task at once: the first line appears before anything is built.
    pub fn new(task: &'static str, total: usize) -> Self {
        println!("xtask {task}: {total} steps, from {}", root().display());
        Self { task, total, current: 0, started: Instant::now() }
    }

    fn begin(&mut self, what: &str) {
        self.current += 1;
        println!(
            "\n[{}/{}] {what} (at {}s)",
            self.current,
            self.total,
            self.started.elapsed().as_secs()
        );
    }

    /// Installs what the build and the stack need and is missing.
    pub fn prerequisites(&mut self) -> Result<()> {
        self.begin("prerequisites: deploy/local/prereqs.sh installs what is missing");
        run(Command::new("bash").arg(root().join("deploy/local/prereqs.sh")))
    }

    /// Brings the local stack up and returns its addresses.
    pub fn stack_up(&mut self) -> Result<StackEnv> {
        self.begin("local stack: deploy/local/stack.sh up (Kafka, schema registry, PostgreSQL)");
        run(Command::new("bash").arg(stack_script()).arg("up"))?;
        let out = Command::new("bash").arg(stack_script()).arg("env").output()?;
        if !out.status.success() {
            bail!("stack.sh env failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        StackEnv::parse(&String::from_utf8(out.stdout)?)
    }

    /// Builds every binary of the workspace, with the workspace's feature set
    /// (what `cargo test --workspace` builds too: `cargo run -p <one crate>`
    /// would build that crate's dependencies a second time with its own).
    pub fn build_binaries(&mut self, stack: &StackEnv) -> Result<()> {
        self.cargo(stack, "building the services and tools", &["build", "--workspace", "--bins", "--locked"])
    }

    /// Creates the platform's topics (`dora-topics provision`).
    pub fn provision(&mut self, stack: &StackEnv) -> Result<()> {
        self.binary(stack, "topics: dora-topics provision", "dora-topics", &["provision"])
    }

    /// Runs a binary [`Self::build_binaries`] built, with the stack's addresses.
    pub fn binary(&mut self, stack: &StackEnv, what: &str, name: &str, args: &[&str]) -> Result<()> {
        self.begin(what);
        run(Command::new(target_dir().join("debug").join(name)).args(args).current_dir(root()).envs(stack.vars()))
    }

    /// Runs `cargo <args>` with the stack's addresses in its environment.
    pub fn cargo(&mut self, stack: &StackEnv, what: &str, args: &[&str]) -> Result<()> {
        self.cargo_with(stack, what, args, &[])
    }

    /// Like [`Self::cargo`] with extra environment variables.
    pub fn cargo_with(
        &mut self,
        stack: &StackEnv,
        what: &str,
        args: &[&str],
        env: &[(&str, String)],
    ) -> Result<()> {
        self.begin(what);
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(root()).args(args).envs(stack.vars());
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(&mut cmd)
    }

    /// Runs `cargo <args>` with the stack's addresses, as part of the current step.
    pub fn cargo_more(&mut self, stack: &StackEnv, args: &[&str]) -> Result<()> {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(root()).args(args).envs(stack.vars());
        run(&mut cmd)
    }

    /// Runs a program built by an earlier step with the stack's addresses.
    pub fn program(&mut self, stack: &StackEnv, what: &str, program: &Path, args: &[&str]) -> Result<()> {
        self.begin(what);
        let mut cmd = Command::new(program);
        cmd.current_dir(root()).args(args).envs(stack.vars());
        run(&mut cmd)
    }

    /// Prints the total time.
    pub fn done(self) {
        println!("\nxtask {}: done in {}s", self.task, self.started.elapsed().as_secs());
    }
}

/// `cargo xtask stack <args>`: the stack script itself.
pub fn stack(args: &[String]) -> Result<()> {
    run(Command::new("bash").arg(stack_script()).args(args))
}

fn run(cmd: &mut Command) -> Result<()> {
    // The command line only: the environment holds the stack's addresses.
    let shown = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    println!("$ {shown}");
    let status = cmd.status().with_context(|| format!("running {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_env_lines_are_unquoted() {
        let env = StackEnv::parse("export A='1'\nexport B='/tmp/a b'\\''c/x'\n").unwrap();
        assert_eq!(env.0, vec![("A".into(), "1".into()), ("B".into(), "/tmp/a b'c/x".into())]);
        assert!(StackEnv::parse("export A=1\n").is_err());
    }
}

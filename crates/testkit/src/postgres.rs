//! PostgreSQL for integration tests: a throw-away database on the stack's
//! server per test ([`TempDatabase`]), and a private server a test may stop
//! and start ([`PrivatePostgres`]) without touching the shared one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{eventually, unique, Postgres, DEADLINE};

impl Postgres {
    /// The password from [`Postgres::password_file`].
    pub fn password(&self) -> Result<String> {
        let text = std::fs::read_to_string(&self.password_file)
            .with_context(|| format!("reading {}", self.password_file.display()))?;
        Ok(text.trim_end().to_string())
    }

    /// Connection parameters for `database` as this (owner) user.
    pub fn config(&self, database: &str) -> Result<tokio_postgres::Config> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .password(self.password()?)
            .dbname(database)
            .connect_timeout(Duration::from_secs(5));
        Ok(cfg)
    }

    /// A connection to `database` as this (owner) user; its driver runs on a task.
    pub async fn connect(&self, database: &str) -> Result<tokio_postgres::Client> {
        let (client, conn) = self
            .config(database)?
            .connect(tokio_postgres::NoTls)
            .await
            .with_context(|| format!("connecting to {}:{}/{database}", self.host, self.port))?;
        tokio::spawn(async move { drop(conn.await) });
        Ok(client)
    }
}

/// A database created for one test on a PostgreSQL server and dropped
/// (with its connections) when dropped, followed by the roles listed.
pub struct TempDatabase {
    /// The server, as its owner.
    pub server: Postgres,
    /// The database's name.
    pub name: String,
    /// Roles (cluster-wide) the test created, dropped after the database.
    pub roles: Vec<String>,
}

impl TempDatabase {
    /// Creates a uniquely named database on `server`.
    pub async fn create(server: &Postgres) -> Result<Self> {
        let name = unique("test").replace('-', "_");
        let admin = server.connect(&server.database).await?;
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await?;
        Ok(Self { server: server.clone(), name, roles: Vec::new() })
    }

    /// A connection to this database as the owner.
    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        self.server.connect(&self.name).await
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        let (server, name, roles) = (self.server.clone(), self.name.clone(), self.roles.clone());
        // Drop runs inside or outside a runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let admin = server.connect(&server.database).await?;
                admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
                for role in roles {
                    admin.batch_execute(&format!("DROP ROLE IF EXISTS \"{}\"", role.replace('"', "\"\""))).await?;
                }
                anyhow::Ok(())
            })
        })
        .join();
    }
}

/// A PostgreSQL server of its own (initdb into a temporary folder, a free
/// port, the machine's `/usr/lib/postgresql/*/bin`), for tests that stop and
/// start the database. Stopped and removed when dropped.
pub struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// Connection parameters (owner `dora`, database `dora`).
    pub params: Postgres,
}

fn pg_bin() -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (/usr/lib/postgresql)")?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop().context("no initdb under /usr/lib/postgresql/*/bin")
}

fn unused_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn tracing_free_log(e: &anyhow::Error) {
    eprintln!("private PostgreSQL did not start, trying another port: {e:#}");
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs a PostgreSQL tool, as the `postgres` user when we are root (the
/// server refuses to run as root).
fn run_pg(bin: &Path, tool: &str, args: &[&str]) -> Result<()> {
    let tool_path = bin.join(tool);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&tool_path);
        c
    } else {
        Command::new(&tool_path)
    };
    let out = cmd.args(args).output().with_context(|| format!("running {tool}"))?;
    if !out.status.success() {
        bail!("{tool} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

impl PrivatePostgres {
    /// initdb + start; returns once the server accepts connections.
    pub async fn start() -> Result<Self> {
        let bin = pg_bin()?;
        let dir = tempfile::Builder::new().prefix("dora-pg-").tempdir()?;
        let password = uuid::Uuid::new_v4().simple().to_string();
        let pw_file = dir.path().join("password");
        std::fs::write(&pw_file, &password)?;
        std::fs::create_dir(dir.path().join("run"))?;
        if is_root() {
            let chown = Command::new("chown").args(["-R", "postgres:"]).arg(dir.path()).status()?;
            if !chown.success() {
                bail!("chown of {} failed", dir.path().display());
            }
        }
        let data = dir.path().join("data");
        run_pg(&bin, "initdb", &[
            "-D", &data.to_string_lossy(), "-U", "dora", "--pwfile", &pw_file.to_string_lossy(),
            "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync",
        ])?;
        let params = Postgres {
            host: "127.0.0.1".into(),
            port: 0,
            user: "dora".into(),
            database: "postgres".into(),
            password_file: pw_file,
        };
        let mut server = Self { bin, dir, params };
        // PostgreSQL cannot be told to bind port 0 and report it: pick an unused
        // port, and pick again if another process took it before the server bound it.
        let mut attempts = 0;
        loop {
            server.params.port = unused_port()?;
            match server.start_server().await {
                Ok(()) => break,
                Err(e) if attempts < 3 => {
                    attempts += 1;
                    tracing_free_log(&e);
                }
                Err(e) => return Err(e),
            }
        }
        server.connect("postgres").await?.batch_execute("CREATE DATABASE dora").await?;
        server.params.database = "dora".into();
        Ok(server)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the (stopped) server again and waits until it answers.
    pub async fn start_server(&self) -> Result<()> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off",
            self.params.port,
            self.dir.path().join("run").display()
        );
        let log = self.dir.path().join("postgres.log");
        run_pg(&self.bin, "pg_ctl", &[
            "-D", &self.data().to_string_lossy(), "-l", &log.to_string_lossy(), "-o", &options, "-w", "start",
        ])?;
        let params = self.params.clone();
        eventually(DEADLINE, || {
            let params = params.clone();
            async move { params.connect("postgres").await.ok().map(|_| ()) }
        })
        .await
        .context("private PostgreSQL did not answer")
    }

    /// Stops the server (fast shutdown: open sessions are disconnected).
    pub fn stop_server(&self) -> Result<()> {
        run_pg(&self.bin, "pg_ctl", &["-D", &self.data().to_string_lossy(), "-m", "fast", "-w", "stop"])
    }

    /// A connection as the owner.
    pub async fn connect(&self, database: &str) -> Result<tokio_postgres::Client> {
        self.params.connect(database).await
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = run_pg(&self.bin, "pg_ctl", &["-D", &self.data().to_string_lossy(), "-m", "immediate", "-w", "stop"]);
    }
}

//! What a running service hands its components: its name, its readiness
//! conditions, its shutdown token, and where it announces the addresses it
//! bound. Lives here, below the Kafka runtime and the boot sequence, so the
//! consume loop can take it without depending on the boot crate.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::Readiness;

/// The readiness condition the boot sequence holds until the service calls
/// [`ServiceContext::started`]: `/readyz` is never 200 before the service has
/// registered its own conditions.
pub const STARTING: &str = "starting";

/// Handles a running service receives from the boot sequence.
#[derive(Clone)]
pub struct ServiceContext {
    /// Service name (also the Kafka `client.id` prefix).
    pub name: &'static str,
    /// Readiness conditions served by `/readyz`.
    pub readiness: Readiness,
    /// Cancelled when the process is asked to stop; the service then drains and returns.
    pub shutdown: CancellationToken,
    announce_path: Option<Arc<PathBuf>>,
}

impl std::fmt::Debug for ServiceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceContext")
            .field("name", &self.name)
            .field("announce_path", &self.announce_path)
            .finish_non_exhaustive()
    }
}

impl ServiceContext {
    /// A context with fresh readiness conditions and shutdown token, announcing
    /// nothing (tests and benchmarks; services get theirs from the boot sequence).
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            readiness: Readiness::new(),
            shutdown: CancellationToken::new(),
            announce_path: None,
        }
    }

    /// The same context, announcing bound addresses to `path` (see [`Self::announce`]).
    pub fn announcing_to(mut self, path: Option<PathBuf>) -> Self {
        self.announce_path = path.map(Arc::new);
        self
    }

    /// Declares start-up done: call once the service has registered its own
    /// readiness conditions (which may still be not ready).
    pub fn started(&self) {
        self.readiness.set_ready(STARTING);
    }

    /// Tells whoever started the process that the listener `listener` (e.g.
    /// `admin`, `grpc`) is bound to `addr`: appends the line
    /// `<listener>=<host:port>` to the file named by `admin.announce_path`
    /// (env `DORA_ADMIN__ANNOUNCE_PATH`), if one is set. Call it right after
    /// binding, so a harness can start services on port 0 and never pick ports.
    ///
    /// The line is written with one `write(2)` to a file opened for appending,
    /// so two listeners announcing at once never interleave; readers take only
    /// lines that end in a newline.
    pub fn announce(&self, listener: &str, addr: SocketAddr) -> std::io::Result<()> {
        match &self.announce_path {
            Some(path) => append_line(path, &format!("{listener}={addr}\n")),
            None => Ok(()),
        }
    }
}

fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(line.as_bytes())
}

/// Parses an announcement file: the address of every listener named in a
/// complete line (the last announcement of a name wins).
pub fn read_announcements(text: &str) -> Vec<(String, SocketAddr)> {
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => return Vec::new(),
    };
    complete
        .lines()
        .filter_map(|line| {
            let (name, addr) = line.split_once('=')?;
            Some((name.to_string(), addr.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_append_whole_lines_and_partial_lines_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("addresses");
        let ctx = ServiceContext::new("t").announcing_to(Some(path.clone()));
        ctx.announce("admin", "127.0.0.1:4000".parse().unwrap())
            .unwrap();
        ctx.announce("grpc", "127.0.0.1:4001".parse().unwrap())
            .unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "admin=127.0.0.1:4000\ngrpc=127.0.0.1:4001\n");
        text.push_str("other=127.0.0.1:40"); // a line still being written
        let got = read_announcements(&text);
        assert_eq!(
            got,
            vec![
                ("admin".to_string(), "127.0.0.1:4000".parse().unwrap()),
                ("grpc".to_string(), "127.0.0.1:4001".parse().unwrap()),
            ]
        );
    }

    #[test]
    fn without_a_path_announcing_does_nothing() {
        ServiceContext::new("t")
            .announce("admin", "127.0.0.1:1".parse().unwrap())
            .unwrap();
    }
}

//! Per-caller bounds on long calls: how many event streams and watches one
//! principal may hold open at once, so one caller cannot pin unbounded memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tonic::Status;

/// Open long calls per caller, bounded.
#[derive(Debug, Clone)]
pub struct OpenCalls {
    what: &'static str,
    max_per_caller: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open call; dropping it closes it.
#[derive(Debug)]
pub struct OpenCall {
    caller: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl OpenCalls {
    /// At most `max_per_caller` open calls of kind `what` (e.g. "event streams") per caller.
    pub fn new(what: &'static str, max_per_caller: usize) -> Self {
        Self {
            what,
            max_per_caller: max_per_caller.max(1),
            open: Arc::default(),
        }
    }

    /// Opens one for `caller`, or RESOURCE_EXHAUSTED when it already holds the maximum.
    pub fn open(&self, caller: &str) -> Result<OpenCall, Status> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(caller.to_string()).or_default();
        if *n >= self.max_per_caller {
            return Err(Status::resource_exhausted(format!(
                "{caller:?} already has {n} open {}; close one first",
                self.what
            )));
        }
        *n += 1;
        Ok(OpenCall {
            caller: caller.to_string(),
            open: self.open.clone(),
        })
    }
}

impl Drop for OpenCall {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.caller) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_holds_at_most_its_maximum_and_closing_frees_one() {
        let calls = OpenCalls::new("event streams", 2);
        let a = calls.open("agent-1").unwrap();
        let _b = calls.open("agent-1").unwrap();
        let err = calls.open("agent-1").unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(
            calls.open("agent-2").is_ok(),
            "other callers are not affected"
        );
        drop(a);
        assert!(calls.open("agent-1").is_ok());
    }
}

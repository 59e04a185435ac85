//! The back-off gate in front of a Redis that stopped answering: after a
//! request fails to connect or times out, the workload's requests fail fast
//! for a back-off, so a down Redis is not hammered at the workload's rate.
//! Probes always go through, and only a success reopens the gate. In cluster
//! mode nothing is gated: one master down says nothing of the others.

use std::sync::Mutex;
use std::time::Instant;

use crate::backends::probe::Backoff;
use crate::backends::{Backend, BackendError, ErrorKind};

/// The gate: open, or closed until an instant with the error that closed it.
#[derive(Default)]
pub(super) struct Gate(Mutex<State>);

#[derive(Default)]
struct State {
    backoff: Backoff,
    closed: Option<(Instant, BackendError)>,
}

impl Gate {
    /// While the gate is closed, an error of kind `connection` naming what
    /// closed it: the request is not sent.
    pub(super) fn admit(&self) -> Result<(), BackendError> {
        let state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match &state.closed {
            Some((until, err)) if Instant::now() < *until => Err(BackendError::new(
                Backend::Redis,
                ErrorKind::Connection,
                format!(
                    "not sent: backing off after a failed request ({}): {}",
                    err.kind.as_str(),
                    err.message
                ),
            )),
            _ => Ok(()),
        }
    }

    /// What a request that was sent found: a success reopens the gate; a
    /// failure to connect or a timeout closes it for the next back-off; any
    /// other failure (an error reply: the server is there) leaves it as is.
    pub(super) fn record<T>(&self, result: &Result<T, BackendError>) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(_) => {
                state.backoff.reset();
                state.closed = None;
            }
            Err(err) if matches!(err.kind, ErrorKind::Connection | ErrorKind::Timeout) => {
                let delay = state.backoff.next_delay();
                state.closed = Some((Instant::now() + delay, err.clone()));
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(kind: ErrorKind) -> Result<(), BackendError> {
        Err(BackendError::new(Backend::Redis, kind, "x"))
    }

    #[test]
    fn only_a_success_reopens_the_gate() {
        let gate = Gate::default();
        assert!(gate.admit().is_ok());
        gate.record(&failure(ErrorKind::Timeout));
        let refused = gate.admit().unwrap_err();
        assert_eq!(refused.kind, ErrorKind::Connection, "nothing was sent");
        assert!(refused.message.contains("timeout"), "{}", refused.message);
        // A probe's failed PING, or an error reply, does not reopen it.
        gate.record(&failure(ErrorKind::Connection));
        gate.record(&failure(ErrorKind::Server));
        assert!(gate.admit().is_err());
        gate.record(&Ok::<(), BackendError>(()));
        assert!(gate.admit().is_ok());
    }
}

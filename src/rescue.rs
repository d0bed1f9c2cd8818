//! The one rescue point: errors that come up the agent stack, typed by the layer that raised them,
//! are sorted here into what a caller should be told. Routes shape the answer for their callers
//! (seed bodies on `/execute`, OpenAI errors on `/v1/*`) from a [`RunFailure`].

use std::error::Error as StdError;
use std::fmt;

use gateway_layers::admission::Overloaded;
use gateway_layers::deadline::Elapsed;
use gateway_layers::workspace::ProvisionFailed;
use gateway_layers::BoxError;

use crate::agent::AgentError;

/// Why a run produced no outcome.
#[derive(Debug)]
pub enum RunFailure {
    /// The run outlived its deadline; its process group was killed.
    TimedOut(String),
    /// No room in the queue.
    Overloaded,
    /// No workspace could be made for it.
    Workspace(String),
    /// The agent could not be run or misbehaved (unknown agent, hang, output flood, garbage).
    Agent(AgentError),
    /// Anything else: a bug, reported as such.
    Internal(String),
}

impl fmt::Display for RunFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunFailure::TimedOut(why) => write!(f, "agent timed out: {why}"),
            RunFailure::Overloaded => f.write_str("queue full"),
            RunFailure::Workspace(why) => f.write_str(why),
            RunFailure::Agent(error) => write!(f, "{error}"),
            RunFailure::Internal(why) => write!(f, "internal error: {why}"),
        }
    }
}

/// Sorts an error from the agent stack.
pub fn classify(error: BoxError) -> RunFailure {
    if is_caused_by::<Elapsed>(&*error) {
        return RunFailure::TimedOut(error.to_string());
    }
    if is_caused_by::<Overloaded>(&*error) {
        return RunFailure::Overloaded;
    }
    if is_caused_by::<ProvisionFailed>(&*error) {
        return RunFailure::Workspace(error.to_string());
    }
    match error.downcast::<AgentError>() {
        Ok(agent) => RunFailure::Agent(*agent),
        Err(other) => RunFailure::Internal(other.to_string()),
    }
}

/// Whether `error` or anything in its source chain is an `E`.
fn is_caused_by<E: StdError + 'static>(error: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<E>() {
            return true;
        }
        current = error.source();
    }
    false
}

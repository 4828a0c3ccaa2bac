//! What a control request (abort, pause, resume, approve, reject) does to an execution in a
//! given state: decided here once for every backend. A backend reads the execution's status,
//! whether a worker holds it and any request already waiting for that worker, asks [`decide`],
//! and carries out the [`ControlAction`] in the same transaction.

use crate::store::executions::{status, Control};

/// What to do with a control request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlAction {
    /// Not possible in the execution's current status.
    NotAllowed,
    /// A worker holds the execution: leave it this request (`abort` or `pause`), which it
    /// applies before its next step.
    Signal(Control),
    /// A worker holds the execution and a pause waits for it: withdraw the pause.
    Withdraw,
    /// End it now: steps running or waiting are `Aborted`, the rest `Skipped`.
    AbortNow,
    /// Pause it now; `announce` when it was not paused already (the pause events are sent).
    PauseNow {
        /// Whether this is a real change to `Paused`.
        announce: bool,
    },
    /// Resume a paused execution (queued again if it never started).
    ResumeNow,
    /// Settle the Approval step it waits on.
    Settle {
        /// Approved (else rejected).
        approve: bool,
    },
}

/// What `control` does to an execution in status `current`. `leased` says whether a worker
/// holds it now; `pending` is the request already left for that worker.
pub fn decide(
    current: &str,
    leased: bool,
    pending: Option<Control>,
    control: Control,
) -> ControlAction {
    if status::is_terminal(current) {
        return ControlAction::NotAllowed;
    }
    match control {
        Control::Abort if leased => ControlAction::Signal(Control::Abort),
        Control::Abort => ControlAction::AbortNow,
        Control::Pause if leased => ControlAction::Signal(Control::Pause),
        Control::Pause if matches!(current, status::QUEUED | status::RUNNING | status::PAUSED) => {
            ControlAction::PauseNow {
                announce: current != status::PAUSED,
            }
        }
        Control::Resume if current == status::PAUSED => ControlAction::ResumeNow,
        Control::Resume if leased && pending == Some(Control::Pause) => ControlAction::Withdraw,
        Control::Approve | Control::Reject if current == status::APPROVAL_WAITING && !leased => {
            ControlAction::Settle {
                approve: control == Control::Approve,
            }
        }
        _ => ControlAction::NotAllowed,
    }
}

/// The stored form of a request left for a worker.
pub fn stored(control: Control) -> Option<&'static str> {
    match control {
        Control::Abort => Some("abort"),
        Control::Pause => Some("pause"),
        _ => None,
    }
}

/// A request left for a worker, from its stored form.
pub fn from_stored(stored: Option<&str>) -> Option<Control> {
    match stored {
        Some("abort") => Some(Control::Abort),
        Some("pause") => Some(Control::Pause),
        _ => None,
    }
}

/// The failure message of an execution a user aborted.
pub fn abort_message(comment: Option<&str>) -> String {
    match comment {
        Some(comment) if !comment.trim().is_empty() => format!("Aborted by a user: {comment}"),
        _ => "Aborted by a user".to_owned(),
    }
}

/// The message recorded on a settled Approval step: `approved` or `rejected`, with the comment.
pub fn approval_note(approve: bool, comment: Option<&str>) -> String {
    let verdict = if approve { "approved" } else { "rejected" };
    match comment {
        Some(comment) if !comment.trim().is_empty() => format!("{verdict}: {comment}"),
        _ => verdict.to_owned(),
    }
}

/// The failure message of an execution whose Approval step `step` was rejected.
pub fn rejection_message(step: Option<&str>, note: &str) -> String {
    format!("Approval step {} was {note}", step.unwrap_or("?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_changes_an_ended_execution() {
        for control in [
            Control::Abort,
            Control::Pause,
            Control::Resume,
            Control::Approve,
        ] {
            assert_eq!(
                decide(status::SUCCESS, false, None, control),
                ControlAction::NotAllowed
            );
        }
    }

    #[test]
    fn a_held_execution_is_signalled_and_a_free_one_changed_now() {
        assert_eq!(
            decide(status::RUNNING, true, None, Control::Abort),
            ControlAction::Signal(Control::Abort)
        );
        assert_eq!(
            decide(status::RUNNING, false, None, Control::Abort),
            ControlAction::AbortNow
        );
        assert_eq!(
            decide(status::QUEUED, false, None, Control::Pause),
            ControlAction::PauseNow { announce: true }
        );
        assert_eq!(
            decide(status::PAUSED, false, None, Control::Pause),
            ControlAction::PauseNow { announce: false }
        );
        assert_eq!(
            decide(status::RUNNING, true, Some(Control::Pause), Control::Resume),
            ControlAction::Withdraw
        );
        assert_eq!(
            decide(status::RUNNING, true, None, Control::Resume),
            ControlAction::NotAllowed
        );
    }

    #[test]
    fn only_a_waiting_approval_that_no_worker_holds_is_settled() {
        assert_eq!(
            decide(status::APPROVAL_WAITING, false, None, Control::Reject),
            ControlAction::Settle { approve: false }
        );
        assert_eq!(
            decide(status::APPROVAL_WAITING, true, None, Control::Approve),
            ControlAction::NotAllowed
        );
        assert_eq!(
            decide(status::RUNNING, false, None, Control::Approve),
            ControlAction::NotAllowed
        );
    }

    #[test]
    fn messages_carry_the_comment_when_there_is_one() {
        assert_eq!(abort_message(Some("  ")), "Aborted by a user");
        assert_eq!(abort_message(Some("oops")), "Aborted by a user: oops");
        assert_eq!(approval_note(false, Some("no")), "rejected: no");
        assert_eq!(
            rejection_message(Some("gate"), "rejected"),
            "Approval step gate was rejected"
        );
        assert_eq!(from_stored(stored(Control::Pause)), Some(Control::Pause));
        assert_eq!(stored(Control::Resume), None);
    }
}

//! What one delivery attempt means for its rule (DESIGN §8): a delivered attempt makes the rule
//! healthy again, failures start (or continue) a failing streak, a streak older than
//! `outbound.disable_after` or a `410 Gone` disables the rule. Decided here once; a backend
//! reads the rule's state in the attempt's transaction, asks [`after_attempt`], and stores
//! the answer.

use crate::store::outbound::{Next, RuleEffect};
use crate::store::Millis;

/// Why triggerd disables a rule whose attempts keep failing.
pub const FAILING_TOO_LONG: &str =
    "disabled by triggerd: every delivery attempt has failed for longer than outbound.disable_after";

/// A rule's state as the attempt's transaction reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleHealth {
    /// Whether it is enabled now.
    pub enabled: bool,
    /// The first failed attempt since the last delivered one.
    pub failing_since: Option<Millis>,
}

/// What to store for the rule after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleUpdate {
    /// The new `failing_since`.
    pub failing_since: Option<Millis>,
    /// Disable the rule now, for this reason.
    pub disable: Option<String>,
    /// End the rule's pending deliveries that no attempt holds as `Failed`: the rule is
    /// disabled (now, or while this attempt ran), so nothing may wait behind it.
    pub end_pending: bool,
}

/// The rule's new state after an attempt that started at `started_at`, with `effect` on the
/// rule and `next` for its delivery.
pub fn after_attempt(
    rule: RuleHealth,
    effect: &RuleEffect,
    next: Next,
    started_at: Millis,
) -> RuleUpdate {
    let (failing_since, disable) = match effect {
        RuleEffect::None => (rule.failing_since, None),
        RuleEffect::Healthy => (None, None),
        RuleEffect::Failing { disable_before } => {
            let since = rule.failing_since.unwrap_or(started_at);
            let disable =
                (rule.enabled && since < *disable_before).then(|| FAILING_TOO_LONG.into());
            (Some(since), disable)
        }
        RuleEffect::Disable(reason) => (rule.failing_since, rule.enabled.then(|| reason.clone())),
    };
    // Disabled while this attempt ran: its retry is not queued either.
    let end_pending = disable.is_some() || (!rule.enabled && matches!(next, Next::RetryAt(..)));
    RuleUpdate {
        failing_since,
        disable,
        end_pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENABLED: RuleHealth = RuleHealth {
        enabled: true,
        failing_since: None,
    };

    #[test]
    fn a_delivered_attempt_ends_the_failing_streak() {
        let rule = RuleHealth {
            failing_since: Some(5),
            ..ENABLED
        };
        let update = after_attempt(rule, &RuleEffect::Healthy, Next::Done, 100);
        assert_eq!(update.failing_since, None);
        assert_eq!(update.disable, None);
        assert!(!update.end_pending);
    }

    #[test]
    fn the_first_failure_starts_the_streak_and_a_long_streak_disables() {
        let failing = RuleEffect::Failing { disable_before: 50 };
        let first = after_attempt(ENABLED, &failing, Next::RetryAt(200, 1), 100);
        assert_eq!(first.failing_since, Some(100));
        assert_eq!(first.disable, None);
        let old = RuleHealth {
            failing_since: Some(10),
            ..ENABLED
        };
        let later = after_attempt(old, &failing, Next::RetryAt(300, 2), 200);
        assert_eq!(later.failing_since, Some(10));
        assert_eq!(later.disable.as_deref(), Some(FAILING_TOO_LONG));
        assert!(later.end_pending);
    }

    #[test]
    fn gone_disables_an_enabled_rule_once() {
        let gone = RuleEffect::Disable("410".into());
        assert_eq!(
            after_attempt(ENABLED, &gone, Next::GiveUp, 1)
                .disable
                .as_deref(),
            Some("410")
        );
        let disabled = RuleHealth {
            enabled: false,
            failing_since: None,
        };
        let again = after_attempt(disabled, &gone, Next::GiveUp, 1);
        assert_eq!(again.disable, None);
        assert!(!again.end_pending);
    }

    #[test]
    fn a_retry_of_a_rule_disabled_meanwhile_is_not_queued() {
        let disabled = RuleHealth {
            enabled: false,
            failing_since: None,
        };
        let failing = RuleEffect::Failing { disable_before: 0 };
        assert!(after_attempt(disabled, &failing, Next::RetryAt(5, 1), 1).end_pending);
        assert!(!after_attempt(disabled, &RuleEffect::None, Next::Done, 1).end_pending);
    }
}

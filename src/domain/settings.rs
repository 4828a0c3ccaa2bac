//! Settings at account, org and project scope, and the resolution rule of DESIGN §7.

use serde::Serialize;

use super::DomainError;

/// The one setting triggerd knows: whether custom webhooks must carry `X-Api-Key`.
pub const MANDATE_CUSTOM_WEBHOOK_AUTHORIZATION: &str = "mandate_custom_webhook_authorization";

/// Names of the settings that may be stored.
pub fn parse_setting_name(name: &str) -> Result<&'static str, DomainError> {
    match name {
        MANDATE_CUSTOM_WEBHOOK_AUTHORIZATION => Ok(MANDATE_CUSTOM_WEBHOOK_AUTHORIZATION),
        other => Err(DomainError::invalid(format!(
            "Unknown setting '{}'; known settings: {MANDATE_CUSTOM_WEBHOOK_AUTHORIZATION}",
            super::ids::truncate_for_message(other)
        ))),
    }
}

/// Where a setting value was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = SettingSource)]
pub enum Scope {
    /// Set on the account.
    Account,
    /// Set on the org.
    Org,
    /// Set on the project.
    Project,
    /// Not set anywhere: the built-in default.
    Default,
}

/// A boolean setting as stored at one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScopedValue {
    /// The value.
    pub value: bool,
    /// When false, narrower scopes cannot override this value.
    pub allow_overrides: bool,
}

/// The values of one setting along a project's scope chain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SettingChain {
    /// Account scope.
    pub account: Option<ScopedValue>,
    /// Org scope.
    pub org: Option<ScopedValue>,
    /// Project scope.
    pub project: Option<ScopedValue>,
}

/// A resolved setting and the scope it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Resolved {
    /// The effective value.
    pub value: bool,
    /// Where it came from.
    pub source: Scope,
}

impl SettingChain {
    /// DESIGN §7: an account value with `allowOverrides:false` wins; else an org value with
    /// `allowOverrides:false`; else the most specific value set; else `false`.
    pub fn resolve(&self) -> Resolved {
        let locked = |v: &Option<ScopedValue>| v.filter(|v| !v.allow_overrides);
        let pick = |v: ScopedValue, source| Resolved {
            value: v.value,
            source,
        };
        if let Some(v) = locked(&self.account) {
            return pick(v, Scope::Account);
        }
        if let Some(v) = locked(&self.org) {
            return pick(v, Scope::Org);
        }
        [
            (self.project, Scope::Project),
            (self.org, Scope::Org),
            (self.account, Scope::Account),
        ]
        .into_iter()
        .find_map(|(v, s)| v.map(|v| pick(v, s)))
        .unwrap_or(Resolved {
            value: false,
            source: Scope::Default,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(value: bool, allow_overrides: bool) -> Option<ScopedValue> {
        Some(ScopedValue {
            value,
            allow_overrides,
        })
    }

    #[test]
    fn nothing_set_resolves_to_false_by_default() {
        let r = SettingChain::default().resolve();
        assert_eq!((r.value, r.source), (false, Scope::Default));
    }

    #[test]
    fn locked_account_value_beats_project_value() {
        let chain = SettingChain {
            account: v(true, false),
            org: None,
            project: v(false, true),
        };
        assert!(chain.resolve().value);
        assert_eq!(chain.resolve().source, Scope::Account);
    }

    #[test]
    fn overridable_account_value_yields_to_project() {
        let chain = SettingChain {
            account: v(true, true),
            org: None,
            project: v(false, true),
        };
        assert!(!chain.resolve().value);
        assert_eq!(chain.resolve().source, Scope::Project);
    }

    #[test]
    fn locked_org_value_beats_project_when_account_allows() {
        let chain = SettingChain {
            account: v(false, true),
            org: v(true, false),
            project: v(false, true),
        };
        assert_eq!(
            chain.resolve(),
            Resolved {
                value: true,
                source: Scope::Org
            }
        );
    }

    #[test]
    fn most_specific_value_wins_when_nothing_is_locked() {
        let chain = SettingChain {
            account: v(false, true),
            org: v(true, true),
            project: None,
        };
        assert_eq!(
            chain.resolve(),
            Resolved {
                value: true,
                source: Scope::Org
            }
        );
    }

    #[test]
    fn unknown_setting_names_are_rejected() {
        assert!(parse_setting_name("mandate_custom_webhook_authorization").is_ok());
        assert!(parse_setting_name("nope").is_err());
    }
}

//! The custom webhook trigger of DESIGN §4, parsed and validated when it is saved.
//!
//! Harness exports carry many keys triggerd does not use, so unknown keys around the trigger are
//! tolerated; inside a condition and inside triggerd's own extensions (`rateLimit`, `signature`)
//! a typo would silently change what the trigger accepts, so unknown keys there are errors. The
//! signature secret never leaves through [`TriggerSpec::to_json`] or [`TriggerSpec::to_yaml`] (what
//! API responses show); only [`TriggerSpec::to_storage_json`] keeps it, for the database.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::Serialize;
use serde_json::{Map, Value};

use super::ids::{truncate_for_message, Identifier};
use super::matching::CompiledConditions;
use super::pipeline::{
    as_map, is_header_name, kind_of, opt_bool, opt_list, opt_scalar, opt_string, opt_string_map,
    reject_keys, reject_unknown_keys, required_identifier, required_name, scalar_text,
};
use super::runtime_input::InputTemplate;
use super::{BodyFormat, DomainError};

/// Longest `jexlCondition`, in bytes (DESIGN §5).
pub const MAX_JEXL_BYTES: usize = 4096;
/// Most conditions in each of `payloadConditions` and `headerConditions` (each webhook
/// evaluates and stores every one).
pub const MAX_CONDITIONS: usize = 64;
/// Shortest signature secret, in characters.
pub const MIN_SECRET_CHARS: usize = 16;
/// What API responses show in place of the signature secret.
pub const REDACTED_SECRET: &str = "********";

/// A validated custom webhook trigger (DESIGN §4).
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerSpec {
    /// Display name: required, at most 256 characters.
    pub name: String,
    /// The trigger identifier.
    pub identifier: Identifier,
    /// A disabled trigger rejects webhooks; defaults to true.
    pub enabled: bool,
    /// Free text, `""` when absent.
    pub description: String,
    /// Harness tags, kept as given.
    pub tags: BTreeMap<String, String>,
    /// `orgIdentifier` as written, unvalidated, for the caller to compare with the URL.
    pub org_identifier: Option<String>,
    /// `projectIdentifier` as written, unvalidated, for the caller to compare with the URL.
    pub project_identifier: Option<String>,
    /// `pipelineIdentifier` as written, unvalidated, for the caller to compare with the URL.
    pub pipeline_identifier: Option<String>,
    /// Conditions on the payload, evaluated first.
    pub payload_conditions: Vec<Condition>,
    /// Conditions on request headers, evaluated second.
    pub header_conditions: Vec<Condition>,
    /// A JEXL expression evaluated last; `None` when absent or blank. Syntax is checked by the
    /// expression module, the length ([`MAX_JEXL_BYTES`]) here.
    pub jexl_condition: Option<String>,
    /// The runtime input YAML (`pipeline:` at the top), expressions unresolved.
    pub input_yaml: Option<String>,
    /// triggerd extension: token-bucket limit on accepted webhooks.
    pub rate_limit: Option<RateLimit>,
    /// triggerd extension: an HMAC signature the sender must add.
    pub signature: Option<SignatureSpec>,
    /// triggerd extension: source addresses allowed to call (empty: any), as written; each is an
    /// IPv4/IPv6 CIDR or a bare address.
    pub allowed_source_cidrs: Vec<String>,
}

/// One payload or header condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// An expression such as `<+trigger.payload.ref>`; never blank.
    pub key: String,
    /// How `key` is compared with `value`.
    pub operator: Operator,
    /// The operand, as text (a YAML number or boolean is kept as its text); may be `""`.
    pub value: String,
}

/// A condition operator, with the Harness names and semantics of DESIGN §4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `Equals`.
    Equals,
    /// `NotEquals`.
    NotEquals,
    /// `In`: comma-separated items, each a literal or a regex.
    In,
    /// `NotIn`.
    NotIn,
    /// `StartsWith`.
    StartsWith,
    /// `EndsWith`.
    EndsWith,
    /// `Contains`.
    Contains,
    /// `DoesNotContain`.
    DoesNotContain,
    /// `Regex`: the regex fully matches.
    Regex,
}

impl Operator {
    /// Every operator, in the order error messages list them.
    pub const ALL: [Operator; 9] = [
        Self::Equals,
        Self::NotEquals,
        Self::In,
        Self::NotIn,
        Self::StartsWith,
        Self::EndsWith,
        Self::Contains,
        Self::DoesNotContain,
        Self::Regex,
    ];

    /// The Harness name, e.g. `NotEquals`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Equals => "Equals",
            Self::NotEquals => "NotEquals",
            Self::In => "In",
            Self::NotIn => "NotIn",
            Self::StartsWith => "StartsWith",
            Self::EndsWith => "EndsWith",
            Self::Contains => "Contains",
            Self::DoesNotContain => "DoesNotContain",
            Self::Regex => "Regex",
        }
    }

    /// The operator with exactly this name (case-sensitive), if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == name)
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token bucket: `burst` webhooks at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Refill rate; finite and greater than 0.
    pub per_second: f64,
    /// Bucket size, at least 1; defaults to `per_second` rounded up.
    pub burst: u32,
}

/// The signature algorithms a trigger may require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    /// HMAC-SHA256 of the raw body, hex-encoded: `hmac-sha256`.
    HmacSha256,
}

impl SignatureAlgorithm {
    /// The name used in the YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HmacSha256 => "hmac-sha256",
        }
    }
}

/// The signature a sender must put in `header`: `prefix` followed by the MAC of the body.
///
/// `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SignatureSpec {
    /// The MAC algorithm.
    pub algorithm: SignatureAlgorithm,
    /// The request header carrying the signature, e.g. `X-Hub-Signature-256`.
    pub header: String,
    /// The shared secret, at least [`MIN_SECRET_CHARS`] characters.
    pub secret: String,
    /// Text before the hex MAC in the header, e.g. `sha256=`; `""` by default.
    pub prefix: String,
}

impl fmt::Debug for SignatureSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignatureSpec")
            .field("algorithm", &self.algorithm)
            .field("header", &self.header)
            .field("secret", &REDACTED_SECRET)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl TriggerSpec {
    /// The Harness shape `{"trigger": {...}}` with the extensions, the secret redacted: what API
    /// responses show.
    pub fn to_json(&self) -> Value {
        self.document(true)
    }

    /// The same document as [`TriggerSpec::to_json`], as YAML, the secret redacted.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(&TriggerDoc {
            trigger: TriggerOut::new(self, true),
        })
        .unwrap_or_default()
    }

    /// The same document WITH the signature secret, for the database only.
    pub fn to_storage_json(&self) -> Value {
        self.document(false)
    }

    /// A copy with `enabled` set.
    pub fn with_enabled(&self, enabled: bool) -> TriggerSpec {
        TriggerSpec {
            enabled,
            ..self.clone()
        }
    }

    /// Whether `allowed_source_cidrs` lets `ip` call the trigger (always, when the list is empty).
    /// IPv4-mapped IPv6 addresses match IPv4 ranges.
    pub fn allows_source(&self, ip: IpAddr) -> bool {
        self.allowed_source_cidrs.is_empty()
            || self.allowed_source_cidrs.iter().any(|text| {
                parse_cidr(text).is_ok_and(|(net, prefix)| {
                    cidr_contains(net, prefix, ip) || cidr_contains(net, prefix, ip.to_canonical())
                })
            })
    }

    fn document(&self, redact: bool) -> Value {
        // Cannot fail: every map key is a string.
        serde_json::to_value(TriggerDoc {
            trigger: TriggerOut::new(self, redact),
        })
        .unwrap_or(Value::Null)
    }
}

/// Parses and validates a trigger body (`trigger:` at the top), YAML or JSON.
pub fn parse_trigger(text: &str, format: BodyFormat) -> Result<TriggerSpec, DomainError> {
    TriggerSpec::from_value(&format.parse(text)?)
}

impl TriggerSpec {
    /// Validates an already-decoded trigger document completely, expressions included: what a
    /// PUT is checked with.
    pub fn from_value(root: &Value) -> Result<TriggerSpec, DomainError> {
        let spec = parse_trigger_value(root)?;
        // Checked when saved, not when read: a trigger stored before the limit keeps working.
        for (group, conditions) in [
            ("payloadConditions", &spec.payload_conditions),
            ("headerConditions", &spec.header_conditions),
        ] {
            if conditions.len() > MAX_CONDITIONS {
                return Err(DomainError::invalid(format!(
                    "{group} has {} conditions; at most {MAX_CONDITIONS} are allowed",
                    conditions.len()
                )));
            }
        }
        // Expressions, regexes and references are checked here so an invalid trigger is never
        // stored.
        CompiledConditions::compile(&spec)?;
        InputTemplate::compile(spec.input_yaml.as_deref())?;
        Ok(spec)
    }

    /// Reads a stored trigger ([`TriggerSpec::to_storage_json`]) without compiling its
    /// expressions, so a trigger saved by a release that checked less can still be shown,
    /// listed and fixed; intake compiles them and reports a failure on the event.
    pub fn from_stored(root: &Value) -> Result<TriggerSpec, DomainError> {
        parse_trigger_value(root)
    }
}

fn parse_trigger_value(root: &Value) -> Result<TriggerSpec, DomainError> {
    let Some(body) = root.as_object().and_then(|m| m.get("trigger")) else {
        return Err(DomainError::invalid(
            "The body must have a top-level 'trigger' key (trigger: {name, identifier, source})",
        ));
    };
    let map = as_map(body, "trigger")?;
    reject_keys(
        map,
        &[
            "name",
            "identifier",
            "enabled",
            "description",
            "tags",
            "orgIdentifier",
            "projectIdentifier",
            "pipelineIdentifier",
            "source",
            "inputYaml",
            "rateLimit",
            "signature",
            "allowedSourceCidrs",
            // Harness keys: accepted as Harness exports them, refused below when they would
            // ask for something triggerd does not do.
            "stagesToExecute",
            "inputSetRefs",
            "pipelineBranchName",
        ],
        &[(
            "encryptedWebhookSecretIdentifier",
            "verify senders with signature: {secret: ...}",
        )],
        "trigger",
    )?;
    for (key, why) in [
        ("stagesToExecute", "every stage of the pipeline runs"),
        ("inputSetRefs", "give runtime inputs in inputYaml"),
    ] {
        if !opt_list(map.get(key), &format!("trigger.{key}"))?.is_empty() {
            return Err(DomainError::invalid(format!(
                "trigger.{key} is not supported: {why} (an empty list is accepted)"
            )));
        }
    }
    let name = required_name(map, "name", "trigger.name")?;
    let identifier = required_identifier(map, "trigger.identifier")?;
    let conditions = parse_source(map.get("source"))?;
    let spec = TriggerSpec {
        name,
        identifier,
        enabled: opt_bool(map, "enabled", "trigger.enabled")?.unwrap_or(true),
        description: opt_string(map, "description", "trigger.description")?.unwrap_or_default(),
        tags: opt_string_map(map, "tags", "trigger.tags")?,
        org_identifier: opt_scalar(map, "orgIdentifier", "trigger.orgIdentifier")?,
        project_identifier: opt_scalar(map, "projectIdentifier", "trigger.projectIdentifier")?,
        pipeline_identifier: opt_scalar(map, "pipelineIdentifier", "trigger.pipelineIdentifier")?,
        payload_conditions: conditions.payload,
        header_conditions: conditions.header,
        jexl_condition: conditions.jexl,
        input_yaml: parse_input_yaml(map.get("inputYaml"))?,
        rate_limit: parse_rate_limit(map.get("rateLimit"))?,
        signature: parse_signature(map.get("signature"))?,
        allowed_source_cidrs: parse_cidrs(map.get("allowedSourceCidrs"))?,
    };
    Ok(spec)
}

struct Conditions {
    payload: Vec<Condition>,
    header: Vec<Condition>,
    jexl: Option<String>,
}

fn parse_source(source: Option<&Value>) -> Result<Conditions, DomainError> {
    const ONLY: &str = "only Webhook/Custom triggers are supported";
    let source = source.filter(|v| !v.is_null()).ok_or_else(|| {
        DomainError::invalid(format!(
            "trigger.source is required (type: Webhook, spec.type: Custom); {ONLY}"
        ))
    })?;
    let source = as_map(source, "trigger.source")?;
    reject_unknown_keys(source, &["type", "spec"], "trigger.source")?;
    let check_type =
        |map: &Map<String, Value>, what: &str, expected: &str| match opt_scalar(map, "type", what)?
        {
            Some(t) if t == expected => Ok(()),
            Some(t) => Err(DomainError::invalid(format!(
                "{what} '{}': {ONLY}",
                truncate_for_message(&t)
            ))),
            None => Err(DomainError::invalid(format!("{what} is missing: {ONLY}"))),
        };
    check_type(source, "trigger.source.type", "Webhook")?;
    let webhook = source.get("spec").filter(|v| !v.is_null()).ok_or_else(|| {
        DomainError::invalid(format!("trigger.source.spec.type is missing: {ONLY}"))
    })?;
    let webhook = as_map(webhook, "trigger.source.spec")?;
    reject_unknown_keys(webhook, &["type", "spec"], "trigger.source.spec")?;
    check_type(webhook, "trigger.source.spec.type", "Custom")?;
    let empty = Map::new();
    let custom = match webhook.get("spec") {
        None | Some(Value::Null) => &empty,
        Some(v) => as_map(v, "trigger.source.spec.spec")?,
    };
    reject_unknown_keys(
        custom,
        &["payloadConditions", "headerConditions", "jexlCondition"],
        "trigger.source.spec.spec",
    )?;
    let jexl = match opt_string(custom, "jexlCondition", "jexlCondition")? {
        Some(text) if text.len() > MAX_JEXL_BYTES => {
            return Err(DomainError::invalid(format!(
                "jexlCondition is {} bytes long; at most {MAX_JEXL_BYTES} are allowed",
                text.len()
            )))
        }
        Some(text) if !text.trim().is_empty() => Some(text),
        _ => None,
    };
    Ok(Conditions {
        payload: parse_conditions(custom.get("payloadConditions"), "payloadConditions")?,
        header: parse_conditions(custom.get("headerConditions"), "headerConditions")?,
        jexl,
    })
}

fn parse_conditions(value: Option<&Value>, group: &str) -> Result<Vec<Condition>, DomainError> {
    opt_list(value, group)?
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let what = format!("{group}[{i}]");
            let map = as_map(item, &what)?;
            reject_unknown_keys(map, &["key", "operator", "value"], &what)?;
            let key = opt_string(map, "key", &format!("{what}: key"))?
                .filter(|k| !k.trim().is_empty())
                .ok_or_else(|| {
                    DomainError::invalid(format!("{what}: key is required and must not be blank"))
                })?;
            let operator_name = opt_string(map, "operator", &format!("{what}: operator"))?
                .ok_or_else(|| {
                    DomainError::invalid(format!(
                        "{what}: operator is required; expected one of {}",
                        operator_names()
                    ))
                })?;
            let operator = Operator::parse(&operator_name).ok_or_else(|| {
                DomainError::invalid(format!(
                    "{what}: unknown operator '{}'; expected one of {}",
                    truncate_for_message(&operator_name),
                    operator_names()
                ))
            })?;
            let value = match map.get("value") {
                None | Some(Value::Null) => String::new(),
                Some(v) => scalar_text(v).ok_or_else(|| {
                    DomainError::invalid(format!(
                        "{what}: value must be a string, number or boolean, got {}",
                        kind_of(v)
                    ))
                })?,
            };
            Ok(Condition {
                key,
                operator,
                value,
            })
        })
        .collect()
}

fn operator_names() -> String {
    Operator::ALL.map(Operator::as_str).join(", ")
}

/// `inputYaml` as text. A mapping is accepted too and written out as YAML; either way it must be
/// YAML with `pipeline:` at the top.
fn parse_input_yaml(value: Option<&Value>) -> Result<Option<String>, DomainError> {
    let text = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(v @ Value::Object(_)) => serde_yaml_ng::to_string(v).map_err(|e| {
            DomainError::invalid(format!("trigger.inputYaml cannot be written as YAML: {e}"))
        })?,
        Some(other) => {
            return Err(DomainError::invalid(format!(
                "trigger.inputYaml must be a string of YAML, got {}",
                kind_of(other)
            )))
        }
    };
    let parsed: Value = serde_yaml_ng::from_str(&text)
        .map_err(|e| DomainError::invalid(format!("trigger.inputYaml is not valid YAML: {e}")))?;
    if !parsed
        .as_object()
        .is_some_and(|m| m.contains_key("pipeline"))
    {
        return Err(DomainError::invalid(
            "trigger.inputYaml must be a mapping with a top-level 'pipeline' key",
        ));
    }
    Ok(Some(text))
}

fn parse_rate_limit(value: Option<&Value>) -> Result<Option<RateLimit>, DomainError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let map = as_map(value, "trigger.rateLimit")?;
    reject_unknown_keys(map, &["perSecond", "burst"], "trigger.rateLimit")?;
    let per_second = match map.get("perSecond") {
        None | Some(Value::Null) => {
            return Err(DomainError::invalid(
                "trigger.rateLimit.perSecond is required",
            ))
        }
        Some(v) => v
            .as_f64()
            .filter(|n| n.is_finite() && *n > 0.0)
            .ok_or_else(|| {
                DomainError::invalid(format!(
                    "trigger.rateLimit.perSecond must be a number greater than 0, got {}",
                    truncate_for_message(&v.to_string())
                ))
            })?,
    };
    let burst = match map.get("burst") {
        // `as` saturates, and per_second is finite and positive, so this is at least 1.
        None | Some(Value::Null) => (per_second.ceil() as u32).max(1),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                DomainError::invalid(format!(
                    "trigger.rateLimit.burst must be a whole number from 1 to {}, got {}",
                    u32::MAX,
                    truncate_for_message(&v.to_string())
                ))
            })?,
    };
    Ok(Some(RateLimit { per_second, burst }))
}

fn parse_signature(value: Option<&Value>) -> Result<Option<SignatureSpec>, DomainError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let map = as_map(value, "trigger.signature")?;
    reject_unknown_keys(
        map,
        &["type", "header", "secret", "prefix"],
        "trigger.signature",
    )?;
    let algorithm = match opt_string(map, "type", "trigger.signature.type")?.as_deref() {
        None | Some("hmac-sha256") => SignatureAlgorithm::HmacSha256,
        Some(other) => {
            return Err(DomainError::invalid(format!(
                "trigger.signature.type '{}' is not supported; expected hmac-sha256",
                truncate_for_message(other)
            )))
        }
    };
    let header = opt_string(map, "header", "trigger.signature.header")?
        .ok_or_else(|| DomainError::invalid("trigger.signature.header is required"))?;
    if !is_header_name(&header) {
        return Err(DomainError::invalid(format!(
            "trigger.signature.header '{}' is not a valid HTTP header name",
            truncate_for_message(&header)
        )));
    }
    let secret = opt_string(map, "secret", "trigger.signature.secret")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| DomainError::invalid("trigger.signature.secret is required"))?;
    if secret == REDACTED_SECRET {
        return Err(DomainError::invalid(format!(
            "trigger.signature.secret is the redacted placeholder '{REDACTED_SECRET}'; send the real secret"
        )));
    }
    let chars = secret.chars().count();
    if chars < MIN_SECRET_CHARS {
        return Err(DomainError::invalid(format!(
            "trigger.signature.secret is {chars} characters long; at least {MIN_SECRET_CHARS} are required"
        )));
    }
    let prefix = opt_string(map, "prefix", "trigger.signature.prefix")?.unwrap_or_default();
    if prefix.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            "trigger.signature.prefix must not contain control characters",
        ));
    }
    Ok(Some(SignatureSpec {
        algorithm,
        header,
        secret,
        prefix,
    }))
}

fn parse_cidrs(value: Option<&Value>) -> Result<Vec<String>, DomainError> {
    opt_list(value, "trigger.allowedSourceCidrs")?
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let what = format!("trigger.allowedSourceCidrs[{i}]");
            let Value::String(text) = item else {
                return Err(DomainError::invalid(format!(
                    "{what} must be a string like \"203.0.113.0/24\", got {}",
                    kind_of(item)
                )));
            };
            parse_cidr(text).map_err(|problem| {
                DomainError::invalid(format!("{what} '{}' {problem}", truncate_for_message(text)))
            })?;
            Ok(text.clone())
        })
        .collect()
}

/// Reads `203.0.113.0/24`, `::1/128` or a bare address (a single host) into network and prefix
/// length; the error completes "'<text>' ...".
fn parse_cidr(text: &str) -> Result<(IpAddr, u8), String> {
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (text, None),
    };
    let address: IpAddr = address.parse().map_err(|_| {
        "is not an IP address or CIDR (expected e.g. 203.0.113.0/24, 2001:db8::/32 or 198.51.100.7)"
            .to_owned()
    })?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => {
            let valid = !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit());
            let length = p.parse::<u8>().ok().filter(|_| valid).ok_or_else(|| {
                format!("has an invalid prefix length '{}'", truncate_for_message(p))
            })?;
            if length > max {
                return Err(format!(
                    "has prefix length {length}, more than the {max} bits of the address"
                ));
            }
            length
        }
    };
    Ok((address, prefix))
}

fn cidr_contains(network: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    match (network, ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(net) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(net) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Output in the Harness shape

#[derive(Serialize)]
struct TriggerDoc<'a> {
    trigger: TriggerOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TriggerOut<'a> {
    name: &'a str,
    identifier: &'a Identifier,
    enabled: bool,
    description: &'a str,
    tags: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    org_identifier: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    project_identifier: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pipeline_identifier: Option<&'a str>,
    source: SourceOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_yaml: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_limit: Option<RateLimitOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<SignatureOut<'a>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    allowed_source_cidrs: &'a [String],
}

impl<'a> TriggerOut<'a> {
    fn new(spec: &'a TriggerSpec, redact: bool) -> Self {
        let conditions = |list: &'a [Condition]| {
            list.iter()
                .map(|c| ConditionOut {
                    key: &c.key,
                    operator: c.operator.as_str(),
                    value: &c.value,
                })
                .collect()
        };
        Self {
            name: &spec.name,
            identifier: &spec.identifier,
            enabled: spec.enabled,
            description: &spec.description,
            tags: &spec.tags,
            org_identifier: spec.org_identifier.as_deref(),
            project_identifier: spec.project_identifier.as_deref(),
            pipeline_identifier: spec.pipeline_identifier.as_deref(),
            source: SourceOut {
                kind: "Webhook",
                spec: WebhookOut {
                    kind: "Custom",
                    spec: ConditionsOut {
                        payload_conditions: conditions(&spec.payload_conditions),
                        header_conditions: conditions(&spec.header_conditions),
                        jexl_condition: spec.jexl_condition.as_deref(),
                    },
                },
            },
            input_yaml: spec.input_yaml.as_deref(),
            rate_limit: spec.rate_limit.map(|r| RateLimitOut {
                per_second: r.per_second,
                burst: r.burst,
            }),
            signature: spec.signature.as_ref().map(|s| SignatureOut {
                kind: s.algorithm.as_str(),
                header: &s.header,
                secret: if redact { REDACTED_SECRET } else { &s.secret },
                prefix: &s.prefix,
            }),
            allowed_source_cidrs: &spec.allowed_source_cidrs,
        }
    }
}

#[derive(Serialize)]
struct SourceOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    spec: WebhookOut<'a>,
}

#[derive(Serialize)]
struct WebhookOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    spec: ConditionsOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConditionsOut<'a> {
    payload_conditions: Vec<ConditionOut<'a>>,
    header_conditions: Vec<ConditionOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jexl_condition: Option<&'a str>,
}

#[derive(Serialize)]
struct ConditionOut<'a> {
    key: &'a str,
    operator: &'static str,
    value: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RateLimitOut {
    per_second: f64,
    burst: u32,
}

#[derive(Serialize)]
struct SignatureOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    header: &'a str,
    secret: &'a str,
    prefix: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef-secret";

    /// The YAML of DESIGN §4 with a real secret.
    fn design_example() -> String {
        r#"
trigger:
  name: Custom
  identifier: Custom
  enabled: true
  description: ""
  tags: {}
  orgIdentifier: default
  projectIdentifier: CD_Docs
  pipelineIdentifier: Triggers
  source:
    type: Webhook
    spec:
      type: Custom
      spec:
        payloadConditions:
          - key: <+trigger.payload.ref>
            operator: Equals
            value: refs/heads/main
        headerConditions:
          - key: <+trigger.header['X-Event']>
            operator: In
            value: push, release
        jexlCondition: <+trigger.payload.repository.name>.startsWith("api") && <+trigger.payload.size> > 3
  inputYaml: |
    pipeline:
      identifier: Triggers
      variables:
        - name: image_tag
          type: String
          value: <+trigger.payload.tag>
  # triggerd extensions (all optional)
  rateLimit: {perSecond: 10, burst: 20}
  signature: {type: hmac-sha256, header: X-Hub-Signature-256, secret: "SECRET", prefix: "sha256="}
  allowedSourceCidrs: ["203.0.113.0/24"]
"#
        .replace("SECRET", SECRET)
    }

    fn yaml(text: &str) -> Result<TriggerSpec, DomainError> {
        parse_trigger(text, BodyFormat::Yaml)
    }

    fn error(text: &str) -> String {
        match yaml(text) {
            Ok(spec) => panic!("expected an error, got {spec:?}"),
            Err(DomainError::Invalid(message)) => message,
        }
    }

    /// A minimal trigger with `extra` added at trigger level and `conditions` under spec.spec.
    fn minimal(extra: &str, conditions: &str) -> String {
        format!(
            "trigger:\n  name: T\n  identifier: t\n  source:\n    type: Webhook\n    spec:\n      type: Custom\n      spec: {{{conditions}}}\n{extra}"
        )
    }

    #[test]
    fn the_design_example_parses() {
        let spec = yaml(&design_example()).unwrap();
        assert_eq!(spec.name, "Custom");
        assert_eq!(spec.identifier.as_str(), "Custom");
        assert!(spec.enabled);
        assert_eq!(spec.org_identifier.as_deref(), Some("default"));
        assert_eq!(spec.project_identifier.as_deref(), Some("CD_Docs"));
        assert_eq!(spec.pipeline_identifier.as_deref(), Some("Triggers"));
        assert_eq!(
            spec.payload_conditions,
            [Condition {
                key: "<+trigger.payload.ref>".to_owned(),
                operator: Operator::Equals,
                value: "refs/heads/main".to_owned(),
            }]
        );
        assert_eq!(spec.header_conditions[0].operator, Operator::In);
        assert_eq!(spec.header_conditions[0].value, "push, release");
        assert!(spec
            .jexl_condition
            .as_deref()
            .is_some_and(|j| j.ends_with("<+trigger.payload.size> > 3")));
        assert!(spec
            .input_yaml
            .as_deref()
            .is_some_and(|y| y.starts_with("pipeline:\n  identifier: Triggers")));
        assert_eq!(
            spec.rate_limit,
            Some(RateLimit {
                per_second: 10.0,
                burst: 20
            })
        );
        let signature = spec.signature.as_ref().unwrap();
        assert_eq!(signature.algorithm, SignatureAlgorithm::HmacSha256);
        assert_eq!(signature.header, "X-Hub-Signature-256");
        assert_eq!(signature.secret, SECRET);
        assert_eq!(signature.prefix, "sha256=");
        assert_eq!(spec.allowed_source_cidrs, ["203.0.113.0/24"]);
    }

    #[test]
    fn api_output_redacts_the_secret_and_storage_output_keeps_it() {
        let spec = yaml(&design_example()).unwrap();
        let shown = spec.to_json();
        assert_eq!(shown["trigger"]["signature"]["secret"], REDACTED_SECRET);
        assert!(!shown.to_string().contains(SECRET));
        assert!(!spec.to_yaml().contains(SECRET));
        assert!(spec.to_yaml().contains(REDACTED_SECRET));
        assert!(!format!("{spec:?}").contains(SECRET));
        assert_eq!(
            spec.to_storage_json()["trigger"]["signature"]["secret"],
            SECRET
        );
    }

    #[test]
    fn to_json_has_the_harness_shape() {
        let json = yaml(&design_example()).unwrap().to_json();
        let trigger = &json["trigger"];
        assert_eq!(trigger["source"]["type"], "Webhook");
        assert_eq!(trigger["source"]["spec"]["type"], "Custom");
        let conditions = &trigger["source"]["spec"]["spec"];
        assert_eq!(conditions["payloadConditions"][0]["operator"], "Equals");
        assert_eq!(conditions["headerConditions"][0]["value"], "push, release");
        assert!(conditions["jexlCondition"].is_string());
        assert_eq!(trigger["pipelineIdentifier"], "Triggers");
        assert_eq!(trigger["rateLimit"]["perSecond"], 10.0);
        assert_eq!(trigger["allowedSourceCidrs"][0], "203.0.113.0/24");
        assert!(trigger["inputYaml"].is_string());
    }

    #[test]
    fn storage_json_round_trips() {
        let spec = yaml(&design_example()).unwrap();
        let stored = spec.to_storage_json().to_string();
        assert_eq!(parse_trigger(&stored, BodyFormat::Json).unwrap(), spec);
        let bare = yaml(&minimal("", "")).unwrap();
        let stored = bare.to_storage_json().to_string();
        assert_eq!(parse_trigger(&stored, BodyFormat::Json).unwrap(), bare);
    }

    #[test]
    fn redacted_output_cannot_be_saved_back_with_the_placeholder() {
        let spec = yaml(&design_example()).unwrap();
        let message = error(&spec.to_yaml());
        assert!(message.contains("redacted placeholder"), "{message}");
        let without_signature = TriggerSpec {
            signature: None,
            ..spec
        };
        assert_eq!(
            yaml(&without_signature.to_yaml()).unwrap(),
            without_signature
        );
    }

    #[test]
    fn defaults_apply_to_a_minimal_trigger() {
        let spec = yaml(&minimal("", "")).unwrap();
        assert!(spec.enabled);
        assert_eq!(spec.description, "");
        assert!(spec.payload_conditions.is_empty() && spec.header_conditions.is_empty());
        assert_eq!(spec.jexl_condition, None);
        assert_eq!(spec.input_yaml, None);
        assert_eq!(spec.rate_limit, None);
        assert_eq!(spec.signature, None);
        assert!(spec.allowed_source_cidrs.is_empty());
        let without_inner_spec =
            "trigger: {name: T, identifier: t, source: {type: Webhook, spec: {type: Custom}}}";
        assert_eq!(yaml(without_inner_spec).unwrap(), spec);
    }

    #[test]
    fn with_enabled_changes_only_the_flag() {
        let spec = yaml(&design_example()).unwrap();
        let disabled = spec.with_enabled(false);
        assert!(!disabled.enabled);
        assert_eq!(disabled.with_enabled(true), spec);
        assert!(!yaml(&minimal("  enabled: false\n", "")).unwrap().enabled);
    }

    #[test]
    fn harness_keys_are_accepted_when_they_ask_for_nothing_and_refused_when_they_do() {
        let spec = yaml(&minimal(
            "  inputSetRefs: []\n  pipelineBranchName: main\n  stagesToExecute: []\n",
            "",
        ))
        .unwrap();
        assert_eq!(spec.identifier.as_str(), "t");
        let message = error(&minimal("  stagesToExecute: [build]\n", ""));
        assert!(
            message.contains("trigger.stagesToExecute is not supported: every stage"),
            "{message}"
        );
        let message = error(&minimal("  inputSetRefs: [a]\n", ""));
        assert!(
            message.contains("give runtime inputs in inputYaml"),
            "{message}"
        );
        let message = error(&minimal("  encryptedWebhookSecretIdentifier: s\n", ""));
        assert!(message.contains("signature: {secret"), "{message}");
    }

    #[test]
    fn a_misspelt_key_fails_closed_with_a_suggestion() {
        let message = error(
            "trigger: {name: T, identifier: t, source: {type: Webhook, spec: {type: Custom, spec: \
             {payloadConditons: [{key: k, operator: Equals, value: v}]}}}}",
        );
        assert!(
            message.starts_with(
                "trigger.source.spec.spec: unknown key 'payloadConditons'; did you mean 'payloadConditions'?"
            ),
            "{message}"
        );
        let message = error(&minimal("  enabeld: false\n", ""));
        assert!(message.contains("did you mean 'enabled'?"), "{message}");
    }

    #[test]
    fn only_webhook_custom_triggers_are_accepted() {
        let message = error(
            "trigger: {name: T, identifier: t, source: {type: Scheduled, spec: {type: Cron}}}",
        );
        assert_eq!(
            message,
            "trigger.source.type 'Scheduled': only Webhook/Custom triggers are supported"
        );
        let message = error(
            "trigger: {name: T, identifier: t, source: {type: Webhook, spec: {type: Github}}}",
        );
        assert_eq!(
            message,
            "trigger.source.spec.type 'Github': only Webhook/Custom triggers are supported"
        );
        for text in [
            "trigger: {name: T, identifier: t}",
            "trigger: {name: T, identifier: t, source: {spec: {type: Custom}}}",
            "trigger: {name: T, identifier: t, source: {type: Webhook}}",
        ] {
            assert!(
                error(text).contains("only Webhook/Custom triggers are supported"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_body_without_a_trigger_key_or_name_is_rejected() {
        assert!(error("pipeline: {}").contains("top-level 'trigger' key"));
        assert!(error("[]").contains("top-level 'trigger' key"));
        assert_eq!(
            error("trigger: 1"),
            "trigger must be a mapping, got a number"
        );
        assert_eq!(
            error("trigger: {identifier: t}"),
            "trigger.name is required"
        );
        assert_eq!(
            error("trigger: {name: T}"),
            "trigger.identifier is required"
        );
        assert!(error("trigger: {name: T, identifier: 't-1'}")
            .starts_with("trigger.identifier 't-1' is not a valid identifier"));
        let many = |n: usize| {
            let list = vec!["{key: k, operator: Equals, value: v}"; n].join(", ");
            format!("trigger:\n  name: t\n  identifier: t\n  source:\n    type: Webhook\n    spec:\n      type: Custom\n      spec:\n        payloadConditions: [{list}]\n")
        };
        parse_trigger(&many(MAX_CONDITIONS), BodyFormat::Yaml).expect("at the limit");
        let too_many = parse_trigger(&many(10_000), BodyFormat::Yaml)
            .unwrap_err()
            .to_string();
        assert!(
            too_many.contains("payloadConditions has 10000 conditions; at most 64"),
            "{too_many}"
        );
        let stored =
            serde_json::to_value(serde_yaml_ng::from_str::<Value>(&many(100)).unwrap()).unwrap();
        assert_eq!(
            TriggerSpec::from_stored(&stored)
                .unwrap()
                .payload_conditions
                .len(),
            100,
            "a trigger stored before the limit still loads"
        );
        assert!(parse_trigger("{", BodyFormat::Json)
            .unwrap_err()
            .to_string()
            .starts_with("Invalid JSON body"));
    }

    #[test]
    fn scalar_fields_with_the_wrong_kind_are_rejected() {
        assert!(error(&minimal("  enabled: 'yes'\n", ""))
            .contains("trigger.enabled must be true or false"));
        assert!(error(&minimal("  description: [1]\n", ""))
            .contains("trigger.description must be a string"));
        assert!(error(&minimal("  tags: [1]\n", "")).contains("trigger.tags must be a mapping"));
        assert!(error(&minimal("  pipelineIdentifier: {a: 1}\n", ""))
            .contains("trigger.pipelineIdentifier must be a string"));
    }

    #[test]
    fn an_unknown_operator_lists_the_valid_ones() {
        let message = error(&minimal(
            "",
            "payloadConditions: [{key: k, operator: Foo, value: v}]",
        ));
        assert_eq!(
            message,
            "payloadConditions[0]: unknown operator 'Foo'; expected one of Equals, NotEquals, In, NotIn, StartsWith, EndsWith, Contains, DoesNotContain, Regex"
        );
        let message = error(&minimal(
            "",
            "headerConditions: [{key: k, operator: equals}]",
        ));
        assert!(
            message.starts_with("headerConditions[0]: unknown operator 'equals'"),
            "{message}"
        );
        let message = error(&minimal("", "headerConditions: [{key: k}]"));
        assert!(
            message.starts_with("headerConditions[0]: operator is required"),
            "{message}"
        );
    }

    #[test]
    fn every_operator_parses_from_its_own_name() {
        for op in Operator::ALL {
            assert_eq!(Operator::parse(op.as_str()), Some(op));
            assert_eq!(op.to_string(), op.as_str());
        }
        assert_eq!(Operator::parse("regex"), None);
    }

    #[test]
    fn condition_values_are_kept_as_text() {
        let spec = yaml(&minimal(
            "",
            "payloadConditions: [{key: a, operator: Equals, value: 3}, {key: b, operator: Equals, value: true}, {key: c, operator: Equals}, {key: d, operator: Equals, value: 1.5}]",
        ))
        .unwrap();
        let values: Vec<&str> = spec
            .payload_conditions
            .iter()
            .map(|c| c.value.as_str())
            .collect();
        assert_eq!(values, ["3", "true", "", "1.5"]);
    }

    #[test]
    fn bad_conditions_are_rejected() {
        let cases = [
            (
                "payloadConditions: [{key: ' ', operator: Equals, value: v}]",
                "payloadConditions[0]: key is required and must not be blank",
            ),
            (
                "payloadConditions: [{operator: Equals, value: v}]",
                "payloadConditions[0]: key is required",
            ),
            (
                "payloadConditions: [{key: k, operator: Equals, vaule: v}]",
                "payloadConditions[0]: unknown key 'vaule'; did you mean 'value'? (expected one of key, operator, value)",
            ),
            (
                "payloadConditions: [{key: k, operator: Equals, value: [1]}]",
                "payloadConditions[0]: value must be a string, number or boolean, got a list",
            ),
            (
                "payloadConditions: [1]",
                "payloadConditions[0] must be a mapping, got a number",
            ),
            (
                "payloadConditions: {key: k}",
                "payloadConditions must be a list, got a mapping",
            ),
            (
                "headerConditions: [{key: k, operator: In, value: a}, {key: k, operator: [In]}]",
                "headerConditions[1]: operator must be a string, got a list",
            ),
        ];
        for (conditions, expected) in cases {
            let message = error(&minimal("", conditions));
            assert!(message.contains(expected), "{conditions}: {message}");
        }
    }

    #[test]
    fn jexl_conditions_are_bounded_and_blank_means_none() {
        let spec = yaml(&minimal("", "jexlCondition: '  '")).unwrap();
        assert_eq!(spec.jexl_condition, None);
        let fits = format!(
            "jexlCondition: '{}'",
            "1 == 1 && ".repeat(MAX_JEXL_BYTES / 10) + "true  "
        );
        assert_eq!(fits.len() - "jexlCondition: ''".len(), MAX_JEXL_BYTES);
        assert!(yaml(&minimal("", &fits)).is_ok());
        let too_long = format!("jexlCondition: '{}'", "a".repeat(MAX_JEXL_BYTES + 1));
        assert_eq!(
            error(&minimal("", &too_long)),
            "jexlCondition is 4097 bytes long; at most 4096 are allowed"
        );
        assert!(
            error(&minimal("", "jexlCondition: [1]")).contains("jexlCondition must be a string")
        );
    }

    #[test]
    fn input_yaml_must_be_yaml_with_a_pipeline_key() {
        let message = error(&minimal("  inputYaml: 'pipeline: ['\n", ""));
        assert!(
            message.starts_with("trigger.inputYaml is not valid YAML"),
            "{message}"
        );
        let message = error(&minimal("  inputYaml: 'identifier: x'\n", ""));
        assert_eq!(
            message,
            "trigger.inputYaml must be a mapping with a top-level 'pipeline' key"
        );
        let message = error(&minimal("  inputYaml: 3\n", ""));
        assert!(message.contains("must be a string of YAML"), "{message}");
        let spec = yaml(&minimal("  inputYaml: {pipeline: {identifier: p}}\n", "")).unwrap();
        let text = spec.input_yaml.clone().unwrap();
        assert!(text.contains("identifier: p"), "{text}");
        let stored = spec.to_storage_json().to_string();
        assert_eq!(parse_trigger(&stored, BodyFormat::Json).unwrap(), spec);
        assert_eq!(
            yaml(&minimal("  inputYaml: ''\n", "")).unwrap().input_yaml,
            None
        );
    }

    #[test]
    fn rate_limits_are_validated() {
        let spec = yaml(&minimal("  rateLimit: {perSecond: 0.5}\n", "")).unwrap();
        assert_eq!(
            spec.rate_limit,
            Some(RateLimit {
                per_second: 0.5,
                burst: 1
            })
        );
        let spec = yaml(&minimal("  rateLimit: {perSecond: 2.5}\n", "")).unwrap();
        assert_eq!(spec.rate_limit.map(|r| r.burst), Some(3));
        let cases = [
            (
                "{perSecond: 0, burst: 1}",
                "perSecond must be a number greater than 0, got 0",
            ),
            (
                "{perSecond: -1, burst: 1}",
                "perSecond must be a number greater than 0",
            ),
            (
                "{perSecond: '10', burst: 1}",
                "perSecond must be a number greater than 0",
            ),
            ("{burst: 1}", "trigger.rateLimit.perSecond is required"),
            (
                "{perSecond: 1, burst: 0}",
                "trigger.rateLimit.burst must be a whole number from 1",
            ),
            (
                "{perSecond: 1, burst: 1.5}",
                "trigger.rateLimit.burst must be a whole number from 1",
            ),
            (
                "{perSecond: 1, burst: 5000000000}",
                "trigger.rateLimit.burst must be a whole number from 1",
            ),
            (
                "{perSecond: 1, brust: 2}",
                "trigger.rateLimit: unknown key 'brust'; did you mean 'burst'? (expected one of perSecond, burst)",
            ),
            ("10", "trigger.rateLimit must be a mapping, got a number"),
        ];
        for (limit, expected) in cases {
            let message = error(&minimal(&format!("  rateLimit: {limit}\n"), ""));
            assert!(message.contains(expected), "{limit}: {message}");
        }
    }

    #[test]
    fn signatures_are_validated() {
        let spec = yaml(&minimal(
            &format!("  signature: {{header: X-Sig, secret: {SECRET}}}\n"),
            "",
        ))
        .unwrap();
        let signature = spec.signature.unwrap();
        assert_eq!(signature.prefix, "");
        assert_eq!(signature.algorithm, SignatureAlgorithm::HmacSha256);
        let cases = [
            (
                format!("{{type: hmac-sha1, header: X-Sig, secret: {SECRET}}}"),
                "trigger.signature.type 'hmac-sha1' is not supported; expected hmac-sha256"
                    .to_owned(),
            ),
            (
                format!("{{header: 'X Sig', secret: {SECRET}}}"),
                "trigger.signature.header 'X Sig' is not a valid HTTP header name".to_owned(),
            ),
            (
                format!("{{secret: {SECRET}}}"),
                "trigger.signature.header is required".to_owned(),
            ),
            (
                "{header: X-Sig}".to_owned(),
                "trigger.signature.secret is required".to_owned(),
            ),
            (
                "{header: X-Sig, secret: ''}".to_owned(),
                "trigger.signature.secret is required".to_owned(),
            ),
            (
                "{header: X-Sig, secret: short}".to_owned(),
                "trigger.signature.secret is 5 characters long; at least 16 are required"
                    .to_owned(),
            ),
            (
                format!("{{header: X-Sig, secret: {SECRET}, prefx: a}}"),
                "trigger.signature: unknown key 'prefx'".to_owned(),
            ),
            (
                format!("{{header: X-Sig, secret: {SECRET}, prefix: \"a\\n\"}}"),
                "prefix must not contain control characters".to_owned(),
            ),
        ];
        for (signature, expected) in cases {
            let message = error(&minimal(&format!("  signature: {signature}\n"), ""));
            assert!(message.contains(&expected), "{signature}: {message}");
        }
    }

    #[test]
    fn valid_cidrs_and_addresses_are_kept_as_written() {
        let spec = yaml(&minimal(
            "  allowedSourceCidrs: ['203.0.113.0/24', '::1/128', '198.51.100.7', '2001:db8::', '0.0.0.0/0', '10.1.2.3/8']\n",
            "",
        ))
        .unwrap();
        assert_eq!(spec.allowed_source_cidrs[3], "2001:db8::");
        assert_eq!(spec.allowed_source_cidrs.len(), 6);
    }

    #[test]
    fn invalid_cidrs_are_rejected() {
        let cases = [
            (
                "'203.0.113.0/33'",
                "'203.0.113.0/33' has prefix length 33, more than the 32 bits",
            ),
            ("'::1/129'", "has prefix length 129, more than the 128 bits"),
            ("'10.0.0.0/'", "has an invalid prefix length ''"),
            ("'10.0.0.0/+8'", "has an invalid prefix length '+8'"),
            ("'10.0.0.0/8/8'", "has an invalid prefix length '8/8'"),
            ("'10.0.0/8'", "is not an IP address or CIDR"),
            ("'example.com'", "is not an IP address or CIDR"),
            ("' 10.0.0.1'", "is not an IP address or CIDR"),
            ("'fe80::1%eth0'", "is not an IP address or CIDR"),
            ("'2001:db8::/0032'", "has an invalid prefix length '0032'"),
        ];
        for (cidr, expected) in cases {
            let message = error(&minimal(&format!("  allowedSourceCidrs: [{cidr}]\n"), ""));
            assert!(
                message.starts_with("trigger.allowedSourceCidrs[0] "),
                "{cidr}: {message}"
            );
            assert!(message.contains(expected), "{cidr}: {message}");
        }
        let message = error(&minimal("  allowedSourceCidrs: [10]\n", ""));
        assert!(message.contains("must be a string like"), "{message}");
        let message = error(&minimal("  allowedSourceCidrs: '10.0.0.0/8'\n", ""));
        assert!(message.contains("must be a list"), "{message}");
    }

    #[test]
    fn allows_source_matches_addresses_against_the_cidrs() {
        let spec = yaml(&minimal(
            "  allowedSourceCidrs: ['203.0.113.0/24', '2001:db8::/32', '198.51.100.7']\n",
            "",
        ))
        .unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(spec.allows_source(ip("203.0.113.200")));
        assert!(spec.allows_source(ip("::ffff:203.0.113.9")));
        assert!(spec.allows_source(ip("2001:db8:1::5")));
        assert!(spec.allows_source(ip("198.51.100.7")));
        assert!(!spec.allows_source(ip("198.51.100.8")));
        assert!(!spec.allows_source(ip("203.0.114.1")));
        assert!(!spec.allows_source(ip("2001:db9::1")));
        let open = yaml(&minimal("", "")).unwrap();
        assert!(open.allows_source(ip("192.0.2.1")));
        let everyone = yaml(&minimal("  allowedSourceCidrs: ['0.0.0.0/0']\n", "")).unwrap();
        assert!(everyone.allows_source(ip("192.0.2.1")));
        assert!(!everyone.allows_source(ip("2001:db8::1")));
    }
}

//! First-start set-up: the root key, and the demo seeded by `serve --demo`.

use anyhow::{bail, Context as _};

use crate::auth::keys::KeyVerifier;
use crate::domain::ids::{AccountId, ApiKey, Identifier, ProjectRef};
use crate::domain::BodyFormat;
use crate::service::manage::TriggerView;
use crate::service::Gateway;
use crate::store::{now_millis, ApiKeyRecord, Change, Role, Store};

/// The name a root key gets when `TRIGGERD_ROOT_KEY` supplied it.
const CONFIGURED_ROOT_NAME: &str = "root (TRIGGERD_ROOT_KEY)";

/// The root key's life cycle on a store: created once, supplied by `TRIGGERD_ROOT_KEY`, or
/// replaced by `triggerd admin reset-root-key`. There is at most one unrevoked root key.
///
/// `TRIGGERD_ROOT_KEY` on a database that has a different root key is refused, never added as
/// a second key. Unsetting it does not revoke the key it installed (nodes that still have it
/// would lose access): a warning says so at every start until `admin reset-root-key` replaces
/// it.
pub struct RootKeys<'a> {
    /// The store.
    pub store: &'a dyn Store,
    /// Hashes and verifies keys.
    pub verifier: &'a KeyVerifier,
}

impl RootKeys<'_> {
    /// Makes sure a root key exists. With `supplied` (from `TRIGGERD_ROOT_KEY`) that key is
    /// registered if new and checked if known; it is never printed. Otherwise, on an empty
    /// database, a key is generated and returned so the caller can print it once.
    pub async fn ensure(&self, supplied: Option<&str>) -> anyhow::Result<Option<ApiKey>> {
        if let Some(text) = supplied {
            let key = parse_root(text)?;
            let existing = self.store.get_api_key(key.key_id()).await?;
            if existing.is_none() && self.register(&key, CONFIGURED_ROOT_NAME).await? {
                return Ok(None);
            }
            // Stored before, or by another node starting at the same time: it must match.
            match self.store.get_api_key(key.key_id()).await? {
                Some(record) if record.revoked_at.is_none() => {}
                Some(_) => bail!(
                    "TRIGGERD_ROOT_KEY was revoked by `triggerd admin reset-root-key`; unset it or supply the current root key"
                ),
                None => bail!(
                    "TRIGGERD_ROOT_KEY is not this database's root key (another root key exists); \
                     unset it, supply that key, or make it the root key with `triggerd admin reset-root-key`"
                ),
            }
            self.verifier
                .verify(self.store, text, &AccountId::root())
                .await
                .ok()
                .context(
                    "TRIGGERD_ROOT_KEY does not match the stored root key with the same keyId",
                )?;
            return Ok(None);
        }
        let roots = self.unrevoked_roots().await?;
        if !roots.is_empty() {
            if roots.iter().any(|r| r.name == CONFIGURED_ROOT_NAME) {
                tracing::warn!(
                    "the root key was installed from TRIGGERD_ROOT_KEY, which is no longer set; \
                     it still works. Replace it with `triggerd admin reset-root-key`"
                );
            }
            return Ok(None);
        }
        let key = ApiKey::generate(&AccountId::root());
        // Another node starting on the same empty database may store its own first; then that
        // one prints it and this one prints nothing.
        Ok(self.register(&key, "root").await?.then_some(key))
    }

    /// Revokes every root key and installs a new one: `supplied` (nothing to print) or a
    /// generated key (returned, to be printed once). Also says how many keys it revoked.
    pub async fn reset(&self, supplied: Option<&str>) -> anyhow::Result<(Option<ApiKey>, usize)> {
        let (key, name, generated) = match supplied {
            Some(text) => (parse_root(text)?, CONFIGURED_ROOT_NAME, false),
            None => (ApiKey::generate(&AccountId::root()), "root", true),
        };
        // Installing a key that is already stored: it must be the live one, and it stays.
        let keep = match self.store.get_api_key(key.key_id()).await? {
            None => false,
            Some(record) if record.revoked_at.is_some() => bail!(
                "TRIGGERD_ROOT_KEY was revoked before; a revoked key cannot become the root key again. Supply a new one, or unset it to get a generated key"
            ),
            Some(_) => {
                let text = supplied.unwrap_or_default();
                self.verifier
                    .verify(self.store, text, &AccountId::root())
                    .await
                    .ok()
                    .context("TRIGGERD_ROOT_KEY does not match the stored root key with the same keyId")?;
                true
            }
        };
        let roots = self.unrevoked_roots().await?;
        let mut revoked = 0;
        for record in roots.iter().filter(|r| &r.key_id != key.key_id()) {
            if self
                .store
                .revoke_api_key(&AccountId::root(), &record.key_id)
                .await?
            {
                revoked += 1;
                self.store
                    .announce(&Change::KeyRevoked {
                        key_id: record.key_id.to_string(),
                    })
                    .await?;
            }
        }
        if !keep && !self.register(&key, name).await? {
            bail!(
                "another root key was created while this one was being reset; run the reset again"
            );
        }
        Ok((generated.then_some(key), revoked))
    }

    async fn unrevoked_roots(&self) -> anyhow::Result<Vec<ApiKeyRecord>> {
        Ok(self
            .store
            .list_api_keys(&AccountId::root())
            .await?
            .into_iter()
            .filter(|k| k.revoked_at.is_none())
            .collect())
    }

    /// Stores `key` as the root key; false when a root key (or this key id) exists already.
    async fn register(&self, key: &ApiKey, name: &str) -> anyhow::Result<bool> {
        let record = ApiKeyRecord {
            key_id: key.key_id().clone(),
            account: AccountId::root(),
            name: name.into(),
            role: Role::Admin,
            projects: None,
            hash: self.verifier.hash(key).await?,
            created_at: now_millis(),
            expires_at: None,
            revoked_at: None,
        };
        Ok(self.store.insert_api_key(record).await?)
    }
}

fn parse_root(text: &str) -> anyhow::Result<ApiKey> {
    ApiKey::parse(text)
        .filter(|k| k.account().is_root())
        .context(
        "TRIGGERD_ROOT_KEY must look like pat._root.<24 hex keyId>.<secret of 16-128 base62 chars>",
    )
}

/// The demo pipeline (also in `examples/pipelines/hello.yaml`).
const DEMO_PIPELINE: &str = include_str!("../examples/pipelines/hello.yaml");
/// The demo trigger (also in `examples/triggers/hello.yaml`).
const DEMO_TRIGGER: &str = include_str!("../examples/triggers/hello.yaml");

/// The resource in an `apply` document (`kind`, `account`, `org`, `project` and `key: {...}`),
/// as the REST API takes it: `{"key": {...}}` in JSON.
fn document_body(doc: &str, key: &str) -> anyhow::Result<String> {
    let value: serde_json::Value =
        serde_yaml_ng::from_str(doc).context("an example document is not valid YAML")?;
    let body = value
        .get(key)
        .with_context(|| format!("an example document has no `{key}:`"))?;
    Ok(serde_json::json!({ key: body }).to_string())
}

/// The demo pipeline and trigger as the REST API takes them (`{"pipeline": {...}}` and
/// `{"trigger": {...}}`): the API document's examples.
pub fn demo_bodies() -> anyhow::Result<(serde_json::Value, serde_json::Value)> {
    let parse = |doc: &str, key: &str| -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_str(&document_body(doc, key)?)?)
    };
    Ok((
        parse(DEMO_PIPELINE, "pipeline")?,
        parse(DEMO_TRIGGER, "trigger")?,
    ))
}

/// Where the demo event rule sends: the default address of `examples/receiver`.
pub const DEMO_RECEIVER_URL: &str = "http://127.0.0.1:8787/events";

/// What the demo seeded.
pub struct Demo {
    /// The demo project.
    pub project: ProjectRef,
    /// The demo trigger.
    pub trigger: TriggerView,
    /// The demo event rule's signing secret (rotated at every demo start, so it can be shown).
    pub signing_secret: String,
}

/// Seeds account `demo`, org `default`, project `demo`, pipeline `hello`, trigger
/// `hello_trigger` and event rule `demo_events` (every event to [`DEMO_RECEIVER_URL`]).
/// Idempotent: a second run keeps the trigger's token; the rule's secret is rotated so that it
/// can be printed again.
pub async fn seed_demo(gw: &Gateway) -> anyhow::Result<Demo> {
    let id = |s: &str| Identifier::parse(s, "demo identifier").map_err(anyhow::Error::from);
    let project = ProjectRef {
        account: AccountId::parse("demo")?,
        org: id("default")?,
        project: id("demo")?,
    };
    gw.store.put_account(&project.account, "Demo").await?;
    gw.store.put_project(&project, "Demo project").await?;
    let pipeline = id("hello")?;
    let pipeline_body = document_body(DEMO_PIPELINE, "pipeline")?;
    gw.put_pipeline(&project, &pipeline, &pipeline_body, BodyFormat::Json, false)
        .await
        .map_err(|e| anyhow::anyhow!("seeding the demo pipeline: {e}"))?;
    let trigger = id("hello_trigger")?;
    let (view, _) = gw
        .put_trigger(
            &project,
            &pipeline,
            &trigger,
            &document_body(DEMO_TRIGGER, "trigger")?,
            BodyFormat::Json,
            false,
        )
        .await
        .map_err(|e| anyhow::anyhow!("seeding the demo trigger: {e}"))?;
    if !view.enabled {
        bail!("the demo trigger is disabled");
    }
    let rule = id("demo_events")?;
    let signing_secret = match gw.store.get_event_rule(&project, &rule).await? {
        Some(_) => gw.rotate_event_rule_secret(&project, &rule).await,
        None => {
            let body = serde_json::json!({
                "name": "Demo events",
                "sendEverything": true,
                "url": DEMO_RECEIVER_URL,
            });
            gw.put_event_rule(&project, &rule, &body.to_string(), BodyFormat::Json, false)
                .await
                .map(|(view, _)| view)
        }
    }
    .map_err(|e| anyhow::anyhow!("seeding the demo event rule: {e}"))?
    .signing_secret
    .context("the demo event rule has no signing secret")?;
    Ok(Demo {
        project,
        trigger: view,
        signing_secret,
    })
}

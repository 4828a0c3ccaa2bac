//! Management use cases (DESIGN §3): tenancy, API keys, settings, pipelines and triggers. Each
//! write drops the hot-cache entries it makes stale.

use serde::Serialize;

use super::{links, Gateway};
use crate::auth::Principal;
use crate::domain::ids::{AccountId, ApiKey, Identifier, KeyId, ProjectRef, WebhookToken};
use crate::domain::pipeline::{parse_pipeline, PipelineSpec};
use crate::domain::runtime_input::InputTemplate;
use crate::domain::settings::{Resolved, ScopedValue};
use crate::domain::trigger::{TriggerSpec, REDACTED_SECRET};
use crate::domain::{BodyFormat, DomainError};
use crate::error::Error;
use crate::store::{
    now_millis, Account, ApiKeyRecord, Millis, Page, PipelineRecord, Role, Scope, SettingScope,
    TriggerRecord,
};
use crate::store::{Change, StoreError};

/// A new API key and its one-time secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedKey {
    /// The key id.
    pub identifier: String,
    /// The whole key; shown only here.
    pub key: String,
    /// Its description.
    #[serde(flatten)]
    pub info: KeyInfo,
}

/// An API key without its secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    /// The key id.
    pub identifier: String,
    /// Its label.
    pub name: String,
    /// `admin` or `executor`.
    pub role: Role,
    /// `org/project` pairs it is limited to, if any.
    pub projects: Option<Vec<String>>,
    /// Creation time.
    pub created_at: Millis,
    /// Expiry, if any.
    pub expires_at: Option<Millis>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<Millis>,
}

impl From<&ApiKeyRecord> for KeyInfo {
    fn from(r: &ApiKeyRecord) -> Self {
        Self {
            identifier: r.key_id.to_string(),
            name: r.name.clone(),
            role: r.role,
            projects: r.projects.clone(),
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// What a caller asks for when creating a key.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewKey {
    /// A label.
    #[schema(min_length = 1, max_length = 256, pattern = r"\S")]
    pub name: String,
    /// `admin` or `executor`.
    pub role: Role,
    /// Expiry: epoch milliseconds or an RFC 3339 time.
    #[schema(value_type = Option<String>, format = DateTime, example = "2027-01-01T00:00:00Z")]
    pub expires_at: Option<serde_json::Value>,
    /// `org/project` pairs to limit an executor key to.
    pub projects: Option<Vec<String>>,
}

fn parse_expiry(v: &serde_json::Value) -> Result<Millis, Error> {
    let millis = match v {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis()),
        _ => None,
    }
    .ok_or_else(|| {
        Error::InvalidRequest("expiresAt must be epoch milliseconds or an RFC 3339 time".into())
    })?;
    if millis <= now_millis() {
        return Err(Error::InvalidRequest(
            "expiresAt must be in the future".into(),
        ));
    }
    Ok(millis)
}

fn parse_project_list(list: &[String]) -> Result<Vec<String>, Error> {
    list.iter()
        .map(|p| {
            let (org, proj) = p.split_once('/').ok_or_else(|| {
                Error::InvalidRequest(format!("projects entry '{p}' must be 'org/project'"))
            })?;
            Identifier::parse(org, "projects org")?;
            Identifier::parse(proj, "projects project")?;
            Ok(p.clone())
        })
        .collect()
}

/// A setting as the API reports it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SettingView {
    /// The setting's name.
    pub name: String,
    /// The effective value at the requested scope.
    pub value: bool,
    /// Where the effective value comes from.
    pub source: crate::domain::settings::Scope,
    /// The value set at exactly this scope, if any.
    pub set_here: Option<SetHere>,
}

/// A value stored at one scope.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetHere {
    /// The value.
    pub value: bool,
    /// Whether narrower scopes may override it.
    pub allow_overrides: bool,
}

/// A stored pipeline as the API reports it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineView {
    /// Its identifier.
    pub identifier: String,
    /// Its name.
    pub name: String,
    /// Account.
    pub account_identifier: String,
    /// Org.
    pub org_identifier: String,
    /// Project.
    pub project_identifier: String,
    /// The canonical definition, `{"pipeline":{...}}`.
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    /// The same as YAML.
    pub yaml: String,
    /// Creation time.
    pub created_at: Millis,
    /// Last update time.
    pub updated_at: Millis,
}

impl From<&PipelineRecord> for PipelineView {
    fn from(p: &PipelineRecord) -> Self {
        Self {
            identifier: p.identifier.to_string(),
            name: p.name.clone(),
            account_identifier: p.scope.account.to_string(),
            org_identifier: p.scope.org.to_string(),
            project_identifier: p.scope.project.to_string(),
            yaml: serde_yaml_ng::to_string(&p.spec).unwrap_or_default(),
            spec: p.spec.clone(),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// A stored trigger as the API reports it: secrets redacted, links added.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerView {
    /// Its identifier.
    pub identifier: String,
    /// Its name.
    pub name: String,
    /// Account.
    pub account_identifier: String,
    /// Org.
    pub org_identifier: String,
    /// Project.
    pub project_identifier: String,
    /// The pipeline it fires.
    pub pipeline_identifier: String,
    /// Whether it accepts events.
    pub enabled: bool,
    /// The immutable webhook token.
    pub custom_webhook_token: String,
    /// The v3 URL to POST to.
    pub webhook_url: String,
    /// A ready cURL command.
    pub curl: String,
    /// The canonical definition, `{"trigger":{...}}`, secrets redacted.
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    /// The same as YAML.
    pub yaml: String,
    /// Creation time.
    pub created_at: Millis,
    /// Last update time.
    pub updated_at: Millis,
}

fn check_same(given: Option<&str>, url: &str, what: &str) -> Result<(), Error> {
    match given {
        Some(v) if v != url => Err(Error::InvalidRequest(format!(
            "{what} '{v}' in the body does not match '{url}' in the URL"
        ))),
        _ => Ok(()),
    }
}

fn spec_of(record: &TriggerRecord) -> Result<TriggerSpec, Error> {
    TriggerSpec::from_stored(&record.spec).map_err(|e: DomainError| {
        Error::Unexpected(crate::store::StoreError::db("reading a stored trigger", e))
    })
}

/// The projects a key is limited to, as `(org, project)` pairs; `None` when it sees every
/// project of its account (the root key, an admin key, an executor key without a list), the
/// same rule as [`Principal::can_execute`].
fn limited_projects(principal: &Principal) -> Option<Vec<(&str, &str)>> {
    if principal.is_root() || principal.role == Role::Admin {
        return None;
    }
    principal
        .projects
        .as_ref()
        .map(|list| list.iter().filter_map(|p| p.split_once('/')).collect())
}

/// 403 unless `principal` sees `org` of its account: every org, or one that holds a project
/// its key is limited to.
fn check_sees_org(
    principal: &Principal,
    account: &AccountId,
    org: &Identifier,
) -> Result<(), Error> {
    let sees = limited_projects(principal)
        .is_none_or(|pairs| pairs.iter().any(|(o, _)| *o == org.as_str()));
    if sees {
        Ok(())
    } else {
        Err(Error::AccessDenied(format!(
            "Missing permission to read org {account}/{org}: this API key is limited to other projects"
        )))
    }
}

impl Gateway {
    /// Every account, by identifier (the root key's view).
    pub async fn list_accounts(
        &self,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<Account>, Error> {
        Ok(self.store.list_accounts(cursor, limit).await?)
    }

    /// An account, for a key of it (or root).
    pub async fn get_account(&self, account: &AccountId) -> Result<Account, Error> {
        self.store
            .get_account(account)
            .await?
            .ok_or_else(|| Error::NotFound(format!("Account {account} does not exist")))
    }

    /// The orgs of `account` that `principal` sees, by identifier: all of them, or for a key
    /// limited to some projects, the orgs those projects are in.
    pub async fn list_orgs(
        &self,
        principal: &Principal,
        account: &AccountId,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<Scope>, Error> {
        self.get_account(account).await?;
        let only = limited_projects(principal).map(|pairs| {
            let mut orgs: Vec<String> = pairs.iter().map(|(o, _)| (*o).to_owned()).collect();
            orgs.sort();
            orgs.dedup();
            orgs
        });
        Ok(self
            .store
            .list_orgs(account, only.as_deref(), cursor, limit)
            .await?)
    }

    /// An org, when `principal` sees it (403 otherwise).
    pub async fn get_org(
        &self,
        principal: &Principal,
        account: &AccountId,
        org: &Identifier,
    ) -> Result<Scope, Error> {
        check_sees_org(principal, account, org)?;
        self.store
            .get_org(account, org)
            .await?
            .ok_or_else(|| Error::NotFound(format!("Org {account}/{org} does not exist")))
    }

    /// The projects of an org that `principal` sees, by identifier: all of them, or for a key
    /// limited to some projects, those.
    pub async fn list_projects(
        &self,
        principal: &Principal,
        account: &AccountId,
        org: &Identifier,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<Scope>, Error> {
        self.get_org(principal, account, org).await?;
        let only = limited_projects(principal).map(|pairs| {
            pairs
                .iter()
                .filter(|(o, _)| *o == org.as_str())
                .map(|(_, p)| (*p).to_owned())
                .collect::<Vec<_>>()
        });
        Ok(self
            .store
            .list_projects(account, org, only.as_deref(), cursor, limit)
            .await?)
    }

    /// The resolved mandate for a project.
    pub async fn mandate_for(&self, project: &ProjectRef) -> Result<Resolved, Error> {
        Ok(self.cache.mandate(self.store.as_ref(), project).await?)
    }

    /// Creates a key for `account` and returns its one-time secret.
    pub async fn create_api_key(
        &self,
        account: &AccountId,
        req: NewKey,
    ) -> Result<CreatedKey, Error> {
        if self.store.get_account(account).await?.is_none() {
            return Err(Error::NotFound(format!("Account {account} does not exist")));
        }
        if req.name.trim().is_empty() || req.name.len() > 256 {
            return Err(Error::InvalidRequest(
                "name must be 1 to 256 characters".into(),
            ));
        }
        let key = ApiKey::generate(account);
        let record = ApiKeyRecord {
            key_id: key.key_id().clone(),
            account: account.clone(),
            name: req.name,
            role: req.role,
            projects: req
                .projects
                .as_deref()
                .map(parse_project_list)
                .transpose()?,
            hash: self.keys.hash(&key).await?,
            created_at: now_millis(),
            expires_at: req.expires_at.as_ref().map(parse_expiry).transpose()?,
            revoked_at: None,
        };
        let info = KeyInfo::from(&record);
        if !self.store.insert_api_key(record).await? {
            return Err(Error::Unexpected(StoreError::db(
                "storing an API key",
                std::io::Error::other("a freshly generated key id is taken"),
            )));
        }
        Ok(CreatedKey {
            identifier: info.identifier.clone(),
            key: key.expose_secret().to_owned(),
            info,
        })
    }

    /// Revokes a key; takes effect at once.
    pub async fn revoke_api_key(&self, account: &AccountId, key_id: &str) -> Result<(), Error> {
        let missing = || {
            Error::NotFound(format!(
                "API key {key_id} does not exist in account {account}"
            ))
        };
        let key_id = KeyId::parse(key_id).ok_or_else(missing)?;
        if !self.store.revoke_api_key(account, &key_id).await? {
            return Err(missing());
        }
        self.changed(Change::KeyRevoked {
            key_id: key_id.to_string(),
        })
        .await;
        Ok(())
    }

    /// Sets a setting at one scope; returns the view at that scope.
    pub async fn put_setting(
        &self,
        scope: &SettingScope,
        name: &'static str,
        value: ScopedValue,
    ) -> Result<SettingView, Error> {
        self.check_scope_exists(scope).await?;
        self.store.put_setting(scope, name, value).await?;
        self.changed(Change::Settings).await;
        self.get_setting(scope, name).await
    }

    /// Removes a setting at one scope.
    pub async fn delete_setting(
        &self,
        scope: &SettingScope,
        name: &'static str,
    ) -> Result<SettingView, Error> {
        self.check_scope_exists(scope).await?;
        self.store.delete_setting(scope, name).await?;
        self.changed(Change::Settings).await;
        self.get_setting(scope, name).await
    }

    /// The resolved value of a setting at a scope and where it comes from.
    pub async fn get_setting(
        &self,
        scope: &SettingScope,
        name: &'static str,
    ) -> Result<SettingView, Error> {
        let chain = self.store.setting_chain(scope, name).await?;
        let here = match (&scope.org, &scope.project) {
            (None, _) => chain.account,
            (Some(_), None) => chain.org,
            (Some(_), Some(_)) => chain.project,
        };
        let resolved = chain.resolve();
        Ok(SettingView {
            name: name.to_owned(),
            value: resolved.value,
            source: resolved.source,
            set_here: here.map(|v| SetHere {
                value: v.value,
                allow_overrides: v.allow_overrides,
            }),
        })
    }

    async fn check_scope_exists(&self, scope: &SettingScope) -> Result<(), Error> {
        let exists = match (&scope.org, &scope.project) {
            (None, _) => self.store.get_account(&scope.account).await?.is_some(),
            (Some(org), None) => self.store.get_org(&scope.account, org).await?.is_some(),
            (Some(org), Some(project)) => self
                .store
                .get_project(&ProjectRef {
                    account: scope.account.clone(),
                    org: org.clone(),
                    project: project.clone(),
                })
                .await?
                .is_some(),
        };
        if exists {
            Ok(())
        } else {
            Err(Error::NotFound(
                "The scope of this setting does not exist".into(),
            ))
        }
    }

    /// Deletes an org and everything configured under it.
    pub async fn delete_org(&self, account: &AccountId, org: &Identifier) -> Result<bool, Error> {
        let deleted = self.store.delete_org(account, org).await?;
        self.changed(Change::Triggers).await;
        self.changed(Change::Settings).await;
        Ok(deleted)
    }

    /// Deletes a project and everything configured under it.
    pub async fn delete_project(&self, project: &ProjectRef) -> Result<bool, Error> {
        let deleted = self.store.delete_project(project).await?;
        self.changed(Change::Triggers).await;
        self.changed(Change::Settings).await;
        Ok(deleted)
    }

    /// Validates and stores a pipeline given as JSON or YAML. Returns it and whether it was
    /// created.
    pub async fn put_pipeline(
        &self,
        project: &ProjectRef,
        id: &Identifier,
        text: &str,
        format: BodyFormat,
        dry_run: bool,
    ) -> Result<(PipelineView, bool), Error> {
        let spec = parse_pipeline(text, format)?;
        check_same(
            Some(spec.identifier.as_str()),
            id.as_str(),
            "pipeline identifier",
        )?;
        check_same(
            spec.org_identifier.as_deref(),
            project.org.as_str(),
            "orgIdentifier",
        )?;
        check_same(
            spec.project_identifier.as_deref(),
            project.project.as_str(),
            "projectIdentifier",
        )?;
        let now = now_millis();
        let record = PipelineRecord {
            scope: project.clone(),
            identifier: id.clone(),
            name: spec.name.clone(),
            spec: spec.to_json(),
            created_at: now,
            updated_at: now,
        };
        if dry_run {
            let created = self.store.get_pipeline(project, id).await?.is_none();
            return Ok((PipelineView::from(&record), created));
        }
        let created = self.store.put_pipeline(record).await?;
        self.changed(Change::Triggers).await;
        let stored =
            self.store.get_pipeline(project, id).await?.ok_or_else(|| {
                Error::NotFound(format!("Pipeline {id} does not exist in {project}"))
            })?;
        Ok((PipelineView::from(&stored), created))
    }

    /// 404 unless the project exists: a list under a project that does not exist is a typo to
    /// report, not an empty page.
    pub async fn existing_project(&self, project: &ProjectRef) -> Result<(), Error> {
        match self.store.get_project(project).await? {
            Some(_) => Ok(()),
            None => Err(Error::NotFound(format!("Project {project} does not exist"))),
        }
    }

    /// 404 unless the pipeline exists (so its project does too).
    pub async fn existing_pipeline(
        &self,
        project: &ProjectRef,
        pipeline: &Identifier,
    ) -> Result<(), Error> {
        match self.store.get_pipeline(project, pipeline).await? {
            Some(_) => Ok(()),
            None => Err(Error::NotFound(format!(
                "Pipeline {pipeline} does not exist in {project}"
            ))),
        }
    }

    /// Deletes a pipeline and its triggers.
    pub async fn delete_pipeline(
        &self,
        project: &ProjectRef,
        id: &Identifier,
    ) -> Result<bool, Error> {
        let deleted = self.store.delete_pipeline(project, id).await?;
        self.changed(Change::Triggers).await;
        Ok(deleted)
    }

    /// Validates and stores a trigger given as JSON or YAML. A new trigger gets a fresh token;
    /// an existing one keeps its token.
    pub async fn put_trigger(
        &self,
        project: &ProjectRef,
        pipeline: &Identifier,
        id: &Identifier,
        text: &str,
        format: BodyFormat,
        dry_run: bool,
    ) -> Result<(TriggerView, bool), Error> {
        let mut doc: serde_json::Value = format.parse(text)?;
        // A trigger read back from the API shows its signature secret as the placeholder; sent
        // back unchanged, it means "keep the stored secret".
        if let Some(slot) = doc
            .pointer_mut("/trigger/signature/secret")
            .filter(|s| s.as_str() == Some(REDACTED_SECRET))
        {
            let stored = self.store.get_trigger(project, pipeline, id).await?;
            if let Some(secret) = stored
                .as_ref()
                .and_then(|t| t.spec.pointer("/trigger/signature/secret"))
            {
                *slot = secret.clone();
            }
        }
        let spec = TriggerSpec::from_value(&doc)?;
        check_same(
            Some(spec.identifier.as_str()),
            id.as_str(),
            "trigger identifier",
        )?;
        check_same(
            spec.org_identifier.as_deref(),
            project.org.as_str(),
            "orgIdentifier",
        )?;
        check_same(
            spec.project_identifier.as_deref(),
            project.project.as_str(),
            "projectIdentifier",
        )?;
        check_same(
            spec.pipeline_identifier.as_deref(),
            pipeline.as_str(),
            "pipelineIdentifier",
        )?;
        let Some(stored_pipeline) = self.store.get_pipeline(project, pipeline).await? else {
            return Err(Error::NotFound(format!(
                "Pipeline {pipeline} does not exist in {project}"
            )));
        };
        let pipeline_spec = PipelineSpec::from_value(&stored_pipeline.spec)?;
        InputTemplate::compile(spec.input_yaml.as_deref())?
            .check_against(&pipeline_spec)
            .map_err(Error::InvalidRequest)?;
        let now = now_millis();
        let record = TriggerRecord {
            scope: project.clone(),
            pipeline: pipeline.clone(),
            identifier: id.clone(),
            name: spec.name.clone(),
            token: WebhookToken::generate().to_string(),
            enabled: spec.enabled,
            spec: spec.to_storage_json(),
            created_at: now,
            updated_at: now,
        };
        if dry_run {
            let existing = self.store.get_trigger(project, pipeline, id).await?;
            let created = existing.is_none();
            let record = TriggerRecord {
                token: existing.map_or(record.token, |t| t.token),
                ..record
            };
            return Ok((self.trigger_view(&record).await?, created));
        }
        let (stored, created) = self.store.put_trigger(record).await?;
        self.changed(Change::Triggers).await;
        self.rate_limits.forget(&stored.token);
        Ok((self.trigger_view(&stored).await?, created))
    }

    /// Enables or disables a trigger.
    pub async fn set_trigger_enabled(
        &self,
        project: &ProjectRef,
        pipeline: &Identifier,
        id: &Identifier,
        enabled: bool,
    ) -> Result<Option<TriggerView>, Error> {
        let Some(stored) = self
            .store
            .set_trigger_enabled(project, pipeline, id, enabled)
            .await?
        else {
            return Ok(None);
        };
        self.changed(Change::Triggers).await;
        Ok(Some(self.trigger_view(&stored).await?))
    }

    /// Deletes a trigger; its token stops working at once.
    pub async fn delete_trigger(
        &self,
        project: &ProjectRef,
        pipeline: &Identifier,
        id: &Identifier,
    ) -> Result<bool, Error> {
        let token = self.store.delete_trigger(project, pipeline, id).await?;
        if let Some(token) = &token {
            self.changed(Change::Triggers).await;
            self.rate_limits.forget(token);
        }
        Ok(token.is_some())
    }

    /// Reads a trigger as the API reports it.
    pub async fn get_trigger(
        &self,
        project: &ProjectRef,
        pipeline: &Identifier,
        id: &Identifier,
    ) -> Result<Option<TriggerView>, Error> {
        match self.store.get_trigger(project, pipeline, id).await? {
            Some(t) => Ok(Some(self.trigger_view(&t).await?)),
            None => Ok(None),
        }
    }

    /// Lists a pipeline's triggers as the API reports them.
    pub async fn list_triggers(
        &self,
        project: &ProjectRef,
        pipeline: &Identifier,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<TriggerView>, Error> {
        let page = self
            .store
            .list_triggers(project, pipeline, cursor, limit)
            .await?;
        let mut items = Vec::with_capacity(page.items.len());
        for t in &page.items {
            items.push(self.trigger_view(t).await?);
        }
        Ok(Page {
            items,
            next_cursor: page.next_cursor,
        })
    }

    /// The cURL snippet for a trigger.
    pub async fn trigger_curl(&self, t: &TriggerRecord) -> Result<String, Error> {
        let mandate = self.mandate_for(&t.scope).await?;
        Ok(links::curl(&self.public_url, t, mandate.value))
    }

    async fn trigger_view(&self, t: &TriggerRecord) -> Result<TriggerView, Error> {
        let spec = spec_of(t)?;
        Ok(TriggerView {
            identifier: t.identifier.to_string(),
            name: t.name.clone(),
            account_identifier: t.scope.account.to_string(),
            org_identifier: t.scope.org.to_string(),
            project_identifier: t.scope.project.to_string(),
            pipeline_identifier: t.pipeline.to_string(),
            enabled: t.enabled,
            custom_webhook_token: t.token.clone(),
            webhook_url: links::webhook_url(&self.public_url, t),
            curl: self.trigger_curl(t).await?,
            spec: spec.to_json(),
            yaml: spec.to_yaml(),
            created_at: t.created_at,
            updated_at: t.updated_at,
        })
    }
}

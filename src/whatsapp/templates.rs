//! The template-management side of the Graph API: a WhatsApp Business Account's message
//! templates read (`GET /{WABA-ID}/message_templates`, page after page), created
//! (`POST /{WABA-ID}/message_templates`) and edited (`POST /{template-id}`).
//!
//! Like [`super::client`] it owns no policy (what to create or when is the caller's) and never
//! logs the token. Paging follows Meta's cursors: while an answer has `paging.next`, the next
//! page is asked for with its `paging.cursors.after` against the configured base URL, so the
//! token only ever goes to `WAOTP_GRAPH_URL`.

use std::time::Duration;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

use super::client::GraphSetupError;
use super::errors::GraphError;

/// The fields asked for when listing templates.
pub const FIELDS: &str =
    "id,name,language,status,category,components,rejected_reason,quality_score";
/// Templates per page asked for.
pub const PAGE_SIZE: u32 = 100;
/// A business account holds at most a few thousand templates; more pages than this is a loop.
const MAX_PAGES: usize = 200;

/// One template as the business account holds it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RemoteTemplate {
    #[serde(default)]
    pub id: String,
    pub name: String,
    pub language: String,
    /// `APPROVED`, `PENDING`, `REJECTED`, `PAUSED`, `DISABLED`, `IN_APPEAL`, …
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub components: Vec<Value>,
    /// Why Meta rejected it (`INVALID_FORMAT`, `TAG_CONTENT_MISMATCH`, …; `NONE` otherwise).
    #[serde(default)]
    pub rejected_reason: Option<String>,
    /// Its quality score (`GREEN`, `YELLOW`, `RED`, `UNKNOWN`), when Meta gives one.
    #[serde(default)]
    pub quality_score: Option<QualityScore>,
}

/// A template's `quality_score` as Meta lists it: `{"score": "GREEN", "date": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct QualityScore {
    #[serde(default)]
    pub score: Option<String>,
}

impl RemoteTemplate {
    /// The quality score in upper case, when Meta gives one.
    pub fn quality(&self) -> Option<String> {
        self.quality_score
            .as_ref()
            .and_then(|q| q.score.as_deref())
            .filter(|s| !s.is_empty())
            .map(str::to_ascii_uppercase)
    }
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    data: Vec<RemoteTemplate>,
    #[serde(default)]
    paging: Option<Paging>,
}

#[derive(Deserialize)]
struct Paging {
    #[serde(default)]
    cursors: Option<Cursors>,
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize)]
struct Cursors {
    #[serde(default)]
    after: Option<String>,
}

/// Meta's answer to a create or edit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Created {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub category: String,
}

/// A client of one business account's templates.
#[derive(Debug, Clone)]
pub struct TemplateClient {
    http: reqwest::Client,
    base: String,
    waba_id: String,
    token: SecretString,
}

impl TemplateClient {
    pub fn new(
        base_url: &str,
        waba_id: &str,
        token: SecretString,
        timeout: Duration,
    ) -> Result<TemplateClient, GraphSetupError> {
        // The id becomes a path segment: anything but digits could reach another endpoint.
        if waba_id.is_empty() || !waba_id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(GraphSetupError::WabaId);
        }
        let base = base_url.trim_end_matches('/').to_owned();
        let url = Url::parse(&base).map_err(|_| GraphSetupError::BaseUrl)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(GraphSetupError::BaseUrl);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("waotp/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(TemplateClient {
            http,
            base,
            waba_id: waba_id.to_owned(),
            token,
        })
    }

    fn templates_url(&self) -> String {
        format!("{}/{}/message_templates", self.base, self.waba_id)
    }

    /// Every template of the account, following the paging cursors.
    pub async fn list(&self) -> Result<Vec<RemoteTemplate>, GraphError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let limit = PAGE_SIZE.to_string();
            let mut query = vec![("fields", FIELDS), ("limit", limit.as_str())];
            if let Some(a) = &after {
                query.push(("after", a.as_str()));
            }
            let request = self.http.get(self.templates_url()).query(&query);
            let bytes = self.call(request).await?;
            let page: Page = serde_json::from_slice(&bytes)
                .map_err(|e| GraphError::BadResponse(e.to_string()))?;
            let count = page.data.len();
            out.extend(page.data);
            let next = page.paging.and_then(|p| {
                p.next
                    .and_then(|_| p.cursors.and_then(|c| c.after))
                    .filter(|a| !a.is_empty())
            });
            match next {
                Some(a) if count > 0 && after.as_deref() != Some(a.as_str()) => after = Some(a),
                _ => return Ok(out),
            }
        }
        Err(GraphError::BadResponse(format!(
            "more than {MAX_PAGES} pages of templates"
        )))
    }

    /// Creates a template from Meta's create body.
    pub async fn create(&self, body: &Value) -> Result<Created, GraphError> {
        let request = self.http.post(self.templates_url()).json(body);
        let bytes = self.call(request).await?;
        serde_json::from_slice(&bytes).map_err(|e| GraphError::BadResponse(e.to_string()))
    }

    /// Replaces the components (and category) of template `id`.
    pub async fn edit(&self, id: &str, body: &Value) -> Result<(), GraphError> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(GraphError::BadResponse(format!("template id `{id}`")));
        }
        let request = self.http.post(format!("{}/{id}", self.base)).json(body);
        let bytes = self.call(request).await?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) if v.get("success") == Some(&Value::Bool(false)) => Err(GraphError::BadResponse(
                "Meta answered success: false".to_owned(),
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(GraphError::BadResponse(e.to_string())),
        }
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Vec<u8>, GraphError> {
        let response = request
            .bearer_auth(self.token.expose_secret())
            .send()
            .await
            .map_err(super::client::transport_error)?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| GraphError::Interrupted(e.without_url().to_string()))?;
        if !status.is_success() {
            return Err(GraphError::from_response(status.as_u16(), &bytes));
        }
        Ok(bytes.to_vec())
    }
}

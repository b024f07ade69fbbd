//! A typed client of the v1 contract: every call builds its URL from path
//! segments (a name can never reach another endpoint) and turns error
//! answers into [`ClientError::Api`] with the server's code and message.
//!
//! Large bodies stay streams: invoke, submit and the task payloads hand
//! back the raw response for the caller to read as it arrives.

use berth_contract::{
    CreateJoinToken, CreateTenant, CreatedJoinToken, CreatedTenant, Deployed, ErrorBody,
    ErrorObject, Executor, ExecutorList, Function, FunctionConfig, FunctionList, HeartbeatAck,
    HeartbeatBody, JoinBody, JoinTokenList, Joined, QuotaOverrides, RotatedKey, Task, TaskList,
    Tenant, TenantList,
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

pub use reqwest;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The server answered with an error.
    #[error("{status}: {} ({}){}", .error.message, .error.code, task_hint(.error))]
    Api {
        status: StatusCode,
        error: Box<ErrorObject>,
    },
    #[error("invalid server URL {0:?}: write it as http://HOST:PORT or https://HOST[:PORT]")]
    BadUrl(String),
    /// `.` and `..` can never be names, and no URL can carry them as one.
    #[error("{0:?} is not a valid name")]
    BadName(String),
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

fn task_hint(e: &ErrorObject) -> String {
    match &e.task_id {
        Some(id) => format!("; task {id} (its logs: berth logs {id})"),
        None => String::new(),
    }
}

impl ClientError {
    /// The server's error code, when it answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { error, .. } => Some(&error.code),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// What a path segment may carry unescaped: RFC 3986's unreserved set.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'~');

/// One path segment, escaped so that it stays one segment: `/`, `?`, `#`
/// and `%` are encoded. `.` and `..` are refused: URL parsers resolve them
/// (even percent-encoded), so they would climb out of their place.
pub fn segment(s: &str) -> Result<String> {
    if s == "." || s == ".." {
        return Err(ClientError::BadName(s.to_owned()));
    }
    Ok(utf8_percent_encode(s, SEGMENT).to_string())
}

/// Which tasks to list.
#[derive(Debug, Clone, Default)]
pub struct TaskQuery {
    pub function: Option<String>,
    pub status: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    pub fn new(base: &str, key: &str) -> Result<Self> {
        Self::with_ca(base, key, None)
    }

    /// Like [`Client::new`], also trusting the CA certificate(s) in `ca_pem`
    /// for an https server (the operator's own CA).
    pub fn with_ca(base: &str, key: &str, ca_pem: Option<&[u8]>) -> Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        // `localhost:8080` parses as a URL of scheme `localhost`: only
        // http and https with a host are addresses of a server.
        let url = reqwest::Url::parse(&base).map_err(|_| ClientError::BadUrl(base.clone()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(ClientError::BadUrl(base));
        }
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| ClientError::Protocol(format!("CA certificate: {e}")))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(Self {
            http,
            base,
            key: key.to_owned(),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// `base/{segments...}?{query}`, each segment escaped.
    pub fn url(&self, segments: &[&str], query: Option<&str>) -> Result<String> {
        let mut url = self.base.clone();
        for s in segments {
            url.push('/');
            url.push_str(&segment(s)?);
        }
        if let Some(q) = query
            .map(|q| q.trim_start_matches('?'))
            .filter(|q| !q.is_empty())
        {
            url.push('?');
            url.push_str(q);
        }
        Ok(url)
    }

    /// A request to `/{segments...}`, each segment escaped, with the key.
    pub fn request(&self, method: Method, segments: &[&str]) -> Result<RequestBuilder> {
        let url = self.url(segments, None)?;
        Ok(self.http.request(method, url).bearer_auth(&self.key))
    }

    /// Sends a request and turns an error answer into [`ClientError::Api`].
    pub async fn send(&self, req: RequestBuilder) -> Result<Response> {
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: root_cause(&e),
        })?;
        check(resp).await
    }

    async fn json<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T> {
        let resp = self.send(req).await?;
        resp.json()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    pub async fn deploy(&self, name: &str, config: &FunctionConfig) -> Result<Deployed> {
        self.json(
            self.request(Method::PUT, &["v1", "functions", name])?
                .json(config),
        )
        .await
    }

    /// A JSON merge patch over the function's version in force: only the
    /// named settings change.
    pub async fn update(&self, name: &str, patch: &serde_json::Value) -> Result<Deployed> {
        let body = serde_json::to_vec(patch).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.json(
            self.request(Method::PATCH, &["v1", "functions", name])?
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/merge-patch+json",
                )
                .body(body),
        )
        .await
    }

    pub async fn function(&self, name: &str) -> Result<Function> {
        self.json(self.request(Method::GET, &["v1", "functions", name])?)
            .await
    }

    pub async fn functions(&self) -> Result<FunctionList> {
        self.json(self.request(Method::GET, &["v1", "functions"])?)
            .await
    }

    pub async fn delete_function(&self, name: &str) -> Result<()> {
        self.send(self.request(Method::DELETE, &["v1", "functions", name])?)
            .await?;
        Ok(())
    }

    /// Calls a function; the answer's body is the function's output,
    /// still streaming. The call's `path`, if any, follows `/invoke`.
    pub async fn invoke(&self, name: &str, query: Option<&str>, req: Call) -> Result<Response> {
        let path = req.path.clone().unwrap_or_default();
        self.send(self.call(&invoke_segments(name, &path), query, req)?)
            .await
    }

    /// Submits an async task. With `Prefer: wait` in `req` the answer may
    /// be the output itself; otherwise 202 with the task.
    pub async fn submit_raw(&self, name: &str, query: Option<&str>, req: Call) -> Result<Response> {
        self.send(self.call(&["v1", "functions", name, "tasks"], query, req)?)
            .await
    }

    pub async fn submit(&self, name: &str, query: Option<&str>, req: Call) -> Result<Task> {
        let resp = self.submit_raw(name, query, req).await?;
        resp.json()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    fn call(&self, segments: &[&str], query: Option<&str>, req: Call) -> Result<RequestBuilder> {
        // The query is the function's own, passed through as given.
        let url = self.url(segments, query)?;
        let method = req.method.unwrap_or(Method::POST);
        let mut b = self.http.request(method, url).bearer_auth(&self.key);
        if let Some(ct) = req.content_type {
            b = b.header(reqwest::header::CONTENT_TYPE, ct);
        }
        for (k, v) in req.headers {
            b = b.header(k, v);
        }
        Ok(b.body(req.body))
    }

    pub async fn task(&self, id: &str) -> Result<Task> {
        self.json(self.request(Method::GET, &["v1", "tasks", id])?)
            .await
    }

    pub async fn tasks(&self, q: &TaskQuery) -> Result<TaskList> {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if let Some(f) = &q.function {
            pairs.push(("function", f.clone()));
        }
        if let Some(s) = &q.status {
            pairs.push(("status", s.clone()));
        }
        if let Some(l) = q.limit {
            pairs.push(("limit", l.to_string()));
        }
        if let Some(c) = &q.cursor {
            pairs.push(("cursor", c.clone()));
        }
        self.json(self.request(Method::GET, &["v1", "tasks"])?.query(&pairs))
            .await
    }

    pub async fn cancel(&self, id: &str) -> Result<Task> {
        self.json(self.request(Method::DELETE, &["v1", "tasks", id])?)
            .await
    }

    /// A finished task's stdout, streaming.
    pub async fn output(&self, id: &str) -> Result<Response> {
        self.payload(id, "output", false).await
    }

    /// A finished task's stderr, streaming.
    pub async fn logs(&self, id: &str) -> Result<Response> {
        self.payload(id, "logs", false).await
    }

    /// A task's stdout; if it has not finished, streamed as it is written
    /// until it ends.
    pub async fn follow_output(&self, id: &str) -> Result<Response> {
        self.payload(id, "output", true).await
    }

    /// A task's stderr; if it has not finished, streamed as it is written
    /// until it ends.
    pub async fn follow_logs(&self, id: &str) -> Result<Response> {
        self.payload(id, "logs", true).await
    }

    async fn payload(&self, id: &str, which: &str, follow: bool) -> Result<Response> {
        let mut req = self.request(Method::GET, &["v1", "tasks", id, which])?;
        if follow {
            req = req.query(&[("follow", "true")]);
        }
        self.send(req).await
    }

    pub async fn create_tenant(&self, req: &CreateTenant) -> Result<CreatedTenant> {
        self.json(self.request(Method::POST, &["v1", "tenants"])?.json(req))
            .await
    }

    pub async fn tenants(&self) -> Result<TenantList> {
        self.json(self.request(Method::GET, &["v1", "tenants"])?)
            .await
    }

    pub async fn tenant(&self, name: &str) -> Result<Tenant> {
        self.json(self.request(Method::GET, &["v1", "tenants", name])?)
            .await
    }

    pub async fn set_quotas(&self, name: &str, quotas: &QuotaOverrides) -> Result<Tenant> {
        self.json(
            self.request(Method::PUT, &["v1", "tenants", name, "quotas"])?
                .json(quotas),
        )
        .await
    }

    pub async fn rotate_key(&self, name: &str) -> Result<RotatedKey> {
        self.json(self.request(Method::POST, &["v1", "tenants", name, "keys"])?)
            .await
    }

    pub async fn revoke_keys(&self, name: &str) -> Result<Tenant> {
        self.json(self.request(Method::DELETE, &["v1", "tenants", name, "keys"])?)
            .await
    }

    pub async fn executors(&self) -> Result<ExecutorList> {
        self.json(self.request(Method::GET, &["v1", "executors"])?)
            .await
    }

    pub async fn executor(&self, id: &str) -> Result<Executor> {
        self.json(self.request(Method::GET, &["v1", "executors", id])?)
            .await
    }

    /// `action`: `cordon`, `uncordon` or `drain`.
    pub async fn executor_action(&self, id: &str, action: &str) -> Result<Executor> {
        self.json(self.request(Method::POST, &["v1", "executors", id, action])?)
            .await
    }

    pub async fn create_join_token(&self, label: &str) -> Result<CreatedJoinToken> {
        let req = CreateJoinToken {
            label: label.to_owned(),
        };
        self.json(
            self.request(Method::POST, &["v1", "executor-tokens"])?
                .json(&req),
        )
        .await
    }

    pub async fn join_tokens(&self) -> Result<JoinTokenList> {
        self.json(self.request(Method::GET, &["v1", "executor-tokens"])?)
            .await
    }

    pub async fn revoke_join_token(&self, id: &str) -> Result<()> {
        self.send(self.request(Method::DELETE, &["v1", "executor-tokens", id])?)
            .await?;
        Ok(())
    }

    /// A node joining: this client's key is the join token.
    pub async fn join(&self, body: &JoinBody) -> Result<Joined> {
        self.json(
            self.request(Method::POST, &["v1", "executors", "join"])?
                .json(body),
        )
        .await
    }

    /// A node's heartbeat: this client's key is the node's credential.
    pub async fn heartbeat(&self, id: &str, body: &HeartbeatBody) -> Result<HeartbeatAck> {
        self.json(
            self.request(Method::PUT, &["v1", "executors", id, "heartbeat"])?
                .timeout(std::time::Duration::from_secs(5))
                .json(body),
        )
        .await
    }
}

/// The body and headers of a call to a function.
#[derive(Default)]
pub struct Call {
    pub body: reqwest::Body,
    pub content_type: Option<String>,
    pub headers: Vec<(String, String)>,
    /// The HTTP method [default: POST].
    pub method: Option<Method>,
    /// The function's own request path, after `/invoke` (sync calls);
    /// each of its segments is escaped.
    pub path: Option<String>,
}

impl Call {
    pub fn new(body: impl Into<reqwest::Body>) -> Self {
        Self {
            body: body.into(),
            ..Default::default()
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// The segments of a sync call's URL: the function's own path after
/// `/invoke`, one segment per `/`-separated part.
fn invoke_segments<'a>(name: &'a str, path: &'a str) -> Vec<&'a str> {
    let mut segments = vec!["v1", "functions", name, "invoke"];
    segments.extend(path.split('/').filter(|s| !s.is_empty()));
    segments
}

/// Turns an error answer into an error carrying the server's code and
/// message; anything else passes.
pub async fn check(resp: Response) -> Result<Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    let error = match serde_json::from_str::<ErrorBody>(&body) {
        Ok(e) => e.error,
        Err(_) => ErrorObject {
            code: "http_error".into(),
            message: body.chars().take(500).collect(),
            task_id: None,
            exit_code: None,
            stderr: None,
        },
    };
    Err(ClientError::Api {
        status,
        error: Box::new(error),
    })
}

/// The innermost cause of a transport error: "connection refused", not a
/// chain of wrappers.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cannot_escape_their_place() {
        assert_eq!(segment("thumb").unwrap(), "thumb");
        assert_eq!(segment("../tasks").unwrap(), "%2E%2E%2Ftasks");
        assert_eq!(segment("a b?c#d%").unwrap(), "a%20b%3Fc%23d%25");
        assert_eq!(segment("img-1_x~").unwrap(), "img-1_x~");
        for dots in [".", ".."] {
            assert!(matches!(segment(dots), Err(ClientError::BadName(_))));
        }
    }

    #[tokio::test]
    async fn urls_are_built_from_segments() {
        let c = Client::new("http://127.0.0.1:9/", "k").unwrap();
        let req = c
            .request(Method::GET, &["v1", "functions", "../tasks/abc"])
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(
            req.url().as_str(),
            "http://127.0.0.1:9/v1/functions/%2E%2E%2Ftasks%2Fabc"
        );
        let err = c.functions().await.unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
    }

    #[test]
    fn a_server_url_needs_a_scheme_and_a_host() {
        for bad in [
            "localhost:8080",
            "127.0.0.1:8080",
            "ftp://h",
            "http://",
            "unix:/x",
        ] {
            let err = Client::new(bad, "k").err();
            assert!(
                matches!(err, Some(ClientError::BadUrl(_))),
                "{bad}: {err:?}"
            );
        }
        assert!(Client::new("https://berth.example", "k").is_ok());
    }

    #[tokio::test]
    async fn a_call_carries_its_method_and_path() {
        let c = Client::new("http://127.0.0.1:9", "k").unwrap();
        let put = |path: &str| Call {
            method: Some(Method::PUT),
            path: Some(path.into()),
            ..Call::new("x")
        };
        let refused = c.call(&invoke_segments("f", "/a/../c"), None, put("/a/../c"));
        assert!(
            matches!(refused, Err(ClientError::BadName(_))),
            "`..` refused"
        );
        let req = c
            .call(
                &invoke_segments("f", "/a b/c/"),
                Some("q=1"),
                put("/a b/c/"),
            )
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(req.method(), Method::PUT);
        assert_eq!(
            req.url().as_str(),
            "http://127.0.0.1:9/v1/functions/f/invoke/a%20b/c?q=1"
        );
    }
}

//! The OpenAPI 3.1 document of the v1 contract, generated from the handlers'
//! annotations and the contract's types, and served at `/openapi.json`.
//!
//! What every authenticated operation shares (the bearer scheme, the 401 of
//! `auth::require_key`) and the invoke route's sub-path twin are added by
//! modifiers, from the one place in the code that decides them, rather than
//! repeated in each annotation where one could be forgotten.

use axum::Json;
use axum::response::IntoResponse;
use utoipa::openapi::path::{Operation, Parameter, ParameterIn, PathItem};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, Header, Ref, Required, Type};
use utoipa::{Modify, OpenApi};

use crate::{executors, functions, invoke, metrics, tasks, tenants};

#[derive(OpenApi)]
#[openapi(
    info(title = "Berth", description = "Run container images as HTTP functions."),
    paths(
        functions::list, functions::get, functions::put, functions::patch, functions::delete,
        invoke::invoke, tasks::submit,
        tasks::list, tasks::get, tasks::cancel, tasks::output, tasks::logs,
        tenants::create, tenants::list, tenants::get, tenants::set_quotas,
        tenants::rotate_key, tenants::revoke_keys,
        executors::list, executors::get, executors::cordon, executors::uncordon,
        executors::drain, executors::create_token, executors::list_tokens,
        executors::revoke_token, executors::join, executors::heartbeat,
        crate::healthz, crate::readyz, metrics::serve, serve,
    ),
    components(schemas(berth_contract::ErrorBody)),
    modifiers(&BearerAuth, &InvokeSubPath, &Unauthorized),
    tags(
        (name = "functions", description = "deploy and manage functions"),
        (name = "calls", description = "call a function, synchronously or as an async task"),
        (name = "tasks", description = "every call is a task: status, output, logs, cancel"),
        (name = "tenants", description = "tenants, their keys and quotas"),
        (name = "executors", description = "executor nodes: the fleet, join tokens, cordon and drain (the admin key); join and heartbeat (the nodes' own)"),
        (name = "service", description = "health, readiness and this document (no key needed); the metrics (the admin key)"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        for scheme in ["bearer", "join_token", "node_credential"] {
            components.add_security_scheme(
                scheme,
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
        }
    }
}

const INVOKE: &str = "/v1/functions/{name}/invoke";
const INVOKE_SUB_PATH: &str = "/v1/functions/{name}/invoke/{path}";

/// `POST /invoke/{*path}` is the same handler as `POST /invoke`: the
/// sub-path only reaches the function (`PATH_INFO`, or the http-mode
/// program's request path). Its operation is a copy with that parameter,
/// so the two cannot be documented differently.
struct InvokeSubPath;

impl Modify for InvokeSubPath {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let Some(post) = doc
            .paths
            .get_path_item(INVOKE)
            .and_then(|item| item.post.clone())
        else {
            return;
        };
        let mut sub = post.clone();
        sub.operation_id = Some("invoke_function_path".to_owned());
        sub.summary =
            Some("Call a function synchronously, with a request path of its own".to_owned());
        let path = Parameter::builder()
            .name("path")
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .description(Some(
                "the request path the function sees, after `/invoke/` (may contain `/`)",
            ))
            .schema(Some(
                utoipa::openapi::ObjectBuilder::new().schema_type(Type::String),
            ))
            .build();
        sub.parameters.get_or_insert_with(Vec::new).push(path);
        // The other methods are the same call with the caller's method,
        // which the function sees: copies, with ids of their own.
        for (route, op) in [(INVOKE, post), (INVOKE_SUB_PATH, sub)] {
            let mut item = PathItem::new(utoipa::openapi::HttpMethod::Post, op.clone());
            for (method, slot) in [
                ("get", &mut item.get),
                ("put", &mut item.put),
                ("patch", &mut item.patch),
                ("delete", &mut item.delete),
            ] {
                let mut copy = op.clone();
                copy.operation_id = op.operation_id.as_ref().map(|id| format!("{id}_{method}"));
                if let Some(body) = copy.request_body.as_mut() {
                    body.required = Some(Required::False);
                }
                *slot = Some(copy);
            }
            doc.paths.paths.insert(route.to_owned(), item);
        }
    }
}

/// Every operation behind a key answers 401 without a valid one (before
/// it reads the request's body), whatever else it documents.
struct Unauthorized;

impl Modify for Unauthorized {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let answer = ResponseBuilder::new()
            .description("no key, or not a valid one")
            .header(
                "www-authenticate",
                Header::new(utoipa::openapi::ObjectBuilder::new().schema_type(Type::String)),
            )
            .content(
                "application/json",
                Content::new(Some(Ref::from_schema_name("ErrorBody"))),
            )
            .build();
        for item in doc.paths.paths.values_mut() {
            for op in operations(item) {
                if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    op.responses
                        .responses
                        .entry("401".to_owned())
                        .or_insert_with(|| answer.clone().into());
                }
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// The document, for `/openapi.json` and for tools that want it offline.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[utoipa::path(get, path = "/openapi.json", tag = "service", operation_id = "openapi",
    responses((status = 200, description = "this document", body = Object)))]
pub async fn serve() -> impl IntoResponse {
    Json(document())
}

//! The OpenAPI 3.1 document of the v1 contract, generated from the handlers'
//! annotations and the contract's types, and served at `/openapi.json`.

use axum::Json;
use axum::response::IntoResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{functions, invoke, tasks, tenants};

#[derive(OpenApi)]
#[openapi(
    info(title = "Berth", description = "Run container images as HTTP functions."),
    paths(
        functions::list, functions::get, functions::put, functions::patch, functions::delete,
        invoke::invoke, tasks::submit,
        tasks::list, tasks::get, tasks::cancel, tasks::output, tasks::logs,
        tenants::create, tenants::list, tenants::get, tenants::set_quotas,
        tenants::rotate_key, tenants::revoke_keys,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "functions", description = "deploy and manage functions"),
        (name = "calls", description = "call a function, synchronously or as an async task"),
        (name = "tasks", description = "every call is a task: status, output, logs, cancel"),
        (name = "tenants", description = "tenants, their keys and quotas"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The document, for `/openapi.json` and for tools that want it offline.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub async fn serve() -> impl IntoResponse {
    Json(document())
}

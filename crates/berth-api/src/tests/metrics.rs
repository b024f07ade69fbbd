//! `GET /metrics`: the admin reads the series, in the content type the
//! document declares; a tenant is refused, a caller without a key too.

use berth_scheduler::METRICS_CONTENT_TYPE;

use super::*;

#[tokio::test]
async fn the_admin_scrapes_what_happened() {
    let h = harness(false).await;
    h.deploy("echo", json!({"image": "img"})).await;
    let r = h.post("/v1/functions/echo/invoke", "hi").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    let r = h.get("/metrics").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("content-type"), Some(METRICS_CONTENT_TYPE));
    let text = r.text();
    assert!(
        text.contains(
            "\nberth_invocations_total{function=\"admin/echo\",kind=\"sync\",mode=\"exec\",status=\"ok\"} 1\n"
        ),
        "{text}"
    );
    assert!(text.contains("# TYPE berth_invocations_total counter\n"));
}

#[tokio::test]
async fn a_tenant_may_not_scrape_and_nobody_without_a_key() {
    let h = harness(false).await;
    let r = h.get_as(OTHER_KEY, "/metrics").await;
    check(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = call(&h.app, Method::GET, "/metrics", None, None, ()).await;
    check(&r, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn the_document_declares_the_content_type_served() {
    let doc = serde_json::to_value(crate::document()).expect("the document");
    let op = &doc["paths"]["/metrics"]["get"];
    let content: Vec<&String> = op["responses"]["200"]["content"]
        .as_object()
        .expect("a 200 with content")
        .keys()
        .collect();
    assert_eq!(content, [METRICS_CONTENT_TYPE]);
    for status in ["401", "403"] {
        assert!(op["responses"][status].is_object(), "{status}: {op}");
    }
    assert!(op["security"].is_array(), "{op}");
}

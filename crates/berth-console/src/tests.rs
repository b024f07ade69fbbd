use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;

async fn get(path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = Request::get(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = router()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes().to_vec();
    (parts.status, parts.headers, body)
}

fn assets_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets")
}

fn text(path: &str) -> String {
    String::from_utf8(asset(path).expect(path).body.to_vec()).expect("UTF-8")
}

fn assert_secure(headers: &HeaderMap, what: &str) {
    assert_eq!(
        headers[header::CONTENT_SECURITY_POLICY],
        CONTENT_SECURITY_POLICY,
        "{what}"
    );
    assert!(CONTENT_SECURITY_POLICY.starts_with("default-src 'self';"));
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{what}");
    assert_eq!(headers[header::REFERRER_POLICY], "no-referrer", "{what}");
}

#[tokio::test]
async fn the_bare_path_redirects_to_the_console() {
    let (status, headers, _) = get("/console", &[]).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(headers[header::LOCATION], "/console/");
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_policy_and_revalidated() {
    let (status, headers, body) = get("/console/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
    assert_secure(&headers, "/console/");
    assert_eq!(body, asset("index.html").unwrap().body);

    let etag = headers[header::ETAG].to_str().unwrap().to_owned();
    let (status, again, body) = get("/console/", &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    assert_eq!(again[header::ETAG], etag.as_str());
    let (status, _, _) = get("/console/", &[("if-none-match", "\"other\"")]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn every_file_in_the_assets_folder_is_served_with_its_type() {
    let mut on_disk = Vec::new();
    for entry in std::fs::read_dir(assets_dir()).unwrap() {
        let entry = entry.unwrap();
        assert!(
            entry.file_type().unwrap().is_file(),
            "{entry:?}: no folders"
        );
        on_disk.push(entry.file_name().into_string().unwrap());
    }
    on_disk.sort();
    let mut listed: Vec<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "ASSETS must list every file in assets/");

    for a in ASSETS {
        let (status, headers, body) = get(&format!("/console/{}", a.path), &[]).await;
        assert_eq!(status, StatusCode::OK, "{}", a.path);
        assert_ne!(
            content_type(a.path),
            "application/octet-stream",
            "{}: no known type",
            a.path
        );
        assert_eq!(headers[header::CONTENT_TYPE], content_type(a.path));
        assert_secure(&headers, a.path);
        assert_eq!(body, a.body);
    }
}

#[tokio::test]
async fn an_unknown_path_is_not_found_and_nothing_else_is_read() {
    for path in [
        "/console/nope.js",
        "/console/../Cargo.toml",
        "/console/%2e%2e/Cargo.toml",
        "/console/assets/app.js",
    ] {
        let (status, headers, _) = get(path, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_secure(&headers, path);
    }
}

/// The policy forbids inline script and handlers; the page must not need
/// them, or it would not work at all.
#[test]
fn the_page_has_no_inline_script_or_handler() {
    let html = text("index.html");
    for (i, _) in html.match_indices("<script") {
        let tag = &html[i..i + html[i..].find('>').unwrap()];
        assert!(tag.contains(" src="), "inline script: {tag}");
        assert!(html[i..].starts_with(&format!("{tag}></script>")), "{tag}");
    }
    let lower = html.to_lowercase();
    for handler in [
        " onclick=",
        " onload=",
        " onerror=",
        " onsubmit=",
        " style=",
    ] {
        assert!(!lower.contains(handler), "index.html has{handler}");
    }
    assert!(!lower.contains("javascript:"));
}

/// Nothing is loaded from anywhere but this server: no absolute URL in
/// any file (but the SVG namespace, which is a name, not a request).
#[test]
fn nothing_is_loaded_from_another_origin() {
    for a in ASSETS {
        let body =
            String::from_utf8_lossy(a.body).replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        for needle in ["http://", "https://", "//cdn", "url(", "@import"] {
            assert!(!body.contains(needle), "{} contains {needle:?}", a.path);
        }
    }
}

/// Every file the page and the modules refer to is one that is served.
#[test]
fn every_reference_names_a_served_file() {
    let html = text("index.html");
    for attr in ["src=\"", "href=\""] {
        for (i, _) in html.match_indices(attr) {
            let rest = &html[i + attr.len()..];
            let target = &rest[..rest.find('"').unwrap()];
            if target.starts_with('#') {
                continue;
            }
            assert!(asset(target).is_some(), "index.html refers to {target}");
        }
    }
    for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
        let js = text(a.path);
        for (i, _) in js.match_indices(" from \"./") {
            let rest = &js[i + " from \"./".len()..];
            let target = &rest[..rest.find('"').unwrap()];
            assert!(asset(target).is_some(), "{} imports {target}", a.path);
        }
        assert!(
            !js.contains("innerHTML") && !js.contains("eval("),
            "{}: text is set as text",
            a.path
        );
    }
}

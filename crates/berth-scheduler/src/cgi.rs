//! The request as a function sees it: RFC 3875 (CGI/1.1) meta-variables.

use berth_core::{FunctionVersion, TaskRecord};

/// The request's meta-variables. They are set on top of the function's own
/// env, which cannot override them (names are validated at deploy).
pub fn cgi_env(v: &FunctionVersion, task: &TaskRecord) -> Vec<(String, String)> {
    let r = &task.request;
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: String| env.push((k.to_owned(), v));
    set("GATEWAY_INTERFACE", "CGI/1.1".into());
    set("SERVER_PROTOCOL", "HTTP/1.1".into());
    set(
        "SERVER_SOFTWARE",
        concat!("berth/", env!("CARGO_PKG_VERSION")).into(),
    );
    set("REQUEST_METHOD", r.method.clone());
    set("QUERY_STRING", r.query.clone());
    set("SCRIPT_NAME", format!("/v1/functions/{}", v.function));
    set(
        "PATH_INFO",
        if r.path == "/" {
            String::new()
        } else {
            r.path.clone()
        },
    );
    if let Some(ct) = &r.content_type {
        set("CONTENT_TYPE", ct.clone());
    }
    if let Some(len) = r.content_length {
        set("CONTENT_LENGTH", len.to_string());
    }
    set("BERTH_TASK_ID", task.id.to_string());
    set("BERTH_FUNCTION", v.function.clone());
    set("BERTH_VERSION", v.version.to_string());
    set("BERTH_ATTEMPT", task.attempt.max(1).to_string());
    for (name, value) in &r.headers {
        let var = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
        // RFC 3875 4.1.18: repeated headers are joined with commas.
        if let Some(existing) = env.iter_mut().find(|(k, _)| *k == var) {
            existing.1.push_str(", ");
            existing.1.push_str(value);
        } else {
            env.push((var, value.clone()));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::{RequestMeta, TaskKind};

    #[test]
    fn request_becomes_meta_variables() {
        let config = serde_json::from_str(r#"{"image":"x","env":{"MODEL":"small"}}"#).unwrap();
        let v = FunctionVersion {
            tenant: "t".into(),
            function: "thumb".into(),
            version: 7,
            config,
            image_id: "sha256:1".into(),
            created_at: 0,
        };
        let request = RequestMeta {
            method: "POST".into(),
            path: "/".into(),
            query: "op=thumbnail&w=128".into(),
            content_type: Some("image/jpeg".into()),
            content_length: Some(42),
            headers: vec![
                ("x-trace-id".into(), "abc".into()),
                ("accept".into(), "a".into()),
                ("accept".into(), "b".into()),
            ],
        };
        let task = TaskRecord::new("t", "thumb", 7, TaskKind::Sync, request);
        let env = cgi_env(&v, &task);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        // The function's own env is the container's, not the request's.
        assert_eq!(get("MODEL"), None);
        assert_eq!(get("REQUEST_METHOD"), Some("POST"));
        assert_eq!(get("QUERY_STRING"), Some("op=thumbnail&w=128"));
        assert_eq!(get("CONTENT_TYPE"), Some("image/jpeg"));
        assert_eq!(get("CONTENT_LENGTH"), Some("42"));
        assert_eq!(get("HTTP_X_TRACE_ID"), Some("abc"));
        assert_eq!(get("HTTP_ACCEPT"), Some("a, b"));
        assert_eq!(get("BERTH_VERSION"), Some("7"));
    }
}

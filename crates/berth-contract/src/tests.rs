use berth_core::{Outcome, RequestMeta, TaskRecord};
use serde_json::json;

use super::*;

#[test]
fn a_task_reads_as_the_contract_says() {
    let mut t = TaskRecord::new("alpha", "thumb", 3, TaskKind::Async, RequestMeta::default());
    t.created_at = 0;
    let failed = Outcome::exited(2, "bad input");
    t.status = failed.status;
    t.exit_code = failed.exit_code;
    t.error = failed.error;
    let v = serde_json::to_value(Task::from(&t)).unwrap();
    assert_eq!(v["status"], "failed");
    assert_eq!(v["kind"], "async");
    assert_eq!(v["error"]["code"], "exit");
    assert_eq!(v["created_at"], "1970-01-01T00:00:00Z");
    assert_eq!(v["started_at"], serde_json::Value::Null);
    let back: Task = serde_json::from_value(v).unwrap();
    assert_eq!(back, Task::from(&t));
}

#[test]
fn a_deploy_answer_is_the_function_plus_two_members() {
    let config: FunctionConfig = serde_json::from_value(json!({"image": "x"})).unwrap();
    let v = FunctionVersion {
        tenant: "admin".into(),
        function: "f".into(),
        version: 1,
        config,
        image_id: "sha256:1".into(),
        created_at: 0,
    };
    let summary = FunctionSummary {
        latest: v,
        version_count: 1,
        created_at: 0,
        updated_at: 0,
    };
    let d = Deployed {
        function: Function::new(&summary, None),
        version: 1,
        created_version: true,
    };
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["name"], "f");
    assert_eq!(json["latest"]["image"], "x");
    assert_eq!(json["latest"]["memory_mb"], 256);
    assert_eq!(json["created_version"], true);
    assert!(json.get("versions").is_none());
    assert_eq!(serde_json::from_value::<Deployed>(json).unwrap(), d);
}

#[test]
fn errors_carry_only_the_members_they_have() {
    let e: ErrorBody =
        serde_json::from_value(json!({"error": {"code": "busy", "message": "m"}})).unwrap();
    assert_eq!(e.error.task_id, None);
    let back = serde_json::to_value(&e).unwrap();
    assert_eq!(back, json!({"error": {"code": "busy", "message": "m"}}));
}

#[test]
fn a_version_matches_its_own_schema() {
    use utoipa::PartialSchema;
    let schema = serde_json::to_value(Version::schema()).unwrap();
    // A version carries members FunctionConfig alone refuses, so its schema
    // must be one open object, not an `allOf` over FunctionConfig.
    assert!(schema.get("allOf").is_none(), "{schema}");
    assert!(schema.get("additionalProperties").is_none(), "{schema}");
    let properties = schema["properties"].as_object().unwrap();
    for member in ["image", "memory_mb", "version", "image_id", "created_at"] {
        assert!(
            properties.contains_key(member),
            "{member} missing: {schema}"
        );
    }
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for member in ["image", "version", "image_id", "created_at"] {
        assert!(
            required.contains(&member),
            "{member} not required: {schema}"
        );
    }
}

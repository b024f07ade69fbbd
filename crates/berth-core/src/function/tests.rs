use super::*;

fn config(json: &str) -> Result<FunctionConfig, serde_json::Error> {
    serde_json::from_str(json)
}

fn check(json: &str, expected: Result<(), &str>) {
    let cfg = config(json).expect("parses");
    let got = cfg.validate(&Limits::default());
    match expected {
        Ok(()) => assert_eq!(got, Ok(()), "{json}"),
        Err(fragment) => {
            let msg = got.expect_err(json).0;
            assert!(msg.contains(fragment), "{json}: {msg}");
        }
    }
}

#[test]
fn defaults_fill_in() {
    let cfg = config(r#"{"image":"busybox"}"#).unwrap();
    assert_eq!(cfg.cpu_millis, 1000);
    assert_eq!(cfg.memory_mb, 256);
    assert_eq!(cfg.timeout_secs, 60);
    assert!(cfg.command.is_none());
    assert!(!cfg.run_as_root);
}

#[test]
fn run_as_root_is_a_boolean() {
    check(r#"{"image":"x","run_as_root":true}"#, Ok(()));
    let cfg = config(r#"{"image":"x","run_as_root":true}"#).unwrap();
    assert!(cfg.run_as_root);
    // Shown in every view of the config, so a root function is visible.
    let shown = serde_json::to_value(&cfg).unwrap();
    assert_eq!(shown["run_as_root"], true);
    assert!(config(r#"{"image":"x","run_as_root":"yes"}"#).is_err());
}

#[test]
fn validation() {
    check(r#"{"image":"busybox"}"#, Ok(()));
    check(r#"{"image":"a b"}"#, Err("image"));
    check(r#"{"image":""}"#, Err("image"));
    check(r#"{"image":"x","command":[]}"#, Err("command"));
    check(r#"{"image":"x","command":["cat"]}"#, Ok(()));
    check(r#"{"image":"x","cpu_millis":5}"#, Err("cpu_millis"));
    check(r#"{"image":"x","cpu_millis":999999}"#, Err("cpu_millis"));
    check(r#"{"image":"x","memory_mb":2}"#, Err("memory_mb"));
    check(r#"{"image":"x","timeout_secs":0}"#, Err("timeout_secs"));
    check(r#"{"image":"x","env":{"A_1":"v"}}"#, Ok(()));
    check(r#"{"image":"x","env":{"1A":"v"}}"#, Err("valid variable"));
    check(r#"{"image":"x","env":{"A-B":"v"}}"#, Err("valid variable"));
    check(
        r#"{"image":"x","env":{"QUERY_STRING":"v"}}"#,
        Err("reserved"),
    );
    check(r#"{"image":"x","env":{"HTTP_HOST":"v"}}"#, Err("reserved"));
}

#[test]
fn unknown_fields_are_refused() {
    assert!(config(r#"{"image":"x","imagee":"y"}"#).is_err());
}

#[test]
fn names() {
    for ok in ["a", "image-ops", "f_1", "0abc"] {
        assert!(validate_name(ok).is_ok(), "{ok}");
    }
    let long = "a".repeat(64);
    for bad in ["", "A", "-a", "a/b", "a.b", "..", long.as_str(), "é"] {
        assert!(validate_name(bad).is_err(), "{bad}");
    }
}

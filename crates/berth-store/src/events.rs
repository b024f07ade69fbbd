//! [`Event`]s as the text a notification carries between replicas: a JSON
//! array, its first element naming the kind (`["queued"]`,
//! `["keys","alpha"]`, `["function","alpha","resize"]`). JSON so that any
//! name survives the trip without an escaping rule of our own; an array
//! so that it stays a few bytes (PostgreSQL caps a payload at 8000).

use serde_json::Value;

use crate::{Event, Invalidation};

pub(crate) fn encode(event: &Event) -> String {
    let id;
    let parts: Vec<&str> = match event {
        Event::Queued => vec!["queued"],
        Event::Cancelled(task) => {
            id = task.to_string();
            vec!["cancelled", &id]
        }
        Event::Invalidate(Invalidation::Keys { tenant }) => vec!["keys", tenant],
        Event::Invalidate(Invalidation::Quotas { tenant }) => vec!["quotas", tenant],
        Event::Invalidate(Invalidation::Function { tenant, name }) => {
            vec!["function", tenant, name]
        }
    };
    Value::from(parts).to_string()
}

/// `None` for a payload this version does not know (a newer replica's
/// kind, or anything else): an event is only ever a hint, so a listener
/// skips what it cannot read rather than stop listening.
pub(crate) fn decode(payload: &str) -> Option<Event> {
    let parts: Vec<String> = serde_json::from_str(payload).ok()?;
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    Some(match parts[..] {
        ["queued"] => Event::Queued,
        ["cancelled", id] => Event::Cancelled(id.parse().ok()?),
        ["keys", tenant] => Event::Invalidate(Invalidation::Keys {
            tenant: tenant.to_owned(),
        }),
        ["quotas", tenant] => Event::Invalidate(Invalidation::Quotas {
            tenant: tenant.to_owned(),
        }),
        ["function", tenant, name] => Event::Invalidate(Invalidation::Function {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
        }),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(event: Event, text: &str) {
        assert_eq!(encode(&event), text);
        assert_eq!(decode(text), Some(event));
    }

    #[test]
    fn every_event_round_trips() {
        check(Event::Queued, r#"["queued"]"#);
        let id: berth_core::TaskId = "0190a5a4-2b7e-7c3a-9d1e-123456789abc".parse().unwrap();
        check(
            Event::Cancelled(id),
            r#"["cancelled","0190a5a4-2b7e-7c3a-9d1e-123456789abc"]"#,
        );
        let tenant = "alpha".to_owned();
        check(
            Event::Invalidate(Invalidation::Keys {
                tenant: tenant.clone(),
            }),
            r#"["keys","alpha"]"#,
        );
        check(
            Event::Invalidate(Invalidation::Quotas {
                tenant: tenant.clone(),
            }),
            r#"["quotas","alpha"]"#,
        );
        check(
            Event::Invalidate(Invalidation::Function {
                tenant,
                name: "a \"b\",\n c".into(),
            }),
            r#"["function","alpha","a \"b\",\n c"]"#,
        );
    }

    #[test]
    fn unknown_payloads_are_skipped() {
        for payload in [
            "",
            "queued",
            "[]",
            r#"["later"]"#,
            r#"["keys"]"#,
            "[1]",
            "{}",
        ] {
            assert_eq!(decode(payload), None, "{payload:?}");
        }
    }
}

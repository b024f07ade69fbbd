//! What a tenant may do with tenants and keys: the admin manages them; a
//! tenant sees only itself (another answers like a missing one) and may
//! rotate its own key, which ends the old one at once; the admin's key is
//! the server's setting, not a record to rotate.

use berth_core::ADMIN_TENANT;

use super::*;

const ADMIN_KEY: &str = "berth_test_admin_key";

/// What a caller asks of the tenant operations.
#[derive(Debug, Clone, Copy)]
enum Op {
    Create,
    List,
    Read,
    SetQuotas,
    Rotate,
    Revoke,
}

/// Runs `op` as `caller` on tenant `target`; the error's variant name, or
/// `None` when allowed.
async fn attempt(m: &Manager, caller: &str, op: Op, target: &str) -> Option<String> {
    let quotas = QuotaOverrides::default();
    let t = &m.tasks;
    let result = match op {
        Op::Create => t.create_tenant(caller, target, &quotas).await.map(drop),
        Op::List => t.tenants(caller).await.map(drop),
        Op::Read => t.tenant(caller, target).await.map(drop),
        Op::SetQuotas => t.set_quotas(caller, target, &quotas).await.map(drop),
        Op::Rotate => t.rotate_key(caller, target).await.map(drop),
        Op::Revoke => t.revoke_keys(caller, target).await.map(drop),
    };
    result.err().map(|e| variant(&e))
}

async fn with_admin() -> Manager {
    let m = manager(cfg()).await;
    m.add_key(ADMIN_TENANT, ADMIN_KEY).await;
    m
}

/// Every key there is, and whom it authenticates now.
async fn who(m: &Manager) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for key in [ADMIN_KEY, ALPHA_KEY, BETA_KEY] {
        out.push(m.tasks.authenticate(key).await.expect("authenticate"));
    }
    out
}

#[tokio::test]
async fn refused_tenant_operations_change_nothing() {
    let m = with_admin().await;
    let tenants_before = m.tasks.tenants(ADMIN_TENANT).await.expect("list");
    let keys_before = who(&m).await;
    let cases = [
        // Only the admin manages tenants.
        (ALPHA, Op::Create, "gamma", "Forbidden"),
        (ALPHA, Op::List, "", "Forbidden"),
        (ALPHA, Op::SetQuotas, ALPHA, "Forbidden"),
        (ALPHA, Op::Revoke, BETA, "Forbidden"),
        (ALPHA, Op::Revoke, ALPHA, "Forbidden"),
        // A tenant sees only itself: another is like a missing one.
        (ALPHA, Op::Read, BETA, "TenantNotFound"),
        (ALPHA, Op::Read, "nobody", "TenantNotFound"),
        (ALPHA, Op::Read, ADMIN_TENANT, "TenantNotFound"),
        (ALPHA, Op::Rotate, BETA, "TenantNotFound"),
        (ALPHA, Op::Rotate, ADMIN_TENANT, "TenantNotFound"),
        // The admin's key is the server's setting.
        (ADMIN_TENANT, Op::Rotate, ADMIN_TENANT, "AdminKeyFixed"),
        (ADMIN_TENANT, Op::Revoke, ADMIN_TENANT, "AdminKeyFixed"),
        // What the admin asks must still make sense.
        (ADMIN_TENANT, Op::Create, ALPHA, "TenantExists"),
        (ADMIN_TENANT, Op::Create, "Not_Valid", "InvalidTenant"),
        (ADMIN_TENANT, Op::Read, "nobody", "TenantNotFound"),
        (ADMIN_TENANT, Op::SetQuotas, "nobody", "TenantNotFound"),
        (ADMIN_TENANT, Op::Rotate, "nobody", "TenantNotFound"),
        (ADMIN_TENANT, Op::Revoke, "nobody", "TenantNotFound"),
    ];
    for (caller, op, target, want) in cases {
        let got = attempt(&m, caller, op, target).await;
        assert_eq!(got.as_deref(), Some(want), "{caller} {op:?} {target}");
    }
    let tenants_after = m.tasks.tenants(ADMIN_TENANT).await.expect("list");
    assert_eq!(tenants_after, tenants_before);
    assert_eq!(who(&m).await, keys_before);
    assert_eq!(
        keys_before,
        [
            Some(ADMIN_TENANT.into()),
            Some(ALPHA.into()),
            Some(BETA.into())
        ]
    );
}

#[tokio::test]
async fn allowed_tenant_operations() {
    let m = with_admin().await;
    let cases = [
        (ADMIN_TENANT, Op::Create, "gamma"),
        (ADMIN_TENANT, Op::List, ""),
        (ADMIN_TENANT, Op::Read, BETA),
        (ADMIN_TENANT, Op::SetQuotas, BETA),
        (ALPHA, Op::Read, ALPHA),
    ];
    for (caller, op, target) in cases {
        let got = attempt(&m, caller, op, target).await;
        assert_eq!(got, None, "{caller} {op:?} {target}");
    }
    let names: Vec<_> = m
        .tasks
        .tenants(ADMIN_TENANT)
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.name)
        .collect();
    for name in [ADMIN_TENANT, ALPHA, BETA, "gamma"] {
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }
    assert_eq!(names.len(), 4);
}

#[tokio::test]
async fn a_new_tenant_gets_a_working_key_and_its_quotas() {
    let m = with_admin().await;
    let quotas = QuotaOverrides {
        max_concurrent_tasks: Some(2),
        ..QuotaOverrides::default()
    };
    let made = m
        .tasks
        .create_tenant(ADMIN_TENANT, "gamma", &quotas)
        .await
        .expect("create");
    assert_eq!((made.record.name.as_str(), made.record.keys), ("gamma", 1));
    assert_eq!(made.record.overrides, quotas);
    let who = m.tasks.authenticate(&made.api_key).await.expect("auth");
    assert_eq!(who.as_deref(), Some("gamma"));
    let q = m.tasks.quotas_of("gamma").await.expect("quotas");
    assert_eq!(q.max_concurrent_tasks, 2);
    assert_eq!(
        q.max_queued_tasks,
        m.tasks.default_quotas().max_queued_tasks
    );
}

#[tokio::test]
async fn rotating_a_key_ends_the_old_one_at_once() {
    let m = with_admin().await;
    // Known valid (and so remembered) before the rotation.
    assert_eq!(who(&m).await[1].as_deref(), Some(ALPHA));

    let new_key = m.tasks.rotate_key(ALPHA, ALPHA).await.expect("rotate");
    assert_ne!(new_key, ALPHA_KEY);
    let auth = |key: String| {
        let m = &m;
        async move { m.tasks.authenticate(&key).await.expect("auth") }
    };
    assert_eq!(auth(ALPHA_KEY.into()).await, None, "the old key is dead");
    assert_eq!(auth(new_key.clone()).await.as_deref(), Some(ALPHA));
    // Nobody else's key changed.
    assert_eq!(
        who(&m).await,
        [Some(ADMIN_TENANT.into()), None, Some(BETA.into())]
    );
    let record = m.tasks.tenant(ALPHA, ALPHA).await.expect("record");
    assert_eq!(record.keys, 1);

    // The admin revokes: the new key is dead too, at once.
    let revoked = m
        .tasks
        .revoke_keys(ADMIN_TENANT, ALPHA)
        .await
        .expect("revoke");
    assert_eq!(revoked.keys, 0);
    assert_eq!(auth(new_key).await, None);
    // And gives it a key again.
    let again = m
        .tasks
        .rotate_key(ADMIN_TENANT, ALPHA)
        .await
        .expect("rotate");
    assert_eq!(auth(again).await.as_deref(), Some(ALPHA));
}

#[tokio::test]
async fn keys_that_are_not_keys_authenticate_nobody() {
    let m = with_admin().await;
    let long = "k".repeat(257);
    for key in ["", "   ", "berth_nope", long.as_str()] {
        let who = m.tasks.authenticate(key).await.expect("auth");
        assert_eq!(who, None, "{key:?}");
    }
    let padded = format!("  {ALPHA_KEY}\n");
    let who = m.tasks.authenticate(&padded).await.expect("auth");
    assert_eq!(who.as_deref(), Some(ALPHA), "surrounding space is ignored");
}

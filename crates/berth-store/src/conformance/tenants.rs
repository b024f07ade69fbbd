//! Conformance cases for tenants and their API keys. A backend runs them
//! through [`conformance_tests!`](crate::conformance_tests) (see
//! [`crate::conformance`]).

use berth_core::QuotaOverrides;

use crate::Store;

pub async fn keys_resolve_by_hash(s: &dyn Store) {
    s.put_api_key("admin", &[7; 32], "admin").await.unwrap();
    s.put_api_key("admin", &[9; 32], "ci").await.unwrap();
    s.put_api_key("other", &[5; 32], "admin").await.unwrap();
    assert_eq!(
        s.tenant_for_key(&[7; 32]).await.unwrap().as_deref(),
        Some("admin")
    );
    assert_eq!(s.tenant_for_key(&[8; 32]).await.unwrap(), None);
    assert_eq!(
        s.delete_api_keys_labelled("admin", "admin").await.unwrap(),
        1,
        "only the tenant's keys with that label go"
    );
    assert_eq!(s.tenant_for_key(&[7; 32]).await.unwrap(), None);
    assert_eq!(
        s.tenant_for_key(&[9; 32]).await.unwrap().as_deref(),
        Some("admin")
    );
    assert_eq!(
        s.tenant_for_key(&[5; 32]).await.unwrap().as_deref(),
        Some("other")
    );
    assert_eq!(
        s.delete_api_keys_labelled("admin", "admin").await.unwrap(),
        0
    );
}

pub async fn tenants_own_their_keys_and_quotas(s: &dyn Store) {
    let quotas = QuotaOverrides {
        max_memory_mb: Some(128),
        ..Default::default()
    };
    assert!(s.create_tenant("alpha", &quotas, &[1; 32]).await.unwrap());
    assert!(
        !s.create_tenant("alpha", &QuotaOverrides::default(), &[2; 32])
            .await
            .unwrap(),
        "a taken name is refused"
    );
    assert_eq!(
        s.tenant_for_key(&[2; 32]).await.unwrap(),
        None,
        "the refused creation left no key behind"
    );
    let t = s.get_tenant("alpha").await.unwrap().unwrap();
    assert_eq!((t.overrides.max_memory_mb, t.keys), (Some(128), 1));
    assert_eq!(
        s.tenant_for_key(&[1; 32]).await.unwrap().as_deref(),
        Some("alpha")
    );
    assert!(s.get_tenant("nope").await.unwrap().is_none());
    s.ensure_tenant("alpha").await.unwrap();
    let again = s.get_tenant("alpha").await.unwrap().unwrap();
    assert_eq!(again, t, "ensuring an existing tenant changes nothing");

    // Rotation: the old key stops, the new one works, in one step.
    assert!(
        s.replace_api_keys("alpha", Some(&[3; 32]), "primary")
            .await
            .unwrap()
    );
    assert_eq!(s.tenant_for_key(&[1; 32]).await.unwrap(), None);
    assert_eq!(
        s.tenant_for_key(&[3; 32]).await.unwrap().as_deref(),
        Some("alpha")
    );
    // Revocation leaves the tenant with no key at all.
    assert!(s.replace_api_keys("alpha", None, "primary").await.unwrap());
    assert_eq!(s.tenant_for_key(&[3; 32]).await.unwrap(), None);
    assert_eq!(s.get_tenant("alpha").await.unwrap().unwrap().keys, 0);
    assert!(
        !s.replace_api_keys("nope", Some(&[4; 32]), "primary")
            .await
            .unwrap()
    );
    assert_eq!(
        s.tenant_for_key(&[4; 32]).await.unwrap(),
        None,
        "no key is recorded for a tenant that does not exist"
    );

    assert!(
        s.set_tenant_quotas("alpha", &QuotaOverrides::default())
            .await
            .unwrap()
    );
    assert_eq!(
        s.get_tenant("alpha").await.unwrap().unwrap().overrides,
        QuotaOverrides::default()
    );
    assert!(
        !s.set_tenant_quotas("nope", &QuotaOverrides::default())
            .await
            .unwrap()
    );
    assert!(s.get_tenant("nope").await.unwrap().is_none());

    s.ensure_tenant("admin").await.unwrap();
    s.ensure_tenant("admin").await.unwrap();
    let names: Vec<_> = s
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["admin", "alpha"], "tenants are listed by name");
}

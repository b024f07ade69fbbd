use berth_registry::RepoName;
use berth_scheduler::Config;
use berth_scheduler::testing::Manager;

use super::*;

fn admission(dir: &Path) -> RegistryAdmission {
    let registry = Registry::new(
        berth_registry::Config::default(),
        Arc::new(berth_registry::MemoryIndex::new()),
        Blobs::local(dir).unwrap(),
        Arc::new(NoAccess),
    );
    RegistryAdmission {
        registry: Arc::new(registry),
        pull_host: "127.0.0.1:5000".to_owned(),
        aliases: vec!["127.0.0.1:5000".to_owned()],
    }
}

#[tokio::test]
async fn malformed_references_to_this_registry_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let admission = admission(dir.path());
    for own in [
        "127.0.0.1:5000/",
        "127.0.0.1:5000/alpha/app:",
        "127.0.0.1:5000/beta/app:v1@sha256:ab",
        "127.0.0.1:5000/Beta/app",
    ] {
        let got = admission.admit("alpha", own).await;
        assert!(matches!(got, Err(SchedError::Invalid(_))), "{own}: {got:?}");
    }
}

#[tokio::test]
async fn what_the_registry_lacks_is_the_engines_and_only_the_admins() {
    let dir = tempfile::tempdir().unwrap();
    let admission = admission(dir.path());
    for engine in ["Busybox", "docker.io/library/busybox:1", "app:v1@sha256:ab"] {
        let got = admission.admit("alpha", engine).await;
        assert!(
            matches!(got, Err(SchedError::ImageNotAllowed(_))),
            "{engine}: {got:?}"
        );
        let got = admission.admit(ADMIN_TENANT, engine).await.unwrap();
        assert!(
            matches!(&got, AdmittedImage::Engine { reference, .. } if reference == engine),
            "{engine}: {got:?}"
        );
    }
    // A short name was looked for in the caller's namespace first, with
    // its path kept: `ux/diff` is `admin/ux/diff`.
    let got = admission.admit(ADMIN_TENANT, "ux/diff:v1").await.unwrap();
    assert_eq!(
        got,
        AdmittedImage::Engine {
            reference: "ux/diff:v1".to_owned(),
            registry_candidate: Some("admin/ux/diff:v1".to_owned()),
        }
    );
}

#[tokio::test]
async fn keys_are_registry_logins() {
    let m = Manager::new(Config::default()).await;
    m.add_key(ADMIN_TENANT, "admin-key").await;
    m.add_key("alpha", "alpha-key").await;
    let cred = PullCredential::generate();
    let auth = KeyAuthenticator::new(&cred);
    auth.set_tasks(m.tasks.clone());

    let admin = auth.authenticate(Some("admin"), "admin-key").await.unwrap();
    assert!(admin.admin);
    let alpha = auth.authenticate(None, "alpha-key").await.unwrap();
    assert_eq!(alpha.tenant, "alpha");
    assert!(!alpha.admin && !alpha.pull_all);
    // The login name must be the key's tenant.
    assert!(
        auth.authenticate(Some("admin"), "alpha-key")
            .await
            .is_none()
    );
    assert!(auth.authenticate(Some("alpha"), "wrong").await.is_none());
    assert!(auth.authenticate(None, "").await.is_none());

    let internal = auth
        .authenticate(Some(&cred.username), &cred.password)
        .await
        .unwrap();
    assert!(internal.pull_all && !internal.admin);
    let repo = RepoName::parse("alpha/app").unwrap();
    assert!(internal.can_pull(&repo) && !internal.can_push(&repo));
    assert!(
        auth.authenticate(Some("admin"), &cred.password)
            .await
            .is_none()
    );
    // A new process has a new credential.
    let other = KeyAuthenticator::new(&PullCredential::generate());
    other.set_tasks(m.tasks.clone());
    assert!(other.authenticate(None, &cred.password).await.is_none());
}

//! Encrypted Sending and the secure alias (SPEC §4; issue #4).

mod common;

use common::{TestStore, both_backends};
use mailtls_core::sending::{EncryptedSending, ExpertSettings, MinLevel, TlsVersion};
use mailtls_store::{Settings, StoreError, Users};

async fn a_new_user_has_encrypted_sending_off_and_no_alias(t: TestStore) {
    let s = &t.store;
    s.add_user("Me@Example.ORG", "pw").await.expect("add");
    let got = s.settings("Me@example.org").await.expect("settings");
    assert_eq!(got.address, "Me@example.org");
    assert_eq!(got.encrypted_sending, EncryptedSending::Off);
    assert_eq!(got.secure_alias("secure.example.org"), None);
    assert_eq!(s.alias_owner("me").await.expect("owner"), None);
    assert!(matches!(
        s.settings("nobody@example.org").await,
        Err(StoreError::NoSuchUser(_))
    ));
}
both_backends!(a_new_user_has_encrypted_sending_off_and_no_alias);

async fn the_alias_exists_exactly_while_the_setting_is_not_off(t: TestStore) {
    let s = &t.store;
    s.add_user("Me@example.org", "pw").await.expect("add");
    let on = s
        .set_encrypted_sending("Me@example.org", EncryptedSending::On)
        .await
        .expect("on");
    assert_eq!(
        on.secure_alias("secure.example.org").as_deref(),
        Some("me@secure.example.org")
    );
    let owner = s.alias_owner("ME").await.expect("owner").expect("exists");
    assert_eq!(owner.address, "Me@example.org");

    let expert = EncryptedSending::Expert(ExpertSettings {
        min_level: MinLevel::Dane,
        min_tls: Some(TlsVersion::Tls13),
        inbound_min_tls: Some(TlsVersion::Tls12),
    });
    s.set_encrypted_sending("Me@example.org", expert)
        .await
        .expect("expert");
    // Another process (pool) sees the change at once.
    let other = t.other().await;
    assert_eq!(
        other
            .settings("Me@example.org")
            .await
            .expect("read")
            .encrypted_sending,
        expert
    );

    s.set_encrypted_sending("Me@example.org", EncryptedSending::Off)
        .await
        .expect("off");
    assert_eq!(s.alias_owner("me").await.expect("owner"), None);
    assert_eq!(
        s.settings("Me@example.org")
            .await
            .expect("read")
            .alias_local,
        None
    );
}
both_backends!(the_alias_exists_exactly_while_the_setting_is_not_off);

async fn an_alias_has_one_owner(t: TestStore) {
    let s = &t.store;
    s.add_user("me@example.org", "pw").await.expect("add");
    s.add_user("me@example.net", "pw").await.expect("add");
    s.set_encrypted_sending("me@example.org", EncryptedSending::On)
        .await
        .expect("on");
    assert!(matches!(
        s.set_encrypted_sending("me@example.net", EncryptedSending::On)
            .await,
        Err(StoreError::AliasTaken(local)) if local == "me"
    ));
    // Switching it off never collides.
    s.set_encrypted_sending("me@example.net", EncryptedSending::Off)
        .await
        .expect("off");
    assert!(matches!(
        s.set_encrypted_sending("nobody@example.org", EncryptedSending::On)
            .await,
        Err(StoreError::NoSuchUser(_))
    ));
}
both_backends!(an_alias_has_one_owner);

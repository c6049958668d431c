//! Which live objects are this FoodApp's. The operator derives every
//! child's name from the FoodApp's, so anyone who can create objects in the
//! namespace can make one of that name first: a Service that points
//! elsewhere, a ServiceAccount `<name>-backup` whose token would reach the
//! backup image, a migration Job that "succeeded" without running, a
//! `<name>-api` Secret with a known signing key. Nothing is taken over by
//! name: an object is this FoodApp's when
//!
//! - its controller owner reference carries the FoodApp's UID (or the UID
//!   of a FoodAppRestore of this FoodApp, which holds a database while it
//!   restores), or
//! - it is one the FoodApp does not own (the generated Secrets, a Cluster
//!   kept under `Retain`) and carries the record the operator wrote with
//!   it: `foodapp.io/owner-uid`, and `foodapp.io/owner-signature`, an
//!   HMAC-SHA256 over kind, namespace, name and that UID under the
//!   operator's key. A record of this FoodApp's UID is accepted as is (the
//!   UID exists only once the FoodApp does, so nobody could plant it
//!   earlier); one of another UID only with a valid signature: what a
//!   FoodApp deleted under `Retain` left, found again by the FoodApp made
//!   anew with its name. Or
//! - it carries neither and the FoodApp was reconciled by a release that
//!   wrote no records (its status has no `Conflict` condition): the object
//!   is that release's, and gets its record on this pass.
//!
//! Anything else is refused, used for nothing, and named by the condition
//! `Conflict`.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sha2::Sha256;

/// The UID of the FoodApp an unowned object was written for.
pub const OWNER_UID_ANNOTATION: &str = "foodapp.io/owner-uid";
/// HMAC-SHA256 (hex) of kind, namespace, name and owner UID.
pub const OWNER_SIGNATURE_ANNOTATION: &str = "foodapp.io/owner-signature";
/// The key of the operator's Secret that holds the signing key.
pub const KEY_SECRET_KEY: &str = "key";

/// The operator's signing key for ownership records.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Default for Key {
    fn default() -> Self {
        Key::random()
    }
}

impl Key {
    pub fn new(bytes: Vec<u8>) -> Self {
        Key(bytes)
    }

    /// A key of 32 random bytes (tests, and a first start).
    pub fn random() -> Self {
        use rand::RngCore;
        let mut bytes = vec![0; 32];
        rand::rng().fill_bytes(&mut bytes);
        Key(bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// A key for another use, from which this one cannot be learnt.
    pub fn derive(&self, purpose: &str) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"foodapp.io/derive\x1f");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    fn mac(&self, kind: &str, ns: &str, name: &str, uid: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        for part in [kind, ns, name, uid] {
            // Length-prefixed, so no two tuples sign the same bytes.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac
    }

    pub fn sign(&self, kind: &str, ns: &str, name: &str, uid: &str) -> String {
        hex::encode(self.mac(kind, ns, name, uid).finalize().into_bytes())
    }

    fn verify(&self, kind: &str, ns: &str, name: &str, uid: &str, signature: &str) -> bool {
        hex::decode(signature)
            .is_ok_and(|sig| self.mac(kind, ns, name, uid).verify_slice(&sig).is_ok())
    }
}

/// Who may own the objects of one FoodApp, for one reconcile.
#[derive(Debug, Clone, Default)]
pub struct Owners {
    pub namespace: String,
    /// The FoodApp's UID.
    pub uid: String,
    /// UIDs of this FoodApp's FoodAppRestores: a restore holds the database
    /// it restores into until it hands it over.
    pub restores: Vec<String>,
    /// The FoodApp was reconciled by a release that wrote no records.
    pub legacy: bool,
    pub key: Key,
}

/// Why an object is not this FoodApp's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotOurs(pub String);

impl Owners {
    /// Who may own `app`'s objects, given its restores.
    pub fn of(
        app: &crate::crd::FoodApp,
        restores: &[crate::crd::FoodAppRestore],
        key: &Key,
    ) -> Self {
        use kube::ResourceExt;
        Owners {
            namespace: app.namespace().unwrap_or_default(),
            uid: app.uid().unwrap_or_default(),
            restores: restores.iter().filter_map(|r| r.uid()).collect(),
            // Reconciled by a release that wrote no records: every pass of
            // this one writes the Conflict condition.
            legacy: app.status.as_ref().is_some_and(|s| {
                s.observed_generation.is_some()
                    && !s
                        .conditions
                        .iter()
                        .any(|c| c.type_ == crate::controller::status::CONFLICT)
            }),
            key: key.clone(),
        }
    }

    /// `check`, as a yes or no.
    pub fn owns(&self, kind: &str, live: &ObjectMeta) -> bool {
        self.check(kind, live).is_ok()
    }

    fn accepted(&self, uid: &str) -> bool {
        uid == self.uid || self.restores.iter().any(|r| r == uid)
    }

    /// The controller owner reference's UID, if any.
    fn controller(meta: &ObjectMeta) -> Option<&str> {
        meta.owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.as_str())
    }

    /// The record annotations for an unowned object of this FoodApp.
    pub fn record(&self, kind: &str, name: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (OWNER_UID_ANNOTATION.to_owned(), self.uid.clone()),
            (
                OWNER_SIGNATURE_ANNOTATION.to_owned(),
                self.key.sign(kind, &self.namespace, name, &self.uid),
            ),
        ])
    }

    /// Whether `live` (of `kind`) is this FoodApp's, and if not, why.
    pub fn check(&self, kind: &str, live: &ObjectMeta) -> Result<(), NotOurs> {
        let name = live.name.as_deref().unwrap_or_default();
        if let Some(uid) = Self::controller(live) {
            return if self.accepted(uid) {
                Ok(())
            } else {
                Err(NotOurs(format!(
                    "{kind} {name} exists and is controlled by another object (UID {uid}), not by this FoodApp: \
                     nothing of it is used; delete or rename it"
                )))
            };
        }
        let annotations = live.annotations.as_ref();
        let recorded = annotations.and_then(|a| a.get(OWNER_UID_ANNOTATION));
        let signature = annotations.and_then(|a| a.get(OWNER_SIGNATURE_ANNOTATION));
        match (recorded, signature) {
            (Some(uid), _) if self.accepted(uid) => Ok(()),
            (Some(uid), Some(sig)) if self.key.verify(kind, &self.namespace, name, uid, sig) => {
                Ok(())
            }
            (None, None) if self.legacy && live.owner_references.is_none() => Ok(()),
            _ => Err(NotOurs(format!(
                "{kind} {name} exists and was not made by the operator for this FoodApp (no owner reference \
                 with its UID {}, no valid {OWNER_SIGNATURE_ANNOTATION}): nothing of it is used; delete it, \
                 or, if it is yours and meant for this FoodApp, annotate it {OWNER_UID_ANNOTATION}={}",
                self.uid, self.uid
            ))),
        }
    }

    /// Whether the live object still needs this FoodApp's record written.
    pub fn needs_record(&self, live: &ObjectMeta) -> bool {
        Self::controller(live).is_none()
            && live
                .annotations
                .as_ref()
                .and_then(|a| a.get(OWNER_UID_ANNOTATION))
                != Some(&self.uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owners() -> Owners {
        Owners {
            namespace: "food".into(),
            uid: "uid-now".into(),
            restores: vec!["uid-restore".into()],
            legacy: false,
            key: Key::new(b"k".to_vec()),
        }
    }

    fn owned_by(uid: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some("shop-gateway".into()),
            owner_references: Some(vec![OwnerReference {
                uid: uid.into(),
                controller: Some(true),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn annotated(pairs: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some("shop-api".into()),
            annotations: Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn owned_objects_are_ours_only_under_our_uid_or_a_restore_of_ours() {
        let o = owners();
        assert!(o.check("Service", &owned_by("uid-now")).is_ok());
        assert!(o.check("Service", &owned_by("uid-restore")).is_ok());
        let refused = o.check("Service", &owned_by("uid-else")).unwrap_err();
        assert!(refused.0.contains("Service shop-gateway"), "{}", refused.0);
        let mut planted = owned_by("uid-now");
        planted.owner_references.as_mut().unwrap()[0].controller = None;
        assert!(
            o.check("Service", &planted).is_err(),
            "a plain owner reference is not control"
        );
        assert!(o.check("Service", &ObjectMeta::default()).is_err());
    }

    #[test]
    fn unowned_objects_need_our_uid_or_a_signed_record() {
        let o = owners();
        assert!(
            o.check("Secret", &annotated(&[(OWNER_UID_ANNOTATION, "uid-now")]))
                .is_ok()
        );
        // Left by an earlier FoodApp of this name under Retain.
        let earlier = o.key.sign("Secret", "food", "shop-api", "uid-before");
        assert!(
            o.check(
                "Secret",
                &annotated(&[
                    (OWNER_UID_ANNOTATION, "uid-before"),
                    (OWNER_SIGNATURE_ANNOTATION, &earlier)
                ])
            )
            .is_ok()
        );
        // A planted one: a made-up UID, or a signature of another name or key.
        for sig in [
            "00".repeat(32),
            o.key.sign("Secret", "food", "shop-db", "uid-before"),
            Key::new(b"other".to_vec()).sign("Secret", "food", "shop-api", "uid-before"),
            "not hex".to_owned(),
        ] {
            let meta = annotated(&[
                (OWNER_UID_ANNOTATION, "uid-before"),
                (OWNER_SIGNATURE_ANNOTATION, &sig),
            ]);
            assert!(o.check("Secret", &meta).is_err(), "{sig}");
        }
        assert!(
            o.check("Secret", &annotated(&[])).is_err(),
            "unrecorded on a new FoodApp"
        );
    }

    #[test]
    fn unrecorded_objects_of_a_release_without_records_are_accepted_once() {
        let o = Owners {
            legacy: true,
            ..owners()
        };
        let meta = annotated(&[]);
        assert!(o.check("Secret", &meta).is_ok());
        assert!(o.needs_record(&meta));
        let recorded = ObjectMeta {
            annotations: Some(o.record("Secret", "shop-api")),
            ..meta
        };
        assert!(!o.needs_record(&recorded));
        assert!(owners().check("Secret", &recorded).is_ok());
    }
}

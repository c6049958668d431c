//! The custom resources of group `foodapp.io/v1alpha1`: their Rust types are
//! the source of the CRD YAML (`foodapp-operator crd`), of `kubectl explain`
//! text (doc comments) and of the admission rules (CEL).

mod backup;
mod foodapp;
pub mod foreign;
mod restore;

pub use backup::*;
pub use foodapp::*;
pub use restore::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub const GROUP: &str = "foodapp.io";

/// Every CRD, in the order `foodapp-operator crd` prints them.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![FoodApp::crd(), FoodAppBackup::crd(), FoodAppRestore::crd()]
}

/// Multi-document YAML of the given objects.
pub fn to_yaml<T: serde::Serialize>(objects: &[T]) -> Result<String, yaml_serde::Error> {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&yaml_serde::to_string(o)?);
    }
    Ok(out)
}

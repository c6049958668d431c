//! FoodApp operator: custom resource types, pure builders for every child
//! object, the controller, and the backup/restore agent.

pub mod crd;

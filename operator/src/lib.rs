//! FoodApp operator: custom resource types, pure builders for every child
//! object, the controller, and the backup/restore agent.

pub mod agent;
pub mod build;
pub mod controller;
pub mod crd;
pub mod maintenance;
pub mod metrics;
pub mod quantity;
pub mod rbac;
pub mod render;
pub mod runner;

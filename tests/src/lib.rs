//! End-to-end tests across the FoodApp crates live in `tests/`; they run
//! against the services `scripts/test-services` starts.

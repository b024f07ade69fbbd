//! The bad-input and fault suite: one test per scenario, each asserting the
//! status, the error code, and that nothing else changed. Scenario numbers
//! follow docs/SECURITY.md.

mod faults;
mod input;
mod registry_input;
mod sandbox;
mod tenancy;

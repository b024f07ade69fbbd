//! Numbered scenarios: what a user or an attacker does, end to end, and
//! what Berth must make of it.

mod sandbox;

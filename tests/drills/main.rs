//! Reliability and security drills (issue 7): Redis faults, several instances, churn, hostile
//! input. Slower than `tests/api`, so a step of their own in `scripts/test`; same harness.

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;

mod cluster;
mod faults;
mod instances;
mod limits;

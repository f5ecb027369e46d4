//! Clinical rules as pure functions over plain data: no diesel, no actix. Thresholds come
//! from the policy table, never from literals here. (Filled in by the clinical issues:
//! blood groups and compatibility, ISBT 128, eligibility, stimulation windows, shelf life.)

pub mod eligibility;
pub mod policy;

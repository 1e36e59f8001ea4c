//! Retention: the policy file ([`policy`]) and the pure keep/delete plan with a reason for
//! every decision ([`plan`]). `expire` and block garbage collection carry the plan out.

pub mod plan;
pub mod policy;

//! Retention: the policy file ([`policy`]), the pure keep/delete plan with a reason for every
//! decision ([`plan`]), and two-phase block garbage collection ([`gc`]). `pgward expire`
//! (commands/expire.rs) carries a plan out and then collects blocks.

pub mod gc;
pub mod plan;
pub mod policy;

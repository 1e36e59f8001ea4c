//! Retention: the policy file, the pure keep/delete plan with reasons, `expire`, and block
//! garbage collection ([`gc`]).

pub mod gc;

//! The `expect` of an SQL check: `= v`, `!= v`, `>= n`, `> n`, `<= n`, `< n`, `~ regex`, or
//! exact text.
//!
//! SKELETON: the interface; being written.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// Exact text (also `= v`).
    Equals(String),
}

impl FromStr for Expect {
    type Err = String;
    fn from_str(s: &str) -> Result<Expect, String> {
        Ok(Expect::Equals(s.to_string()))
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Equals(v) => write!(f, "= {v}"),
        }
    }
}

impl Expect {
    /// `Ok` when `got` (the query's first column of the first row, as text; NULL is empty)
    /// meets the expectation; else why not.
    pub fn judge(&self, got: &str) -> Result<(), String> {
        match self {
            Expect::Equals(v) if v == got => Ok(()),
            Expect::Equals(v) => Err(format!("expected `{v}`, got `{got}`")),
        }
    }
}

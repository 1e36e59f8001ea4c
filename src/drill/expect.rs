//! The `expect` of an SQL check: what the query's first column of the first row must be.
//!
//! `= v` (text equal after trimming both sides), `!= v`, `>= n`, `> n`, `<= n`, `< n` (both
//! sides read as numbers), `~ regex` (the `regex` crate's syntax, unanchored: write `^…$` for a
//! whole-value match), and anything else is exact text (as `= v`). An expectation that cannot
//! ever be judged — a comparison with a non-number, an invalid regex — is refused when the drill
//! file is read, not when the drill has restored. `Display` writes the form `parse` reads back.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// Exact text (also `= v`), compared after trimming.
    Equals(String),
    /// `!= v`.
    NotEquals(String),
    /// `>= n`, `> n`, `<= n`, `< n`.
    Compare(Cmp, f64),
    /// `~ regex`.
    Matches(Pattern),
}

/// A numeric comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Ge,
    Gt,
    Le,
    Lt,
}

impl Cmp {
    pub fn as_str(self) -> &'static str {
        match self {
            Cmp::Ge => ">=",
            Cmp::Gt => ">",
            Cmp::Le => "<=",
            Cmp::Lt => "<",
        }
    }

    fn holds(self, got: f64, want: f64) -> bool {
        match self {
            Cmp::Ge => got >= want,
            Cmp::Gt => got > want,
            Cmp::Le => got <= want,
            Cmp::Lt => got < want,
        }
    }
}

/// A compiled regex; two are equal when their source text is.
#[derive(Debug, Clone)]
pub struct Pattern(regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Pattern {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl FromStr for Expect {
    type Err = String;

    fn from_str(s: &str) -> Result<Expect, String> {
        let t = s.trim();
        // Longest operators first: `>=` before `>`, `!=` before `=`.
        let ops = [
            (">=", Cmp::Ge),
            ("<=", Cmp::Le),
            (">", Cmp::Gt),
            ("<", Cmp::Lt),
        ];
        for (op, cmp) in ops {
            if let Some(rest) = t.strip_prefix(op) {
                let rest = rest.trim();
                let n = number(rest).ok_or_else(|| {
                    format!(
                        "`{t}` compares with `{rest}`, which is not a number; \
                         write e.g. \"{op} 0\", or \"= {rest}\" for text"
                    )
                })?;
                return Ok(Expect::Compare(cmp, n));
            }
        }
        if let Some(rest) = t.strip_prefix("!=") {
            return Ok(Expect::NotEquals(rest.trim().to_string()));
        }
        if let Some(rest) = t.strip_prefix('=') {
            return Ok(Expect::Equals(rest.trim().to_string()));
        }
        if let Some(rest) = t.strip_prefix('~') {
            let rest = rest.trim();
            return regex::Regex::new(rest)
                .map(|r| Expect::Matches(Pattern(r)))
                .map_err(|e| {
                    // The crate's message draws a caret under the pattern on its own
                    // lines; the reason is the last one (`error: unclosed group`).
                    let e = e.to_string();
                    let why = e.lines().next_back().unwrap_or("").trim();
                    let why = why.strip_prefix("error: ").unwrap_or(why);
                    format!("`~ {rest}` is not a valid regex: {why}")
                });
        }
        Ok(Expect::Equals(t.to_string()))
    }
}

/// A finite number, or `None`.
fn number(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|n| n.is_finite())
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Equals(v) => write!(f, "= {v}"),
            Expect::NotEquals(v) => write!(f, "!= {v}"),
            Expect::Compare(c, n) => write!(f, "{} {n}", c.as_str()),
            Expect::Matches(p) => write!(f, "~ {}", p.as_str()),
        }
    }
}

impl Expect {
    /// `Ok` when `got` (the query's first column of the first row, as text; NULL is empty)
    /// meets the expectation; else why not, naming what was expected and what came.
    pub fn judge(&self, got: &str) -> Result<(), String> {
        let ok = match self {
            Expect::Equals(v) => got.trim() == v,
            Expect::NotEquals(v) => got.trim() != v,
            Expect::Compare(c, want) => match number(got.trim()) {
                Some(n) => c.holds(n, *want),
                None => {
                    return Err(format!(
                        "expected a number {self}, got `{got}`, which is not a number"
                    ));
                }
            },
            Expect::Matches(p) => p.0.is_match(got),
        };
        if ok {
            Ok(())
        } else {
            Err(format!("expected `{self}`, got `{got}`"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_display_round_trips() {
        let cases: &[(&str, &str)] = &[
            ("= 42", "= 42"),
            ("=42", "= 42"),
            ("  = a b  ", "= a b"),
            ("exact text", "= exact text"),
            ("", "= "),
            ("!= 0", "!= 0"),
            (">= 10", ">= 10"),
            ("> 0", "> 0"),
            ("<= 1.5", "<= 1.5"),
            ("< -3", "< -3"),
            (">1e3", "> 1000"),
            ("~ ^2026-", "~ ^2026-"),
            ("~^a|b$", "~ ^a|b$"),
        ];
        for (text, shown) in cases {
            let e: Expect = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(e.to_string(), *shown, "{text}");
            let again: Expect = e.to_string().parse().unwrap();
            assert_eq!(again, e, "{text} round trip");
        }
    }

    #[test]
    fn unjudgeable_expectations_are_refused_with_the_reason() {
        let cases: &[(&str, &str)] = &[
            ("> many", "compares with `many`, which is not a number"),
            (">= ", "compares with ``, which is not a number"),
            ("< NaN", "which is not a number"),
            ("<= inf", "which is not a number"),
            ("~ (unclosed", "`~ (unclosed` is not a valid regex"),
        ];
        for (text, reason) in cases {
            let e = text.parse::<Expect>().unwrap_err();
            assert!(e.contains(reason), "{text}: {e}");
        }
    }

    #[test]
    fn judge_says_what_was_expected_and_what_came() {
        // (expect, got, None = passes / Some(reason fragment))
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("= 42", "42", None),
            ("= 42", " 42\n", None),
            ("42", "42", None),
            ("= 42", "43", Some("expected `= 42`, got `43`")),
            ("= 42", "42.0", Some("expected `= 42`, got `42.0`")),
            ("= ", "", None),
            ("!= 0", "1", None),
            ("!= 0", "0", Some("expected `!= 0`, got `0`")),
            ("> 0", "17", None),
            ("> 0", "0", Some("expected `> 0`, got `0`")),
            (
                "> 0",
                "",
                Some("expected a number > 0, got ``, which is not a number"),
            ),
            ("> 0", "t", Some("got `t`, which is not a number")),
            (">= 3", "3", None),
            (">= 3", "2.99", Some("expected `>= 3`, got `2.99`")),
            ("< 10", "9.5", None),
            ("< 10", "10", Some("expected `< 10`, got `10`")),
            ("<= 10", "10", None),
            ("<= 10", " 1e2 ", Some("expected `<= 10`, got ` 1e2 `")),
            ("~ ^2026-12-", "2026-12-01 10:00:00+00", None),
            (
                "~ ^2026-12-",
                "2025-12-01",
                Some("expected `~ ^2026-12-`, got `2025-12-01`"),
            ),
        ];
        for (expect, got, want) in cases {
            let e: Expect = expect.parse().unwrap();
            match (e.judge(got), want) {
                (Ok(()), None) => {}
                (Err(reason), Some(fragment)) => {
                    assert!(reason.contains(fragment), "{expect} vs {got:?}: {reason}")
                }
                (r, w) => panic!("{expect} vs {got:?}: got {r:?}, wanted {w:?}"),
            }
        }
    }
}

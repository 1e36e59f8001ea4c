//! `verify/state.json.zst`: how many runs there have been and, per object, the last run that
//! read it and found it good. Written whole, with one `put` (atomic by the storage contract),
//! after the reads. An object found bad or not read is never recorded as verified; state that
//! cannot be read means starting afresh (every object is "not yet verified" again), with a
//! warning — never a reason to call anything verified.

use crate::codec;
use crate::repo::layout;
use crate::storage::Storage;
use anyhow::{Context as _, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyState {
    pub format_version: u32,
    /// Runs completed so far.
    pub runs: u64,
    /// Object key → the run that last read it and found it good.
    pub verified: BTreeMap<String, u64>,
}

impl VerifyState {
    /// The state after run `run`: objects read good now carry `run`; objects found bad are
    /// dropped (read again first next time); objects no longer offered are forgotten.
    pub fn after_run(
        mut self,
        run: u64,
        offered: &BTreeSet<&str>,
        good: &[&str],
        bad: &[&str],
    ) -> VerifyState {
        self.format_version = STATE_VERSION;
        self.runs = run;
        self.verified.retain(|k, _| offered.contains(k.as_str()));
        for k in bad {
            self.verified.remove(*k);
        }
        for k in good {
            self.verified.insert((*k).to_string(), run);
        }
        self
    }
}

/// Reads the state; missing is a fresh start, unreadable is a fresh start with a warning.
pub async fn load(storage: &dyn Storage) -> (VerifyState, Option<String>) {
    let key = layout::verify_state_key();
    let bytes = match storage.get(&key).await {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return (VerifyState::default(), None),
        Err(e) => return (VerifyState::default(), Some(fresh(&key, &e.to_string()))),
    };
    let parsed = codec::decode_to_vec(&bytes, None)
        .map_err(|e| e.to_string())
        .and_then(|json| {
            serde_json::from_slice::<VerifyState>(&json).map_err(|e| format!("not valid: {e}"))
        })
        .and_then(|s| {
            if s.format_version == STATE_VERSION {
                Ok(s)
            } else {
                Err(format!(
                    "format version {} is not {STATE_VERSION}",
                    s.format_version
                ))
            }
        });
    match parsed {
        Ok(s) => (s, None),
        Err(why) => (VerifyState::default(), Some(fresh(&key, &why))),
    }
}

fn fresh(key: &str, why: &str) -> String {
    format!(
        "cannot read {key} ({why}): starting afresh, so every object counts as not yet \
         verified and is read first"
    )
}

/// Writes the state as one object.
pub async fn save(storage: &dyn Storage, state: &VerifyState) -> Result<()> {
    let key = layout::verify_state_key();
    let json = serde_json::to_vec(state)?;
    let data = codec::encode_bytes(&json, 3)?.data;
    storage
        .put(&key, Bytes::from(data))
        .await
        .with_context(|| format!("cannot write {key}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStorage;

    #[tokio::test]
    async fn state_round_trips_and_unreadable_state_starts_afresh() {
        let s = MemoryStorage::new();
        let (fresh_state, warning) = load(&s).await;
        assert_eq!((fresh_state.runs, warning), (0, None));
        let offered: BTreeSet<&str> = ["a", "b", "c"].into_iter().collect();
        let mut st = VerifyState::default();
        st.verified.insert("gone".into(), 1);
        st.verified.insert("c".into(), 1);
        let st = st.after_run(2, &offered, &["a", "b"], &["c"]);
        assert_eq!(
            st.verified,
            [("a".to_string(), 2), ("b".to_string(), 2)]
                .into_iter()
                .collect(),
            "bad and vanished objects are not verified"
        );
        save(&s, &st).await.unwrap();
        assert_eq!(load(&s).await, (st, None));

        s.put(&layout::verify_state_key(), Bytes::from_static(b"garbage"))
            .await
            .unwrap();
        let (st, warning) = load(&s).await;
        assert!(st.verified.is_empty() && st.runs == 0);
        assert!(warning.unwrap().contains("starting afresh"));
    }
}

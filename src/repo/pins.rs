//! Pins (`pins/<label>.json`): a pinned backup or dump is never expired and keeps its own WAL
//! range (`retention::plan`). `pgward pin` / `pgward unpin` write and remove them.
//!
//! A pin that exists but cannot be read or parsed is an error naming its key, never "not
//! pinned": reading it as absent would let expire delete what an operator meant to keep.

use crate::repo::label::{Label, rfc3339_time};
use crate::repo::layout;
use crate::storage::Storage;
use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// One pin, as stored (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    pub label: Label,
    /// What the operator wrote with `--reason`.
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(with = "rfc3339_time")]
    pub created_at: DateTime<Utc>,
    /// `host pid N` of the `pgward pin` that wrote it.
    #[serde(default)]
    pub created_by: String,
}

/// Every pin in the repository, by label. One listing of `pins/`, then one read per pin.
pub async fn load_all(storage: &dyn Storage) -> Result<Vec<Pin>> {
    let listing = storage
        .list(layout::PINS_PREFIX)
        .await
        .with_context(|| format!("cannot list pins in {}", storage.describe()))?;
    let labels: Vec<String> = listing
        .iter()
        .filter_map(|o| layout::parse_pin_key(&o.key))
        .collect();
    let mut pins: Vec<Pin> = futures::stream::iter(labels)
        .map(|label| async move { read(storage, &label).await })
        .buffered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .filter_map(Result::transpose)
        .collect::<Result<_>>()?;
    pins.sort_by(|a, b| a.label.cmp(&b.label));
    Ok(pins)
}

/// The pin of `label`: `None` only when no pin object exists.
pub async fn read(storage: &dyn Storage, label: &str) -> Result<Option<Pin>> {
    let key = layout::pin_key(label);
    let bytes = match storage.get(&key).await {
        Ok(b) => b,
        // Listed, then removed by an `unpin` in between: not pinned.
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "cannot read pin {key}: whether {label} is pinned is unknown, so nothing is \
                 decided about it\nhint: retry once the store answers"
            )));
        }
    };
    let pin: Pin = serde_json::from_slice(&bytes).map_err(|e| {
        anyhow!(
            "pin {key} is not a pin ({e}): whether {label} is pinned is unknown\nhint: \
             rewrite it with `pgward pin {label} --reason ...` (or remove it with \
             `pgward unpin {label}` if it should not be pinned)"
        )
    })?;
    if pin.label != label {
        bail!(
            "pin {key} names label {} instead of {label}: whether {label} is pinned is \
             unknown\nhint: rewrite it with `pgward pin {label}`",
            pin.label
        );
    }
    Ok(Some(pin))
}

/// Writes (or replaces) the pin of `pin.label`.
pub async fn add(storage: &dyn Storage, pin: &Pin) -> Result<()> {
    let key = layout::pin_key(pin.label.as_str());
    let body = Bytes::from(serde_json::to_vec_pretty(pin)?);
    storage
        .put(&key, body)
        .await
        .with_context(|| format!("cannot write pin {key}"))
}

/// Removes the pin of `label`; `false` when there was none.
pub async fn remove(storage: &dyn Storage, label: &str) -> Result<bool> {
    let key = layout::pin_key(label);
    let present = storage
        .head(&key)
        .await
        .with_context(|| format!("cannot read pin {key}"))?
        .is_some();
    if present {
        storage
            .delete(&key)
            .await
            .with_context(|| format!("cannot remove pin {key}"))?;
    }
    Ok(present)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::faulty::FaultyStorage;
    use crate::storage::memory::MemoryStorage;
    use std::sync::Arc;

    fn pin(label: &str) -> Pin {
        Pin {
            label: Label::parse(label).unwrap(),
            reason: Some("before migration".into()),
            created_at: DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
                .unwrap()
                .to_utc(),
            created_by: "db1 pid 42".into(),
        }
    }

    #[tokio::test]
    async fn pins_are_added_listed_and_removed() {
        let s = MemoryStorage::new();
        assert!(load_all(&s).await.unwrap().is_empty());
        add(&s, &pin("20261201T120000Z")).await.unwrap();
        add(&s, &pin("20261130T120000Z")).await.unwrap();
        s.put("pins/README", Bytes::from_static(b"foreign"))
            .await
            .unwrap();
        let all = load_all(&s).await.unwrap();
        assert_eq!(all, vec![pin("20261130T120000Z"), pin("20261201T120000Z")]);
        assert!(remove(&s, "20261130T120000Z").await.unwrap());
        assert!(!remove(&s, "20261130T120000Z").await.unwrap());
        assert_eq!(load_all(&s).await.unwrap(), vec![pin("20261201T120000Z")]);
    }

    #[tokio::test]
    async fn an_unparsable_or_unreadable_pin_is_an_error_naming_its_key() {
        let s = MemoryStorage::new();
        add(&s, &pin("20261201T120000Z")).await.unwrap();
        s.put(
            &layout::pin_key("20261130T120000Z"),
            Bytes::from_static(b"{not json"),
        )
        .await
        .unwrap();
        let e = format!("{:#}", load_all(&s).await.unwrap_err());
        assert!(
            e.contains("pins/20261130T120000Z.json") && e.contains("hint: "),
            "{e}"
        );

        let s = MemoryStorage::new();
        let mut other = pin("20261130T120000Z");
        other.label = Label::parse("20261201T000000Z").unwrap();
        s.put(
            &layout::pin_key("20261130T120000Z"),
            Bytes::from(serde_json::to_vec(&other).unwrap()),
        )
        .await
        .unwrap();
        let e = format!("{:#}", load_all(&s).await.unwrap_err());
        assert!(e.contains("names label 20261201T000000Z"), "{e}");

        let inner = Arc::new(MemoryStorage::new());
        add(inner.as_ref(), &pin("20261201T120000Z")).await.unwrap();
        let faulty = FaultyStorage::new(inner);
        faulty.refuse_keys("get", "pins/", true);
        let e = format!("{:#}", load_all(&faulty).await.unwrap_err());
        assert!(
            e.contains("pins/20261201T120000Z.json") && e.contains("unknown"),
            "{e}"
        );
    }
}

//! Reading one object and checking it against what the repository says it holds. Blocks and
//! small WAL files (`.backup`) are read whole (a block is at most the repository's block
//! size); segments and dump objects are streamed through [`codec::stream::decode_stream`], so
//! memory stays bounded whatever their size.

use crate::codec::{self, Sha256Digest};
use crate::storage::Storage;
use crate::verify::listing::{Candidate, ReadCheck};
use futures::StreamExt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    Good,
    /// The object is not there any more.
    Missing,
    /// Its content is not what was recorded (the reason).
    Corrupt(String),
    /// The store failed; the content was not checked (the reason).
    Unreadable(String),
}

pub async fn read_and_check(storage: &dyn Storage, c: &Candidate) -> ReadOutcome {
    match &c.check {
        ReadCheck::Block(id) => whole(storage, &c.key, *id).await,
        ReadCheck::Wal {
            sha256, len: None, ..
        } => whole(storage, &c.key, *sha256).await,
        ReadCheck::Wal {
            sha256,
            len: Some(len),
            ..
        } => streamed(storage, &c.key, *sha256, *len).await,
        ReadCheck::Dump { sha256, size } => streamed(storage, &c.key, *sha256, *size).await,
    }
}

async fn whole(storage: &dyn Storage, key: &str, sha: Sha256Digest) -> ReadOutcome {
    let bytes = match storage.get(key).await {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return ReadOutcome::Missing,
        Err(e) => return ReadOutcome::Unreadable(e.to_string()),
    };
    let decoded = tokio::task::spawn_blocking(move || {
        codec::decode_into(&bytes, Some(&sha), std::io::sink()).map(|_| ())
    })
    .await;
    match decoded {
        Ok(Ok(())) => ReadOutcome::Good,
        Ok(Err(e)) => ReadOutcome::Corrupt(e.to_string()),
        Err(e) => ReadOutcome::Unreadable(format!("the check did not finish: {e}")),
    }
}

async fn streamed(storage: &dyn Storage, key: &str, sha: Sha256Digest, len: u64) -> ReadOutcome {
    let input = match storage.get_stream(key, 0).await {
        Ok(s) => s,
        Err(e) if e.is_not_found() => return ReadOutcome::Missing,
        Err(e) => return ReadOutcome::Unreadable(e.to_string()),
    };
    let mut decoded = codec::stream::decode_stream(input, sha, len);
    while let Some(item) = decoded.next().await {
        if let Err(e) = item {
            return if e.kind() == std::io::ErrorKind::InvalidData {
                ReadOutcome::Corrupt(e.to_string())
            } else {
                ReadOutcome::Unreadable(e.to_string())
            };
        }
    }
    ReadOutcome::Good
}

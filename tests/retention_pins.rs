//! `pin` / `unpin` and `info`'s retention verdicts, in process over memory storage: a pin is
//! written only for a complete backup or dump, `info` shows it and the policy's reason, and an
//! unparsable pin fails `info` naming its key instead of reading as "not pinned".

use bytes::Bytes;
use pgward::commands;
use pgward::config::Config;
use pgward::context::Context;
use pgward::repo::dumps::{DUMP_MANIFEST_VERSION, DatabaseDump, DumpManifest, StoredObject};
use pgward::repo::identity::RepoIdentity;
use pgward::repo::label::Label;
use pgward::repo::layout;
use pgward::storage::Storage;
use pgward::storage::memory::MemoryStorage;
use std::sync::Arc;

fn manifest(label: &str) -> DumpManifest {
    let t = chrono::DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
        .unwrap()
        .to_utc();
    let obj = |key: String| StoredObject {
        key,
        size: 10,
        stored_size: 5,
        sha256: pgward::codec::Sha256Digest::of(b"x"),
    };
    DumpManifest {
        format_version: DUMP_MANIFEST_VERSION,
        label: Label::parse(label).unwrap(),
        system_identifier: 7,
        server_version: "15.18".into(),
        pg_dump_version: "15.18".into(),
        start_time: t,
        stop_time: t,
        role_passwords: true,
        globals: obj(layout::dump_globals_key(label)),
        databases: vec![DatabaseDump {
            name: "app".into(),
            object: obj(layout::dump_database_key(label, "app")),
            toc_entries: 1,
            start_time: t,
            stop_time: t,
        }],
    }
}

async fn context() -> (Context, Arc<MemoryStorage>) {
    let mem = Arc::new(MemoryStorage::new());
    let id = RepoIdentity {
        format_version: layout::FORMAT_VERSION,
        system_identifier: 7,
        pg_major: 15,
        wal_segment_size: 16 << 20,
        block_size: 1 << 20,
        created_at: "2026-12-01T00:00:00Z".into(),
        created_by: "test".into(),
    };
    RepoIdentity::create(mem.as_ref(), &id).await.unwrap();
    let cfg = Config::parse("[repo]\nurl = \"file:///nonexistent\"\n", "t").unwrap();
    let ctx = Context::with_storage(cfg, "/nonexistent/pgward.toml".into(), mem.clone());
    (ctx, mem)
}

#[tokio::test]
async fn pins_are_checked_shown_by_info_with_the_policy_and_removed() {
    let (ctx, mem) = context().await;
    manifest("20261130T120000Z")
        .store(mem.as_ref(), 3)
        .await
        .unwrap();
    manifest("20261201T120000Z")
        .store(mem.as_ref(), 3)
        .await
        .unwrap();
    mem.put(
        &layout::dump_database_key("20261201T130000Z", "app"),
        Bytes::from_static(b"partial"),
    )
    .await
    .unwrap();

    let pin = |label: &str| commands::pin::Args {
        label: label.into(),
        reason: Some("before migration".into()),
    };
    let e = format!(
        "{:#}",
        commands::pin::run(&ctx, &pin("20200101T000000Z"))
            .await
            .unwrap_err()
    );
    assert!(
        e.contains("no complete backup or dump") && e.contains("pgward info"),
        "{e}"
    );
    let e = format!(
        "{:#}",
        commands::pin::run(&ctx, &pin("20261201T130000Z"))
            .await
            .unwrap_err()
    );
    assert!(e.contains("incomplete dump"), "{e}");

    commands::pin::run(&ctx, &pin("20261130T120000Z"))
        .await
        .unwrap();
    let r = commands::info::report(&ctx).await.unwrap();
    assert_eq!(r.pins.len(), 1);
    assert_eq!(r.pins[0].reason.as_deref(), Some("before migration"));
    let ret = r.retention.as_ref().unwrap();
    assert_eq!(ret.policy, "built-in policies/default.toml");
    let old = ret
        .dumps
        .iter()
        .find(|v| v.label == "20261130T120000Z")
        .unwrap();
    assert!(
        old.decision.is_keep() && old.why.contains("pinned: before migration"),
        "{old:?}"
    );
    let text = commands::info::render_text(&r);
    assert!(
        text.contains("Pins") && text.contains("before migration"),
        "{text}"
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["pins"][0]["label"], "20261130T120000Z");
    assert_eq!(json["retention"]["dumps"][0]["action"], "keep");

    commands::unpin::run(
        &ctx,
        &commands::unpin::Args {
            label: "20261130T120000Z".into(),
        },
    )
    .await
    .unwrap();
    let e = format!(
        "{:#}",
        commands::unpin::run(
            &ctx,
            &commands::unpin::Args {
                label: "20261130T120000Z".into()
            }
        )
        .await
        .unwrap_err()
    );
    assert!(e.contains("is not pinned"), "{e}");
    assert!(commands::info::report(&ctx).await.unwrap().pins.is_empty());

    // An unparsable pin is an error naming it, never "not pinned".
    mem.put(
        &layout::pin_key("20261130T120000Z"),
        Bytes::from_static(b"{"),
    )
    .await
    .unwrap();
    let e = format!("{:#}", commands::info::report(&ctx).await.unwrap_err());
    assert!(e.contains("pins/20261130T120000Z.json"), "{e}");
}

/// The agent's expire waits for one started by hand ([agent] lease_wait) and stops waiting
/// when cancelled; the command line's is refused at once, naming the holder.
#[tokio::test]
async fn the_agents_expire_waits_for_a_running_one_and_the_command_lines_does_not() {
    use pgward::repo::lock::Lease;
    use std::time::Duration;
    let (mut ctx, mem) = context().await;
    let args = commands::expire::Args {
        confirm: true,
        force: false,
        json: false,
    };
    let held = Lease::acquire(mem.clone(), "expire", "expire")
        .await
        .unwrap();
    let e = format!(
        "{:#}",
        commands::expire::run_expire(&ctx, &args).await.unwrap_err()
    );
    assert!(e.contains("another expire is running"), "{e}");

    ctx.lease_wait = Duration::from_secs(30);
    let (got, ()) = tokio::join!(commands::expire::run_expire(&ctx, &args), async {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        held.release().await.unwrap();
    });
    got.unwrap();

    let _held = Lease::acquire(mem.clone(), "expire", "expire")
        .await
        .unwrap();
    let cancel = ctx.stopping.clone();
    let started = std::time::Instant::now();
    let (got, ()) = tokio::join!(commands::expire::run_expire(&ctx, &args), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.cancel();
    });
    let e = format!("{:#}", got.unwrap_err());
    assert!(e.contains("stopped while waiting for the lock"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

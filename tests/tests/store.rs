//! The coordinator's store, the same tests on both backends: SQLite (a file
//! in a temporary directory) and PostgreSQL (Debian's server, started by the
//! test). Two `Store`s on one database stand for two coordinators.

use berth_coordinator::domain::lifecycle::State;
use berth_coordinator::domain::node::{JoinRefusal, Registration};
use berth_coordinator::domain::workspace::WorkspaceRow;
use berth_coordinator::store::{Decision, Store};
use berth_proto::units::now_ms;
use berth_tests::db::{alloc, decision, node, res, ws};
use std::collections::BTreeSet;

berth_tests::on_both_backends!(
    migrations_rerun_and_the_ca_is_made_once,
    names_are_unique_per_owner_until_deleted,
    compare_and_set_refuses_a_stale_version,
    placement_never_overcommits_and_is_recorded_once,
    two_coordinators_racing_place_each_workspace_once_within_capacity,
    a_join_token_works_once_under_concurrency,
    cached_images_grow_and_registration_replaces_them,
    api_tokens_resolve_by_hash_only,
);

async fn migrations_rerun_and_the_ca_is_made_once(url: &str) {
    let a = Store::open(url).await.unwrap();
    let b = Store::open(url).await.unwrap();
    let made = std::sync::atomic::AtomicU32::new(0);
    let gen = |tag: &'static str| {
        made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        move || Ok((format!("cert-{tag}"), format!("key-{tag}")))
    };
    let (ca, cb) = tokio::join!(a.ca_or_init(gen("a")), b.ca_or_init(gen("b")));
    let (ca, cb) = (ca.unwrap(), cb.unwrap());
    assert_eq!(ca, cb, "both coordinators sign with one CA");
    assert_eq!(
        a.ca_or_init(gen("c")).await.unwrap(),
        ca,
        "kept across calls"
    );
    drop((a, b));
    let c = Store::open(url).await.unwrap();
    assert_eq!(
        c.ca_or_init(gen("d")).await.unwrap(),
        ca,
        "kept across restarts"
    );
}

async fn names_are_unique_per_owner_until_deleted(url: &str) {
    let s = Store::open(url).await.unwrap();
    let first = ws("w1", "alice", "demo", 100);
    s.insert_workspace(&first).await.unwrap();
    let e = s
        .insert_workspace(&ws("w2", "alice", "demo", 100))
        .await
        .unwrap_err();
    assert_eq!((status(&e), e.code), (409, "name_taken"));
    s.insert_workspace(&ws("w3", "bob", "demo", 100))
        .await
        .unwrap();
    // Once deleted, the name is free again; lookups prefer the live one.
    let mut gone = first.clone();
    gone.state = State::Deleted;
    s.update_workspace(&first, &gone).await.unwrap().unwrap();
    s.insert_workspace(&ws("w4", "alice", "demo", 100))
        .await
        .unwrap();
    let live = s.workspace_by_name("alice", "demo").await.unwrap().unwrap();
    assert_eq!(live.id, "w4");
    assert!(s
        .workspace_by_name("carol", "demo")
        .await
        .unwrap()
        .is_none());
}

async fn compare_and_set_refuses_a_stale_version(url: &str) {
    let s = Store::open(url).await.unwrap();
    let w = ws("w1", "alice", "demo", 100);
    s.insert_workspace(&w).await.unwrap();
    let mut next = w.clone();
    next.reason = Some("first".into());
    let stored = s.update_workspace(&w, &next).await.unwrap().unwrap();
    assert_eq!(stored.version, w.version + 1);
    let mut other = w.clone();
    other.reason = Some("second, from a stale read".into());
    assert!(s.update_workspace(&w, &other).await.unwrap().is_none());
    let row = s.workspace("w1").await.unwrap().unwrap();
    assert_eq!(row.reason.as_deref(), Some("first"));
    assert_eq!(row, stored, "the stored row is what update returned");
}

async fn placement_never_overcommits_and_is_recorded_once(url: &str) {
    let s = Store::open(url).await.unwrap();
    node(&s, "n1", 1000, 10).await;
    let list: Vec<WorkspaceRow> = (1..=3)
        .map(|i| ws(&format!("w{i}"), "a", &format!("d{i}"), 400))
        .collect();
    for w in &list {
        s.insert_workspace(w).await.unwrap();
    }
    let ds: Vec<Decision> = list.iter().map(|w| decision(w, "n1")).collect();
    let placed = s.place(&ds, "c1").await.unwrap();
    assert_eq!(placed.len(), 2, "1000m holds two of 400m");
    assert_eq!(alloc(&s, "n1").await, (800, 2));
    // The same decisions again (stale versions): nothing changes.
    assert!(s.place(&ds, "c2").await.unwrap().is_empty());
    assert_eq!(alloc(&s, "n1").await, (800, 2));
    let counts = s.placement_counts().await.unwrap();
    assert_eq!(counts.len(), 2);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    let left = s.workspace("w3").await.unwrap().unwrap();
    assert_eq!(left.state, State::Pending);
    // Deleting a placed workspace releases its reservation in the same write.
    let w1 = s.workspace("w1").await.unwrap().unwrap();
    let mut gone = w1.clone();
    gone.state = State::Deleted;
    s.update_workspace(&w1, &gone).await.unwrap().unwrap();
    assert_eq!(alloc(&s, "n1").await, (400, 1));
    // A cordoned node takes nothing.
    assert!(s.set_node_flags("n1", true, false).await.unwrap());
    let left = s.workspace("w3").await.unwrap().unwrap();
    assert!(s
        .place(&[decision(&left, "n1")], "c1")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(alloc(&s, "n1").await, (400, 1));
}

/// Two coordinators (two pools) place the same pending workspaces at once,
/// each choosing nodes on its own: constraints, not luck, keep every
/// workspace placed once and every node within capacity.
async fn two_coordinators_racing_place_each_workspace_once_within_capacity(url: &str) {
    let a = Store::open(url).await.unwrap();
    let b = Store::open(url).await.unwrap();
    for n in ["n1", "n2", "n3"] {
        node(&a, n, 2000, 100).await;
    }
    // 60 × 200m for 3 × 2000m: exactly half of them fit.
    for i in 0..60 {
        a.insert_workspace(&ws(&format!("w{i:02}"), "u", &format!("d{i}"), 200))
            .await
            .unwrap();
    }
    async fn racer(s: Store, name: &'static str, offset: usize) -> usize {
        let mut placed = 0;
        for round in 0..50 {
            let pending = s.workspaces_in(&[State::Pending], 1024).await.unwrap();
            if pending.is_empty() {
                break;
            }
            let nodes = ["n1", "n2", "n3"];
            let ds: Vec<Decision> = pending
                .iter()
                .enumerate()
                .map(|(i, w)| decision(w, nodes[(i + offset + round) % 3]))
                .collect();
            // Small batches interleave the two writers.
            for chunk in ds.chunks(4) {
                match s.place(chunk, name).await {
                    Ok(p) => placed += p.len(),
                    // PostgreSQL may abort one of two crossing transactions
                    // (deadlock); the controller retries on its next pass.
                    Err(e) => assert_eq!(status(&e), 503, "{e}"),
                }
            }
        }
        placed
    }
    let (pa, pb) = tokio::join!(
        tokio::spawn(racer(a.clone(), "coord-a", 0)),
        tokio::spawn(racer(b.clone(), "coord-b", 1))
    );
    let (pa, pb) = (pa.unwrap(), pb.unwrap());
    assert_eq!(
        pa + pb,
        30,
        "capacity for 30, each placed by one coordinator ({pa} + {pb})"
    );
    let counts = a.placement_counts().await.unwrap();
    assert_eq!(counts.len(), 30);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    let rows = a.workspaces(&Default::default()).await.unwrap();
    for n in ["n1", "n2", "n3"] {
        let on: u64 = rows
            .iter()
            .filter(|w| w.node.as_deref() == Some(n) && w.state == State::Scheduled)
            .map(|w| w.resources.cpu_millis)
            .sum();
        let (cpu, _) = alloc(&a, n).await;
        assert_eq!(cpu, on, "{n}: allocation equals its workspaces");
        assert!(cpu <= 2000, "{n} overcommitted: {cpu}");
    }
}

async fn a_join_token_works_once_under_concurrency(url: &str) {
    let s = Store::open(url).await.unwrap();
    s.add_join_token("t1", "hash", "admin", now_ms() + 60_000, 1)
        .await
        .unwrap();
    let tries = (0..8).map(|i| {
        let s = s.clone();
        tokio::spawn(async move { s.join("t1", "hash", &format!("node{i}"), now_ms()).await })
    });
    let results: Vec<_> = futures::future::join_all(tries)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(results
        .iter()
        .all(|r| matches!(r, Ok(()) | Err(JoinRefusal::Used))));
    assert_eq!(s.nodes().await.unwrap().len(), 1);
    assert_eq!(
        s.join("t1", "wrong", "x", now_ms()).await.unwrap(),
        Err(JoinRefusal::Unknown)
    );
    s.add_join_token("t2", "hash", "admin", now_ms() - 1, 1)
        .await
        .unwrap();
    assert_eq!(
        s.join("t2", "hash", "y", now_ms()).await.unwrap(),
        Err(JoinRefusal::Expired)
    );
    // A node id already taken: refused, and the token stays usable.
    let taken = s.nodes().await.unwrap()[0].id.clone();
    s.add_join_token("t3", "hash", "admin", now_ms() + 60_000, 1)
        .await
        .unwrap();
    let e = s.join("t3", "hash", &taken, now_ms()).await.unwrap_err();
    assert_eq!((status(&e), e.code), (409, "node_exists"));
    assert_eq!(
        s.join("t3", "hash", "fresh", now_ms()).await.unwrap(),
        Ok(())
    );
    // A token for three nodes joins exactly three of eight racing.
    s.add_join_token("t4", "hash", "admin", now_ms() + 60_000, 3)
        .await
        .unwrap();
    let tries = (0..8).map(|i| {
        let s = s.clone();
        tokio::spawn(async move { s.join("t4", "hash", &format!("many{i}"), now_ms()).await })
    });
    let results: Vec<_> = futures::future::join_all(tries)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        3,
        "{results:?}"
    );
    assert!(results
        .iter()
        .all(|r| matches!(r, Ok(()) | Err(JoinRefusal::Used))));
    // Revoked: refused from then on, with uses left; the nodes it joined stay.
    s.add_join_token("t5", "hash", "admin", now_ms() + 60_000, 5)
        .await
        .unwrap();
    assert_eq!(s.join("t5", "hash", "r1", now_ms()).await.unwrap(), Ok(()));
    assert!(s.revoke_join_token("t5", now_ms()).await.unwrap());
    assert!(!s.revoke_join_token("nope", now_ms()).await.unwrap());
    assert_eq!(
        s.join("t5", "hash", "r2", now_ms()).await.unwrap(),
        Err(JoinRefusal::Revoked)
    );
    assert!(s.node("r1").await.unwrap().is_some());
    assert!(s.node("r2").await.unwrap().is_none());
}

async fn cached_images_grow_and_registration_replaces_them(url: &str) {
    let s = Store::open(url).await.unwrap();
    node(&s, "n1", 1000, 10).await;
    // Many more concurrent notes than a compare-and-set with a few retries
    // survives: every one must land.
    let notes = (0..40).map(|i| {
        let s = s.clone();
        tokio::spawn(async move { s.note_cached_image("n1", &format!("reg/img{i}:1")).await })
    });
    for r in futures::future::join_all(notes).await {
        r.unwrap().unwrap();
    }
    let n = s.node("n1").await.unwrap().unwrap();
    assert_eq!(
        n.cached_images.len(),
        40,
        "no concurrent note lost: {:?}",
        n.cached_images
    );
    let reg = Registration {
        capacity: res(1000),
        slots: 10,
        cached: BTreeSet::from(["reg/only:1".to_string()]),
        ..Default::default()
    };
    s.register_node("n1", &reg, now_ms()).await.unwrap();
    let n = s.node("n1").await.unwrap().unwrap();
    assert_eq!(n.cached_images, reg.cached);
    s.note_cached_image("nobody", "x").await.unwrap();
}

async fn api_tokens_resolve_by_hash_only(url: &str) {
    let s = Store::open(url).await.unwrap();
    assert!(!s.has_admin().await.unwrap());
    s.add_api_token("id1", "h-admin", "root", true)
        .await
        .unwrap();
    s.add_api_token("id2", "h-bob", "bob", false).await.unwrap();
    assert!(s.has_admin().await.unwrap());
    let p = s.principal("h-bob").await.unwrap().unwrap();
    assert_eq!((p.user.as_str(), p.admin), ("bob", false));
    assert!(s.principal("id2").await.unwrap().is_none());
    assert!(
        s.add_api_token("id3", "h-bob", "eve", true).await.is_err(),
        "hashes are unique"
    );
}

/// The HTTP status an error is answered with.
fn status(e: &berth_coordinator::error::Error) -> u16 {
    berth_coordinator::http::status_of(e.kind).as_u16()
}

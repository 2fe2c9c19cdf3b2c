//! TEST-PLAN 14 on the real store (SQLite and PostgreSQL): random lifecycle
//! sequences, failures at every step and coordinator restarts included, and
//! after every step each node's allocation equals the sum of what its
//! workspaces hold. A store corrupted the way issue 9 found it is repaired
//! on start.

use berth_coordinator::domain::capacity;
use berth_coordinator::domain::lifecycle::{self, Event, Observed, State};
use berth_coordinator::domain::scheduler::Resources;
use berth_coordinator::store::{Store, NO_ROOM};
use berth_tests::db::{alloc, decision, node, ws};
use rand::{Rng, SeedableRng};

berth_tests::on_both_backends!(
    allocations_follow_random_lifecycles,
    failed_then_deleted_releases_once,
    stopped_frees_cpu_and_memory_and_a_start_waits_for_room,
    a_corrupted_store_is_repaired_on_start,
);

const NODES: [&str; 2] = ["n1", "n2"];

/// Checks the invariant on every node.
async fn assert_consistent(s: &Store, step: &str) {
    let rows = s.workspaces(&Default::default()).await.unwrap();
    for row in s.nodes().await.unwrap() {
        let n = row.id.as_str();
        let mut want = (Resources::default(), 0u32);
        for w in rows.iter().filter(|w| w.node.as_deref() == Some(n)) {
            let h = capacity::held(w.state, w.node.as_deref(), w.resources);
            if h != Resources::default() {
                want.0.cpu_millis += h.cpu_millis;
                want.0.memory_bytes += h.memory_bytes;
                want.0.disk_bytes += h.disk_bytes;
                want.1 += 1;
            }
        }
        assert_eq!(
            (row.allocated, row.allocated_slots),
            want,
            "node {n} after {step}"
        );
    }
}

/// The events a workspace can meet, node reports and faults included.
fn random_event(rng: &mut rand::rngs::StdRng) -> Event {
    match rng.random_range(0..12) {
        0 => Event::StartRequested,
        1 => Event::StopRequested,
        2 => Event::DeleteRequested,
        3 => Event::Accepted,
        4 | 5 => Event::Observed(Observed::Running),
        6 => Event::Observed(Observed::Stopped),
        7 => Event::Observed(Observed::Absent),
        8 => Event::Observed(Observed::Failed("agent failure".into())),
        9 => Event::NodeLost,
        10 => Event::Timeout,
        _ => Event::Unplaceable("no node fits".into()),
    }
}

async fn allocations_follow_random_lifecycles(url: &str) {
    let seed: u64 = std::env::var("BERTH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("seed {seed} (BERTH_SEED reproduces a run)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut s = Store::open(url).await.unwrap();
    // Small nodes, so starts and placements run out of room.
    for n in NODES {
        node(&s, n, 1500, 4).await;
    }
    let ids: Vec<String> = (0..10).map(|i| format!("w{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        s.insert_workspace(&ws(
            id,
            "alice",
            &format!("d{i}"),
            300 + 100 * (i as u64 % 4),
        ))
        .await
        .unwrap();
    }
    let (mut applied, mut no_room) = (0, 0);
    for step in 0..400 {
        let id = &ids[rng.random_range(0..ids.len())];
        let Some(w) = s.workspace(id).await.unwrap() else {
            continue;
        };
        if w.state == State::Pending && rng.random_bool(0.5) {
            // A placement, as the scheduler commits it (it may not fit).
            let n = NODES[rng.random_range(0..NODES.len())];
            s.place(&[decision(&w, n)], "c1").await.unwrap();
        } else {
            let event = random_event(&mut rng);
            let Ok((lc, _)) = lifecycle::step(&w.lifecycle(), &event) else {
                continue;
            };
            let next = w.with_lifecycle(&lc, berth_proto::units::now_ms());
            match s.update_workspace(&w, &next).await {
                Ok(_) => applied += 1,
                Err(e) if e.code == NO_ROOM => no_room += 1,
                Err(e) => panic!("step {step} {event:?} on {w:?}: {e}"),
            }
        }
        assert_consistent(&s, &format!("step {step} (seed {seed})")).await;
        // A coordinator restart: a new store handle repairs nothing.
        if rng.random_bool(0.05) {
            s = Store::open(url).await.unwrap();
            let fixes = s.repair_allocations().await.unwrap();
            assert!(
                fixes.is_empty(),
                "consistent store repaired: {fixes:?} (seed {seed})"
            );
        }
    }
    assert!(applied > 100, "the sequence exercised the store: {applied}");
    eprintln!("{applied} transitions, {no_room} starts without room");
}

/// Issue 9's double release: a placed workspace fails, then is deleted.
async fn failed_then_deleted_releases_once(url: &str) {
    let s = Store::open(url).await.unwrap();
    node(&s, "n1", 2000, 8).await;
    let mut rows = Vec::new();
    for i in 0..2 {
        let w = ws(&format!("w{i}"), "a", &format!("d{i}"), 600);
        s.insert_workspace(&w).await.unwrap();
        rows.extend(s.place(&[decision(&w, "n1")], "c1").await.unwrap());
    }
    assert_eq!(alloc(&s, "n1").await, (1200, 2));
    let mut w = rows[0].clone();
    for event in [
        Event::Observed(Observed::Failed("pull failed".into())),
        Event::DeleteRequested,
        Event::Observed(Observed::Absent),
    ] {
        let (lc, _) = lifecycle::step(&w.lifecycle(), &event).unwrap();
        let next = w.with_lifecycle(&lc, 1);
        w = s.update_workspace(&w, &next).await.unwrap().unwrap();
    }
    assert_eq!(w.state, State::Deleted);
    assert_eq!(alloc(&s, "n1").await, (600, 1), "only the other one holds");
    assert_consistent(&s, "failed, deleted").await;
}

async fn stopped_frees_cpu_and_memory_and_a_start_waits_for_room(url: &str) {
    let s = Store::open(url).await.unwrap();
    node(&s, "n1", 1000, 8).await;
    let step = |w: &berth_coordinator::domain::workspace::WorkspaceRow, e: Event| {
        let (lc, _) = lifecycle::step(&w.lifecycle(), &e).unwrap();
        w.with_lifecycle(&lc, 1)
    };
    let a = ws("wa", "a", "a", 800);
    s.insert_workspace(&a).await.unwrap();
    let a = s
        .place(&[decision(&a, "n1")], "c1")
        .await
        .unwrap()
        .remove(0);
    let a = s
        .update_workspace(&a, &step(&a, Event::Accepted))
        .await
        .unwrap()
        .unwrap();
    let a = s
        .update_workspace(&a, &step(&a, Event::Observed(Observed::Running)))
        .await
        .unwrap()
        .unwrap();
    let a = s
        .update_workspace(&a, &step(&a, Event::StopRequested))
        .await
        .unwrap()
        .unwrap();
    let a = s
        .update_workspace(&a, &step(&a, Event::Observed(Observed::Stopped)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.state, State::Stopped);
    let n = s.node("n1").await.unwrap().unwrap();
    assert_eq!(
        (n.allocated.cpu_millis, n.allocated.memory_bytes),
        (0, 0),
        "stopped frees CPU and memory"
    );
    assert_eq!(
        (n.allocated.disk_bytes, n.allocated_slots),
        (a.resources.disk_bytes, 1),
        "its disk stays"
    );
    // Another workspace takes the CPU; starting the first finds no room.
    let b = ws("wb", "a", "b", 500);
    s.insert_workspace(&b).await.unwrap();
    assert_eq!(s.place(&[decision(&b, "n1")], "c1").await.unwrap().len(), 1);
    let e = s
        .update_workspace(&a, &step(&a, Event::StartRequested))
        .await
        .unwrap_err();
    assert_eq!(e.code, NO_ROOM);
    assert!(e.message.contains("300m CPU short"), "{}", e.message);
    assert_eq!(
        s.workspace("wa").await.unwrap().unwrap().state,
        State::Stopped,
        "nothing written"
    );
    assert_consistent(&s, "refused start").await;
}

async fn a_corrupted_store_is_repaired_on_start(url: &str) {
    let s = Store::open(url).await.unwrap();
    node(&s, "n1", 2000, 8).await;
    let w = ws("w1", "a", "d1", 700);
    s.insert_workspace(&w).await.unwrap();
    s.place(&[decision(&w, "n1")], "c1").await.unwrap();
    // What the old double release left behind: an allocation that is not
    // the sum of the rows.
    sqlx::query("UPDATE nodes SET alloc_cpu_millis = 1500, alloc_slots = 0 WHERE id = 'n1'")
        .execute(s.pool())
        .await
        .unwrap();
    let fixes = Store::open(url)
        .await
        .unwrap()
        .repair_allocations()
        .await
        .unwrap();
    assert_eq!(fixes.len(), 1, "{fixes:?}");
    assert_eq!(alloc(&s, "n1").await, (700, 1));
    assert_consistent(&s, "repair").await;
}

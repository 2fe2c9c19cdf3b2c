//! The capacity and cost reports (docs/admin.md, "Capacity and cost") on a
//! real two-node cluster: after placing a known set of workspaces, how many
//! more of each tier fit equals what a brute-force packer in this test
//! computes from the nodes the API lists (and the workspaces then created
//! are placed up to exactly that number, the next one waits); a cordoned
//! node takes none; the costs are the hand calculation of the documented
//! model; the usage sampler's hours and cost agree with it; the forecast
//! on a synthetic history is the line's; bad input is refused.

use berth_tests::{Cluster, ClusterOptions};
use serde_json::{json, Value};
use sqlx::Row;
use std::time::Duration;

const T: Duration = Duration::from_secs(90);
const GIB: u64 = 1 << 30;
const PRICE: f64 = 0.5;
const RATIO: f64 = 0.031611 / 0.004237;

/// (cpu_millis, memory, disk) of the tiers configured below.
const SMALL: (u64, u64, u64) = (1000, GIB, GIB);
const BIG: (u64, u64, u64) = (3000, 4 * GIB, 4 * GIB);

/// How many more of `shape` the nodes take, placing them one at a time on
/// the first node with room (ready and not cordoned): the brute force.
fn brute_force(nodes: &[Value], shape: (u64, u64, u64)) -> u64 {
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap();
    let mut free: Vec<[i64; 4]> = nodes
        .iter()
        .filter(|v| v["status"] == "ready" && v["cordoned"] == false && v["draining"] == false)
        .map(|v| {
            let (c, a) = (&v["capacity"], &v["allocated"]);
            [
                (n(c, "cpu_millis") - n(a, "cpu_millis")) as i64,
                (n(c, "memory_bytes") - n(a, "memory_bytes")) as i64,
                (n(c, "disk_bytes") - n(a, "disk_bytes")) as i64,
                (n(c, "workspaces") - n(a, "workspaces")) as i64,
            ]
        })
        .collect();
    let need = [shape.0 as i64, shape.1 as i64, shape.2 as i64, 1];
    let mut placed = 0;
    'more: loop {
        for f in free.iter_mut() {
            if f.iter().zip(need).all(|(have, want)| *have >= want) {
                f.iter_mut()
                    .zip(need)
                    .for_each(|(have, want)| *have -= want);
                placed += 1;
                continue 'more;
            }
        }
        return placed;
    }
}

/// What `shape` costs per hour on a node of `cores` and `gib`, by the
/// documented model: the node's price split into CPU and memory rates.
fn hourly(shape: (u64, u64, u64), cores: f64, gib: f64) -> f64 {
    let per_core = PRICE / (cores + gib / RATIO);
    shape.0 as f64 / 1000.0 * per_core + shape.1 as f64 / GIB as f64 * per_core / RATIO
}

async fn report(c: &Cluster, query: &str) -> Value {
    let (s, r) = c.get(&format!("/v1/admin/capacity{query}")).await;
    assert_eq!(s, 200, "{r}");
    r
}

fn tier<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tier"] == name)
        .unwrap()
}

async fn create(c: &Cluster, name: &str, tier: &str) -> u16 {
    c.post(
        "/v1/workspaces",
        json!({"name": name, "image": c.tiny(), "tier": tier}),
    )
    .await
    .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_packs_like_the_scheduler_and_costs_add_up() {
    let mut c = Cluster::start(ClusterOptions {
        agents: 2,
        ..ClusterOptions::default()
    })
    .await;
    let config = c.dir.join("capacity.toml");
    std::fs::write(
        &config,
        "[[tiers]]\nname = \"small\"\ncpu_millis = 1000\nmemory = \"1GiB\"\ndisk = \"1GiB\"\n\n\
         [[tiers]]\nname = \"big\"\ncpu_millis = 3000\nmemory = \"4GiB\"\ndisk = \"4GiB\"\n\n\
         [cost]\nnode_hourly = 0.5\nsample_seconds = 0.5\n",
    )
    .unwrap();
    c.kill_coordinator();
    c.set_coordinator_args(vec![
        "--config".into(),
        config.display().to_string(),
        "--cpu-overcommit".into(),
        "1".into(),
    ]);
    c.start_coordinator();

    // A known set: one big workspace per node (4 cores each): 1 core left.
    for name in ["b1", "b2"] {
        assert_eq!(create(&c, name, "big").await, 201);
        c.wait_state(name, "running", T).await;
    }
    let (_, nodes) = c.get("/v1/nodes").await;
    let nodes = nodes.as_array().unwrap().clone();
    let r = report(&c, "").await;
    assert_eq!(tier(&r, "small")["fits"], brute_force(&nodes, SMALL), "{r}");
    assert_eq!(tier(&r, "big")["fits"], brute_force(&nodes, BIG), "{r}");
    assert_eq!(tier(&r, "small")["fits"], 2);
    assert_eq!(tier(&r, "big")["fits"], 0);
    // What the nodes' workspaces use, as their heartbeats say: each node
    // runs one, charging memory and using its volume.
    let r = berth_tests::eventually(Duration::from_secs(20), || async {
        let r = report(&c, "").await;
        let all = r["nodes"].as_array()?.iter().all(|n| {
            n["used"]["memory_bytes"].as_u64().unwrap_or(0) > 0
                && n["used"]["disk_bytes"].as_u64().unwrap_or(0) > 0
        });
        all.then_some(r)
    })
    .await
    .expect("every node says what its workspaces use");
    for n in r["nodes"].as_array().unwrap() {
        assert!(
            n["used"]["memory_bytes"].as_u64() <= n["allocated"]["memory_bytes"].as_u64(),
            "a workspace cannot use more memory than it reserved: {n}"
        );
    }
    // Dividing totals would say 2 cores free, so not one big: it is the
    // fragmentation that leaves 2 cores stranded for big.
    assert_eq!(tier(&r, "big")["stranded"]["cpu_millis"], 2000, "{r}");
    assert_eq!(tier(&r, "small")["stranded"]["cpu_millis"], 0);

    // Costs: each node 0.5/h; the workspaces' reservations by the model.
    let cores = nodes[0]["capacity"]["cpu_millis"].as_u64().unwrap() as f64 / 1000.0;
    let gib = nodes[0]["capacity"]["memory_bytes"].as_u64().unwrap() as f64 / GIB as f64;
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9 * b.max(1.0);
    assert!(
        close(r["cost"]["hourly"].as_f64().unwrap(), 2.0 * PRICE),
        "{r}"
    );
    let reserved = 2.0 * hourly(BIG, cores, gib);
    assert!(
        close(r["cost"]["allocated_hourly"].as_f64().unwrap(), reserved),
        "{r}"
    );
    assert!(close(
        r["cost"]["idle_hourly"].as_f64().unwrap(),
        2.0 * PRICE - reserved
    ));
    assert!(close(
        tier(&r, "small")["hourly"].as_f64().unwrap(),
        hourly(SMALL, cores, gib)
    ));
    assert_eq!(r["nodes"][0]["hourly"], PRICE);

    // "To hold 10 more small you need K more nodes like n0": 4 fit on an
    // empty one, 2 fit now.
    let r = report(&c, "?tier=small&more=10&like=n0").await;
    assert_eq!(r["tiers"].as_array().unwrap().len(), 1);
    assert_eq!(tier(&r, "small")["needed"]["nodes"], 2, "{r}");

    // The brute force's number is what the scheduler places: two smalls
    // run, a third waits.
    for name in ["s1", "s2", "s3"] {
        assert_eq!(create(&c, name, "small").await, 201);
    }
    c.wait_state("s1", "running", T).await;
    c.wait_state("s2", "running", T).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, s3) = c.get("/v1/workspaces/s3").await;
    assert_eq!(s3["state"], "pending", "{s3}");
    assert_eq!(tier(&report(&c, "").await, "small")["fits"], 0);
    let (s, _) = c.delete("/v1/workspaces/s3?force=true").await;
    assert_eq!(s, 202);

    // A cordoned node takes none; the brute force agrees.
    let (s, _) = c.post("/v1/nodes/n1/cordon", json!({})).await;
    assert_eq!(s, 200);
    let (s, _) = c.post("/v1/workspaces/s2/stop", json!({})).await;
    assert_eq!(s, 202);
    c.wait_state("s2", "stopped", T).await;
    let (_, nodes) = c.get("/v1/nodes").await;
    let r = report(&c, "").await;
    assert_eq!(
        tier(&r, "small")["fits"],
        brute_force(nodes.as_array().unwrap(), SMALL),
        "{r}"
    );
    let states: Vec<&str> = r["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["state"].as_str().unwrap())
        .collect();
    assert!(states.contains(&"cordoned"), "{states:?}");
    // The CLI says the same.
    let (code, out, err) = c
        .berth(&c.admin_token, &["admin", "capacity", "--json"])
        .await;
    assert_eq!(code, 0, "{err}");
    let cli: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(cli["tiers"], r["tiers"]);
    let (code, out, _) = c.berth(&c.admin_token, &["admin", "capacity"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("FITS NOW") && out.contains("Cost per hour"),
        "{out}"
    );

    // Usage: the sampler's cost per running hour is the tier's rate.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (s, u) = c.get("/v1/admin/usage?by=tier").await;
    assert_eq!(s, 200, "{u}");
    let big = u["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "big")
        .expect("big's usage");
    assert_eq!(big["workspaces"], 2);
    let hours = big["hours"].as_f64().unwrap();
    assert!(
        hours > 0.0 && big["idle_hours"].as_f64().unwrap() <= hours,
        "{big}"
    );
    let per_hour = big["cost"].as_f64().unwrap() / hours;
    assert!(close(per_hour, hourly(BIG, cores, gib)), "{big}");
    let (code, out, err) = c
        .berth(&c.admin_token, &["admin", "usage", "--by", "user", "--csv"])
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("key,workspaces,hours,idle_hours,cost,idle_cost\nadmin,"),
        "{out}"
    );
    let (s, e) = c.get("/v1/admin/usage?by=owner").await;
    assert_eq!((s, e["code"].as_str()), (400, Some("invalid_query")), "{e}");
    let (s, e) = c.get("/v1/admin/usage?by=team").await;
    assert_eq!(
        (s, e["rows"].as_array().map(Vec::len)),
        (200, Some(0)),
        "no team workspaces: {e}"
    );
    let (s, e) = c.get("/v1/admin/capacity?tier=nope").await;
    assert_eq!((s, e["code"].as_str()), (404, Some("not_found")));
    let (s, e) = c.get("/v1/admin/capacity?more=0").await;
    assert_eq!((s, e["code"].as_str()), (422, Some("invalid_more")));
    let (s, _) = c.get_as("/v1/admin/capacity", "bt_nobody_x").await;
    assert_eq!(s, 401);

    // The forecast on a synthetic history: ten past hours, 100 millicores
    // more each hour, up to now's allocation.
    let r = report(&c, "").await;
    let cpu = &r["forecast"][0];
    assert_eq!(cpu["resource"], "cpu_millis");
    let (now_alloc, cap) = (
        cpu["allocated"].as_i64().unwrap(),
        cpu["allocatable"].as_i64().unwrap(),
    );
    let db = format!(
        "sqlite://{}",
        c.coordinators[0].dir.join("berth.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let hour: i64 = sqlx::query("SELECT MAX(hour_ms) FROM capacity_hours")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    let flat = |i: usize, k: &str| r["forecast"][i][k].as_i64().unwrap();
    for k in 1..=10 {
        sqlx::query("INSERT INTO capacity_hours VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(hour - k * 3_600_000)
            .bind(now_alloc - k * 100)
            .bind(cap)
            .bind(flat(1, "allocated"))
            .bind(flat(1, "allocatable"))
            .bind(flat(2, "allocated"))
            .bind(flat(2, "allocatable"))
            .bind(flat(3, "allocated"))
            .bind(flat(3, "allocatable"))
            .execute(&pool)
            .await
            .unwrap();
    }
    let r = report(&c, "").await;
    let cpu = &r["forecast"][0];
    assert_eq!(cpu["samples"], 11, "{cpu}");
    let h = cpu["runs_out_in_hours"].as_f64().unwrap();
    let want = (cap - now_alloc) as f64 / 100.0;
    assert!((h - want).abs() < 1e-6, "{h} vs {want}: {cpu}");
    assert!(
        r["forecast"][1]["runs_out_in_hours"].is_null(),
        "memory: flat"
    );
    c.finish().await;
}

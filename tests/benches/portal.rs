//! portal: the workspaces page in headless Chromium with 20 workspaces,
//! signed in: the time from navigation to the list rendered (the table's
//! 20 rows parsed and the page's script run, i.e. the load event), and the
//! bytes transferred on a first load (cache disabled: the page, its CSS
//! and script; Monaco is loaded only by the editor). p50 of 10 loads.
//! `cargo bench -p berth-tests --bench portal`.

use berth_tests::bench::{iters, percentile, record, sorted};
use berth_tests::browser::Browser;
use berth_tests::{Cluster, ClusterOptions};
use serde_json::json;
use std::time::Duration;

fn main() {
    berth_tests::bench::runtime().block_on(async {
        let loads = iters(10);
        let c = Cluster::start(ClusterOptions::default()).await;
        for i in 0..20 {
            let (s, w) = c.create(&format!("ws{i:02}")).await;
            assert_eq!(s, 201, "{w}");
        }
        for i in 0..20 {
            c.wait_state(&format!("ws{i:02}"), "running", Duration::from_secs(120))
                .await;
        }
        let browser = Browser::start();
        let mut page = browser.page().await;
        page.sign_in(&c.api, &c.admin_token).await;
        page.call("Network.enable", json!({})).await;
        page.call("Network.setCacheDisabled", json!({"cacheDisabled": true}))
            .await;
        let mut render = Vec::new();
        let mut kb = Vec::new();
        for _ in 0..loads {
            page.goto(&format!("{}/w/", c.api)).await;
            assert!(
                page.wait_for(
                    "document.body.dataset.ready === 'true' && document.querySelectorAll('#rows tr[data-ws]').length === 20",
                    Duration::from_secs(30)
                )
                .await,
                "the list rendered its 20 workspaces"
            );
            let m = page
                .eval(
                    "(() => { const n = performance.getEntriesByType('navigation')[0];
                       const bytes = [n, ...performance.getEntriesByType('resource')]
                         .reduce((a, e) => a + (e.transferSize || 0), 0);
                       return {ms: n.loadEventEnd - n.startTime, bytes}; })()",
                )
                .await;
            render.push(m["ms"].as_f64().unwrap());
            kb.push(m["bytes"].as_f64().unwrap() / 1024.0);
        }
        let (r, k) = (sorted(render), sorted(kb));
        let (r50, k50) = (percentile(&r, 0.5), percentile(&k, 0.5));
        println!("\nportal: the workspaces page with 20 workspaces, {loads} loads, cache disabled");
        println!("{:<28} {:>10} {:>10}", "figure", "p50", "p90");
        println!(
            "{:<28} {:>10.1} {:>10.1}",
            "list rendered (ms)",
            r50,
            percentile(&r, 0.9)
        );
        println!(
            "{:<28} {:>10.1} {:>10.1}",
            "first load (KB)",
            k50,
            percentile(&k, 0.9)
        );
        record("portal", "list_render_ms", r50, "ms", "<=300");
        record("portal", "first_load_kb", k50, "KB", "<=200");
        drop(page);
        drop(browser);
        c.finish().await;
    });
}

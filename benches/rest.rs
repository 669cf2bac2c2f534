//! REST throughput and latency at 50 connections: `GET /health` and `GET /containers`
//! (100 records) against a bare hyper hello-world measured in the same run.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::*;
use support::*;

const CONNS: usize = 50;
const SECS: f64 = 5.0;

fn main() {
    maybe_serve_hello();
    let hello_port = free_port();
    let mut hello = spawn_hello(hello_port);
    let d = Daemon::prepare(|_| {});
    seed_records(&d.dir.0, 100, &d.prefix);
    let mut d = d;
    d.spawn();
    assert_eq!(d.get("/containers").json()["containers"].as_array().unwrap().len(), 100);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let run = |port, path: &str, auth| {
        rt.block_on(async {
            load(port, path, auth, CONNS, 1.0).await; // warm-up
            load(port, path, auth, CONNS, SECS).await
        })
    };
    let bare = run(hello_port, "/", false);
    let health = run(d.port, "/health", false);
    let list = run(d.port, "/containers", true);
    let _ = hello.kill();
    let _ = hello.wait();
    let row = |name: &str, r: &LoadResult| {
        format!(
            "| {name} | {:.0} | {:.2} | {:.2} | {} | {:.2} |",
            r.rps,
            r.p50_ms,
            r.p99_ms,
            r.errors,
            r.rps / bare.rps
        )
    };
    let table = [
        format!("REST at {CONNS} keep-alive connections, {SECS} s each (closed loop, client on the same machine).\n"),
        "| target | req/s | p50 ms | p99 ms | errors | ratio to bare hyper |".into(),
        "|---|---|---|---|---|---|".into(),
        row("bare hyper hello-world (baseline)", &bare),
        row("lightd `GET /health`", &health),
        row("lightd `GET /containers` (100 records)", &list),
        String::new(),
        format!(
            "Goals: `/health` >= 0.9 of bare ({}), `/containers` >= 0.8 ({}).",
            if health.rps >= 0.9 * bare.rps { "met" } else { "not met" },
            if list.rps >= 0.8 * bare.rps { "met" } else { "not met" }
        ),
    ]
    .join("\n");
    println!("{table}");
    write_section("rest", &table);
}

//! In-process costs of the state paths that every face of sharedserver runs:
//! reading a record, settling it, a status snapshot, and an attach + detach
//! pair. These are what `native.status()` and `native.incref/decref` cost in
//! Neovim minus the Lua boundary; `bench/run` prints the whole-process figures.
//!
//! The lock directory lives on tmpfs (/dev/shm) like a real
//! `$XDG_RUNTIME_DIR`. Run with `cargo bench --bench core`.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use sharedserver::process::ProcessId;
use sharedserver::record::now_ms;
use sharedserver::{AttachRequest, IfRunning, ServerName, Store};
use std::time::Duration;

#[path = "../tests/common/mod.rs"]
mod common;
use common::World;

/// Start `name` with `clients` live clients attached.
fn server(w: &mut World, name: &str, clients: usize) {
    let first = w.client().to_string();
    w.ok(&[
        "use",
        name,
        "--grace-period",
        "1h",
        "--pid",
        &first,
        "--",
        "sleep",
        "1000",
    ]);
    for _ in 1..clients {
        let pid = w.client().to_string();
        w.ok(&["use", name, "--pid", &pid]);
    }
}

fn state_paths(c: &mut Criterion) {
    let mut w = World::on_tmpfs();
    server(&mut w, "one", 1);
    server(&mut w, "many", 100);
    let lc = w.lifecycle();
    let one = ServerName::parse("one").unwrap();
    let many = ServerName::parse("many").unwrap();

    let mut g = c.benchmark_group("store");
    g.bench_function("open (resolve + verify lock dir)", |b| {
        b.iter(|| Store::at(black_box(w.lockdir.clone())).unwrap())
    });
    g.bench_function("read, 1 client", |b| {
        b.iter(|| lc.store.read(black_box(&one)).unwrap())
    });
    g.bench_function("read, 100 clients", |b| {
        b.iter(|| lc.store.read(black_box(&many)).unwrap())
    });
    let guard = lc.store.lock(&one).unwrap();
    let rec = lc.store.read(&one).unwrap().unwrap();
    g.bench_function("write, 1 client (under the lock)", |b| {
        b.iter(|| lc.store.write(&guard, &one, black_box(&rec)).unwrap())
    });
    drop(guard);
    g.bench_function("lock + unlock", |b| {
        b.iter(|| drop(lc.store.lock(black_box(&one)).unwrap()))
    });
    g.bench_function("journal line", |b| {
        b.iter(|| {
            lc.store
                .journal(black_box(&one), "bench", "client 1 attached")
        })
    });
    g.bench_function("poke the watcher", |b| {
        b.iter(|| sharedserver::watcher::poke(&lc.store, black_box(&one)))
    });
    g.finish();

    let mut g = c.benchmark_group("record");
    for (label, name) in [("1 client", &one), ("100 clients", &many)] {
        let rec = lc.store.read(name).unwrap().unwrap();
        g.bench_function(format!("settle, {label}, liveness stubbed"), |b| {
            b.iter_batched_ref(
                || rec.clone(),
                |r| r.settle(now_ms(), |_| true),
                BatchSize::SmallInput,
            )
        });
        g.bench_function(format!("settle, {label}, real liveness"), |b| {
            b.iter_batched_ref(
                || rec.clone(),
                |r| r.settle(now_ms(), |id| id.is_alive()),
                BatchSize::SmallInput,
            )
        });
    }
    g.bench_function("ProcessId::is_alive", |b| {
        let me = ProcessId::current();
        b.iter(|| black_box(me).is_alive())
    });
    g.finish();

    let mut g = c.benchmark_group("lifecycle");
    g.bench_function("status, 1 client", |b| {
        b.iter(|| lc.status(black_box(&one)).unwrap())
    });
    g.bench_function("status, 100 clients", |b| {
        b.iter(|| lc.status(black_box(&many)).unwrap())
    });
    g.bench_function("status, stopped", |b| {
        let none = ServerName::parse("none").unwrap();
        b.iter(|| lc.status(black_box(&none)).unwrap())
    });
    g.bench_function("attach + detach pair", |b| {
        let req = AttachRequest {
            name: one.clone(),
            client: ProcessId::current(),
            metadata: Some("bench".into()),
            start: None,
            if_running: IfRunning::Attach,
        };
        b.iter(|| {
            lc.attach(&req).unwrap();
            lc.detach(&one, std::process::id()).unwrap();
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    targets = state_paths
}
criterion_main!(benches);

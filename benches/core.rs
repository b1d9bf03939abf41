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
use sharedserver::{AttachRequest, IfRunning, Lifecycle, ServerName, Store};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sharedserver");

/// A private lock directory with one running server; everything it started
/// is killed on drop.
struct Fixture {
    dir: tempfile::TempDir,
    clients: Vec<Child>,
}

impl Fixture {
    fn new() -> Fixture {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("ss-bench-")
            .tempdir_in(base)
            .unwrap();
        Fixture {
            dir,
            clients: Vec::new(),
        }
    }

    fn lockdir(&self) -> PathBuf {
        self.dir.path().join("lock")
    }

    fn cli(&self, args: &[&str]) {
        let out = Command::new(BIN)
            .args(args)
            .env("SHAREDSERVER_LOCKDIR", self.lockdir())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sharedserver {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn client(&mut self) -> u32 {
        let c = Command::new("sleep").arg("1000").spawn().unwrap();
        let pid = c.id();
        self.clients.push(c);
        pid
    }

    /// Start `name` with `clients` live clients attached.
    fn server(&mut self, name: &str, clients: usize) {
        let first = self.client().to_string();
        self.cli(&[
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
            let pid = self.client().to_string();
            self.cli(&["use", name, "--pid", &pid]);
        }
    }

    fn lifecycle(&self) -> Lifecycle {
        Lifecycle::new(Store::at(self.lockdir()).unwrap(), Some(PathBuf::from(BIN)))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(self.lockdir()) {
            for e in entries.flatten() {
                let file = e.file_name().to_string_lossy().into_owned();
                if let Some(name) = file.strip_suffix(".json") {
                    let _ = Command::new(BIN)
                        .args(["admin", "kill", name])
                        .env("SHAREDSERVER_LOCKDIR", self.lockdir())
                        .output();
                }
            }
        }
        for c in &mut self.clients {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn state_paths(c: &mut Criterion) {
    let mut fx = Fixture::new();
    fx.server("one", 1);
    fx.server("many", 100);
    let lc = fx.lifecycle();
    let one = ServerName::parse("one").unwrap();
    let many = ServerName::parse("many").unwrap();

    let mut g = c.benchmark_group("store");
    g.bench_function("open (resolve + verify lock dir)", |b| {
        b.iter(|| Store::at(black_box(fx.lockdir())).unwrap())
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

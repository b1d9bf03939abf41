//! Endurance: eight threads drive the real CLI with 10,000 random `use` and
//! `unuse` calls in total, against a few names, while clients are SIGKILLed
//! under them. A model of who is attached to what is kept alongside; at the
//! end the lock directory must agree with it exactly, each name must have run
//! at most one server at a time (none lost, none duplicated), and no record
//! may ever have been unreadable.
//!
//! Set SOAK_SEED to replay a run; the seed is printed at the start.
// Linux only: it tells servers apart by /proc/PID/cmdline.
#![cfg(target_os = "linux")]

mod common;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const THREADS: usize = 8;
const CALLS: usize = 10_000;
const CLIENTS_PER_THREAD: usize = 3;
/// Percent of steps that SIGKILL one of the thread's clients first.
const KILL_PERCENT: u64 = 3;
/// Every this many calls, a thread checks the invariants it can see alone.
const PROBE_EVERY: usize = 64;

/// (name, grace period). The long-grace names must never restart; the
/// zero-grace one restarts whenever its refcount touches zero.
const NAMES: [(&str, &str); 3] = [("soak-a", "1h"), ("soak-b", "1h"), ("soak-z", "0s")];
/// Only these threads use `soak-z`, and only with their first client, so its
/// refcount often falls to zero and the stop/start paths race each other.
const Z_THREADS: usize = 2;

/// The servers sleep for a distinctive time so a recycled pid that happens to
/// belong to a client (`sleep 1000`) is never mistaken for a server.
const SERVER_SLEEP: &str = "999";

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One thread's clients; killed and reaped on drop, even on panic.
struct Clients(Vec<Child>);

impl Clients {
    fn spawn() -> Child {
        Command::new("sleep")
            .arg("1000")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn client")
    }
    fn pid(&self, i: usize) -> u32 {
        self.0[i].id()
    }
    /// SIGKILL client `i`, reap it, and put a fresh one in its place.
    fn replace(&mut self, i: usize) -> u32 {
        let old = std::mem::replace(&mut self.0[i], Clients::spawn());
        let pid = old.id();
        let mut old = old;
        old.kill().unwrap();
        old.wait().unwrap();
        pid
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Env {
    lockdir: PathBuf,
    scratch: PathBuf,
}

impl Env {
    fn starts(&self, name: &str) -> PathBuf {
        self.scratch.join(format!("{name}.starts"))
    }

    fn run(&self, args: &[&str]) -> Run {
        Run(Command::new(BIN)
            .args(args)
            .env("SHAREDSERVER_LOCKDIR", &self.lockdir)
            .current_dir(&self.scratch)
            .stdin(Stdio::null())
            .output()
            .expect("run sharedserver"))
    }

    fn use_(&self, name: &str, grace: &str, pid: u32) -> Run {
        let script = format!(
            "echo $$ >> '{}'; exec sleep {SERVER_SLEEP}",
            self.starts(name).display()
        );
        let pid = pid.to_string();
        self.run(&[
            "use",
            name,
            "--grace-period",
            grace,
            "--pid",
            &pid,
            "--",
            "sh",
            "-c",
            &script,
        ])
    }

    /// Servers ever started under `name`, oldest first.
    fn started(&self, name: &str) -> Vec<u32> {
        read(&self.starts(name))
            .lines()
            .map(|l| l.trim().parse().expect("a pid per line"))
            .collect()
    }

    /// Started servers of `name` that are alive now. Checked newest first:
    /// a server seen alive after a newer one was seen alive overlapped it,
    /// because it started before the newer one did.
    fn live_servers(&self, name: &str) -> Vec<u32> {
        let mut live: Vec<u32> = self
            .started(name)
            .into_iter()
            .rev()
            .filter(|&p| server_alive(p))
            .collect();
        live.reverse();
        live
    }

    fn info(&self, name: &str) -> serde_json::Value {
        let r = self.run(&["info", name, "--json"]);
        assert_eq!(r.code(), 0, "info {name} fails: {}", r.stderr());
        serde_json::from_str(&r.stdout())
            .unwrap_or_else(|e| panic!("info {name} is not JSON ({e}): {}", r.stdout()))
    }
}

fn server_alive(pid: u32) -> bool {
    alive(pid)
        && read(Path::new(&format!("/proc/{pid}/cmdline")))
            .split('\0')
            .eq(["sleep", SERVER_SLEEP, ""])
}

type Model = BTreeMap<&'static str, BTreeSet<u32>>;

#[derive(Default)]
struct Tally {
    calls: usize,
    kills: usize,
}

fn worker(env: &Env, thread: usize, seed: u64, calls: usize) -> (Model, Tally, Clients) {
    let mut rng = Rng(seed | 1);
    let mut clients = Clients((0..CLIENTS_PER_THREAD).map(|_| Clients::spawn()).collect());
    let mut model: Model = NAMES.iter().map(|(n, _)| (*n, BTreeSet::new())).collect();
    let mut tally = Tally::default();
    let names: &[(&str, &str)] = if thread < Z_THREADS {
        &NAMES
    } else {
        &NAMES[..2]
    };
    while tally.calls < calls {
        if rng.below(100) < KILL_PERCENT {
            let i = rng.below(CLIENTS_PER_THREAD as u64) as usize;
            let dead = clients.replace(i);
            for set in model.values_mut() {
                set.remove(&dead);
            }
            tally.kills += 1;
        }
        let (name, grace) = names[rng.below(names.len() as u64) as usize];
        let i = if name == "soak-z" {
            0
        } else {
            rng.below(CLIENTS_PER_THREAD as u64) as usize
        };
        let pid = clients.pid(i);
        let attached = model[name].contains(&pid);
        let r = if attached && rng.below(10) < 7 {
            let r = env.run(&["unuse", name, "--pid", &pid.to_string()]);
            model.get_mut(name).unwrap().remove(&pid);
            r
        } else {
            // A second `use` by an attached client must count once.
            let r = env.use_(name, grace, pid);
            model.get_mut(name).unwrap().insert(pid);
            r
        };
        assert_eq!(
            r.code(),
            0,
            "thread {thread}, call {}: {name} for pid {pid} failed: {}",
            tally.calls,
            r.stderr()
        );
        tally.calls += 1;
        if tally.calls % PROBE_EVERY == 0 {
            for (name, _) in names {
                // Every record is readable at every moment...
                let info = env.info(name);
                // ...this thread's view of its own clients is exact...
                let listed: BTreeSet<u32> = client_pids(&info).into_iter().collect();
                for c in &clients.0 {
                    assert_eq!(
                        listed.contains(&c.id()),
                        model[name].contains(&c.id()),
                        "thread {thread}: client {} of {name} (listed: {listed:?})",
                        c.id()
                    );
                }
                // ...and no name ever runs two servers at once.
                let live = env.live_servers(name);
                assert!(live.len() <= 1, "{name} runs {live:?} at once");
            }
        }
    }
    // The clients stay alive until the final check is done.
    (model, tally, clients)
}

#[test]
fn random_use_unuse_and_client_kills_keep_refcounts_exact() {
    let w = World::new();
    let env = Env {
        lockdir: w.lockdir.clone(),
        scratch: w.tmp.path().to_path_buf(),
    };
    let seed: u64 = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("soak: SOAK_SEED={seed}");

    let results: Vec<(Model, Tally, Clients)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let env = &env;
                // Spread the calls evenly; the first threads take any rest.
                let (share, rest) = (CALLS / THREADS, CALLS % THREADS);
                let per = share + usize::from(rest > 0 && t < rest);
                s.spawn(move || worker(env, t, seed.wrapping_add(t as u64 * 0x9E37_79B9), per))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let calls: usize = results.iter().map(|(_, t, _)| t.calls).sum();
    let kills: usize = results.iter().map(|(_, t, _)| t.kills).sum();
    assert_eq!(calls, CALLS);
    eprintln!("soak: {calls} calls, {kills} client kills");

    let mut model: Model = BTreeMap::new();
    for (m, _, _) in &results {
        for (name, pids) in m {
            model.entry(name).or_default().extend(pids);
        }
    }
    for (name, grace) in NAMES {
        let want = &model[name];
        let info = env.info(name);
        let listed: BTreeSet<u32> = client_pids(&info).into_iter().collect();
        assert_eq!(
            &listed, want,
            "{name}: the attached clients match the model"
        );
        assert_eq!(info["refcount"].as_u64(), Some(want.len() as u64), "{name}");

        let record = w.record_path(name);
        if let Ok(text) = std::fs::read_to_string(&record) {
            sharedserver::test_hooks::parse_record(&record, &text)
                .unwrap_or_else(|e| panic!("{name}: record unreadable at the end: {e}"));
        }

        let started = env.started(name);
        eprintln!(
            "soak: {name}: {} start(s), refcount {}",
            started.len(),
            want.len()
        );
        if grace != "0s" {
            assert_eq!(
                started.len(),
                1,
                "{name} was started once and kept: {started:?}"
            );
            assert_eq!(pid_of(&info), started[0], "{name}: info names that server");
            assert!(server_alive(started[0]));
        } else if !want.is_empty() {
            let live = env.live_servers(name);
            assert_eq!(
                live,
                vec![pid_of(&info)],
                "{name}: exactly its recorded server runs"
            );
        } else {
            eventually(
                Duration::from_secs(15),
                &format!("{name} stopped with no clients"),
                || env.live_servers(name).is_empty() && env.run(&["check", name]).code() == 2,
            );
        }
        assert!(
            !env.live_servers(name).is_empty() || want.is_empty() && grace == "0s",
            "{name}: no server was lost"
        );
    }
    let leftovers: Vec<String> = std::fs::read_dir(&w.lockdir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".tmp") || f.contains(".corrupt-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no debris in the lock dir: {leftovers:?}"
    );
}

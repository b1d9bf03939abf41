//! Property tests for the parsers that take text from outside: records on
//! disk, durations typed by users, and server names (which become paths).
//! No input may panic; every valid input round-trips.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use sharedserver::config::{ConfigFile, Scope};
use sharedserver::duration;
use sharedserver::options;
use sharedserver::process::Backend;
use sharedserver::process::ProcessId;
use sharedserver::record::{
    Client, ExitKind, LastExit, Record, RestartPolicy, StopRequest, Termination, FORMAT, VERSION,
};
use sharedserver::test_hooks::parse_record;
use sharedserver::ServerName;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const RECORD_PATH: &str = "/lockdir/prop.json";

fn name_strategy() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
}

fn process_id() -> impl Strategy<Value = ProcessId> {
    (1u32..=i32::MAX as u32, any::<u64>())
        .prop_map(|(pid, start_time)| ProcessId { pid, start_time })
}

fn client() -> impl Strategy<Value = Client> {
    (process_id(), any::<u64>(), proptest::option::of(".{0,20}")).prop_map(
        |(id, attached_at_ms, metadata)| Client {
            id,
            attached_at_ms,
            metadata,
        },
    )
}

/// Every exit kind. The match fails to compile when a kind is added, as a
/// reminder to list it here too.
fn exit_kinds() -> Vec<ExitKind> {
    let all = vec![
        ExitKind::Exited,
        ExitKind::ExitedBeforeReady,
        ExitKind::ExitedAtStart,
        ExitKind::CrashedRestarting,
        ExitKind::GaveUp,
        ExitKind::RestartFailed,
        ExitKind::NotReady,
        ExitKind::Stopped,
        ExitKind::Killed,
        ExitKind::GraceExpired,
        ExitKind::Restarted,
        ExitKind::Unsupervised,
        ExitKind::Orphaned,
        ExitKind::Daemonized,
    ];
    for kind in &all {
        match kind {
            ExitKind::Exited
            | ExitKind::ExitedBeforeReady
            | ExitKind::ExitedAtStart
            | ExitKind::CrashedRestarting
            | ExitKind::GaveUp
            | ExitKind::RestartFailed
            | ExitKind::NotReady
            | ExitKind::Stopped
            | ExitKind::Killed
            | ExitKind::GraceExpired
            | ExitKind::Restarted
            | ExitKind::Unsupervised
            | ExitKind::Orphaned
            | ExitKind::Daemonized => {}
        }
    }
    all
}

fn stop_request() -> impl Strategy<Value = StopRequest> {
    let kind = proptest::sample::select(vec![
        ExitKind::Stopped,
        ExitKind::Killed,
        ExitKind::GraceExpired,
        ExitKind::NotReady,
        ExitKind::Restarted,
    ]);
    (kind, ".{0,30}", any::<u64>(), any::<u64>()).prop_map(
        |(kind, reason, timeout_ms, requested_at_ms)| StopRequest {
            kind,
            reason,
            timeout_ms,
            requested_at_ms,
        },
    )
}

fn termination() -> impl Strategy<Value = Termination> {
    prop_oneof![
        any::<i32>().prop_map(Termination::Code),
        any::<i32>().prop_map(Termination::Signal),
        Just(Termination::Unknown),
    ]
}

prop_compose! {
    fn last_exit()(
        name in name_strategy(),
        pid in any::<u32>(),
        command in proptest::collection::vec(".{0,12}", 1..4),
        how in termination(),
        kind in proptest::sample::select(exit_kinds()),
        reason in ".{0,30}",
        at_ms in any::<u64>(),
        log_file in proptest::option::of(".{1,30}"),
        log_tail in proptest::option::of("(.{0,20}\n){0,3}"),
    ) -> LastExit {
        LastExit {
            format: FORMAT.into(),
            version: VERSION,
            name,
            pid,
            command,
            how,
            kind,
            reason,
            at_ms,
            log_file,
            log_tail,
        }
    }
}

/// The readiness, restart and last-exit fields of a record.
#[derive(Debug, Clone)]
struct Supervision {
    ready: Option<String>,
    ready_timeout_ms: u64,
    ready_at_ms: Option<u64>,
    restart: Option<RestartPolicy>,
    restarts_ms: Vec<u64>,
    restart_at_ms: Option<u64>,
    last_exit: Option<LastExit>,
    backend: Option<Backend>,
    port: Option<u16>,
}

prop_compose! {
    fn supervision()(
        ready in proptest::option::of("(tcp:[0-9]{1,5}|log:.{0,12}|cmd:.{0,12}|http:.{0,12})"),
        ready_timeout_ms in any::<u64>(),
        ready_at_ms in proptest::option::of(any::<u64>()),
        restart in proptest::option::of((any::<u32>(), any::<u64>())
            .prop_map(|(max, window_ms)| RestartPolicy { max, window_ms })),
        restarts_ms in proptest::collection::vec(any::<u64>(), 0..6),
        restart_at_ms in proptest::option::of(any::<u64>()),
        last_exit in proptest::option::of(last_exit()),
        backend in proptest::option::of(proptest::sample::select(vec![Backend::Pidfd, Backend::Portable])),
        port in proptest::option::of(1..=u16::MAX),
    ) -> Supervision {
        Supervision {
            ready,
            ready_timeout_ms,
            ready_at_ms,
            restart,
            restarts_ms,
            restart_at_ms,
            last_exit,
            backend,
            port,
        }
    }
}

prop_compose! {
    fn record()(
        name in name_strategy(),
        server in process_id(),
        watcher in proptest::option::of(process_id()),
        watcher_is_parent in any::<bool>(),
        command in proptest::collection::vec(".{0,12}", 1..5),
        cwd in ".{0,30}",
        env in proptest::collection::btree_map("[A-Z_]{1,8}", ".{0,10}", 0..4),
        log_file in proptest::option::of(".{1,30}"),
        grace_period_ms in any::<u64>(),
        started_at_ms in any::<u64>(),
        clients in proptest::collection::vec(client(), 0..6),
        grace_until_ms in proptest::option::of(any::<u64>()),
        (stop, sup) in (proptest::option::of(stop_request()), supervision()),
    ) -> Record {
        // Every field, with no `..` default: a field added to Record fails
        // to compile here until the strategy covers it.
        Record {
            format: FORMAT.into(),
            version: VERSION,
            name,
            server,
            watcher,
            watcher_is_parent,
            command,
            cwd,
            env,
            log_file,
            grace_period_ms,
            started_at_ms,
            clients,
            grace_until_ms,
            stop,
            ready: sup.ready,
            ready_timeout_ms: sup.ready_timeout_ms,
            ready_at_ms: sup.ready_at_ms,
            restart: sup.restart,
            restarts_ms: sup.restarts_ms,
            restart_at_ms: sup.restart_at_ms,
            last_exit: sup.last_exit,
            backend: sup.backend,
            port: sup.port,
        }
    }
}

/// The top-level keys of a record as written to disk.
fn fields() -> Vec<String> {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let rec = record().new_tree(&mut runner).unwrap().current();
    serde_json::to_value(&rec)
        .unwrap()
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

#[test]
fn the_record_strategy_varies_every_field() {
    // A field pinned to one value would be covered in name only.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut seen: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for _ in 0..200 {
        let rec = record().new_tree(&mut runner).unwrap().current();
        for (key, value) in serde_json::to_value(&rec).unwrap().as_object().unwrap() {
            seen.entry(key.clone())
                .or_default()
                .insert(value.to_string());
        }
    }
    for (key, values) in &seen {
        if key == "format" || key == "version" {
            continue; // fixed by design: another value is refused
        }
        assert!(values.len() > 1, "the strategy never varies {key}");
    }
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), fields());
}

/// A JSON value of bounded size and any shape.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,10}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn assert_names_path(err: &sharedserver::Error) {
    let msg = err.to_string();
    assert!(msg.contains(RECORD_PATH), "the error names the file: {msg}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn record_parsing_never_panics_on_arbitrary_text(text in ".{0,400}") {
        if let Err(e) = parse_record(Path::new(RECORD_PATH), &text) {
            assert_names_path(&e);
        }
    }

    #[test]
    fn record_parsing_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Err(e) = parse_record(Path::new(RECORD_PATH), &text) {
            assert_names_path(&e);
        }
    }

    #[test]
    fn valid_records_round_trip(rec in record(), pretty in any::<bool>()) {
        let text = if pretty {
            serde_json::to_string_pretty(&rec).unwrap()
        } else {
            serde_json::to_string(&rec).unwrap()
        };
        let back = parse_record(Path::new(RECORD_PATH), &text).expect("a written record parses");
        prop_assert_eq!(back, rec);
    }

    #[test]
    fn a_record_with_one_field_replaced_never_panics(
        rec in record(),
        field in proptest::sample::select(fields()),
        value in json_value(),
    ) {
        let mut json = serde_json::to_value(&rec).unwrap();
        json[&field] = value;
        if let Err(e) = parse_record(Path::new(RECORD_PATH), &json.to_string()) {
            assert_names_path(&e);
        }
    }

    #[test]
    fn a_record_with_one_field_missing_never_panics(
        rec in record(),
        field in proptest::sample::select(fields()),
    ) {
        let mut json = serde_json::to_value(&rec).unwrap();
        json.as_object_mut().unwrap().remove(&field);
        match parse_record(Path::new(RECORD_PATH), &json.to_string()) {
            Ok(_) => prop_assert!(
                !["format", "version", "server", "name"].contains(&field.as_str()),
                "a record without {:?} must be refused", field
            ),
            Err(e) => assert_names_path(&e),
        }
    }

    #[test]
    fn a_truncated_record_never_panics(rec in record(), cut in any::<proptest::sample::Index>()) {
        let text = serde_json::to_string_pretty(&rec).unwrap();
        let mut at = cut.index(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let part = &text[..at];
        match parse_record(Path::new(RECORD_PATH), part) {
            Ok(back) => prop_assert_eq!(back, rec, "only the whole text parses"),
            Err(e) => assert_names_path(&e),
        }
    }

    #[test]
    fn another_format_or_version_is_refused(rec in record(), version in any::<u32>(), format in ".{0,12}") {
        let mut json = serde_json::to_value(&rec).unwrap();
        json["version"] = version.into();
        json["format"] = format.clone().into();
        let parsed = parse_record(Path::new(RECORD_PATH), &json.to_string());
        prop_assert_eq!(parsed.is_ok(), version == VERSION && format == FORMAT);
    }

    #[test]
    fn duration_parsing_never_panics(text in ".{0,40}") {
        if let Err(e) = duration::parse(&text) {
            let msg = e.to_string();
            prop_assert!(msg.contains("invalid duration"), "{}", msg);
        }
    }

    #[test]
    fn duration_parsing_never_panics_on_unit_soup(
        text in "[0-9]{0,25}(ns|us|ms|s|m|h|d|w|M|y|sec|min)?( ?[0-9]{0,25}(ns|us|ms|s|m|h|d)?){0,4}"
    ) {
        let _ = duration::parse(&text);
    }

    #[test]
    fn formatted_durations_round_trip(ms in 0u64..(100 * 365 * 24 * 3600 * 1000)) {
        let d = Duration::from_millis(ms);
        let text = duration::format(d);
        prop_assert!(!text.contains(' '), "one word: {}", text);
        prop_assert_eq!(duration::parse(&text).expect("a formatted duration parses"), d);
    }

    #[test]
    fn documented_duration_forms_parse(
        h in 0u64..1000, m in 0u64..60, s in 0u64..60, ms in 0u64..1000,
    ) {
        let mut text = String::new();
        for (n, unit) in [(h, "h"), (m, "m"), (s, "s"), (ms, "ms")] {
            if n > 0 {
                text.push_str(&format!("{n}{unit}"));
            }
        }
        if text.is_empty() {
            text.push_str("0s");
        }
        let want = Duration::from_millis(((h * 60 + m) * 60 + s) * 1000 + ms);
        prop_assert_eq!(duration::parse(&text).unwrap(), want);
        // Surrounding whitespace is tolerated.
        prop_assert_eq!(duration::parse(&format!(" {text}\t")).unwrap(), want);
    }

    #[test]
    fn name_parsing_never_panics_and_accepted_names_are_safe(raw in "\\PC{0,80}|.{0,80}") {
        if let Ok(name) = ServerName::parse(&raw) {
            let s = name.as_str();
            prop_assert_eq!(s, raw.as_str());
            prop_assert!(!s.contains('/'), "{:?} contains '/'", s);
            prop_assert!(!s.starts_with('.'), "{:?} starts with '.'", s);
            prop_assert!(!s.contains('\0'));
            prop_assert!((1..=64).contains(&s.len()));
            prop_assert!(s != "." && s != "..");
        }
    }

    #[test]
    fn name_parsing_of_path_like_input_is_safe(raw in "[./A-Za-z0-9_-]{0,70}") {
        if let Ok(name) = ServerName::parse(&raw) {
            prop_assert!(!name.as_str().contains('/'));
            prop_assert!(!name.as_str().starts_with('.'));
        }
    }

    #[test]
    fn valid_names_are_accepted_and_round_trip(raw in name_strategy()) {
        let name = ServerName::parse(&raw).expect("a name of the documented form is accepted");
        prop_assert_eq!(name.as_str(), raw.as_str());
        prop_assert_eq!(name.to_string(), raw.clone());
        let again: ServerName = name.as_str().parse().unwrap();
        prop_assert_eq!(again, name);
    }

    #[test]
    fn names_outside_the_alphabet_are_refused(
        prefix in "[A-Za-z0-9]{0,10}",
        bad in "[^A-Za-z0-9._-]",
        suffix in "[A-Za-z0-9]{0,10}",
    ) {
        let raw = format!("{prefix}{bad}{suffix}");
        let err = ServerName::parse(&raw).expect_err("a name with a foreign character is refused");
        prop_assert!(err.to_string().contains("invalid server name"));
    }

    #[test]
    fn overlong_names_are_refused(raw in "[a-z]{65,100}") {
        prop_assert!(ServerName::parse(&raw).is_err());
    }
}

// --- the config file (`.sharedserver.json`, `servers.json`) -------------------

const CONFIG_PATH: &str = "/project/.sharedserver.json";

/// Text without `$`, so nothing in it is a variable reference.
fn plain() -> impl Strategy<Value = String> {
    "[^$\\u{0}]{0,16}"
}

prop_compose! {
    fn server_def()(
        command in "[a-z/][^$\\u{0}]{0,15}",
        args in proptest::collection::vec(plain(), 0..4),
        env in proptest::collection::btree_map("[A-Z_]{1,8}", plain(), 0..3),
        grace_ms in proptest::option::of(0u64..10_000_000),
        working_dir in proptest::option::of("/[a-z]{1,8}(/[a-z]{1,8}){0,2}"),
        log_file in proptest::option::of("[a-z]{1,8}\\.log"),
        lazy in any::<bool>(),
    ) -> serde_json::Value {
        let mut v = serde_json::json!({ "command": command, "args": args, "env": env, "lazy": lazy });
        if let Some(ms) = grace_ms {
            v["grace_period"] = duration::format(Duration::from_millis(ms)).into();
        }
        if let Some(d) = working_dir {
            v["working_dir"] = d.into();
        }
        if let Some(l) = log_file {
            v["log_file"] = l.into();
        }
        v
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn config_parsing_never_panics_on_arbitrary_text(text in ".{0,300}") {
        if let Err(e) = ConfigFile::parse(Path::new(CONFIG_PATH), Scope::Project, &text) {
            prop_assert!(e.to_string().contains(CONFIG_PATH), "names the file: {}", e);
        }
    }

    #[test]
    fn config_parsing_never_panics_on_arbitrary_json(
        servers in proptest::collection::btree_map(".{0,10}", json_value(), 0..4),
    ) {
        let text = serde_json::json!({ "servers": servers }).to_string();
        let file = ConfigFile::parse(Path::new(CONFIG_PATH), Scope::Project, &text)
            .expect("the shape is right");
        for name in servers.keys() {
            if let Some(Err(e)) = file.definition(name) {
                let e = e.to_string();
                prop_assert!(e.starts_with(CONFIG_PATH), "names the file: {}", e);
                prop_assert!(!e.contains(&format!("servers.{name}.: ")), "no stray dot: {}", e);
            }
        }
    }

    #[test]
    fn valid_config_files_parse_to_what_they_say(
        servers in proptest::collection::btree_map(name_strategy(), server_def(), 0..4),
    ) {
        let text = serde_json::json!({ "servers": servers }).to_string();
        let file = ConfigFile::parse(Path::new(CONFIG_PATH), Scope::Project, &text)
            .expect("a valid file parses");
        prop_assert_eq!(file.names().collect::<Vec<_>>(), servers.keys().map(String::as_str).collect::<Vec<_>>());
        for (name, raw) in &servers {
            let def = file.definition(name).unwrap().expect("a valid entry reads");
            let mut argv = vec![raw["command"].as_str().unwrap().to_string()];
            argv.extend(raw["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()));
            let env: BTreeMap<String, String> = serde_json::from_value(raw["env"].clone()).unwrap();
            let dir = def.spec.working_dir.clone().expect("a project entry has a working_dir");
            match raw.get("working_dir") {
                Some(d) => prop_assert_eq!(dir.to_str(), d.as_str()),
                None => prop_assert_eq!(dir.to_str(), Some("/project")),
            }
            let grace = raw.get("grace_period").and_then(|g| g.as_str()).unwrap_or("0s");
            prop_assert_eq!(def.spec.grace_period.unwrap_or_default(), duration::parse(grace).unwrap());
            prop_assert_eq!(def.spec.command.as_deref(), Some(argv[0].as_str()));
            prop_assert_eq!(&def.spec.args[..], &argv[1..]);
            prop_assert_eq!(&def.spec.env, &env);
            if let Some(l) = &def.spec.log_file {
                prop_assert!(l.is_absolute() && l.starts_with("/project"), "relative to the file: {:?}", l);
            }
            prop_assert_eq!(def.spec.lazy, raw["lazy"].as_bool().unwrap());
        }
    }

    #[test]
    fn config_refuses_unsafe_server_names(bad in "(\\.|-|/)[a-z/.]{0,10}|[a-z]{0,5}/[a-z]{0,5}") {
        let text = serde_json::json!({ "servers": { bad.clone(): { "command": "x" } } }).to_string();
        let file = ConfigFile::parse(Path::new(CONFIG_PATH), Scope::Project, &text).unwrap();
        prop_assert!(file.definition(&bad).unwrap().is_err(), "{:?} accepted", bad);
    }

    #[test]
    fn expansion_never_panics_and_leaves_plain_text_alone(text in ".{0,60}") {
        let out = options::expand(&text);
        if !text.contains("${") {
            prop_assert_eq!(out.unwrap(), text);
        }
    }

    #[test]
    fn expansion_substitutes_set_variables(pre in plain(), post in plain()) {
        let home = std::env::var("PATH").expect("PATH is set");
        let out = options::expand(&format!("{pre}${{PATH}}{post}")).unwrap();
        prop_assert_eq!(out, format!("{pre}{home}{post}"));
    }
}

#[test]
fn an_empty_record_is_refused_with_a_clear_message() {
    let err = parse_record(Path::new(RECORD_PATH), "")
        .unwrap_err()
        .to_string();
    assert!(err.contains(RECORD_PATH) && err.contains("empty"), "{err}");
    assert!(err.contains("admin doctor"), "says how to repair: {err}");
}

/// The smallest record an older writer could have left.
fn minimal_record() -> serde_json::Value {
    serde_json::json!({
        "format": FORMAT,
        "version": VERSION,
        "name": "x",
        "server": {"pid": 1, "start_time": 1},
        "watcher": null,
        "watcher_is_parent": true,
        "command": ["true"],
        "cwd": "/",
        "env": {},
        "log_file": null,
        "grace_period_ms": 0,
        "started_at_ms": 0,
        "clients": [],
        "grace_until_ms": null,
        "stop": null,
    })
}

#[test]
fn env_defaults_to_empty_when_absent() {
    let mut json = minimal_record();
    json.as_object_mut().unwrap().remove("env");
    let rec = parse_record(Path::new(RECORD_PATH), &json.to_string()).unwrap();
    assert_eq!(rec.env, BTreeMap::new());
}

//! One definition of a server's options, read the same way from every origin.
//!
//! A [`ServerSpec`] is what a user writes: an entry of a config file
//! (`servers.NAME`), a Lua table given to Neovim's `setup()` (read through
//! mlua's serde support), or the flags of `use`, which overlay a file's entry.
//! Every key is accepted in snake_case and in camelCase (`grace_period`,
//! `gracePeriod`); `idle_timeout` is an alias of `grace_period`. An unknown key
//! is an error that suggests the nearest known one. Values are checked and
//! parsed here, once; [`ServerSpec::resolve`] turns a spec into the
//! [`StartSpec`] the watcher runs.

use crate::duration;
use crate::error::Error;
use crate::lifecycle::{StartSpec, StartupCheck, DEFAULT_READY_TIMEOUT};
use crate::port::{self, PortSpec};
use crate::probe::ReadySpec;
use crate::record::RestartPolicy;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// The keys of a server definition, in their canonical (snake_case) form.
pub const KEYS: &[&str] = &[
    "command",
    "args",
    "env",
    "working_dir",
    "log_file",
    "grace_period",
    "metadata",
    "lazy",
    "skip_if_env",
    "ready",
    "ready_timeout",
    "restart",
    "startup_check",
    "port",
];

/// Other names of a key: (alias, canonical key).
const ALIASES: &[(&str, &str)] = &[("idle_timeout", "grace_period")];

/// One server's options, as given (nothing defaulted yet).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerSpec {
    /// The program to run. Required to start a server; without it the spec
    /// can only attach to one that runs.
    pub command: Option<String>,
    pub args: Vec<String>,
    /// Added to the inherited environment.
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<PathBuf>,
    pub log_file: Option<PathBuf>,
    pub grace_period: Option<Duration>,
    /// Stored with the attaching client (shown by `info`).
    pub metadata: Option<String>,
    /// Hosts that attach a whole project (Neovim's `project`, `use --all`)
    /// start this one only on demand.
    pub lazy: bool,
    /// Skip this entry when that environment variable is set and non-empty:
    /// another host already launched the server for this session.
    pub skip_if_env: Option<String>,
    /// Readiness spec, checked by [`ReadySpec::parse`].
    pub ready: Option<String>,
    pub ready_timeout: Option<Duration>,
    /// `Some(None)` is an explicit "no" (it overrides a file's policy).
    pub restart: Option<Option<RestartPolicy>>,
    pub startup_check: Option<StartupCheck>,
    /// `auto` or a number: found or checked at start, given as `$PORT`
    /// and replacing `${PORT}` in args, env and ready (see `port.rs`).
    pub port: Option<PortSpec>,
}

/// A bad option: the key it concerns (canonical, with any index such as
/// `env.PORT` or `args[2]`; empty for the whole definition) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct OptionError {
    pub key: String,
    pub why: String,
}

impl OptionError {
    fn new(key: impl Into<String>, why: impl Into<String>) -> OptionError {
        OptionError {
            key: key.into(),
            why: why.into(),
        }
    }

    /// The user-facing error: `ORIGIN: AT.KEY: WHY`, where `at` names the
    /// definition (`servers.web`) and may be empty.
    pub fn at(self, origin: impl fmt::Display, at: &str) -> Error {
        let path = match (at.is_empty(), self.key.is_empty()) {
            (true, _) => self.key,
            (false, true) => at.to_string(),
            (false, false) => format!("{at}.{}", self.key),
        };
        Error::Options {
            origin: origin.to_string(),
            at: path,
            why: self.why,
        }
    }
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.why)
        } else {
            write!(f, "{}: {}", self.key, self.why)
        }
    }
}

type Parsed<T> = std::result::Result<T, OptionError>;

/// `gracePeriod` → `grace_period`; snake_case stays as it is.
fn snake(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The canonical key for a key as written, or an error suggesting one.
fn canonical(key: &str) -> Parsed<&'static str> {
    let s = snake(key);
    if let Some(k) = KEYS.iter().find(|k| **k == s) {
        return Ok(k);
    }
    if let Some((_, k)) = ALIASES.iter().find(|(a, _)| *a == s) {
        return Ok(k);
    }
    let nearest = KEYS
        .iter()
        .chain(ALIASES.iter().map(|(a, _)| a))
        .map(|k| (strsim::levenshtein(&s, k), *k))
        .min()
        .filter(|(d, k)| *d <= 2.max(k.len() / 3));
    let hint = match nearest {
        Some((_, k)) => format!("did you mean `{k}`?"),
        None => format!("known keys: {}", KEYS.join(", ")),
    };
    Err(OptionError::new(key, format!("unknown key ({hint})")))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}

fn want(key: &str, what: &str, got: &Value) -> OptionError {
    OptionError::new(key, format!("must be {what}, not {}", type_name(got)))
}

fn string(key: &str, v: &Value) -> Parsed<String> {
    match v {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        Value::String(_) => Err(OptionError::new(key, "must not be empty")),
        other => Err(want(key, "a string", other)),
    }
}

/// A word of argv or an env value: strings, and numbers as they read
/// (Lua numbers arrive as floats: 8000, not 8000.0).
fn word(key: &str, v: &Value, bools: bool) -> Parsed<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        }),
        Value::Bool(b) if bools => Ok(b.to_string()),
        other => Err(want(key, "a string", other)),
    }
}

/// A string such as "30s", or a number of seconds.
fn duration_value(key: &str, v: &Value) -> Parsed<Duration> {
    let what = "a duration such as \"30s\", \"5m\" or \"500ms\", or a number of seconds";
    match v {
        Value::String(s) => duration::parse(s).map_err(|e| OptionError::new(key, e.to_string())),
        Value::Number(n) => n
            .as_f64()
            .filter(|f| *f >= 0.0)
            .and_then(|f| Duration::try_from_secs_f64(f).ok())
            .filter(|d| *d <= duration::MAX)
            .ok_or_else(|| OptionError::new(key, format!("must be {what}, at most 100 years"))),
        other => Err(want(key, what, other)),
    }
}

/// The path as given, or rooted at `base`; `~` is the home directory.
/// Normalised lexically, so `/proj/.` reads `/proj`.
pub fn absolute(path: &Path, base: &Path) -> PathBuf {
    let home = || std::env::var_os("HOME").map(PathBuf::from);
    let joined = match path.strip_prefix("~") {
        Ok(rest) if home().is_some() => home().unwrap_or_default().join(rest),
        _ if path.is_absolute() => path.to_path_buf(),
        _ => base.join(path),
    };
    let mut out = PathBuf::new();
    for part in joined.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(part);
                }
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push("/");
    }
    out
}

impl ServerSpec {
    /// Read a definition from a JSON value (a config file entry, or a Lua
    /// table through `lua.from_value`).
    pub fn from_value(v: &Value) -> Parsed<ServerSpec> {
        let Value::Object(map) = v else {
            return Err(want("", "a table of options such as { command = ... }", v));
        };
        Self::from_map(map)
    }

    fn from_map(map: &Map<String, Value>) -> Parsed<ServerSpec> {
        let mut spec = ServerSpec::default();
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for (written, value) in map {
            let key = canonical(written)?;
            if let Some(first) = seen.insert(key, written) {
                return Err(OptionError::new(
                    written.as_str(),
                    format!("given twice (also as `{first}`); keep one"),
                ));
            }
            spec.set(key, value)?;
        }
        Ok(spec)
    }

    fn set(&mut self, key: &str, v: &Value) -> Parsed<()> {
        match key {
            "command" => self.command = Some(string(key, v)?),
            "args" => {
                self.args = match v {
                    Value::Array(items) => items
                        .iter()
                        .enumerate()
                        .map(|(i, a)| word(&format!("args[{}]", i + 1), a, false))
                        .collect::<Parsed<_>>()?,
                    // An empty Lua table reads as a map.
                    Value::Object(m) if m.is_empty() => Vec::new(),
                    other => return Err(want(key, "a list of strings", other)),
                }
            }
            "env" => {
                let entries = match v {
                    Value::Object(m) => m,
                    Value::Array(a) if a.is_empty() => return Ok(()),
                    other => return Err(want(key, "a table of NAME = value", other)),
                };
                for (name, value) in entries {
                    let at = format!("env.{name}");
                    if name.is_empty() || name.contains('=') || name.contains('\0') {
                        return Err(OptionError::new(
                            at,
                            "a variable name must be non-empty and contain no '=' (write NAME = \"value\")",
                        ));
                    }
                    let value = word(&at, value, true)?;
                    if value.contains('\0') {
                        return Err(OptionError::new(at, "contains a NUL byte"));
                    }
                    self.env.insert(name.clone(), value);
                }
            }
            "working_dir" => self.working_dir = Some(string(key, v)?.into()),
            "log_file" => self.log_file = Some(string(key, v)?.into()),
            "grace_period" => self.grace_period = Some(duration_value(key, v)?),
            "metadata" => self.metadata = Some(word(key, v, false)?),
            "lazy" => {
                self.lazy = match v {
                    Value::Bool(b) => *b,
                    other => return Err(want(key, "true or false", other)),
                }
            }
            "skip_if_env" => self.skip_if_env = Some(string(key, v)?),
            "ready" => {
                let text = string(key, v)?;
                ReadySpec::parse(&text).map_err(|e| OptionError::new(key, e.to_string()))?;
                self.ready = Some(text);
            }
            "ready_timeout" => self.ready_timeout = Some(duration_value(key, v)?),
            "restart" => {
                self.restart = Some(match v {
                    Value::Bool(false) => None,
                    Value::String(s) => {
                        RestartPolicy::parse(s).map_err(|e| OptionError::new(key, e))?
                    }
                    other => {
                        return Err(want(
                            key,
                            "\"no\", \"on-failure\" or \"on-failure:MAX\"",
                            other,
                        ))
                    }
                })
            }
            "startup_check" => {
                self.startup_check = Some(match v {
                    Value::String(s) => {
                        StartupCheck::parse(s).map_err(|e| OptionError::new(key, e.to_string()))?
                    }
                    other => StartupCheck {
                        window: duration_value(key, other)?,
                        fixed: false,
                    },
                })
            }
            "port" => {
                self.port = Some(match v {
                    Value::String(s) => PortSpec::parse(s).map_err(|e| OptionError::new(key, e))?,
                    Value::Number(n) => n
                        .as_f64()
                        .filter(|f| f.fract() == 0.0 && *f >= 1.0 && *f <= 65535.0)
                        .map(|f| PortSpec::Fixed(f as u16))
                        .ok_or_else(|| {
                            OptionError::new(
                                key,
                                "must be \"auto\" or a port number from 1 to 65535",
                            )
                        })?,
                    other => return Err(want(key, "\"auto\" or a port number", other)),
                })
            }
            _ => unreachable!("canonical() returns only known keys"),
        }
        Ok(())
    }

    /// This spec with `over`'s options on top (the CLI's flags over a file's
    /// entry). `env` merges; a command in `over` replaces command and args.
    pub fn overlay(mut self, over: ServerSpec) -> ServerSpec {
        if over.command.is_some() {
            self.command = over.command;
            self.args = over.args;
        }
        self.env.extend(over.env);
        macro_rules! take {
            ($($field:ident),*) => { $( if over.$field.is_some() { self.$field = over.$field; } )* };
        }
        take!(
            working_dir,
            log_file,
            grace_period,
            metadata,
            skip_if_env,
            ready,
            ready_timeout,
            restart,
            startup_check,
            port
        );
        self.lazy |= over.lazy;
        self
    }

    /// Relative paths made absolute against `base` (a config file's
    /// directory), so the spec means the same from any cwd.
    pub fn anchored(mut self, base: &Path) -> ServerSpec {
        self.working_dir = self.working_dir.map(|p| absolute(&p, base));
        self.log_file = self.log_file.map(|p| absolute(&p, base));
        self
    }

    /// An error unless the spec can start a server (it names a command).
    pub fn startable(&self) -> Parsed<()> {
        match self.command {
            Some(_) => Ok(()),
            None => Err(OptionError::new(
                "command",
                "missing: give the program to run",
            )),
        }
    }

    /// Whether `skip_if_env` names a variable that is set and non-empty.
    pub fn skipped(&self) -> bool {
        self.skip_if_env
            .as_ref()
            .and_then(std::env::var_os)
            .is_some_and(|v| !v.is_empty())
    }

    /// What the watcher runs: defaults filled in, relative paths and a
    /// missing working directory taken from `cwd`.
    pub fn resolve(&self, cwd: &Path) -> Parsed<StartSpec> {
        self.startable()?;
        // In args or env, `${PORT}` may be meant for a shell the server runs
        // (it sees $PORT in its environment); a readiness check has no shell,
        // so there it could never be anything but the literal text.
        if self.port.is_none() && self.ready.as_deref().is_some_and(port::has_placeholder) {
            return Err(OptionError::new(
                "ready",
                "uses ${PORT}, but no port is set to replace it: add a port (\"auto\" or a number; --port on the command line)",
            ));
        }
        let command = self.command.as_deref().unwrap_or_default();
        let command = match command.strip_prefix("~/") {
            Some(_) => absolute(Path::new(command), cwd)
                .to_string_lossy()
                .into_owned(),
            None => command.to_string(),
        };
        let dir = absolute(self.working_dir.as_deref().unwrap_or(cwd), cwd);
        if self.working_dir.is_some() && !dir.is_dir() {
            return Err(OptionError::new(
                "working_dir",
                format!("{} is not a directory", dir.display()),
            ));
        }
        let mut argv = vec![command];
        argv.extend(self.args.iter().cloned());
        Ok(StartSpec {
            command: argv,
            env: self.env.clone(),
            log_file: self.log_file.as_deref().map(|p| absolute(p, cwd)),
            cwd: dir,
            grace_period: self.grace_period.unwrap_or(Duration::ZERO),
            ready: self.ready.clone(),
            ready_timeout: self.ready_timeout.unwrap_or(DEFAULT_READY_TIMEOUT),
            restart: self.restart.unwrap_or(None),
            startup_check: self.startup_check.unwrap_or(StartupCheck::DEFAULT),
            port: self.port,
        })
    }

    /// The spec as a JSON object with canonical keys (options not given are
    /// left out); [`ServerSpec::from_value`] reads it back unchanged.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_string(), v);
        };
        let text = |p: &Path| Value::from(p.to_string_lossy().into_owned());
        if let Some(c) = &self.command {
            put("command", c.clone().into());
        }
        put("args", self.args.clone().into());
        put(
            "env",
            Value::Object(
                self.env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone().into()))
                    .collect(),
            ),
        );
        if let Some(p) = &self.working_dir {
            put("working_dir", text(p));
        }
        if let Some(p) = &self.log_file {
            put("log_file", text(p));
        }
        if let Some(d) = self.grace_period {
            put("grace_period", duration::format(d).into());
        }
        if let Some(s) = &self.metadata {
            put("metadata", s.clone().into());
        }
        put("lazy", self.lazy.into());
        if let Some(s) = &self.skip_if_env {
            put("skip_if_env", s.clone().into());
        }
        if let Some(s) = &self.ready {
            put("ready", s.clone().into());
        }
        if let Some(d) = self.ready_timeout {
            put("ready_timeout", duration::format(d).into());
        }
        if let Some(r) = &self.restart {
            let text = match r {
                None => "no".to_string(),
                Some(p) => format!("on-failure:{}", p.max),
            };
            put("restart", text.into());
        }
        if let Some(c) = &self.startup_check {
            let d = duration::format(c.window);
            put(
                "startup_check",
                if c.fixed { format!("fixed:{d}") } else { d }.into(),
            );
        }
        match self.port {
            Some(PortSpec::Auto) => put("port", "auto".into()),
            Some(PortSpec::Fixed(n)) => put("port", n.into()),
            None => {}
        }
        Value::Object(m)
    }
}

impl Serialize for ServerSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for ServerSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        ServerSpec::from_value(&v).map_err(serde::de::Error::custom)
    }
}

/// Expand `${VAR}` in every string of a definition (not in keys). An unset
/// variable is an error naming the key, never an empty string. In a
/// definition with a `port`, `${PORT}` is the port found at start, so it is
/// left for then.
pub fn expand_value(v: &mut Value, key: &str) -> Parsed<()> {
    let keep = match v {
        Value::Object(m) if key.is_empty() && m.contains_key("port") => Some(port::VAR),
        _ => None,
    };
    expand_in(v, key, keep)
}

fn expand_in(v: &mut Value, key: &str, keep: Option<&str>) -> Parsed<()> {
    match v {
        Value::String(s) => {
            *s = expand_keeping(s, keep).map_err(|why| OptionError::new(key, why))?
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_in(item, &format!("{key}[{}]", i + 1), keep)?;
            }
        }
        Value::Object(m) => {
            for (k, item) in m.iter_mut() {
                let at = if key.is_empty() {
                    canonical(k).map(str::to_string).unwrap_or(k.clone())
                } else {
                    format!("{key}.{k}")
                };
                expand_in(item, &at, keep)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Expand `${VAR}` from the environment. `$` not followed by `{` is kept.
pub fn expand(text: &str) -> std::result::Result<String, String> {
    expand_keeping(text, None)
}

/// [`expand`], leaving `${keep}` as it is.
fn expand_keeping(text: &str, keep: Option<&str>) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed ${{ in {text:?}"));
        };
        let var = &after[..end];
        if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad variable name ${{{var}}} in {text:?}"));
        }
        match std::env::var(var) {
            _ if keep == Some(var) => out.push_str(&rest[i..i + 3 + end]),
            Ok(v) => out.push_str(&v),
            Err(_) => {
                return Err(format!(
                    "${{{var}}} is not set (export it, or remove it from the file)"
                ))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Parsed<ServerSpec> {
        ServerSpec::from_value(&v)
    }

    #[test]
    fn both_spellings_and_the_alias_read_the_same() {
        let a = parse(
            json!({"command": "x", "grace_period": "5m", "log_file": "l", "skip_if_env": "S"}),
        );
        let b =
            parse(json!({"command": "x", "gracePeriod": "5m", "logFile": "l", "skipIfEnv": "S"}));
        let c =
            parse(json!({"command": "x", "idle_timeout": 300, "log_file": "l", "skipIfEnv": "S"}));
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.unwrap().grace_period, Some(Duration::from_secs(300)));
        let twice = parse(json!({"command": "x", "grace_period": "1s", "gracePeriod": "2s"}));
        assert!(twice.unwrap_err().why.contains("twice"));
    }

    #[test]
    fn unknown_keys_suggest_the_nearest() {
        let e = parse(json!({"comand": "x"})).unwrap_err();
        assert_eq!(e.key, "comand");
        assert!(e.why.contains("`command`"), "{e}");
        let e = parse(json!({"gracePeriood": "1s"})).unwrap_err();
        assert!(e.why.contains("`grace_period`"), "{e}");
        let e = parse(json!({"colour": "red"})).unwrap_err();
        assert!(e.why.contains("known keys"), "{e}");
    }

    #[test]
    fn errors_name_the_origin_without_a_stray_dot() {
        let e = parse(json!({"colour": 1})).unwrap_err();
        let msg = e.at("/p/servers.json", "servers.x").to_string();
        assert!(
            msg.starts_with("/p/servers.json: servers.x.colour: "),
            "{msg}"
        );
        let e = parse(json!(3)).unwrap_err();
        let msg = e.at("setup()", "servers.x").to_string();
        assert!(msg.starts_with("setup(): servers.x: must be"), "{msg}");
    }

    #[test]
    fn env_names_with_equals_are_refused() {
        let e = parse(json!({"command": "x", "env": {"A=B": "c"}})).unwrap_err();
        assert_eq!(e.key, "env.A=B");
        let ok =
            parse(json!({"command": "x", "env": {"A": 8000.0, "B": true}, "args": [1.0, "-v"]}))
                .unwrap();
        assert_eq!(ok.env["A"], "8000");
        assert_eq!(ok.args, ["1", "-v"]);
    }

    #[test]
    fn values_are_checked_once_here() {
        for bad in [
            json!({"grace_period": "5 parsecs"}),
            json!({"grace_period": -1}),
            json!({"ready": "ftp://x"}),
            json!({"restart": "always"}),
            json!({"lazy": "yes"}),
            json!({"args": "a b"}),
            json!({"command": ""}),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn the_value_form_round_trips() {
        let spec = parse(json!({"command": "x", "args": ["a"], "env": {"K": "v"},
            "working_dir": "/w", "grace_period": "90s", "restart": "on-failure:3",
            "startup_check": "fixed:2s", "ready_timeout": 5, "lazy": true, "metadata": "m"}))
        .unwrap();
        assert_eq!(parse(spec.to_value()).unwrap(), spec);
        let no = parse(json!({"restart": "no"})).unwrap();
        assert_eq!(parse(no.to_value()).unwrap().restart, Some(None));
    }

    #[test]
    fn overlay_and_resolve() {
        let file = parse(json!({"command": "x", "args": ["a"], "grace_period": "5m",
            "env": {"A": "1"}, "restart": "on-failure"}))
        .unwrap()
        .anchored(Path::new("/proj"));
        let flags = ServerSpec {
            env: [("B".to_string(), "2".to_string())].into(),
            restart: Some(None),
            ..ServerSpec::default()
        };
        let s = file.overlay(flags).resolve(Path::new("/here/.")).unwrap();
        assert_eq!(s.command, ["x", "a"]);
        assert_eq!(s.cwd, PathBuf::from("/here"));
        assert_eq!(s.grace_period, Duration::from_secs(300));
        assert_eq!(s.env.len(), 2);
        assert_eq!(s.restart, None);
        assert_eq!(s.startup_check, StartupCheck::DEFAULT);
        let e = ServerSpec::default().resolve(Path::new("/")).unwrap_err();
        assert_eq!(e.key, "command");
    }

    #[test]
    fn paths_are_normalised() {
        assert_eq!(
            absolute(Path::new("."), Path::new("/proj")),
            PathBuf::from("/proj")
        );
        assert_eq!(
            absolute(Path::new("a/../b/"), Path::new("/p")),
            PathBuf::from("/p/b")
        );
        assert_eq!(
            absolute(Path::new("/x/./y"), Path::new("/p")),
            PathBuf::from("/x/y")
        );
    }

    #[test]
    fn expansion() {
        std::env::set_var("SS_OPT_TEST_SET", "v");
        assert_eq!(expand("a${SS_OPT_TEST_SET}b$c").unwrap(), "avb$c");
        let mut v = json!({"env": {"X": "${SS_OPT_TEST_SURELY_UNSET}"}});
        let e = expand_value(&mut v, "").unwrap_err();
        assert_eq!(e.key, "env.X");
        let mut v = json!({"gracePeriod": "${SS_OPT_TEST_SURELY_UNSET}"});
        assert_eq!(expand_value(&mut v, "").unwrap_err().key, "grace_period");
    }
}

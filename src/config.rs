//! Server definitions shared by scripts and editors.
//!
//! `sharedserver use NAME` with no command looks NAME up in the nearest
//! `.sharedserver.json` (walking up from the current directory), then in
//! `$XDG_CONFIG_HOME/sharedserver/servers.json` (default `~/.config/...`).
//! Format: `{"servers": {NAME: {command, args, env, working_dir, log_file,
//! grace_period, ready, ready_timeout, restart, lazy}}}`. Strings may use
//! `${VAR}`; an unset variable is an error, never an empty string.

use crate::duration;
use crate::error::{Error, Result};
use crate::lifecycle::{StartSpec, DEFAULT_READY_TIMEOUT};
use crate::name::ServerName;
use crate::record::RestartPolicy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const PROJECT_FILE: &str = ".sharedserver.json";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    servers: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    working_dir: Option<String>,
    log_file: Option<String>,
    grace_period: Option<String>,
    ready: Option<String>,
    ready_timeout: Option<String>,
    restart: Option<String>,
    #[serde(default)]
    lazy: bool,
}

/// A resolved definition: variables expanded, paths absolute.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServerDef {
    pub name: String,
    pub source: PathBuf,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub working_dir: PathBuf,
    pub log_file: Option<PathBuf>,
    pub grace_period: String,
    pub ready: Option<String>,
    pub ready_timeout: String,
    pub restart: Option<String>,
    pub lazy: bool,
}

impl ServerDef {
    pub fn start_spec(&self) -> Result<StartSpec> {
        Ok(StartSpec {
            command: self.command.clone(),
            env: self.env.clone(),
            cwd: self.working_dir.clone(),
            log_file: self.log_file.clone(),
            grace_period: duration::parse(&self.grace_period)?,
            ready: self.ready.clone(),
            ready_timeout: duration::parse(&self.ready_timeout)?,
            restart: match &self.restart {
                Some(r) => RestartPolicy::parse(r).map_err(Error::Other)?,
                None => None,
            },
            ..StartSpec::new(vec![], PathBuf::new())
        })
    }
}

/// The files consulted from `cwd`, nearest first (only those that exist).
pub fn files(cwd: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Some(project) = cwd
        .ancestors()
        .map(|d| d.join(PROJECT_FILE))
        .find(|p| p.is_file())
    {
        found.push(project);
    }
    let user_dir = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(user) = user_dir.map(|d| d.join("sharedserver").join("servers.json")) {
        if user.is_file() {
            found.push(user);
        }
    }
    found
}

/// Find `name` in the nearest file that defines it.
pub fn lookup(name: &ServerName, cwd: &Path) -> Result<Option<ServerDef>> {
    for file in files(cwd) {
        if let Some(def) = load(&file)?.remove(name.as_str()) {
            return Ok(Some(def));
        }
    }
    Ok(None)
}

/// Every definition visible from `cwd`; nearer files win.
pub fn all(cwd: &Path) -> Result<BTreeMap<String, ServerDef>> {
    let mut defs = BTreeMap::new();
    for file in files(cwd).iter().rev() {
        defs.extend(load(file)?);
    }
    Ok(defs)
}

/// Parse and resolve one file. Every error names the file (and the key).
pub fn load(path: &Path) -> Result<BTreeMap<String, ServerDef>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "reading config", e))?;
    parse(path, &text)
}

pub fn parse(path: &Path, text: &str) -> Result<BTreeMap<String, ServerDef>> {
    let err = |what: String| Error::Other(format!("{}: {what}", path.display()));
    let raw: RawFile = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
    let base = path.parent().unwrap_or(Path::new("/"));
    let mut defs = BTreeMap::new();
    for (name, value) in raw.servers {
        ServerName::parse(&name).map_err(|e| err(e.to_string()))?;
        let at = |key: &str, why: String| err(format!("servers.{name}.{key}: {why}"));
        let s: RawServer = serde_json::from_value(value).map_err(|e| at("", e.to_string()))?;
        let x = |key: &str, v: &str| expand(v).map_err(|why| at(key, why));
        let mut command = vec![x("command", &s.command)?];
        for a in &s.args {
            command.push(x("args", a)?);
        }
        let mut env = BTreeMap::new();
        for (k, v) in &s.env {
            env.insert(k.clone(), x(&format!("env.{k}"), v)?);
        }
        let absolute = |p: String| {
            let p = PathBuf::from(p);
            if p.is_absolute() {
                p
            } else {
                base.join(p)
            }
        };
        let grace_period = s
            .grace_period
            .as_deref()
            .map(|g| x("grace_period", g))
            .transpose()?
            .unwrap_or("0s".into());
        duration::parse(&grace_period).map_err(|e| at("grace_period", e.to_string()))?;
        let ready_timeout = s
            .ready_timeout
            .as_deref()
            .map(|g| x("ready_timeout", g))
            .transpose()?
            .unwrap_or_else(|| duration::format(DEFAULT_READY_TIMEOUT));
        duration::parse(&ready_timeout).map_err(|e| at("ready_timeout", e.to_string()))?;
        let ready = s.ready.as_deref().map(|r| x("ready", r)).transpose()?;
        if let Some(r) = &ready {
            crate::probe::ReadySpec::parse(r).map_err(|e| at("ready", e.to_string()))?;
        }
        if let Some(r) = &s.restart {
            RestartPolicy::parse(r).map_err(|e| at("restart", e))?;
        }
        let def = ServerDef {
            name: name.clone(),
            source: path.to_path_buf(),
            command,
            env,
            working_dir: match &s.working_dir {
                Some(d) => absolute(x("working_dir", d)?),
                None => base.to_path_buf(),
            },
            log_file: s
                .log_file
                .as_deref()
                .map(|l| x("log_file", l).map(absolute))
                .transpose()?,
            grace_period,
            ready,
            ready_timeout,
            restart: s.restart.clone(),
            lazy: s.lazy,
        };
        defs.insert(name, def);
    }
    Ok(defs)
}

/// Expand `${VAR}` from the environment. `$` not followed by `{` is kept.
pub fn expand(text: &str) -> std::result::Result<String, String> {
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

    #[test]
    fn unknown_keys_name_the_file_and_the_key() {
        let err = parse(
            Path::new("/p/x.json"),
            r#"{"servers": {"a": {"command": "x", "comand": 1}}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("/p/x.json") && err.contains("servers.a") && err.contains("comand"),
            "{err}"
        );
        let err = parse(Path::new("/p/x.json"), r#"{"servers": {}, "extra": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("extra"), "{err}");
    }

    #[test]
    fn unset_variables_are_errors() {
        std::env::set_var("SS_TEST_SET", "v");
        assert_eq!(expand("a${SS_TEST_SET}b$c").unwrap(), "avb$c");
        let err = expand("${SS_TEST_SURELY_UNSET}").unwrap_err();
        assert!(err.contains("SS_TEST_SURELY_UNSET"), "{err}");
    }

    #[test]
    fn relative_paths_are_relative_to_the_file() {
        let defs = parse(
            Path::new("/proj/.sharedserver.json"),
            r#"{"servers": {"web": {"command": "py", "args": ["-m", "http.server"], "working_dir": "site", "grace_period": "5m"}}}"#,
        )
        .unwrap();
        assert_eq!(defs["web"].working_dir, PathBuf::from("/proj/site"));
        assert_eq!(defs["web"].command, ["py", "-m", "http.server"]);
    }
}

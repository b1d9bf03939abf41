//! Server definitions in JSON files, shared by scripts, editors and agents.
//!
//! `sharedserver use NAME` with no command looks NAME up in, nearest first:
//! the nearest `.sharedserver.json` (walking up from the current directory),
//! the nearest `.sharedserver/servers.json` (likewise), and the user's
//! `$XDG_CONFIG_HOME/sharedserver/servers.json` (default `~/.config/...`).
//! Format: `{"servers": {NAME: {...}}}`, the options of [`ServerSpec`], in
//! snake_case or camelCase.
//!
//! Each entry is read when it is used: `${VAR}` is expanded then (an unset
//! variable is an error, never an empty string), so one entry with a bad
//! value does not make the file's other servers unusable.
//!
//! A project file's servers run in the project's directory, and its relative
//! paths are relative to that directory. The user-level file's servers run in
//! the caller's directory (they serve whatever project the caller is in), and
//! its relative paths are relative to the caller's directory.

use crate::error::{Error, Result};
use crate::lifecycle::StartSpec;
use crate::name::ServerName;
use crate::options::{self, ServerSpec};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const PROJECT_FILE: &str = ".sharedserver.json";
/// The project file inside a `.sharedserver` directory.
pub const PROJECT_DIR_FILE: &str = ".sharedserver/servers.json";

/// Which kind of file a definition came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Found walking up from the caller: servers run in the project.
    Project,
    /// `~/.config/sharedserver/servers.json`: servers run in the caller's cwd.
    User,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    servers: BTreeMap<String, Value>,
}

/// One config file, parsed as far as its shape; entries are read on use.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub scope: Scope,
    entries: BTreeMap<String, Value>,
}

/// One server's definition, read from a file: variables expanded, paths
/// absolute (for a project file).
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    pub name: ServerName,
    pub source: PathBuf,
    pub scope: Scope,
    pub spec: ServerSpec,
}

impl Definition {
    /// What the watcher runs, started from `cwd`.
    pub fn resolve(&self, cwd: &Path) -> Result<StartSpec> {
        self.spec
            .resolve(cwd)
            .map_err(|e| e.at(self.source.display(), &self.at()))
    }

    /// `servers.NAME`, the definition's place in its file.
    pub fn at(&self) -> String {
        format!("servers.{}", self.name)
    }

    /// As `config` prints it and the Neovim module returns it.
    pub fn to_value(&self) -> Value {
        json!({
            "name": self.name.as_str(),
            "source": self.source.to_string_lossy(),
            "scope": self.scope,
            "skipped": self.spec.skipped(),
            "spec": self.spec.to_value(),
        })
    }
}

impl ConfigFile {
    pub fn load(path: &Path, scope: Scope) -> Result<ConfigFile> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::io(path, "reading config", e))?;
        ConfigFile::parse(path, scope, &text)
    }

    /// The file's shape (`{"servers": {...}}`); entries are checked by
    /// [`ConfigFile::definition`].
    pub fn parse(path: &Path, scope: Scope, text: &str) -> Result<ConfigFile> {
        let raw: RawFile = serde_json::from_str(text).map_err(|e| Error::Options {
            origin: path.display().to_string(),
            at: String::new(),
            why: e.to_string(),
        })?;
        Ok(ConfigFile {
            path: path.to_path_buf(),
            scope,
            entries: raw.servers,
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Read the entry `name`: None if the file has none. Errors name the
    /// file and the key.
    pub fn definition(&self, name: &str) -> Option<Result<Definition>> {
        let value = self.entries.get(name)?;
        let at = format!("servers.{name}");
        let origin = self.path.display().to_string();
        Some((|| {
            let name = ServerName::parse(name).map_err(|e| Error::Options {
                origin: origin.clone(),
                at: "servers".into(),
                why: e.to_string(),
            })?;
            let mut value = value.clone();
            options::expand_value(&mut value, "").map_err(|e| e.at(&origin, &at))?;
            let mut spec = ServerSpec::from_value(&value).map_err(|e| e.at(&origin, &at))?;
            if self.scope == Scope::Project {
                let base = self.project_dir();
                spec = spec.anchored(base);
                spec.working_dir.get_or_insert_with(|| base.to_path_buf());
            }
            Ok(Definition {
                name,
                source: self.path.clone(),
                scope: self.scope,
                spec,
            })
        })())
    }

    /// The directory a project file belongs to (the parent of
    /// `.sharedserver/` for `.sharedserver/servers.json`).
    fn project_dir(&self) -> &Path {
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        if dir.file_name().is_some_and(|n| n == ".sharedserver") {
            dir.parent().unwrap_or(dir)
        } else {
            dir
        }
    }
}

/// The user-level file's path (whether or not it exists).
pub fn user_file() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("sharedserver").join("servers.json"))
}

/// The files consulted from `cwd`, nearest first (only those that exist).
pub fn files(cwd: &Path) -> Vec<(PathBuf, Scope)> {
    let mut found = Vec::new();
    for name in [PROJECT_FILE, PROJECT_DIR_FILE] {
        if let Some(p) = cwd.ancestors().map(|d| d.join(name)).find(|p| p.is_file()) {
            found.push((p, Scope::Project));
        }
    }
    if let Some(user) = user_file().filter(|p| p.is_file()) {
        found.push((user, Scope::User));
    }
    found
}

/// Find `name` in the nearest file that defines it.
pub fn lookup(name: &ServerName, cwd: &Path) -> Result<Option<Definition>> {
    for (path, scope) in files(cwd) {
        if let Some(def) = ConfigFile::load(&path, scope)?.definition(name.as_str()) {
            return def.map(Some);
        }
    }
    Ok(None)
}

/// Every definition visible from `cwd`, by name; nearer files win. An
/// unreadable file is an error; a bad entry is an error for that name only.
pub fn all(cwd: &Path) -> Result<BTreeMap<String, Result<Definition>>> {
    let mut defs = BTreeMap::new();
    for (path, scope) in files(cwd).iter().rev() {
        let file = ConfigFile::load(path, *scope)?;
        for name in file.names() {
            if let Some(def) = file.definition(name) {
                defs.insert(name.to_string(), def);
            }
        }
    }
    Ok(defs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs(path: &str, scope: Scope, text: &str) -> BTreeMap<String, Result<Definition>> {
        let f = ConfigFile::parse(Path::new(path), scope, text).unwrap();
        f.names()
            .map(|n| (n.to_string(), f.definition(n).unwrap()))
            .collect()
    }

    #[test]
    fn unknown_keys_name_the_file_and_the_key() {
        let d = defs(
            "/p/x.json",
            Scope::Project,
            r#"{"servers": {"a": {"command": "x", "comand": 1}, "b": {"command": "y"}}}"#,
        );
        let err = d["a"].as_ref().unwrap_err().to_string();
        assert!(
            err.starts_with("/p/x.json: servers.a.comand: unknown key"),
            "{err}"
        );
        assert!(d["b"].is_ok(), "one bad entry leaves the others usable");
        let err = ConfigFile::parse(
            Path::new("/p/x.json"),
            Scope::Project,
            r#"{"servers": {}, "extra": 1}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("extra") && err.starts_with("/p/x.json: "),
            "{err}"
        );
    }

    #[test]
    fn an_unset_variable_breaks_only_its_entry() {
        let d = defs(
            "/p/x.json",
            Scope::Project,
            r#"{"servers": {"bad": {"command": "${SS_CFG_TEST_SURELY_UNSET}"}, "ok": {"command": "y"}}}"#,
        );
        let err = d["bad"].as_ref().unwrap_err().to_string();
        assert!(
            err.contains("servers.bad.command") && err.contains("SS_CFG_TEST_SURELY_UNSET"),
            "{err}"
        );
        assert!(d["ok"].is_ok());
    }

    #[test]
    fn relative_paths_are_relative_to_the_project() {
        let d = defs(
            "/proj/.sharedserver.json",
            Scope::Project,
            r#"{"servers": {"web": {"command": "py", "args": ["-m", "http.server"], "workingDir": "site", "gracePeriod": "5m"}, "db": {"command": "x"}}}"#,
        );
        let web = d["web"].as_ref().unwrap();
        assert_eq!(web.spec.working_dir, Some(PathBuf::from("/proj/site")));
        let db = d["db"].as_ref().unwrap();
        assert_eq!(db.spec.working_dir, Some(PathBuf::from("/proj")));
        let d = defs(
            "/proj/.sharedserver/servers.json",
            Scope::Project,
            r#"{"servers": {"db": {"command": "x"}}}"#,
        );
        let db = d["db"].as_ref().unwrap();
        assert_eq!(db.spec.working_dir, Some(PathBuf::from("/proj")));
    }

    #[test]
    fn user_level_servers_run_in_the_callers_directory() {
        let d = defs(
            "/home/u/.config/sharedserver/servers.json",
            Scope::User,
            r#"{"servers": {"redis": {"command": "redis-server"}}}"#,
        );
        let spec = d["redis"]
            .as_ref()
            .unwrap()
            .resolve(Path::new("/tmp"))
            .unwrap();
        assert_eq!(spec.cwd, PathBuf::from("/tmp"));
    }
}

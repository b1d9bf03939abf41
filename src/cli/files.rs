//! `logs` and `config`: the files around a server.

use super::{lifecycle, parse_name};
use clap::Args;
use sharedserver::{config, ServerName};
use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

#[derive(Args)]
pub struct LogsArgs {
    /// The server's name: up to 64 letters, digits, '.', '_' and '-', from
    /// a letter or digit
    #[arg(value_parser = parse_name)]
    pub name: ServerName,
    /// Keep printing new output as it arrives (Ctrl-C to stop)
    #[arg(short, long)]
    pub follow: bool,
    /// How many lines to show
    #[arg(short = 'n', long, default_value_t = 50)]
    pub lines: usize,
}

#[derive(Args)]
pub struct ConfigArgs {
    /// Show only this server's definition
    #[arg(value_parser = parse_name)]
    pub name: Option<ServerName>,
}

pub fn logs(args: LogsArgs) -> sharedserver::Result<i32> {
    let lc = lifecycle()?;
    let path = lc.log_path(&args.name)?;
    if let Some(tail) = sharedserver::logs::tail(&path, args.lines) {
        say!("{tail}")?;
    } else if !args.follow {
        // Nothing logged: for a name that never ran, that is an error
        // (a typo, most likely), not an empty log.
        let known = lc.status(&args.name)?;
        if known.state == sharedserver::record::State::Stopped && known.last_exit.is_none() {
            return Err(sharedserver::Error::NotRunning(args.name.to_string()));
        }
        // (With -n 0, nothing was asked for.)
        if args.lines > 0 {
            note!(
                "sharedserver: no output logged for '{}' yet ({})",
                args.name,
                path.display()
            );
        }
    }
    if !args.follow {
        return Ok(0);
    }
    // Follow by size: new bytes are printed; a rotation (file shrank or was
    // replaced) starts again from the top of the new file.
    let mut offset = std::fs::metadata(&path).map_or(0, |m| m.len());
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let Some(mut file) = sharedserver::logs::open_for_reading(&path) else {
            continue;
        };
        let len = file.metadata().map_or(0, |m| m.len());
        if len < offset {
            offset = 0;
        }
        if len > offset && file.seek(SeekFrom::Start(offset)).is_ok() {
            let mut buf = Vec::new();
            if file.read_to_end(&mut buf).is_ok() {
                offset += buf.len() as u64;
                super::out::bytes(&buf)?;
            }
        }
    }
}

pub fn show_config(args: ConfigArgs) -> sharedserver::Result<i32> {
    let here = std::env::current_dir()
        .map_err(|e| sharedserver::Error::io(".", "reading the current directory", e))?;
    if let Some(name) = &args.name {
        let Some(def) = config::lookup(name, &here)? else {
            let searched: Vec<String> = config::files(&here)
                .iter()
                .map(|(p, _)| p.display().to_string())
                .collect();
            return Err(sharedserver::Error::Other(format!(
                "no definition of '{name}' (searched: {}; a project file is {} or {} in this directory or a parent)",
                if searched.is_empty() { "no config files found".into() } else { searched.join(", ") },
                config::PROJECT_FILE,
                config::PROJECT_DIR_FILE,
            )));
        };
        print_json(&def.to_value())?;
        return Ok(0);
    }
    // Every entry that reads; the others are reported, and make the exit
    // non-zero, without hiding the good ones.
    let mut shown = Vec::new();
    let mut failed = 0;
    for def in config::all(&here)?.into_values() {
        match def {
            Ok(def) => shown.push(def.to_value()),
            Err(e) => {
                note!("sharedserver: {e}");
                failed += 1;
            }
        }
    }
    print_json(&serde_json::Value::Array(shown))?;
    Ok(if failed > 0 { super::EXIT_ERROR } else { 0 })
}

fn print_json(v: &serde_json::Value) -> sharedserver::Result<()> {
    say!(
        "{}",
        serde_json::to_string_pretty(v).expect("JSON values serialize")
    )
}

// OpenCode plugin for sharedserver: when OpenCode loads it, OpenCode's own
// process is attached to every server of the project (`sharedserver use
// --all --pid <OpenCode's pid>` in the project directory), and the model is
// told which servers run. Nothing needs to let go at the end: when OpenCode
// exits, sharedserver's dead-client detection drops it, whether it quit or
// crashed.
//
// Failures reach the user as an error toast and in OpenCode's log; they
// never stop OpenCode from starting, and nothing here is awaited while it
// starts. The CLI reads and expands the config itself, so neither jq nor
// envsubst is needed.
//
// Install: copy or link this file into `.opencode/plugins/` (one project)
// or `~/.config/opencode/plugins/` (every project).

import { execFile } from "node:child_process";
import { accessSync, constants, realpathSync } from "node:fs";
import { homedir } from "node:os";
import { delimiter, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const executable = (path) => {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
};

/** The binary: $SHAREDSERVER_BIN, $PATH, ~/.cargo/bin, this repository's
 * build, and the one the Neovim plugin's lazy.nvim build step made (a
 * copied plugin is far from any checkout). */
const findBinary = () => {
  const env = process.env;
  if (env.SHAREDSERVER_BIN) {
    return executable(env.SHAREDSERVER_BIN)
      ? { path: env.SHAREDSERVER_BIN }
      : {
          error: `$SHAREDSERVER_BIN is ${env.SHAREDSERVER_BIN}, which is not an executable file; fix or unset it`,
        };
  }
  const candidates = (env.PATH ?? "")
    .split(delimiter)
    .filter((dir) => dir !== "")
    .map((dir) => join(dir, "sharedserver"));
  candidates.push(join(homedir(), ".cargo", "bin", "sharedserver"));
  const data = env.XDG_DATA_HOME || join(homedir(), ".local", "share");
  const lazy = join(data, "nvim", "lazy", "sharedserver", "target", "release", "sharedserver");
  try {
    // The repository this file lives in (through a link into .opencode/plugins).
    const repo = join(dirname(realpathSync(fileURLToPath(import.meta.url))), "..", "..");
    const target = env.CARGO_TARGET_DIR || join(repo, "target");
    candidates.push(join(target, "release", "sharedserver"), join(repo, "target", "release", "sharedserver"));
  } catch {
    // Loaded from somewhere without a path: no repository to look in.
  }
  candidates.push(lazy);
  const path = candidates.find(executable);
  return path
    ? { path }
    : {
        error:
          "binary not found (looked at $SHAREDSERVER_BIN, $PATH, ~/.cargo/bin, the plugin's repository and lazy.nvim's sharedserver build); install it with `cargo install --path .` in a sharedserver checkout, or set SHAREDSERVER_BIN",
      };
};

/** How long toasts wait for OpenCode's TUI, unless a session event comes first. */
const TOAST_DELAY_MS = 5000;

/** @type {import("@opencode-ai/plugin").Plugin} */
export const SharedServer = async ({ client, directory }) => {
  // A toast sent while OpenCode starts is lost (its TUI is not listening
  // yet), and awaiting one then never returns: toasts wait for the first
  // session event, or TOAST_DELAY_MS. Nothing here is ever awaited.
  let held = [];
  const toast = (text) => {
    client.tui.showToast({ body: { message: text, variant: "error" } }).catch(() => {});
  };
  const release = () => {
    const waiting = held;
    held = null;
    waiting?.forEach(toast);
  };
  setTimeout(release, TOAST_DELAY_MS).unref?.();
  const report = (message) => {
    const text = `sharedserver: ${message}`;
    // Each channel on its own: a host without a TUI still gets the log line.
    client.app
      .log({ body: { service: "sharedserver", level: "error", message: text } })
      .catch(() => {});
    if (held) {
      held.push(text);
    } else {
      toast(text);
    }
  };
  let running = ""; // what `use --all` said: the servers up, and their ports
  const hooks = {
    event: async ({ event }) => {
      if (/^(session|message|tui)\./.test(event.type)) {
        release();
      }
    },
    "experimental.chat.system.transform": async (_input, output) => {
      if (running) {
        output.system.push(`Shared servers for this project (sharedserver):\n${running}`);
      }
    },
  };
  const bin = findBinary();
  if (bin.error) {
    report(bin.error);
    return hooks;
  }
  // Not awaited: servers may take a while to start, and OpenCode must not wait.
  execFile(
    bin.path,
    ["use", "--all", "--pid", String(process.pid), "--metadata", "opencode"],
    { cwd: directory },
    (err, stdout, stderr) => {
      running = stdout.trim();
      if (err) {
        // The CLI's lines carry its own prefix; ours is enough.
        report(stderr.trim().replace(/^sharedserver: /gm, "") || err.message);
      }
    },
  );
  return hooks;
};

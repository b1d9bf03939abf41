// OpenCode plugin for sharedserver: when OpenCode loads it, OpenCode's own
// process is attached to every server of the project (`sharedserver use
// --all --pid <OpenCode's pid>` in the project directory). Nothing needs to
// let go at the end: when OpenCode exits, sharedserver's dead-client
// detection drops it, whether it quit or crashed.
//
// Failures reach the user as an error toast and in OpenCode's log; they
// never stop OpenCode from starting. The CLI reads and expands the config
// itself, so neither jq nor envsubst is needed.
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

/** The binary: $SHAREDSERVER_BIN, $PATH, ~/.cargo/bin, this repository's build. */
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
  try {
    // The repository this file lives in (through a link into .opencode/plugins).
    const repo = join(dirname(realpathSync(fileURLToPath(import.meta.url))), "..", "..");
    const target = env.CARGO_TARGET_DIR || join(repo, "target");
    candidates.push(join(target, "release", "sharedserver"), join(repo, "target", "release", "sharedserver"));
  } catch {
    // Loaded from somewhere without a path: no repository to look in.
  }
  const path = candidates.find(executable);
  return path
    ? { path }
    : {
        error:
          "binary not found (looked at $SHAREDSERVER_BIN, $PATH, ~/.cargo/bin and the plugin's repository); install it with `cargo install --path .` in a sharedserver checkout",
      };
};

/** @type {import("@opencode-ai/plugin").Plugin} */
export const SharedServer = async ({ client, directory }) => {
  const report = async (message) => {
    const text = `sharedserver: ${message}`;
    // Each channel on its own: a host without a TUI still gets the log line.
    await client.app
      .log({ body: { service: "sharedserver", level: "error", message: text } })
      .catch(() => {});
    await client.tui.showToast({ body: { message: text, variant: "error" } }).catch(() => {});
  };
  const bin = findBinary();
  if (bin.error) {
    await report(bin.error);
    return {};
  }
  // Not awaited: servers may take a while to start, and OpenCode must not wait.
  execFile(
    bin.path,
    ["use", "--all", "--pid", String(process.pid), "--metadata", "opencode"],
    { cwd: directory },
    (err, _stdout, stderr) => {
      if (err) {
        // The CLI's lines carry its own prefix; ours is enough.
        void report(stderr.trim().replace(/^sharedserver: /gm, "") || err.message);
      }
    },
  );
  return {};
};

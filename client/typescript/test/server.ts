// Starts the real sendgate server binary for the tests: SENDGATE_BIN when set,
// otherwise `go build ./cmd/sendgate` from the repository root.

import { execFile, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const execFileP = promisify(execFile);

export interface RunningServer {
  /** gRPC base URL, e.g. http://127.0.0.1:41234 */
  baseUrl: string;
  /** What the server printed so far. */
  logs: () => string;
  stop: () => Promise<void>;
}

/** The repository root: the nearest parent holding the sendgate go.mod. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const mod = join(dir, "go.mod");
    if (existsSync(mod) && /^module github\.com\/sendgate\/sendgate\s*$/m.test(readFileSync(mod, "utf8"))) {
      return dir;
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error("sendgate repository root (go.mod) not found");
    dir = parent;
  }
}

/** A port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: "127.0.0.1", port });
    sock.once("connect", () => {
      sock.destroy();
      resolve(true);
    });
    sock.once("error", () => resolve(false));
    sock.setTimeout(500, () => {
      sock.destroy();
      resolve(false);
    });
  });
}

async function binary(workdir: string): Promise<string> {
  const fromEnv = process.env.SENDGATE_BIN;
  if (fromEnv) return fromEnv;
  const root = repoRoot();
  if (!existsSync(join(root, "cmd", "sendgate"))) {
    throw new Error(
      `${join(root, "cmd", "sendgate")} does not exist: the sendgate server is not built yet (or set SENDGATE_BIN)`,
    );
  }
  const out = join(workdir, "sendgate");
  await execFileP("go", ["build", "-o", out, "./cmd/sendgate"], {
    cwd: root,
    timeout: 10 * 60 * 1000,
    maxBuffer: 16 << 20,
  });
  return out;
}

/** Builds (or finds) the server, starts it with configYaml and a memory store, waits until it accepts connections. */
export async function startSendgate(configYaml: string): Promise<RunningServer> {
  const workdir = mkdtempSync(join(tmpdir(), "sendgate-ts-"));
  let child: ChildProcess | undefined;
  let output = "";
  const cleanup = () => rmSync(workdir, { recursive: true, force: true });
  try {
    const bin = await binary(workdir);
    const config = join(workdir, "sendgate.yaml");
    writeFileSync(config, configYaml);
    const grpcPort = await freePort();
    let httpPort = await freePort();
    while (httpPort === grpcPort) httpPort = await freePort();
    const proc = spawn(
      bin,
      [
        "serve",
        "--grpc-addr", `127.0.0.1:${grpcPort}`,
        "--http-addr", `127.0.0.1:${httpPort}`,
        "--store", "memory",
        "--config", config,
      ],
      { cwd: workdir, stdio: ["ignore", "pipe", "pipe"] },
    );
    child = proc;
    proc.stdout?.on("data", (b: Buffer) => (output += b.toString()));
    proc.stderr?.on("data", (b: Buffer) => (output += b.toString()));
    let exited: string | undefined;
    proc.once("exit", (code, signal) => (exited = `exited with ${code ?? signal}`));
    proc.once("error", (err) => (exited = `failed to start: ${err.message}`));

    const deadline = Date.now() + 30_000;
    for (;;) {
      if (exited) throw new Error(`sendgate ${exited} before accepting connections:\n${output}`);
      if (await canConnect(grpcPort)) break;
      if (Date.now() > deadline) throw new Error(`sendgate did not accept connections on ${grpcPort} within 30s:\n${output}`);
      await new Promise((r) => setTimeout(r, 100));
    }

    return {
      baseUrl: `http://127.0.0.1:${grpcPort}`,
      logs: () => output,
      stop: async () => {
        await stopChild(proc);
        cleanup();
      },
    };
  } catch (err) {
    if (child) await stopChild(child);
    cleanup();
    throw err;
  }
}

async function stopChild(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const done = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  proc.kill("SIGTERM");
  const timer = setTimeout(() => proc.kill("SIGKILL"), 5000);
  await done;
  clearTimeout(timer);
}

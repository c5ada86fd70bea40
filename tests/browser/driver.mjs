// Drives Debian's Chromium (/usr/bin/chromium) with playwright-core for the
// Python tests (tests/browser/harness.py).  Usage: node driver.mjs WEB_PHONE_DIR
//
// Reads one JSON command per line on stdin, answers one JSON line per command
// on stdout, in order:
//   {"id": 1, "cmd": "goto", "url": "..."}          -> {"id": 1, "ok": true, "value": null}
//   {"id": 2, "cmd": "fill", "selector": "#ext", "value": "1001"}
//   {"id": 3, "cmd": "click", "selector": "#login"}
//   {"id": 4, "cmd": "check", "selector": "#autoanswer", "checked": true}
//   {"id": 5, "cmd": "evaluate", "expression": "window.phone.registered"}
//   {"id": 6, "cmd": "screenshot", "path": "/tmp/x.png"}
//   {"id": 7, "cmd": "close"}
// A failed command answers {"id": n, "ok": false, "error": "..."}.  The
// page's console and errors go to stderr, so a failing test shows them.
// Chromium is closed on "close", at the end of stdin and on SIGTERM/SIGINT.
import { createRequire } from "node:module";
import { join } from "node:path";
import { createInterface } from "node:readline";

const webPhone = process.argv[2];
if (!webPhone) {
  process.stderr.write("usage: node driver.mjs WEB_PHONE_DIR\n");
  process.exit(2);
}
// playwright-core is one of web/phone's locked packages (make phone installs it).
const { chromium } = createRequire(join(webPhone, "package.json"))("playwright-core");

// ../../shared/TELEPHONY-NOTES.md "Browser": the fake microphone and
// camera grant themselves; loopback candidates are allowed (ICE never
// connects on 127.0.0.1 without it); nothing phones home (this machine
// has no network but the tests' own).
const ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--use-fake-ui-for-media-stream",
  "--use-fake-device-for-media-stream",
  "--allow-loopback-in-peer-connection",
  "--autoplay-policy=no-user-gesture-required",
];

const err = (text) => process.stderr.write(`${text}\n`);
const send = (message) => process.stdout.write(`${JSON.stringify(message)}\n`);

// A fresh, temporary profile (playwright makes one per launch and removes it).
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ARGS,
});
const context = await browser.newContext({ viewport: { width: 560, height: 900 } });
const page = await context.newPage();
page.on("console", (message) => err(`[browser ${message.type()}] ${message.text()}`));
page.on("pageerror", (error) => err(`[browser pageerror] ${error.stack ?? error}`));
page.on("requestfailed", (request) =>
  err(`[browser requestfailed] ${request.url()} ${request.failure()?.errorText ?? ""}`),
);

let closing = null;
function close(code = 0) {
  closing ??= browser
    .close()
    .catch((error) => err(`closing chromium: ${error}`))
    .finally(() => process.exit(code));
  return closing;
}
process.on("SIGTERM", () => close(0));
process.on("SIGINT", () => close(0));

const commands = {
  goto: async ({ url }) => {
    const response = await page.goto(url, { waitUntil: "load" });
    return response ? response.status() : null;
  },
  fill: ({ selector, value }) => page.fill(selector, value),
  click: ({ selector }) => page.click(selector),
  check: ({ selector, checked }) => page.setChecked(selector, checked !== false),
  evaluate: ({ expression }) => page.evaluate(expression),
  screenshot: async ({ path }) => {
    await page.screenshot({ path, fullPage: true });
    return path;
  },
  close: () => null,
};

send({ ready: true, version: browser.version() });

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (!line.trim()) continue;
  let command;
  try {
    command = JSON.parse(line);
  } catch (error) {
    send({ id: null, ok: false, error: `not JSON: ${error.message}` });
    continue;
  }
  const handler = commands[command.cmd];
  if (!handler) {
    send({ id: command.id, ok: false, error: `unknown command ${command.cmd}` });
    continue;
  }
  try {
    const value = await handler(command);
    send({ id: command.id, ok: true, value: value ?? null });
  } catch (error) {
    send({ id: command.id, ok: false, error: String(error?.message ?? error) });
  }
  if (command.cmd === "close") break;
}
await close(0);

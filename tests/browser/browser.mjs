// Headless Chromium for the browser tests: Debian's /usr/bin/chromium
// driven by puppeteer-core (which never downloads a browser), a fresh
// profile per launch, and a guard that records every request the page
// makes to another origin.
import puppeteer from "puppeteer-core";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(here, "../..");
export const ARTIFACTS = join(REPO, "target/browser-artifacts");
export const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";

/** Launches Chromium; `close()` ends it and removes its profile. */
export async function launch() {
  const profile = mkdtempSync(join(tmpdir(), "presence-chromium-"));
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      `--user-data-dir=${profile}`,
    ],
  });
  return {
    browser,
    async close() {
      await browser.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * Opens a page in a fresh browser context (its own storage: its own device
 * id and session) at a phone-sized or desktop viewport. Every request to
 * another origin than `origin`, and every CSP violation or page error, is
 * recorded in `page.offOrigin`, `page.violations` and `page.errors`.
 */
export async function openPage(browser, origin, { width = 1100, height = 800 } = {}) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  await page.setViewport({ width, height });
  page.offOrigin = [];
  page.errors = [];
  page.on("request", (request) => {
    const url = request.url();
    if (url.startsWith("data:")) return;
    const target = new URL(url);
    const wsOrigin = origin.replace(/^http/, "ws");
    if (target.origin !== origin && target.origin !== wsOrigin) page.offOrigin.push(url);
  });
  page.on("pageerror", (e) => page.errors.push(String(e)));
  page.on("console", (message) => {
    if (message.type() === "error") page.errors.push(message.text());
  });
  page.closeContext = () => context.close();
  return page;
}

/** Saves a full-page screenshot to target/browser-artifacts/<name>.png. */
export async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/** Signs in to the console at `origin` with `token` and waits for the connection. */
export async function signIn(page, origin, token) {
  await page.goto(`${origin}/console/`);
  await page.waitForSelector("#token");
  await page.type("#token", token);
  await page.click("form button[type=submit]");
  await page.waitForSelector('#conn-state[data-state="open"]');
}

/** Waits until `selector`'s text contains `text` (polling the DOM, with a deadline). */
export async function waitForText(page, selector, text, timeout = 5000) {
  await page.waitForFunction(
    (sel, want) => {
      const el = document.querySelector(sel);
      return el !== null && el.textContent.includes(want);
    },
    { timeout, polling: 50 },
    selector,
    text,
  );
}

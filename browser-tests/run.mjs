// Dashboard tests in real headless Chromium (Debian's /usr/bin/chromium), driven by playwright-core.
// Run against a live API + worker: `STOFLOW_API=http://127.0.0.1:8080 node run.mjs`
// (tests/it/browser.rs starts both on a fresh database and runs this). Screenshots of every page
// go to $SCREENSHOT_DIR (default ../target/screenshots). Prints one line per test and exits
// non-zero when any fails.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";

const BASE = process.env.STOFLOW_API || "http://127.0.0.1:8080";
const here = path.dirname(fileURLToPath(import.meta.url));
const SHOTS = process.env.SCREENSHOT_DIR || path.join(here, "..", "target", "screenshots");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const T = 20_000;
const OPS = { email: process.env.STOFLOW_OPS_EMAIL, password: process.env.STOFLOW_OPS_PASSWORD };
const SELLER = { email: process.env.STOFLOW_SELLER_EMAIL, password: process.env.STOFLOW_SELLER_PASSWORD };
mkdirSync(SHOTS, { recursive: true });

let opsToken = null;
async function call(method, p, body) {
  const r = await fetch(BASE + p, {
    method, headers: { "content-type": "application/json", authorization: `Bearer ${opsToken}` },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}
const enqueue = async (job, extra = {}) => (await call("POST", "/v1/jobs", { job, ...extra })).id;
async function until(what, f, within = T) {
  const end = Date.now() + within;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise(r => setTimeout(r, 50));
  }
}
const jobState = async id => (await call("GET", `/v1/jobs/${id}`)).state;

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage"],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
page.setDefaultTimeout(T);
const consoleErrors = [];
page.on("pageerror", e => consoleErrors.push(String(e)));
const shot = name => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
const text = sel => page.locator(sel).first().innerText();
const liveOn = () => page.waitForSelector('[data-testid="live"].on');

opsToken = (await call("POST", "/v1/auth/login", OPS)).access_token;

async function signIn(who) {
  await page.fill('[data-testid="login-email"]', who.email);
  await page.fill('[data-testid="login-password"]', who.password);
  await page.click('[data-testid="login-submit"]');
}

const results = [];
async function test(name, f) {
  const t0 = Date.now();
  try {
    await f();
    results.push([name, true]);
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    results.push([name, false]);
    console.log(`FAIL ${name}: ${e.stack || e}`);
    await shot(`failed-${name.replace(/\W+/g, "_")}`).catch(() => {});
  }
}

await test("sign-in: a seller is refused, an ops user gets in", async () => {
  await page.goto(`${BASE}/dashboard#/overview`);
  await page.waitForSelector('[data-testid="login"]');
  await shot("sign-in");
  await signIn(SELLER);
  const refused = await page.waitForSelector('[data-testid="login-error"]');
  if (!/ops users/.test(await refused.innerText())) throw new Error(`seller not refused: ${await refused.innerText()}`);
  await signIn({ email: OPS.email, password: "wrong-password" });
  await page.waitForFunction(() => /invalid|password|credentials/i.test(document.querySelector('[data-testid="login-error"]')?.textContent || ""));
  await signIn(OPS);
  await page.waitForSelector('[data-testid^="count-noop-"]');
  await liveOn();
});

await test("overview shows counts that change while jobs run", async () => {
  // Paused, so the jobs certainly wait while the page shows them pending.
  await call("POST", "/v1/queues/noop/pause");
  for (let i = 0; i < 3; i++) await enqueue({ kind: "noop", sleep_ms: 100 });
  // A fresh load (the sign-in test left the page on this very URL, where goto changes nothing).
  await page.goto(`${BASE}/dashboard#/overview`);
  await page.reload();
  await liveOn();
  await page.waitForFunction(() => document.querySelector('[data-testid="count-noop-pending"]')?.textContent === "3");
  const doneBefore = Number(await text('[data-testid="count-noop-done"]'));
  await shot("overview");
  // Resume from the page; the counts must move without a reload (live updates).
  await page.click('[data-testid="resume-noop"]');
  await page.waitForFunction(n => document.querySelector('[data-testid="count-noop-done"]')?.textContent === String(n + 3), doneBefore);
  if ((await text('[data-testid="count-noop-pending"]')) !== "0") throw new Error("pending did not drop to 0");
  await shot("overview-after-run");
});

await test("pausing a kind from the page stops it being fetched", async () => {
  await page.goto(`${BASE}/dashboard#/overview`);
  await page.click('[data-testid="pause-noop"]');
  await page.waitForSelector('[data-testid="resume-noop"]');
  const id = await enqueue({ kind: "noop" });
  // The worker polls every 100 ms under test: 20 polls without a claim shows it does not fetch.
  await new Promise(r => setTimeout(r, 2000));
  const st = await jobState(id);
  if (st !== "pending") throw new Error(`paused kind's job is ${st}, expected pending`);
  await page.click('[data-testid="resume-noop"]');
  await until(`job ${id} done after resume`, async () => (await jobState(id)) === "done");
});

let deadId;
await test("a dead job's detail shows its error", async () => {
  // Fails its only attempt; a retry (attempt 2) succeeds.
  deadId = await enqueue({ kind: "noop", fail: "retryable", fail_attempts: 1, sleep_ms: 1 }, { max_attempts: 1 });
  await until(`job ${deadId} dead`, async () => (await jobState(deadId)) === "dead");
  await page.goto(`${BASE}/dashboard#/jobs?kind=noop&state=dead`);
  await page.click(`[data-testid="job-link-${deadId}"]`);
  await page.waitForSelector('[data-testid="error-row"]');
  const cls = await text('[data-testid="error-class"]');
  const msg = await text('[data-testid="error-message"]');
  if (cls !== "retryable") throw new Error(`error class ${cls}`);
  if (!msg.includes("noop: retryable failure on attempt 1")) throw new Error(`error message ${msg}`);
  if (!(await text('[data-testid="detail-state"]')).includes("dead")) throw new Error("detail not dead");
  await shot("job-detail-dead");
});

await test("clicking retry runs the job", async () => {
  await page.goto(`${BASE}/dashboard#/jobs/${deadId}`);
  await liveOn();
  await page.click('[data-testid="retry"]');
  // The page follows the job live to done.
  await page.waitForFunction(() => document.querySelector('[data-testid="detail-state"]')?.innerText.includes("done"));
  if ((await jobState(deadId)) !== "done") throw new Error("job is not done");
  await shot("job-detail-retried");
});

await test("bulk retry previews the count and retries every match", async () => {
  const ids = [];
  for (let i = 0; i < 2; i++) ids.push(await enqueue({ kind: "noop", fail: "permanent", fail_attempts: 1 }));
  for (const id of ids) await until(`job ${id} dead`, async () => (await jobState(id)) === "dead");
  await page.goto(`${BASE}/dashboard#/jobs?kind=noop&state=dead`);
  await page.waitForSelector(`[data-testid="job-row"]`);
  await page.click('[data-testid="bulk-preview"]');
  await page.waitForFunction(() => /2 job\(s\) would change/.test(document.querySelector('[data-testid="bulk-count"]')?.textContent || ""));
  await shot("jobs-bulk-preview");
  await page.click('[data-testid="bulk-apply"]');
  for (const id of ids) await until(`job ${id} done after bulk retry`, async () => (await jobState(id)) === "done");
  // The listed rows follow the jobs' states live.
  for (const id of ids) await page.waitForFunction(i => document.querySelector(`[data-testid="job-state-${i}"]`)?.innerText.includes("done"), id);
  await shot("jobs");
});

await test("workers page lists the live worker process", async () => {
  await page.goto(`${BASE}/dashboard#/workers`);
  await page.waitForSelector('[data-testid="worker-row"]');
  const status = await text('[data-testid="worker-status"]');
  if (status !== "live") throw new Error(`worker status ${status}`);
  await shot("workers");
});

await test("audit log records the actions taken", async () => {
  await page.goto(`${BASE}/dashboard#/audit`);
  await page.waitForSelector('[data-testid="audit-row"]');
  const all = await page.locator('[data-testid="audit"]').innerText();
  for (const a of ["pause", "resume", "retry", "bulk_retry"]) if (!all.includes(a)) throw new Error(`no ${a} in audit log`);
  await shot("audit");
});

await test("marketplaces page shows budgets, circuits, recent failures and waiting plugin tasks", async () => {
  // tests/it/browser.rs left this state in the database, as the workers would.
  await page.goto(`${BASE}/dashboard#/marketplaces`);
  await page.waitForSelector('[data-testid="accounts"]');
  const circuit = await text('[data-testid="circuit-etsy"]');
  if (!/open/.test(circuit) || !/HTTP 503/.test(circuit)) throw new Error(`etsy circuit row: ${circuit}`);
  if (!/closed/.test(await text('[data-testid="circuit-ebay"]'))) throw new Error("ebay circuit not closed");
  const budget = await text('[data-testid="budget-row"]');
  if (!/etsy:app:browser-key/.test(budget) || !/5000 \/ 10000/.test(budget)) throw new Error(`budget row: ${budget}`);
  const recent = await text('[data-testid="recent-error"]');
  if (!/429/.test(recent) || !/rate_limited/.test(recent)) throw new Error(`recent failure: ${recent}`);
  const waiting = await text('[data-testid="plugin-waiting"]');
  if (!/browser-seller/.test(waiting) || !/\b1\b/.test(waiting)) throw new Error(`plugin tasks waiting: ${waiting}`);
  await shot("marketplaces");
});

await test("marketplaces page: rounded pace, readable errors, accounts' push/poll/extension, double-sell window, fits 1400 px", async () => {
  await page.goto(`${BASE}/dashboard#/marketplaces`);
  await page.waitForSelector('[data-testid="double-sell"]');
  const budget = await text('[data-testid="budget-row"]');
  if (!/\b9\.2\/s/.test(budget) || /9\.2000/.test(budget)) throw new Error(`pace not rounded: ${budget}`);
  const listingError = await text('[data-testid="listing-error"]');
  if (!/^rejected Vinted refused the item/.test(listingError) || /[{}"]/.test(listingError)) throw new Error(`listing error: ${listingError}`);
  const failures = await page.locator('[data-testid="recent-errors"]').innerText();
  if (!/internal error \(database\)/.test(failures) || /decoding column|plugin_tasks/.test(failures)) throw new Error(`database error shown raw: ${failures}`);
  const vinted = await page.locator('[data-testid="accounts"] tr', { hasText: "browser-seller" }).innerText();
  if (!/—/.test(vinted) || !/offline/.test(vinted)) throw new Error(`account row: ${vinted}`);
  const dsw = await text('[data-testid="double-sell-ebay"]');
  if (!/^ebay\s+1\s+2\.5 s\s+2\.5 s\s+0$/.test(dsw.trim())) throw new Error(`double-sell window: ${JSON.stringify(dsw)}`);
  const [scroll, inner] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  if (scroll > inner) throw new Error(`page is ${scroll} px wide in a ${inner} px window`);
  await shot("marketplaces-1400");
});

await test("a permanent rejection is not offered a retry", async () => {
  const id = await enqueue({ kind: "noop", fail: "permanent" }, { max_attempts: 3 });
  await until(`job ${id} dead`, async () => (await jobState(id)) === "dead");
  await page.goto(`${BASE}/dashboard#/jobs/${id}`);
  await page.waitForSelector('[data-testid="error-row"]');
  if (await page.locator('[data-testid="retry"]').count()) throw new Error("Retry now offered on a permanent failure");
});

await test("no script error on any page", async () => {
  if (consoleErrors.length) throw new Error(consoleErrors.join("\n"));
});

await browser.close();
const failed = results.filter(r => !r[1]).length;
console.log(`browser tests: ${results.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);

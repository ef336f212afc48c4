// The console in a real browser: Debian's Chromium driven by playwright-core. Started by
// `cargo test -p orderflow --test e2e -- console::`, which runs the system with one
// dead-lettered payment and passes it in through the environment:
//   CONSOLE_URL, ORDER_URL, ADMIN_TOKEN, READ_ONLY_TOKEN, DEAD_ORDER (the order whose
//   order-created the stock group dead-lettered; empty: no replay is tried), SCREENSHOTS (a
//   directory), CHROMIUM (the browser).
// Exits non-zero, saying what failed, if any check fails.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const env = name => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const CONSOLE = env("CONSOLE_URL");
const ORDER = env("ORDER_URL");
const ADMIN = env("ADMIN_TOKEN");
const READ_ONLY = env("READ_ONLY_TOKEN");
const DEAD_ORDER = process.env.DEAD_ORDER || "";
const SHOTS = env("SCREENSHOTS");
mkdirSync(SHOTS, { recursive: true });

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
  console.log(`ok: ${what}`);
}

// Waits until `test()` holds, polling, for at most 30 s.
async function until(test, what) {
  for (let i = 0; i < 120; i++) {
    if (await test()) return;
    await new Promise(r => setTimeout(r, 250));
  }
  throw new Error(`never: ${what}`);
}

// Waits until the order timeline shown on `page` passes `test()`, reloading it (it does not
// poll) once it is drawn and does not.
async function timelineShows(page, test, what) {
  await until(async () => {
    await page.waitForSelector("#order-status");
    if (await test()) return true;
    await page.reload();
    return false;
  }, what);
}

async function placeOrder(userId) {
  const r = await fetch(`${ORDER}/api/orders`, { method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ userId, items: [{ productId: 1002, quantity: 1 }] }) });
  check(r.status === 200 || r.status === 201, `order placed over HTTP (HTTP ${r.status})`);
  return (await r.json()).orderNo;
}

// The order group's payment-success binding on the topics page, and a wait until the lag it
// shows passes `test`.
const PAYMENT_ROW = "tr[data-binding='paymentSuccessConsumer-in-0'][data-group='order-consumer-group']";
async function lagShown(page, test) {
  for (let i = 0; i < 120; i++) {
    const text = await page.locator(`${PAYMENT_ROW} td[data-lag]`).textContent().catch(() => null);
    if (text !== null && text !== "—" && test(Number(text.replace(/,/g, "")))) return;
    await page.waitForTimeout(250);
  }
  throw new Error(`the lag shown never passed ${test}`);
}

// The page being driven, for the picture and message shown when a check fails.
let current = null;
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
try {
  // ---- signed out: nothing readable, nothing changeable ----
  {
    const r1 = await fetch(`${CONSOLE}/console/api/order/api/orders`);
    check(r1.status === 401, `an API read without signing in is refused (HTTP ${r1.status})`);
    const r2 = await fetch(`${CONSOLE}/console/api/stock/api/admin/stock/1001`, { method: "PUT",
      headers: { "content-type": "application/json" }, body: JSON.stringify({ available: 1 }) });
    check(r2.status === 401, `a change without signing in is refused (HTTP ${r2.status})`);
    const bad = await fetch(`${CONSOLE}/console/session`, { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ token: "not-the-token-at-all" }) });
    check(bad.status === 401, "a wrong token does not sign in");
  }

  // ---- read-only: may look, may not act ----
  {
    const context = await browser.newContext({ viewport: { width: 1366, height: 800 } });
    const page = await context.newPage();
    current = page;
    await page.goto(CONSOLE);
    await page.fill("#token", READ_ONLY);
    await page.click("button[type=submit]");
    await page.waitForSelector("text=signed in: read-only");
    await page.goto(`${CONSOLE}/#/stock`);
    const setButton = page.locator("tr[data-product='1001'] button");
    await setButton.waitFor();
    check(await setButton.isDisabled(), "the read-only session's action buttons are disabled");
    const status = await page.evaluate(async () => {
      const s = await (await fetch("/console/session")).json();
      const r = await fetch("/console/api/stock/api/admin/stock/1001", { method: "PUT",
        headers: { "content-type": "application/json", "x-csrf-token": s.csrf }, body: JSON.stringify({ available: 1 }) });
      return r.status;
    });
    check(status === 403, `the read-only token's change is refused even with its CSRF token (HTTP ${status})`);
    const cookieReadable = await page.evaluate(() => document.cookie.includes("orderflow_console"));
    check(!cookieReadable, "the session cookie cannot be read by scripts");
    // Errors are shown in words, not as raw JSON.
    await page.goto(`${CONSOLE}/#/orders/ORD-NOPE`);
    await page.waitForFunction(() => document.querySelector("#message")?.textContent.includes("no order ORD-NOPE"));
    check(!(await page.textContent("#message")).includes("{"), "a missing order is reported in words");
    // The pages can be worked from the keyboard: on a fresh page, Tab reaches the navigation.
    await page.goto(`${CONSOLE}/#/stock`);
    await page.reload();
    await page.waitForSelector("tr[data-product]");
    await page.keyboard.press("Tab");
    const focused = await page.evaluate(() => document.activeElement && document.activeElement.textContent);
    check(focused === "Overview", `Tab reaches the first page link (focused: ${focused})`);
    await context.close();
  }

  // ---- admin ----
  const context = await browser.newContext({ viewport: { width: 1366, height: 800 } });
  const page = await context.newPage();
  current = page;
  const problems = [];
  page.on("console", m => { if (m.type() === "error") problems.push(`console error: ${m.text()}`); });
  page.on("pageerror", e => problems.push(`page error: ${e.message}`));
  page.on("requestfailed", r => problems.push(`request failed: ${r.url()} ${r.failure() && r.failure().errorText}`));
  page.on("response", r => { if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`); });
  // Confirmations are accepted; a prompt (the reset's time) gets `promptAnswer`.
  let promptAnswer = "";
  page.on("dialog", d => d.accept(d.type() === "prompt" ? promptAnswer : undefined));

  await page.goto(CONSOLE);
  await page.fill("#token", ADMIN);
  // A change without the CSRF header is refused (another site's form could not send it).
  await page.click("button[type=submit]");
  await page.waitForSelector("text=signed in: admin");
  const noCsrf = await page.evaluate(async () => (await fetch("/console/api/stock/api/admin/stock/1001", { method: "PUT",
    headers: { "content-type": "application/json" }, body: JSON.stringify({ available: 1 }) })).status);
  problems.length = 0; // that 403 was asked for
  check(noCsrf === 403, `a change without the CSRF token is refused (HTTP ${noCsrf})`);

  // Every page loads and is drawn.
  for (const [hash, marker, name] of [["#/overview", "[data-card=rate]", "overview"], ["#/orders", "text=Orders", "orders"],
    ["#/topics", "tr[data-binding]", "topics"], ["#/dlq", "text=Dead letters", "dead-letters"], ["#/stock", "tr[data-product]", "stock"]]) {
    await page.goto(`${CONSOLE}/${hash}`);
    await page.waitForSelector(marker);
    await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
    check(true, `page ${name} drawn`);
  }

  // A dead letter replayed from the console is applied once.
  if (DEAD_ORDER) {
    await page.goto(`${CONSOLE}/#/dlq`);
    const row = page.locator("tr[data-dead-letter]", { hasText: DEAD_ORDER });
    await row.waitFor();
    await row.locator("button", { hasText: "Replay" }).click();
    await page.waitForSelector("text=replayed");
    await page.goto(`${CONSOLE}/#/orders/${DEAD_ORDER}`);
    await timelineShows(page, async () => (await page.textContent("#order-status")) === "PAID", `${DEAD_ORDER} PAID`);
    check(true, "the replayed order reached PAID");
  }

  // An order placed over HTTP appears and reaches PAID in its timeline, with all its messages.
  const orderNo = await placeOrder(42);
  await page.goto(`${CONSOLE}/#/orders?userId=42`);
  await page.locator(`a:has-text("${orderNo}")`).click();
  // (On RocketMQ a group's consumed offset is committed a few seconds after the fact.)
  const consumed = async () => ((await page.locator("tr[data-message='order-created']").textContent().catch(() => "")) || "").includes("stock-consumer-group: consumed");
  await timelineShows(page, async () => (await page.textContent("#order-status")) === "PAID" &&
    (await page.locator("tr[data-message='stock-deducted']").count()) === 1 && await consumed(), `${orderNo} PAID with its messages`);
  check((await page.textContent("#order-status")) === "PAID", `order ${orderNo} reached PAID in its timeline`);
  for (const topic of ["order-created", "payment-success", "stock-deducted"]) {
    check((await page.locator(`tr[data-message='${topic}']`).count()) === 1, `its ${topic} message is listed`);
  }
  check(await consumed(), "the message shows which groups consumed it");
  await page.screenshot({ path: `${SHOTS}/order-timeline.png`, fullPage: true });

  // Pausing a binding raises that group's lag on the page; resuming clears it.
  await page.goto(`${CONSOLE}/#/topics`);
  const binding = page.locator(PAYMENT_ROW);
  await binding.locator("button", { hasText: "Pause" }).click();
  await page.waitForSelector(`${PAYMENT_ROW} >> text=PAUSED`);
  await placeOrder(43);
  await placeOrder(43);
  await lagShown(page, n => n >= 2);
  check(true, "the paused group's lag rose to the orders placed meanwhile");
  await page.screenshot({ path: `${SHOTS}/topics-paused.png`, fullPage: true });
  await binding.locator("button", { hasText: "Resume" }).click();
  await lagShown(page, n => n === 0);
  check(true, "resuming cleared the lag");

  // Skipping the backlog of a paused group: its lag goes to 0 and the skipped message is
  // never delivered to it (the test around this script checks the order from the services).
  await binding.locator("button", { hasText: "Pause" }).click();
  await page.waitForSelector(`${PAYMENT_ROW} >> text=PAUSED`);
  const skippedAt = Date.now();
  const skipped = await placeOrder(44);
  await lagShown(page, n => n >= 1);
  await binding.locator("button", { hasText: "Skip backlog" }).click();
  await page.waitForSelector("text=skipped the backlog");
  await lagShown(page, n => n === 0);
  check(true, "skipping the backlog brought the paused group's lag to 0");
  await binding.locator("button", { hasText: "Resume" }).click();
  await page.waitForSelector(`${PAYMENT_ROW} >> text=RUNNING`);
  // An order placed after the skip comes through the same binding behind the skipped
  // message: once it is PAID, the skipped one would have been delivered too.
  const statusOf = async no => (await (await fetch(`${ORDER}/api/orders/${no}`)).json()).status;
  const later = await placeOrder(45);
  await until(async () => (await statusOf(later)) === "PAID", `${later} PAID`);
  check((await statusOf(skipped)) === "PENDING", "the skipped payment-success was never delivered to the order group");

  // Resetting the group's offset to before the skipped order: its payment-success is
  // delivered again and the order is paid; what the group had handled since is absorbed.
  promptAnswer = new Date(skippedAt - 1000).toISOString().slice(0, 19);
  await binding.locator("button", { hasText: "Reset offset" }).click();
  await page.waitForSelector("text=reset to");
  await until(async () => (await statusOf(skipped)) === "PAID", `${skipped} PAID after the reset`);
  check(true, "resetting the offset from the console delivered the skipped message again");
  console.log(`reset order: ${skipped}`);

  check(problems.length === 0, `no console errors and no failed requests${problems.length ? `:\n  ${problems.join("\n  ")}` : ""}`);
  await context.close();
} catch (e) {
  if (current) {
    await current.screenshot({ path: `${SHOTS}/failure.png`, fullPage: true }).catch(() => {});
    const shown = await current.textContent("#message").catch(() => "");
    console.error(`at ${current.url()}; the console said: ${shown || "nothing"}; picture: ${SHOTS}/failure.png`);
  }
  throw e;
} finally {
  await browser.close();
}

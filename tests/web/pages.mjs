// Sovra's pages in headless Chromium (Debian's chromium, driven by
// playwright-core): sign in, ask and open a citation, upload a document and
// find it, delete it, read the audit trail as an auditor and find the events
// just made, export it, and check that a reader cannot open the audit page
// and that an expired token returns to sign-in. Screenshots of every page go
// to $SOVRA_SCREENSHOTS. Started by tests/integration/pages.rs, which starts
// the gateway and passes its address and tokens in the environment.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const BASE = env("SOVRA_BASE");
const SHOTS = env("SOVRA_SCREENSHOTS");
mkdirSync(SHOTS, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.SOVRA_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
const violations = [];
let step = "start";

async function newPage(viewport = { width: 1280, height: 900 }) {
  const context = await browser.newContext({ viewport, acceptDownloads: true });
  const page = await context.newPage();
  page.on("console", (m) => {
    if (m.type() === "error" && !/status of 4\d\d/.test(m.text())) violations.push(`${step}: ${m.text()}`);
  });
  page.on("pageerror", (e) => violations.push(`${step}: ${e.message}`));
  return page;
}

async function shot(page, name) {
  await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
}

async function signIn(page, token) {
  await page.goto(BASE + "/");
  await page.waitForSelector("body[data-ready=true]");
  await page.getByLabel("Access token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForSelector("#signout:not([hidden])");
}

async function signOut(page) {
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForSelector("#page-signin:not([hidden])");
}

/** Every form control has an accessible name. */
async function checkLabels(page) {
  const unlabeled = await page.$$eval("input, select, textarea", (els) =>
    els.filter((e) => e.type !== "hidden" && !(e.labels && e.labels.length) && !e.getAttribute("aria-label")).map((e) => e.id || e.outerHTML));
  assert.deepEqual(unlabeled, [], "form controls without a label");
}

try {
  // -- sign-in page, security headers --------------------------------------
  step = "signin";
  let page = await newPage();
  const resp = await page.goto(BASE + "/");
  const headers = resp.headers();
  assert.match(headers["content-security-policy"], /script-src 'self'/);
  assert.equal(headers["x-frame-options"], "DENY");
  await page.waitForSelector("body[data-ready=true]");
  assert.equal(await page.isVisible("#page-signin"), true);
  await checkLabels(page);
  await shot(page, "01-signin");

  // A wrong token is refused on the page, without echoing it.
  await page.getByLabel("Access token").fill("not-a-token");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForSelector("#notice.error:not([hidden])");
  assert.match(await page.textContent("#notice"), /not accepted/);
  assert.doesNotMatch(await page.textContent("#notice"), /not-a-token/);

  // -- reader: ask, stream, citations, retrieval panel ---------------------
  step = "ask";
  await signIn(page, env("READER_TOKEN"));
  assert.equal(await page.isVisible("#page-ask"), true);
  assert.equal(await page.isVisible("#nav a[href='#/audit']"), false, "a reader sees no Audit link");
  await page.getByLabel("Question").fill("Up to how much may a junior dealer commit per spot FX ticket?");
  await page.keyboard.press("Tab"); // keyboard reaches the mode selector and the button
  await page.keyboard.press("Tab");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.querySelector("#usage").textContent.includes("completion tokens"), null, { timeout: 120000 });
  const answer = await page.textContent("#answer");
  assert.match(answer, /5 million|5,000,000/, answer);
  const retrieved = await page.textContent("#retrieved tbody");
  assert.match(retrieved, /FX Dealing Limits/);
  assert.match(retrieved, /\[1\]/);
  const cite = page.locator("#citations li button").first();
  await cite.waitFor();
  await shot(page, "02-ask");
  await cite.click();
  await page.waitForSelector("#dialog[open]");
  assert.match(await page.textContent("#dialog-body"), /junior dealer/);
  await shot(page, "03-citation");
  await page.keyboard.press("Escape");
  await page.waitForFunction(() => !document.querySelector("#dialog").open);

  // The same page on a tablet.
  const tablet = await newPage({ width: 768, height: 1024 });
  await tablet.goto(BASE + "/");
  await tablet.waitForSelector("body[data-ready=true]");
  await tablet.evaluate((t) => sessionStorage.setItem("sovra.token", t), env("READER_TOKEN"));
  await tablet.goto(BASE + "/#/ask");
  await tablet.reload();
  await tablet.waitForSelector("#page-ask:not([hidden])");
  await shot(tablet, "04-ask-tablet");
  await tablet.context().close();

  // -- reader cannot open the audit page ------------------------------------
  step = "denied";
  await page.goto(BASE + "/#/audit");
  await page.waitForSelector("#page-denied:not([hidden])");
  assert.equal(await page.isVisible("#page-audit"), false);
  assert.match(await page.textContent("#denied-text"), /do not allow the Audit page/);
  await shot(page, "05-reader-denied-audit");
  // The server refuses too (and audits the denial), whatever the page shows.
  const status = await page.evaluate(async () =>
    (await fetch("/v1/audit/events", { headers: { Authorization: "Bearer " + sessionStorage.getItem("sovra.token") } })).status);
  assert.equal(status, 403);
  await signOut(page);

  // -- ingester: upload with progress, find it, delete it -------------------
  step = "documents";
  await signIn(page, env("INGESTER_TOKEN"));
  assert.equal(await page.isVisible("#page-documents"), true);
  await checkLabels(page);
  await page.getByLabel("File (text, Markdown, HTML, PDF, DOCX)").setInputFiles({
    name: "canteen-hours.md",
    mimeType: "text/markdown",
    buffer: Buffer.from("# Canteen hours\n\nThe staff canteen opens at 07:30 on weekdays and closes at 15:00.\n"),
  });
  await page.getByLabel("Groups that may read it (comma-separated)").fill("staff");
  await page.getByLabel("Title (default: the file name)").fill("Canteen hours");
  await page.getByRole("button", { name: "Upload" }).click();
  await page.waitForFunction(() => document.querySelector("#up-status").textContent.startsWith("Stored"), null, { timeout: 60000 });
  assert.equal(await page.$eval("#up-progress", (p) => p.value), 100);
  await page.getByLabel("Filter by title or id").fill("canteen");
  await page.waitForSelector("#documents tbody tr:has-text('Canteen hours')");
  assert.equal(await page.locator("#documents tbody tr").count(), 1);
  await shot(page, "06-documents");
  await page.getByRole("button", { name: "Delete Canteen hours" }).click();
  await page.waitForSelector("#dialog[open]");
  await shot(page, "07-delete-confirm");
  await page.getByRole("button", { name: "Delete", exact: true }).click();
  await page.waitForFunction(() => !document.querySelector("#documents tbody").textContent.includes("Canteen hours"));
  assert.match(await page.textContent("#notice"), /Deleted Canteen hours/);
  await signOut(page);

  // -- auditor: the events just made, details, export, verification ---------
  step = "audit";
  await signIn(page, env("AUDITOR_TOKEN"));
  assert.equal(await page.isVisible("#page-audit"), true);
  await page.waitForSelector("#verify.ok");
  assert.match(await page.textContent("#verify"), /Chain verified/);
  await page.waitForSelector("#events tbody tr");
  const actions = await page.$$eval("#events tbody tr td:nth-child(3)", (tds) => tds.map((t) => t.textContent));
  for (const a of ["document.write", "document.delete", "query"]) assert.ok(actions.includes(a), `${a} in ${actions}`);
  assert.ok(actions.includes("page") === false, "pages are not audited");
  await checkLabels(page);
  await shot(page, "08-audit");
  // The reader's denied request is there too (403, missing role).
  await page.getByLabel("Status").fill("403");
  await page.getByRole("button", { name: "Search" }).click();
  await page.waitForFunction(() => [...document.querySelectorAll("#events tbody tr td:nth-child(4)")].every((t) => t.textContent === "403"));
  // Filter by action, open the question's record.
  await page.getByLabel("Status").fill("");
  await page.getByLabel("Action").fill("query");
  await page.getByRole("button", { name: "Search" }).click();
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll("#events tbody tr td:nth-child(3)")].map((t) => t.textContent);
    return rows.length > 0 && rows.every((a) => a === "query");
  });
  await page.locator("#events tbody tr", { hasText: "200" }).first().getByRole("button", { name: /Details/ }).click();
  await page.waitForSelector("#dialog[open]");
  const detail = await page.textContent("#dialog-body");
  assert.match(detail, /qwen2\.5-coder-0\.5b-instruct/);
  assert.match(detail, /junior dealer/);
  assert.match(detail, /treasury-fx-dealing-limits/);
  assert.match(detail, /\d+ prompt, \d+ completion/);
  await shot(page, "09-audit-detail");
  await page.getByRole("button", { name: "Close" }).click();
  const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Export CSV" }).click()]);
  const csv = await (await download.createReadStream()).toArray();
  const text = Buffer.concat(csv).toString("utf8");
  assert.match(text.split("\n")[0], /seq/);
  assert.match(text, /query/);
  await signOut(page);

  // -- an expired token returns to sign-in with a clear message -------------
  step = "expired";
  await page.evaluate((t) => sessionStorage.setItem("sovra.token", t), env("EXPIRED_TOKEN"));
  await page.goto(BASE + "/#/ask");
  await page.reload();
  await page.waitForSelector("#page-signin:not([hidden])");
  assert.match(await page.textContent("#notice"), /expired/);
  assert.equal(await page.evaluate(() => sessionStorage.getItem("sovra.token")), null);
  await shot(page, "10-expired");

  // -- development sign-in in one click ------------------------------------
  step = "dev";
  await page.getByLabel("Groups (comma-separated)").fill("treasury");
  await page.getByRole("button", { name: "Get a development token" }).click();
  await page.waitForSelector("#page-ask:not([hidden])");
  assert.match(await page.textContent("#who"), /dev-user/);

  assert.deepEqual(violations, [], "console errors or Content Security Policy violations");
  console.log(`pages: ok (screenshots in ${SHOTS})`);
} catch (e) {
  console.error(`failed at step ${step}:`, e);
  process.exitCode = 1;
} finally {
  await browser.close();
}

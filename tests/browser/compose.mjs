// The browser end-to-end scenario of issue #5, in Debian's chromium driven
// by playwright-core. Run by crates/web/tests/browser.rs, which starts the
// web server against a local signed DNS world and passes:
//
//   node compose.mjs BASE_URL ARTIFACT_DIR USER PASSWORD SECURE_ALIAS
//
// Recipients (domains of that world): alice@dane.example (DANE ok),
// bob@tls.example (SSL ok), carol@plain.example (no SSL), dave@slow.example
// (SSL ok, but its MX answers only after a few seconds: never seen before,
// so its chip starts as "SSL ?"). Screenshots of each state go to
// ARTIFACT_DIR; their paths are printed. Last, the check page. Any failed expectation throws and
// the process exits non-zero.
import { chromium } from "playwright-core";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base, artifacts, user, password, alias] = process.argv.slice(2);
if (!base || !artifacts || !user || !password || !alias) {
  console.error("usage: node compose.mjs BASE_URL ARTIFACT_DIR USER PASSWORD SECURE_ALIAS");
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), "mailtls-chromium-"));

function expect(cond, message) {
  if (!cond) throw new Error("expectation failed: " + message);
}

const shots = [];
async function shot(page, name) {
  const path = join(artifacts, name + ".png");
  await page.screenshot({ path, fullPage: true });
  shots.push(path);
  console.log("screenshot: " + path);
}

const chip = (page, address) => page.locator(`.chip[data-address="${address}"]`);

async function addRecipient(page, field, address) {
  const input = page.locator(`#${field}-input`);
  await input.click();
  await input.fill(address);
  await input.press("Enter");
}

async function expectChip(page, address, { status, symbol, badge }) {
  const c = chip(page, address);
  await c.locator(".status").filter({ hasText: status }).waitFor({ timeout: 30000 });
  const sym = c.locator(".sym");
  expect((await sym.textContent()) === symbol, `${address}: symbol ${symbol}, got ${await sym.textContent()}`);
  expect((await sym.getAttribute("aria-label")) === status, `${address}: text alternative ${status}`);
  expect((await sym.getAttribute("role")) === "img", `${address}: symbol has role img`);
  const badges = await c.locator(".badge").count();
  expect(badge ? badges === 1 : badges === 0, `${address}: DANE badge ${badge}`);
}

const browser = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  viewport: { width: 1100, height: 800 },
});
let failed = false;
try {
  const page = browser.pages()[0] || (await browser.newPage());
  page.on("console", (m) => console.log("[browser console] " + m.text()));
  page.on("pageerror", (e) => { console.log("[page error] " + e.message); failed = true; });

  // 1. Three recipients become chips with their symbol and status text.
  await page.goto(base + "/compose");
  await addRecipient(page, "to", "alice@dane.example");
  await addRecipient(page, "to", "bob@tls.example");
  await addRecipient(page, "cc", "carol@plain.example");
  await expectChip(page, "alice@dane.example", { status: "DANE ok", symbol: "👍", badge: true });
  await expectChip(page, "bob@tls.example", { status: "SSL ok", symbol: "👍", badge: false });
  await expectChip(page, "carol@plain.example", { status: "no SSL", symbol: "✗", badge: false });
  await shot(page, "1-chips");

  // 2. Hover shows the details: TLS version and cipher.
  const bob = chip(page, "bob@tls.example");
  await bob.hover();
  const tip = bob.locator(".tip");
  await tip.waitFor({ state: "visible", timeout: 5000 });
  const tipText = await tip.innerText();
  expect(/TLSv1\.[23]/.test(tipText), "tooltip shows the TLS version: " + tipText);
  expect(/Cipher\s+[A-Z0-9][A-Z0-9_-]{5,}/.test(tipText), "tooltip shows the cipher: " + tipText);
  await shot(page, "2-tooltip-hover");
  // ... and keyboard focus does too.
  await page.mouse.move(0, 0);
  await chip(page, "alice@dane.example").focus();
  const aliceTip = chip(page, "alice@dane.example").locator(".tip");
  await aliceTip.waitFor({ state: "visible", timeout: 5000 });
  expect(/DANE\s+ok/.test(await aliceTip.innerText()), "focused chip shows DANE ok in its details");
  await shot(page, "3-tooltip-focus");

  // 3. A never-seen domain starts as SSL ? and updates in place.
  await page.evaluate(() => { window.__noReload = "still here"; });
  const checked = page.waitForResponse((r) => r.url().includes("/api/v1/check") && r.url().includes("slow.example"));
  await addRecipient(page, "to", "dave@slow.example");
  const first = await (await checked).json();
  expect(first[0].status === "SSL ?" && first[0].pending === true, "first answer is SSL ?, pending: " + JSON.stringify(first[0]));
  await chip(page, "dave@slow.example").locator(".status").filter({ hasText: "SSL ?" }).waitFor({ timeout: 5000 });
  expect((await chip(page, "dave@slow.example").locator(".sym").textContent()) === "?", "SSL ? chip shows ?");
  await page.mouse.move(0, 0);
  await shot(page, "4-pending-ssl-unknown");
  await expectChip(page, "dave@slow.example", { status: "SSL ok", symbol: "👍", badge: false });
  expect((await page.evaluate(() => window.__noReload)) === "still here", "the page was not reloaded");
  await shot(page, "5-updated-in-place");

  // 4. Sign in and switch Encrypted Sending on: the secure alias appears.
  await page.goto(base + "/settings");
  await page.fill("#signin-address", user);
  await page.fill("#signin-password", password);
  await Promise.all([page.waitForURL(base + "/settings"), page.click("#signin")]);
  await page.locator("#state").filter({ hasText: "off" }).waitFor({ timeout: 5000 });
  await page.check('input[name="mode"][value="on"]');
  await Promise.all([page.waitForLoadState("load"), page.click("#save")]);
  const shown = (await page.locator("#secure-alias").textContent({ timeout: 5000 })) || "";
  expect(shown === alias, `secure alias shown: ${shown}`);
  await shot(page, "6-settings-encrypted-sending-on");

  // 5. Now a no SSL recipient blocks sending, with the reason.
  await page.goto(base + "/compose");
  expect((await page.locator("#from option:checked").textContent()) === alias, "compose sends from the alias");
  await addRecipient(page, "to", "bob@tls.example");
  await addRecipient(page, "to", "carol@plain.example");
  await expectChip(page, "carol@plain.example", { status: "no SSL", symbol: "✗", badge: false });
  await chip(page, "carol@plain.example").locator(".blocked-mark").waitFor({ timeout: 5000 });
  expect(await page.locator("#send").isDisabled(), "Send is disabled");
  const reason = (await page.locator("#send-status").textContent()) || "";
  expect(reason.includes("carol@plain.example") && reason.includes("no SSL"), "the reason names the recipient: " + reason);
  expect((await chip(page, "bob@tls.example").locator(".blocked-mark").count()) === 0, "an SSL ok recipient is not blocked");
  await shot(page, "7-no-ssl-blocks-sending");
  // Removing the recipient unblocks.
  await chip(page, "carol@plain.example").locator(".remove").click();
  expect(!(await page.locator("#send").isDisabled()), "Send is enabled again");
  await shot(page, "8-unblocked");

  // 6. The check page (no script on it): a verdict with details per MX host.
  await page.goto(base + "/?address=" + encodeURIComponent("alice@dane.example"));
  const verdict = (await page.locator("#verdict .status").textContent()) || "";
  expect(verdict === "DANE ok", "check page verdict: " + verdict);
  const mx = (await page.locator("article.mx").first().innerText()) || "";
  expect(/TLS version\s+TLSv1\.[23]/.test(mx) && /DANE\s+ok/.test(mx), "check page shows the MX details: " + mx);
  expect((await page.locator("script").count()) === 0, "the check page has no script");
  await shot(page, "9-check-page");
  expect(!failed, "no script errors on the pages");
  console.log("browser scenario: PASSED (" + shots.length + " screenshots)");
} catch (e) {
  failed = true;
  console.error(e && e.stack ? e.stack : String(e));
  try {
    const p = browser.pages()[0];
    if (p) await shot(p, "failure");
  } catch (_) { /* the browser may be gone */ }
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);

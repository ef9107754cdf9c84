// Walks berth's dashboard in a real browser (headless Chromium through puppeteer-core):
// signs in, opens the apps, an app, its logs and the audit log, rolls back, and checks
// each page with axe-core. Screenshots of every page at desktop and phone widths go to
// $SHOTS. Prints a JSON report; exits 1 on the first broken expectation.
//
// Environment: BASE (http://127.0.0.1:PORT), TOKEN (an admin's), VIEWER (a viewer's), APP,
// SHOTS, CHROMIUM, TOOLS (the node_modules holding puppeteer-core and axe-core).
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import http from "node:http";

const require = createRequire(path.join(process.env.TOOLS, "x.js"));
const puppeteer = require("puppeteer-core");
const axeSource = fs.readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

const { BASE, TOKEN, VIEWER, APP, SHOTS, CHROMIUM } = process.env;
const report = { pages: {}, dialogs: [], violations: [] };
const widths = { desktop: { width: 1280, height: 900 }, phone: { width: 390, height: 844, isMobile: true } };

function check(ok, what) {
  if (!ok) {
    report.failed = what;
    console.log(JSON.stringify(report));
    process.exit(1);
  }
}

const browser = await puppeteer.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"],
});
try {
  const page = await browser.newPage();
  page.on("dialog", async (d) => {
    report.dialogs.push(d.message());
    await d.dismiss();
  });
  const cspErrors = [];
  page.on("console", (m) => {
    if (m.type() === "error") cspErrors.push(m.text());
  });

  async function shoot(name) {
    for (const [w, vp] of Object.entries(widths)) {
      await page.setViewport(vp);
      await page.screenshot({ path: path.join(SHOTS, `${name}-${w}.png`), fullPage: true });
    }
    await page.setViewport(widths.desktop);
  }
  async function axe(name) {
    // The CSP forbids inline scripts: axe is evaluated through the DevTools protocol.
    await page.evaluate(axeSource);
    const result = await page.evaluate(async () => {
      const r = await window.axe.run(document, { resultTypes: ["violations"] });
      return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help }));
    });
    report.pages[name] = { axe: result };
    for (const v of result) {
      if (v.impact === "serious" || v.impact === "critical") report.violations.push({ page: name, ...v });
    }
  }
  const text = () => page.evaluate(() => document.body.innerText);

  // Not signed in: the sign-in page.
  await page.goto(`${BASE}/ui`, { waitUntil: "networkidle0" });
  check(page.url().endsWith("/ui/login"), `not signed in, /ui went to ${page.url()}`);
  await axe("login");
  await shoot("login");

  // A wrong token: refused, said so.
  await page.type("#token", "berth_not-a-real-token");
  await Promise.all([page.waitForNavigation({ waitUntil: "networkidle0" }), page.click("button[type=submit]")]);
  check((await text()).includes("unknown, revoked or expired"), "a wrong token is refused");

  // Signed in: the apps.
  await page.type("#token", TOKEN);
  await Promise.all([page.waitForNavigation({ waitUntil: "networkidle0" }), page.click("main button[type=submit]")]);
  check(page.url().endsWith("/ui"), `signed in, at ${page.url()}`);
  check((await text()).includes(APP), "the apps list the app");
  await axe("apps");
  await shoot("apps");

  // Keyboard: Tab reaches the links in order, starting with the header.
  await page.keyboard.press("Tab");
  const first = await page.evaluate(() => document.activeElement && document.activeElement.textContent.trim());
  check(first === "berth", `the first Tab stop is the header's home link, not ${first}`);

  // The app's project: its quota, its apps, their DORA keys day by day.
  await Promise.all([page.waitForNavigation({ waitUntil: "networkidle0" }), page.click(`a[href="/ui/projects/default"]`)]);
  const projectText = await text();
  check(projectText.includes("Project default") && projectText.includes("Change failure rate per day"), `the project page: ${projectText.slice(0, 300)}`);
  await axe("project");
  await shoot("project");
  await page.goto(`${BASE}/ui`, { waitUntil: "networkidle0" });

  // The app: its releases, the hostile env value shown as text.
  await Promise.all([page.waitForNavigation({ waitUntil: "networkidle0" }), page.click(`a[href="/ui/apps/${APP}"]`)]);
  const appText = await text();
  check(appText.includes("Releases") && appText.includes("v2"), "the app page lists its releases");
  check(appText.includes("<img src=x onerror=alert(1)>"), "an env value is shown as text");
  await axe("app");
  await shoot("app");

  // Deploy a commit of a repository: the run's page follows the build to its end, its
  // lines streamed in (server-sent events; the page is never reloaded).
  await page.type("#deploy-url", process.env.GIT_URL);
  await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click("#deploy button[type=submit], form[action^='/ui/deploy'] button[type=submit]")]);
  check(page.url().includes(`/ui/apps/${APP}/runs/`), `a deploy goes to its run, not ${page.url()}`);
  await page.evaluate(() => { window.samePage = true; });
  await page.waitForFunction(() => document.body.innerText.includes("Done:") || document.body.innerText.includes("Failed:"), { timeout: 240000, polling: 500 });
  const deployed = await text();
  check(deployed.includes("Done: release v") && deployed.includes("==> build"), `the deploy's run: ${deployed.slice(0, 600)}`);
  check(await page.evaluate(() => window.samePage === true), "the run was followed on the same page");
  await axe("run");
  await shoot("deploy");

  // Its logs, with the hostile line as text; a line the app logs now appears by itself.
  await page.goto(`${BASE}/ui/apps/${APP}/logs`, { waitUntil: "load" });
  await page.waitForFunction(() => document.body.innerText.includes("the secret is <img src=x onerror=alert(1)>"), { timeout: 10000 });
  await page.evaluate(() => { window.samePage = true; });
  await new Promise((resolve, reject) => {
    http.get({ host: "127.0.0.1", port: Number(process.env.EDGE_PORT), path: "/log?name=MODE", headers: { host: `${APP}.localhost` } }, (r) => { r.resume(); r.on("end", resolve); }).on("error", reject);
  });
  await page.waitForFunction(() => document.querySelector("#log").innerText.includes("the secret is blue"), { timeout: 30000, polling: 250 });
  check(await page.evaluate(() => window.samePage === true), "the new line came without a reload");
  await axe("logs");
  await shoot("logs");
  await page.goto(`${BASE}/ui/apps/${APP}/logs?q=onerror`, { waitUntil: "networkidle0" });
  check((await text()).includes("onerror"), "the search finds the line");

  // Roll back to v1: a confirmation, then the new release.
  await page.goto(`${BASE}/ui/apps/${APP}`, { waitUntil: "networkidle0" });
  await Promise.all([page.waitForNavigation({ waitUntil: "networkidle0" }), page.click(`a[href="/ui/apps/${APP}/rollback?to=1"]`)]);
  check((await text()).includes(`Roll ${APP} back to v1?`), "the rollback asks first");
  await axe("rollback");
  await shoot("rollback");
  await Promise.all([page.waitForNavigation({ waitUntil: "networkidle0", timeout: 120000 }), page.click("main button[type=submit]")]);
  const after = await text();
  check(/Rolled back to v1: release v\d+ serves now\./.test(after), `the rollback's outcome: ${after.slice(0, 400)}`);
  await shoot("rolled-back");

  // The alerts.
  await page.goto(`${BASE}/ui/alerts`, { waitUntil: "networkidle0" });
  check((await text()).includes("Firing ("), "the alerts page");
  await axe("alerts");
  await shoot("alerts");

  // The audit log records it.
  await page.goto(`${BASE}/ui/audit`, { waitUntil: "networkidle0" });
  check((await text()).includes(`POST /ui/apps/{app}/rollback`), "the audit log has the rollback");
  await axe("audit");
  await shoot("audit");

  // Signing out ends the session.
  await Promise.all([page.waitForNavigation({ waitUntil: "networkidle0" }), page.click("header button[type=submit]")]);
  await page.goto(`${BASE}/ui`, { waitUntil: "networkidle0" });
  check(page.url().endsWith("/ui/login"), "signed out");

  // A viewer sees, and may not roll back.
  await page.type("#token", VIEWER);
  await Promise.all([page.waitForNavigation({ waitUntil: "networkidle0" }), page.click("main button[type=submit]")]);
  check(!(await text()).includes("Audit"), "a viewer has no audit link");
  await page.goto(`${BASE}/ui/apps/${APP}/rollback?to=2`, { waitUntil: "networkidle0" });
  await Promise.all([page.waitForNavigation({ waitUntil: "networkidle0" }), page.click("main button[type=submit]")]);
  const refused = await text();
  check(refused.includes("Not allowed") && refused.includes("may not POST"), `a viewer's rollback: ${refused.slice(0, 300)}`);
  await shoot("viewer-refused");

  report.csp_errors = cspErrors.filter((e) => e.includes("Content Security Policy"));
  check(report.dialogs.length === 0, "no script ran from the app's data");
  check(report.violations.length === 0, "no serious accessibility violation");
  check(report.csp_errors.length === 0, "nothing broke the Content-Security-Policy");
  report.ok = true;
  console.log(JSON.stringify(report));
} finally {
  await browser.close();
}

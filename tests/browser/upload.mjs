// Uploads through the admin page in Debian's chromium, as an operator would: a good
// certificate (files chosen in the form, "Check and install" clicked), then a broken one.
// Prints what the page showed; exits non-zero, saying why, when the page did not behave.
//
// node upload.mjs BASE_URL NAME GOOD_CERT GOOD_KEY BAD_CERT BAD_KEY
import { chromium } from "playwright-core";

const [base, name, goodCert, goodKey, badCert, badKey] = process.argv.slice(2);
const fail = (why) => {
  console.error(why);
  process.exit(1);
};

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
  timeout: 20000,
});
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(15000);

  const upload = async (cert, key) => {
    await page.goto(base);
    await page.fill('input[name="name"]', name);
    await page.setInputFiles('input[name="certificate"]', cert);
    await page.setInputFiles('input[name="key"]', key);
    await Promise.all([page.waitForNavigation(), page.click('button:has-text("Check and install")')]);
    return (await page.textContent("#outcome")) ?? "";
  };

  const installed = await upload(goodCert, goodKey);
  if (!installed.includes(`Installed: ${name}`)) fail(`the good upload showed: ${installed}`);
  const row = (await page.textContent("tr.mine")) ?? "";
  if (!row.includes(`${name}.pem`) || !row.includes("serving")) fail(`the new row: ${row}`);

  const refused = await upload(badCert, badKey);
  if (!refused.includes(`Not installed: ${name}`)) fail(`the broken upload showed: ${refused}`);
  if (!refused.includes("expired") || !refused.includes("Fix:")) fail(`its findings: ${refused}`);

  // The table still shows the certificate in use, found by the search.
  await page.goto(`${base}?q=${encodeURIComponent(name)}`);
  const table = (await page.textContent("#certificates tbody")) ?? "";
  if (!table.includes(`${name}.pem`)) fail(`the search: ${table}`);

  console.log(JSON.stringify({ installed, row, refused }));
} finally {
  await browser.close();
}

// What mqgate's browser test scripts share: a headless Debian Chromium
// launched with the flags this closed network needs, and MQTT.js's browser
// bundle to load into pages. A script takes it with
//   const bt = require(process.env.BROWSERTEST_LIB);
// and prints its result as the last line of standard output (JSON).
'use strict';
const path = require('path');
const { chromium } = require('playwright-core');

// launch starts Chromium. Without the background-networking flags Chromium
// dials out at start and its connections are refused here, many at a time.
async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}

// newPage opens a page in a fresh context. Certificates the tests make are
// not in Chromium's store, so TLS errors are ignored (https and wss alike).
async function newPage(browser, options = {}) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, ...options });
  const page = await context.newPage();
  page.on('console', (msg) => process.stderr.write(`page console: ${msg.text()}\n`));
  page.on('pageerror', (err) => process.stderr.write(`page error: ${err}\n`));
  return page;
}

// mqttBundle is MQTT.js's browser build; page.addScriptTag({path}) defines
// window.mqtt.
const mqttBundle = path.join(__dirname, 'node_modules', 'mqtt', 'dist', 'mqtt.min.js');

// result prints the script's answer for the Go side to read.
function result(value) {
  process.stdout.write(JSON.stringify(value) + '\n');
}

module.exports = { launch, newPage, mqttBundle, result, chromium };

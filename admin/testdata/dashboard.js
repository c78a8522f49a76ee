// The dashboard in headless Chromium: refused without a key, signed in with
// a viewer key through the form, numbers that follow MQTT.js clients
// connecting through mqgate, search by client id, and an admin's kick
// button closing a client. With SCREENSHOT set it also keeps traffic going
// for a while and saves a full-page PNG there (docs/dashboard.png).
'use strict';
const { createRequire } = require('module');
const bt = require(process.env.BROWSERTEST_LIB);
const mqtt = createRequire(process.env.BROWSERTEST_LIB)('mqtt');

const base = process.env.URL;
const [host, port] = process.env.MQTT.split(':');
const out = {};

function connect(clientId, opts = {}) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect({ host, port: Number(port), clientId, protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 10000, ...opts });
    c.once('connect', () => resolve(c));
    c.once('error', reject);
  });
}

const text = (page, sel) => page.textContent(sel).then((s) => s.trim());
const num = (s) => Number(String(s).replace(/[^0-9.]/g, ''));

(async () => {
  const browser = await bt.launch();
  const clients = [];
  try {
    // No key: the sign-in form, answered with 401, and no numbers.
    const anon = await bt.newPage(browser);
    const resp = await anon.goto(base + '/dashboard');
    out.anonStatus = resp.status();
    out.anonHasForm = await anon.isVisible('form[action="/dashboard/login"]');
    out.anonHasNumbers = (await anon.$('#active')) !== null;

    // A wrong key stays on the form.
    await anon.fill('#key', 'not-a-key-of-this-mqgate');
    const wrong = await Promise.all([anon.waitForNavigation(), anon.click('button[type=submit]')]);
    out.wrongStatus = wrong[0].status();
    out.wrongError = await text(anon, '#error');

    // The viewer key through the form.
    await anon.fill('#key', process.env.VIEWER_KEY);
    await Promise.all([anon.waitForNavigation(), anon.click('button[type=submit]')]);
    const viewer = anon;
    await viewer.waitForSelector('#conn-state.live');
    out.viewerRole = await text(viewer, '#role');
    out.activeBefore = num(await text(viewer, '#active'));

    // Clients connect through mqgate: the numbers follow.
    for (let i = 0; i < 5; i++) clients.push(await connect('dash-' + i));
    await viewer.waitForFunction(() => document.querySelector('#active').textContent.trim() === '5');
    out.activeAfter = num(await text(viewer, '#active'));
    await viewer.waitForFunction(() => document.querySelectorAll('#conns tr[data-client-id^="dash-"]').length === 5);
    out.nodeActiveSum = await viewer.$$eval('#nodes tr[data-node] td.active', (tds) => tds.reduce((a, td) => a + Number(td.textContent.replace(/,/g, '')), 0));
    out.listenerAccepted = num(await text(viewer, '#listeners tr[data-listener] td:last-child'));
    await viewer.waitForSelector(`#nodes tr[data-node="plant/${process.env.DEAD}"][data-health="unhealthy"]`);
    out.deadReason = await text(viewer, `#nodes tr[data-node="plant/${process.env.DEAD}"] .reason`);
    out.healthyCard = await text(viewer, '#healthy');
    out.viewerKickButtons = await viewer.$$eval('button.kick', (b) => b.length);

    // Search by client id.
    await viewer.fill('#search', 'dash-3');
    await viewer.waitForFunction(() => {
      const rows = document.querySelectorAll('#conns tbody tr[data-client-id]');
      return rows.length === 1 && rows[0].dataset.clientId === 'dash-3';
    });
    out.searchRows = await viewer.$$eval('#conns tbody tr[data-client-id]', (rows) => rows.map((r) => r.dataset.clientId));

    // A refused client shows under its reason.
    await connect('not-routed').then((c) => c.end(true), () => {});
    await viewer.waitForSelector('#refusals .bar[data-reason="no_route"]');
    out.refusedShown = num(await text(viewer, '#refusals .bar[data-reason="no_route"] .n'));

    // An admin signs in with ?key= (as mqgate demo prints) and kicks dash-3.
    const admin = await bt.newPage(browser);
    await admin.goto(base + '/dashboard?key=' + process.env.ADMIN_KEY);
    out.adminURL = new URL(admin.url()).pathname + new URL(admin.url()).search;
    await admin.waitForSelector('#conns tr[data-client-id="dash-3"] button.kick');
    const closed = new Promise((resolve) => clients[3].once('close', () => resolve(true)));
    await admin.click('#conns tr[data-client-id="dash-3"] button.kick');
    out.kickClosedClient = await Promise.race([closed, new Promise((r) => setTimeout(() => r(false), 15000))]);
    await admin.waitForSelector('#toast.show');
    out.toast = await text(admin, '#toast');
    await admin.waitForFunction(() => !document.querySelector('#conns tr[data-client-id="dash-3"]') &&
      document.querySelector('#active').textContent.trim() === '4');
    out.activeAfterKick = num(await text(admin, '#active'));

    // On a phone the page fits the screen's width.
    const phone = await bt.newPage(browser, { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    await phone.goto(base + '/dashboard?key=' + process.env.VIEWER_KEY);
    await phone.waitForSelector('#conn-state.live');
    out.phoneOverflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);

    if (process.env.SCREENSHOT) {
      // Traffic for the picture: more devices, messages both ways, a few
      // refusals, for long enough that the rates and sparklines fill.
      for (let i = 0; i < 40; i++) clients.push(await connect('meter-' + String(i).padStart(3, '0'), { username: i % 3 ? 'meters' : 'ops' }));
      const sub = await connect('dash-console');
      sub.subscribe('plant/#');
      clients.push(sub);
      let n = 0;
      let running = true;
      const traffic = (async () => {
        while (running) {
          for (const c of clients.slice(5, 25)) c.publish('plant/line-1/' + c.options.clientId, JSON.stringify({ kwh: Math.random() * 100, n }));
          if (n % 10 === 0) await connect('guest-' + n).then((c) => c.end(true), () => {});
          if (n % 4 === 0) await connect('meter-tmp-' + n).then((c) => c.end());
          n++;
          await new Promise((r) => setTimeout(r, 250));
        }
      })();
      await admin.setViewportSize({ width: 1280, height: 1180 });
      await admin.mouse.move(1, 1);
      await admin.waitForTimeout(Number(process.env.SCREENSHOT_SECONDS || 30) * 1000);
      await admin.evaluate(() => window.scrollTo(0, 0));
      await admin.screenshot({ path: process.env.SCREENSHOT });
      if (process.env.SCREENSHOT_PHONE) await phone.screenshot({ path: process.env.SCREENSHOT_PHONE });
      running = false;
      await traffic;
    }
    bt.result(out);
  } finally {
    for (const c of clients) c.end(true);
    await browser.close();
  }
})().catch((err) => { console.error(err, JSON.stringify(out)); process.exit(1); });

// MQTT.js in headless Chromium: from the page at PAGE, for each broker URL
// in URLS (ws:// and wss:// through mqgate), connect, subscribe to a topic
// of its own, publish to it and to browser/seen, and report what came back:
// its own message and the one the test sends it after seeing browser/seen.
const bt = require(process.env.BROWSERTEST_LIB);

(async () => {
  const browser = await bt.launch();
  try {
    const page = await bt.newPage(browser);
    await page.goto(process.env.PAGE);
    await page.addScriptTag({ path: bt.mqttBundle });
    const out = {};
    for (const url of process.env.URLS.split(',')) {
      const scheme = url.split(':')[0];
      out[scheme] = await page.evaluate(({ url, scheme }) => new Promise((resolve) => {
        const c = window.mqtt.connect(url, {
          clientId: 'browser-' + scheme, protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 10000,
        });
        const timer = setTimeout(() => { c.end(true); resolve({ error: 'no message within 20 s' }); }, 20000);
        c.on('error', (e) => { clearTimeout(timer); c.end(true); resolve({ error: String(e) }); });
        c.on('connect', () => {
          c.subscribe('browser/' + scheme, { qos: 1 }, (err) => {
            if (err) { resolve({ error: String(err) }); return; }
            c.publish('browser/seen', 'seen over ' + scheme, { qos: 1 });
            c.publish('browser/' + scheme, 'hello over ' + scheme, { qos: 1 });
          });
        });
        // Two messages: its own, then the test's (sent once the pair is
        // where the test wants it, an event loop), in either order.
        const got = [];
        c.on('message', (topic, payload) => {
          got.push({ topic, payload: new TextDecoder().decode(payload) });
          if (got.length < 2) return;
          clearTimeout(timer);
          c.end();
          resolve({ messages: got });
        });
      }), { url, scheme });
    }
    bt.result(out);
  } finally {
    await browser.close();
  }
})().catch((err) => { console.error(err); process.exit(1); });

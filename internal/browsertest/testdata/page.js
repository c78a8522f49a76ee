// Opens the page at URL, loads MQTT.js into it and reports what it saw.
const bt = require(process.env.BROWSERTEST_LIB);

(async () => {
  const browser = await bt.launch();
  try {
    const page = await bt.newPage(browser);
    await page.goto(process.env.URL);
    await page.addScriptTag({ path: bt.mqttBundle });
    bt.result({
      title: await page.title(),
      text: await page.textContent('#greeting'),
      mqtt: await page.evaluate(() => typeof window.mqtt.connect),
    });
  } finally {
    await browser.close();
  }
})().catch((err) => { console.error(err); process.exit(1); });
